"""Rollout collection: one batched policy call per vector-env step, into preallocated [T, N] tensors."""

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from trpo.policy import Policy


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


def start(envs: gym.vector.VectorEnv, seed: int, episode_returns: list[float] | None = None,
          episode_lengths: list[int] | None = None) -> CollectorState:
    """Reset the envs; a resumed run passes the returns and lengths of the episodes it finished before."""
    obs, _ = envs.reset(seed=seed)
    return CollectorState(obs=obs, resetting=np.zeros(envs.num_envs, dtype=bool),
                          episode_returns=list(episode_returns or []), episode_lengths=list(episode_lengths or []))


def collect(envs: gym.vector.VectorEnv, policy: Policy, state: CollectorState, num_steps: int) -> Rollout:
    """Step all envs num_steps times with actions sampled from policy (on the CPU); updates state."""
    mode = envs.metadata.get("autoreset_mode")
    if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
        raise ValueError(f"autoreset_mode={mode!r} is not supported; use SAME_STEP or NEXT_STEP")
    space = envs.single_action_space
    continuous = isinstance(space, gym.spaces.Box)
    T, N = num_steps, envs.num_envs
    obs_shape = envs.single_observation_space.shape
    obs_buffer = torch.empty((T, N, *obs_shape))
    next_obs_buffer = torch.empty((T, N, *obs_shape))
    actions = torch.empty((T, N, *space.shape), dtype=torch.float32 if continuous else torch.int64)
    rewards = torch.empty(T, N)
    terminated, dones = torch.empty(T, N, dtype=torch.bool), torch.empty(T, N, dtype=torch.bool)
    valid = torch.ones(T, N, dtype=torch.bool)
    noise = policy.action_noise(T, N)  # one draw per rollout: the step loop only runs the network

    for t in range(T):
        obs_buffer[t] = torch.from_numpy(state.obs)
        with torch.no_grad():
            actions[t] = policy.act(obs_buffer[t], noise[t])
        env_action = actions[t].numpy()
        if continuous:  # the env gets the clipped action; the rollout keeps the sample and its log-prob
            env_action = np.clip(env_action, space.low, space.high)
        next_obs, reward, term, trunc, info = envs.step(env_action)
        done = term | trunc
        rewards[t] = torch.from_numpy(np.asarray(reward, dtype=np.float32))
        terminated[t], dones[t] = torch.from_numpy(term), torch.from_numpy(done)
        next_obs_buffer[t] = torch.from_numpy(next_obs)
        if mode == AutoresetMode.SAME_STEP:
            if done.any():  # next_obs holds the reset observation there; the true one is in final_obs
                ended = np.flatnonzero(done)
                next_obs_buffer[t, ended] = torch.as_tensor(np.stack(info["final_obs"][ended]), dtype=torch.float32)
        else:
            valid[t] = torch.from_numpy(~state.resetting)
            state.resetting = done
        if "episode" in info:
            ended = info["_episode"]
            state.episode_returns.extend(info["episode"]["r"][ended].tolist())
            state.episode_lengths.extend(info["episode"]["l"][ended].tolist())
        state.obs = next_obs
    with torch.no_grad():  # log pi_old(a|s) of the whole rollout in one batched call
        log_probs = policy.dist(obs_buffer.flatten(0, 1)).log_prob(actions.flatten(0, 1)).view(T, N)
    return Rollout(obs_buffer, actions, log_probs, rewards, next_obs_buffer, terminated, dones, valid)
