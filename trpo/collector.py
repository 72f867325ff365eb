"""Rollout collection: one batched policy call per vector-env step, into preallocated [T, N] arrays."""

from dataclasses import dataclass

import gymnasium as gym
import torch
from torch import Tensor

from trpo import acting
from trpo.policy import Policy
from trpo.stepping import CollectorState, step_envs
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
