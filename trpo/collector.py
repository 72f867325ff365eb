"""Rollout collection: one batched policy call per vector-env step, into preallocated [T, N] arrays."""

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from trpo import acting
from trpo.policy import Policy
from trpo.workers import EnvWorkers


@dataclass(frozen=True)
class Rollout:
    """Time-major transitions [T, N, ...] (T steps of N envs)."""

    obs: Tensor  # s_t, raw (the policy normalizes)
    actions: Tensor  # a_t as sampled (unclipped)
    log_probs: Tensor  # log pi_old(a_t | s_t)
    rewards: Tensor  # r_t as the learner sees it (after optional reward scaling)
    next_obs: Tensor  # the true s_{t+1}: the final observation where an episode ended at t
    terminated: Tensor  # s_{t+1} is terminal: no bootstrap
    dones: Tensor  # terminated or truncated: the GAE trace is cut after t
    valid: Tensor  # False on NEXT_STEP reset steps, which are masked out of every loss and statistic


@dataclass
class CollectorState:
    """What carries from one rollout to the next, and the episodes finished so far."""

    obs: np.ndarray
    resetting: np.ndarray  # NEXT_STEP: these envs reset on their next step
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


def start(envs: gym.vector.VectorEnv | EnvWorkers, seed: int, episode_returns: list[float] | None = None,
          episode_lengths: list[int] | None = None) -> CollectorState:
    """Reset the envs; a resumed run passes the returns and lengths of the episodes it finished before."""
    obs, _ = envs.reset(seed=seed)
    return CollectorState(obs=obs, resetting=np.zeros(envs.num_envs, dtype=bool),
                          episode_returns=list(episode_returns or []), episode_lengths=list(episode_lengths or []))


def collect(envs: gym.vector.VectorEnv | EnvWorkers, policy: Policy, state: CollectorState,
            num_steps: int) -> Rollout:
    """Step all envs num_steps times with actions sampled from policy (on the CPU); updates state.

    envs: a vector env stepped here, or EnvWorkers, whose processes each step their share of the envs.
    """
    noise = policy.action_noise(num_steps, envs.num_envs).numpy()  # one draw per rollout
    actor = acting.snapshot(policy)
    if isinstance(envs, EnvWorkers):
        arrays = envs.step_rollout(actor, noise, state)
    else:
        arrays = step_envs(envs, actor, noise, state)
    tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
    T, N = noise.shape[:2]
    with torch.no_grad():  # log pi_old(a|s) of the whole rollout in one batched call
        log_probs = policy.sample_log_prob(tensors["obs"].flatten(0, 1), tensors["actions"].flatten(0, 1),
                                           torch.from_numpy(noise).flatten(0, 1)).view(T, N)
    return Rollout(log_probs=log_probs, **tensors)


def step_envs(envs: gym.vector.VectorEnv, actor: acting.Actor, noise: np.ndarray,
              state: CollectorState) -> dict[str, np.ndarray]:
    """Step envs len(noise) times with actor's actions; the Rollout's fields but log_probs, as [T, N] arrays.

    The step loop works on NumPy arrays only (assignments into them cost a fraction of torch's).
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

    for t in range(T):
        obs_buffer[t] = state.obs
        actions[t] = actor(obs_buffer[t], noise[t])
        env_action = np.minimum(np.maximum(actions[t], low), high) if continuous else actions[t]
        next_obs, reward, term, trunc, info = envs.step(env_action)
        rewards[t], terminated[t] = reward, term
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
