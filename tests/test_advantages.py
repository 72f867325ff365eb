import itertools

import pytest
import torch

from reference import gae_loop
from trpo.advantages import gae, normalize


def random_rollout(T, N, seed, done_rate=0.2):
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=generator, dtype=torch.float64)
    values = torch.randn(T, N, generator=generator, dtype=torch.float64)
    next_values = torch.randn(T, N, generator=generator, dtype=torch.float64)
    dones = torch.rand(T, N, generator=generator) < done_rate
    # Some episode ends are terminations, the others truncations.
    terminated = dones & (torch.rand(T, N, generator=generator) < 0.5)
    return rewards, values, next_values, terminated, dones


@pytest.mark.parametrize("gamma, lam", list(itertools.product([0.0, 0.9, 0.99, 1.0], [0.0, 0.5, 0.95, 1.0])))
def test_gae_matches_plain_loop(gamma, lam):
    rollout = random_rollout(T=17, N=4, seed=int(gamma * 100 + lam * 10))
    advantages, returns = gae(*rollout, gamma=gamma, lam=lam)
    expected_advantages, expected_returns = gae_loop(*rollout, gamma=gamma, lam=lam)
    torch.testing.assert_close(advantages, expected_advantages, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(returns, expected_returns, rtol=1e-12, atol=1e-12)


def test_truncation_bootstraps_and_termination_does_not():
    rewards, values, next_values = (torch.tensor([[x]], dtype=torch.float64) for x in (1.0, 0.5, 2.0))
    done = torch.tensor([[True]])
    truncated, _ = gae(rewards, values, next_values, torch.tensor([[False]]), done, gamma=0.9, lam=0.95)
    terminated, _ = gae(rewards, values, next_values, torch.tensor([[True]]), done, gamma=0.9, lam=0.95)
    assert truncated.item() == pytest.approx(1.0 + 0.9 * 2.0 - 0.5)
    assert terminated.item() == pytest.approx(1.0 - 0.5)


def test_splitting_at_an_episode_end_gives_the_same_advantages():
    rewards, values, next_values, terminated, dones = random_rollout(T=20, N=3, seed=7)
    dones[8] = True  # every env ends an episode at t = 8
    whole, _ = gae(rewards, values, next_values, terminated, dones, gamma=0.99, lam=0.95)
    first, _ = gae(rewards[:9], values[:9], next_values[:9], terminated[:9], dones[:9], gamma=0.99, lam=0.95)
    rest, _ = gae(rewards[9:], values[9:], next_values[9:], terminated[9:], dones[9:], gamma=0.99, lam=0.95)
    torch.testing.assert_close(torch.cat([first, rest]), whole, rtol=0, atol=0)


def test_last_step_without_episode_end_bootstraps_from_next_value():
    # A_T-1 = delta_T-1 when A_T = 0: the rollout cut is not an episode end.
    rewards, values, next_values, terminated, dones = random_rollout(T=5, N=2, seed=3, done_rate=0.0)
    advantages, _ = gae(rewards, values, next_values, terminated, dones, gamma=0.9, lam=0.8)
    torch.testing.assert_close(advantages[-1], rewards[-1] + 0.9 * next_values[-1] - values[-1])


def test_normalize_gives_zero_mean_unit_std():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5 + 3
    z = normalize(x)
    assert abs(z.mean().item()) < 1e-12
    assert z.std().item() == pytest.approx(1.0, abs=1e-6)
