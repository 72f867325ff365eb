"""The per-step loop: a vector env stepped through one rollout with an Actor's actions, on NumPy arrays.

It runs in the trainer's process, or in each env worker on its share of the envs (trpo/workers.py).
"""

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from trpo.acting import Actor
from trpo.envs import NON_FINITE_REWARD


@dataclass
class CollectorState:
    """What carries from one rollout to the next, and the episodes finished so far."""

    obs: np.ndarray
    resetting: np.ndarray  # NEXT_STEP: these envs reset on their next step
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


def start(envs, seed: int, episode_returns: list[float] | None = None,
          episode_lengths: list[int] | None = None) -> CollectorState:
    """Reset the envs; a resumed run passes the returns and lengths of the episodes it finished before.

    envs: a vector env, or anything with its reset(seed) and num_envs (trpo.workers.EnvWorkers).
    """
    obs, _ = envs.reset(seed=seed)
    return CollectorState(obs=obs, resetting=np.zeros(envs.num_envs, dtype=bool),
                          episode_returns=list(episode_returns or []), episode_lengths=list(episode_lengths or []))


def step_envs(envs: gym.vector.VectorEnv, actor: Actor, noise: np.ndarray,
              state: CollectorState) -> dict[str, np.ndarray]:
    """Step envs len(noise) times with actor's actions; the Rollout's fields but log_probs, as [T, N] arrays.

    The step loop works on NumPy arrays only (assignments into them cost a fraction of torch's).
    A non-finite reward that reward scaling was spared (trpo.envs) is put back, for the trainer to see.
    """
    mode = envs.metadata.get("autoreset_mode")
    if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
        raise ValueError(f"autoreset_mode={mode!r} is not supported; use SAME_STEP or NEXT_STEP")
    space = envs.single_action_space
    continuous = isinstance(space, gym.spaces.Box)
    T, N = noise.shape[0], envs.num_envs
    obs_shape = envs.single_observation_space.shape
    obs_buffer = np.empty((T, N, *obs_shape), dtype=np.float32)
    next_obs_buffer = np.empty((T, N, *obs_shape), dtype=np.float32)
    actions = np.empty((T, N, *space.shape), dtype=np.float32 if continuous else np.int64)
    rewards = np.empty((T, N), dtype=np.float32)
    terminated, dones = np.empty((T, N), dtype=bool), np.empty((T, N), dtype=bool)
    valid = np.ones((T, N), dtype=bool)
    if continuous:  # the env gets the clipped action; the rollout keeps the sample and its log-prob
        low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    else:  # the policy's index i is the env's action start + i (Discrete(n, start), MultiDiscrete)
        first_action = np.asarray(getattr(space, "start", 0))

    for t in range(T):
        obs_buffer[t] = state.obs
        actions[t] = actor(obs_buffer[t], noise[t])
        if continuous:
            env_action = np.minimum(np.maximum(actions[t], low), high)
        else:
            env_action = actions[t] + first_action if first_action.any() else actions[t]
        next_obs, reward, term, trunc, info = envs.step(env_action)
        rewards[t], terminated[t] = reward, term
        if NON_FINITE_REWARD in info:
            raw = info[NON_FINITE_REWARD]
            np.copyto(rewards[t], raw, where=~np.isfinite(raw))
        done = np.logical_or(term, trunc, out=dones[t])
        next_obs_buffer[t] = next_obs
        if mode == AutoresetMode.SAME_STEP:
            if done.any():  # next_obs holds the reset observation there; the true one is in final_obs
                ended = np.flatnonzero(done)
                next_obs_buffer[t, ended] = np.stack(info["final_obs"][ended])
        else:
            valid[t] = ~state.resetting
            state.resetting = done.copy()
        if "episode" in info:
            ended = info["_episode"]
            state.episode_returns.extend(info["episode"]["r"][ended].tolist())
            state.episode_lengths.extend(info["episode"]["l"][ended].tolist())
        state.obs = next_obs
    return {"obs": obs_buffer, "actions": actions, "rewards": rewards, "next_obs": next_obs_buffer,
            "terminated": terminated, "dones": dones, "valid": valid}
