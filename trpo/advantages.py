"""Generalized advantage estimation (Schulman et al. 2016) on time-major [T, N] rollouts."""

import torch
from torch import Tensor


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    dones: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Advantages and value targets.

    rewards: r_t, [T, N].
    values: V(s_t), [T, N].
    next_values: V(s_{t+1}) of the true next state (the final observation at an episode end), [T, N].
    terminated: 1 where s_{t+1} is terminal (no bootstrap), [T, N].
    dones: 1 where the episode ended at t, terminated or truncated (the trace is cut), [T, N].
    gamma: discount factor.
    lam: GAE lambda.
    Returns (advantages A_t, returns A_t + V(s_t)), both [T, N].
    """
    not_terminal = 1.0 - terminated.to(values.dtype)
    deltas = rewards + gamma * not_terminal * next_values - values
    trace = gamma * lam * (1.0 - dones.to(values.dtype))  # how much of A_{t+1} flows back to A_t
    advantages = deltas.new_zeros((deltas.shape[0] + 1, *deltas.shape[1:]))  # the extra last row: A_T = 0
    for t in range(deltas.shape[0] - 1, -1, -1):  # two ops a step, written in place: the loop is dispatch-bound
        torch.add(deltas[t], trace[t] * advantages[t + 1], out=advantages[t])
    advantages = advantages[:-1]
    return advantages, advantages + values


def normalize(x: Tensor, epsilon: float = 1e-8) -> Tensor:
    """(x - mean) / (std + epsilon) over all elements."""
    return (x - x.mean()) / (x.std() + epsilon)
