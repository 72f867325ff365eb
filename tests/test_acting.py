import math

import numpy as np
import pytest
import torch

from policies import tiny_policy
from trpo import acting
from trpo.policy import ACTIVATIONS, CategoricalPolicy, GaussianPolicy, ObservationNormalizer


def fitted_normalizer(obs_dim: int) -> ObservationNormalizer:
    normalizer = ObservationNormalizer(obs_dim, clip=2.0)  # a small clip, so the clipping is exercised
    normalizer.update(torch.randn(500, obs_dim) * 3 + 1)
    return normalizer


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("normalized", [False, True])
def test_gaussian_actor_computes_the_policy_mean_plus_std_times_noise(activation, normalized):
    torch.manual_seed(0)
    policy = GaussianPolicy(5, 3, (16, 8), activation, log_std_init=-0.3,
                            normalizer=fitted_normalizer(5) if normalized else None)
    with torch.no_grad():  # a non-trivial last layer, so a wrong mean is visible
        policy.mean[-1].weight.normal_()
    obs = torch.randn(64, 5) * 4
    noise = policy.action_noise(64)
    with torch.no_grad():
        mean, log_std = policy(obs)
        expected = mean + log_std.exp() * noise
    actions = acting.snapshot(policy)(obs.numpy(), noise.numpy())
    assert actions.dtype == np.float32
    np.testing.assert_allclose(actions, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_categorical_actor_takes_the_gumbel_argmax_of_the_policy_logits():
    torch.manual_seed(0)
    policy = CategoricalPolicy(4, 5, (16,), "relu", normalizer=fitted_normalizer(4))
    with torch.no_grad():
        policy.logits[-1].weight.normal_()
    obs, noise = torch.randn(256, 4), policy.action_noise(256)
    with torch.no_grad():
        expected = (policy(obs)[0] + noise).argmax(-1)
    np.testing.assert_array_equal(acting.snapshot(policy)(obs.numpy(), noise.numpy()), expected.numpy())


def test_actor_samples_follow_the_action_distribution():
    torch.manual_seed(0)
    obs = np.repeat(np.random.default_rng(0).normal(size=(1, 3)).astype(np.float32), 200_000, axis=0)
    gaussian = GaussianPolicy(3, 2, log_std_init=-0.7)
    actions = acting.snapshot(gaussian)(obs, gaussian.action_noise(obs.shape[0]).numpy())
    with torch.no_grad():
        mean = gaussian(torch.from_numpy(obs[:1]))[0][0].numpy()
    np.testing.assert_allclose(actions.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(actions.std(0), math.exp(-0.7), atol=0.01)

    categorical = CategoricalPolicy(3, 4)
    with torch.no_grad():
        categorical.logits[-1].bias.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))  # clearly unequal probabilities
        probs = categorical.dist(torch.from_numpy(obs[:1])).probs[0].numpy()
    actions = acting.snapshot(categorical)(obs, categorical.action_noise(obs.shape[0]).numpy())
    np.testing.assert_allclose(np.bincount(actions, minlength=4) / len(actions), probs, atol=0.005)


def test_snapshot_is_fixed_when_the_policy_changes():
    policy = GaussianPolicy(3, 2, normalizer=fitted_normalizer(3))
    actor = acting.snapshot(policy)
    obs, noise = np.ones((2, 3), np.float32), np.zeros((2, 2), np.float32)
    before = actor(obs, noise).copy()
    with torch.no_grad():
        policy.mean[-1].bias.add_(1.0)
    policy.normalizer.update(torch.randn(10, 3) + 5)
    np.testing.assert_array_equal(actor(obs, noise), before)
    assert not np.allclose(acting.snapshot(policy)(obs, noise), before)


@pytest.mark.parametrize("normalized", [False, True])
def test_sample_log_prob_equals_the_distribution_log_prob_of_the_acted_sample(normalized):
    torch.manual_seed(0)
    policies = [GaussianPolicy(5, 3, (16,), log_std_init=-0.3, normalizer=fitted_normalizer(5) if normalized else None),
                CategoricalPolicy(5, 4, (16,), normalizer=fitted_normalizer(5) if normalized else None)]
    for policy in policies:
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(0.5 * torch.randn_like(p))
        obs, noise = torch.randn(128, 5) * 3, policy.action_noise(128)
        actions = torch.from_numpy(acting.snapshot(policy)(obs.numpy(), noise.numpy()))
        with torch.no_grad():
            torch.testing.assert_close(policy.sample_log_prob(obs, actions, noise), policy.dist(obs).log_prob(actions),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["multi_categorical", "bernoulli"])
def test_factored_actions_follow_the_policys_distribution(kind):
    policy = tiny_policy(kind).float()
    obs = torch.randn(1, 3).expand(40_000, 3).contiguous()
    actions = acting.snapshot(policy)(obs.numpy(), policy.action_noise(40_000).numpy())
    with torch.no_grad():
        logits = policy(obs[:1])[0][0]
    if kind == "bernoulli":
        expected = [logits.sigmoid().numpy()]  # P(bit = 1)
        observed = [actions.mean(0)]
    else:  # each component's frequencies against its softmax
        expected = [part.softmax(-1).numpy() for part in logits.split(policy.nvec)]
        observed = [np.bincount(actions[:, k], minlength=n) / len(actions) for k, n in enumerate(policy.nvec)]
    for frequencies, probabilities in zip(observed, expected):
        np.testing.assert_allclose(frequencies, probabilities, atol=0.01)
