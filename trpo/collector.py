"""Rollout collection: one batched policy call per group step, into preallocated [T, N] tensors.

With two env groups the policy picks one group's next actions while the other group simulates.
"""

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from trpo.env_groups import EnvGroups
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

    obs: np.ndarray  # [N, ...] the current observation of every env
    resetting: np.ndarray  # NEXT_STEP: these envs reset on their next step
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


def start(envs: EnvGroups, seed: int) -> CollectorState:
    return CollectorState(obs=envs.reset(seed), resetting=np.zeros(envs.num_envs, dtype=bool))


def collect(envs: EnvGroups, policy: Policy, state: CollectorState, num_steps: int) -> Rollout:
    """Step all envs num_steps times with actions sampled from policy (on the CPU); updates state."""
    mode = envs.autoreset_mode
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

    def act(t: int, index: int) -> None:
        """Choose group `index`'s actions at step t from its current observations and send them."""
        group = envs.slices[index]
        obs_buffer[t, group] = torch.from_numpy(state.obs[group])
        with torch.no_grad():
            actions[t, group] = policy.act(obs_buffer[t, group], noise[t, group])
        env_action = actions[t, group].numpy()
        if continuous:  # the env gets the clipped action; the rollout keeps the sample and its log-prob
            env_action = np.clip(env_action, space.low, space.high)
        envs.step_async(index, env_action)

    for index in range(len(envs.slices)):
        act(0, index)
    for t in range(T):
        for index, group in enumerate(envs.slices):
            next_obs, reward, term, trunc, info = envs.step_wait()
            done = term | trunc
            rewards[t, group] = torch.from_numpy(np.asarray(reward, dtype=np.float32))
            terminated[t, group], dones[t, group] = torch.from_numpy(term), torch.from_numpy(done)
            next_obs_buffer[t, group] = torch.from_numpy(next_obs)
            if mode == AutoresetMode.SAME_STEP:
                if done.any():  # next_obs holds the reset observation there; the true one is in final_obs
                    ended = np.flatnonzero(done)
                    final = torch.as_tensor(np.stack(info["final_obs"][ended]), dtype=torch.float32)
                    next_obs_buffer[t, group][ended] = final
            else:
                valid[t, group] = torch.from_numpy(~state.resetting[group])
                state.resetting[group] = done
            if "episode" in info:
                ended = info["_episode"]
                state.episode_returns.extend(info["episode"]["r"][ended].tolist())
                state.episode_lengths.extend(info["episode"]["l"][ended].tolist())
            state.obs[group] = next_obs
            if t + 1 < T:
                act(t + 1, index)
    with torch.no_grad():  # log pi_old(a|s) of the whole rollout in one batched call
        log_probs = policy.dist(obs_buffer.flatten(0, 1)).log_prob(actions.flatten(0, 1)).view(T, N)
    return Rollout(obs_buffer, actions, log_probs, rewards, next_obs_buffer, terminated, dones, valid)
