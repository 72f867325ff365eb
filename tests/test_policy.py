import math

import numpy as np
import pytest
import torch


from policies import KINDS, tiny_policy
from reference import reference_kl
from trpo.policy import CategoricalPolicy, GaussianPolicy, ObservationNormalizer, ValueNetwork


def linear_layers(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def assert_orthogonal_with_gain(weight, gain):
    rows, cols = weight.shape
    gram = weight @ weight.T if rows <= cols else weight.T @ weight
    torch.testing.assert_close(gram, gain**2 * torch.eye(min(rows, cols)), rtol=1e-4, atol=1e-5)


def test_orthogonal_init_gains_and_zero_biases():
    policy = GaussianPolicy(17, 6, hidden=(64, 32))
    value = ValueNetwork(17, hidden=(64, 32))
    categorical = CategoricalPolicy(4, 3, hidden=(16,))
    for net, last_gain in ((policy, 0.01), (value, 1.0), (categorical, 0.01)):
        *hidden, last = linear_layers(net)
        for layer in hidden:
            assert_orthogonal_with_gain(layer.weight.detach(), math.sqrt(2))
        assert_orthogonal_with_gain(last.weight.detach(), last_gain)
        assert all(torch.count_nonzero(layer.bias) == 0 for layer in linear_layers(net))


def test_hidden_sizes_and_activation_are_configurable():
    policy = GaussianPolicy(5, 2, hidden=(7, 9, 11), activation="relu")
    assert [layer.out_features for layer in linear_layers(policy)] == [7, 9, 11, 2]
    assert sum(isinstance(m, torch.nn.ReLU) for m in policy.modules()) == 3
    with pytest.raises(ValueError, match="activation='swish'.*choose one of"):
        GaussianPolicy(5, 2, activation="swish")


def test_gaussian_dist_has_state_independent_std_and_one_log_prob_per_state():
    policy = GaussianPolicy(4, 3, log_std_init=-0.5)
    obs = torch.randn(10, 4)
    dist = policy.dist(obs)
    torch.testing.assert_close(dist.stddev, torch.full((10, 3), math.exp(-0.5)))
    assert dist.log_prob(dist.sample()).shape == (10,)
    assert policy.log_std.shape == (3,) and any(p is policy.log_std for p in policy.parameters())


def test_categorical_dist_log_prob_per_state():
    policy = CategoricalPolicy(4, 5)
    dist = policy.dist(torch.randn(10, 4))
    assert dist.probs.shape == (10, 5) and dist.log_prob(dist.sample()).shape == (10,)


@pytest.mark.parametrize("kind", KINDS)
def test_closed_form_kl_matches_torch_distributions(kind):
    policy, other = tiny_policy(kind, seed=0), tiny_policy(kind, seed=1)
    obs = torch.randn(30, 3, dtype=torch.float64)
    old, new = policy(obs), other(obs)
    expected = reference_kl(policy, old, new)
    torch.testing.assert_close(policy.kl(old, new), expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(policy.kl(old, old), torch.zeros(30, dtype=torch.float64))


def test_normalizer_running_statistics_equal_the_whole_data():
    generator = np.random.default_rng(0)
    data = generator.normal(3.0, 2.0, size=(1000, 4)) * np.array([1, 10, 0.1, 5])
    normalizer = ObservationNormalizer(4).double()
    for chunk in np.array_split(data, [10, 300, 301, 700]):
        normalizer.update(torch.from_numpy(chunk))
    torch.testing.assert_close(normalizer.mean, torch.from_numpy(data.mean(0)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(normalizer.var, torch.from_numpy(data.var(0)), rtol=1e-10, atol=1e-10)
    assert normalizer.count.item() == 1000


def test_normalizer_updated_leaves_the_statistics_as_they_were():
    normalizer = ObservationNormalizer(3)
    normalizer.update(torch.randn(40, 3) + 2)
    before = {name: tensor.clone() for name, tensor in normalizer.state_dict().items()}
    batch = torch.randn(25, 3) * 3
    updated = normalizer.updated(batch)
    for name, tensor in normalizer.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    normalizer.update(batch)
    for name, tensor in normalizer.state_dict().items():
        assert torch.equal(tensor, updated[name]), name
    assert not torch.equal(updated["mean"], before["mean"]) and updated["count"] == 65


def test_normalizer_standardizes_and_clips():
    normalizer = ObservationNormalizer(2, clip=3.0)
    normalizer.update(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))  # mean (1, 20), std (1, 10)
    out = normalizer(torch.tensor([[2.0, 40.0], [100.0, -1000.0]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0], [3.0, -3.0]]), rtol=1e-4, atol=1e-4)


def test_normalizer_is_shared_by_policy_and_value_and_saved_with_both():
    normalizer = ObservationNormalizer(3)
    policy, value = GaussianPolicy(3, 1, normalizer=normalizer), ValueNetwork(3, normalizer=normalizer)
    normalizer.update(torch.randn(50, 3) * 4 + 2)
    assert policy.normalizer is value.normalizer
    for state in (policy.state_dict(), value.state_dict()):
        torch.testing.assert_close(state["normalizer.mean"], normalizer.mean)
        torch.testing.assert_close(state["normalizer.var"], normalizer.var)
    assert not any("normalizer" in name for name, _ in policy.named_parameters())
    restored = GaussianPolicy(3, 1, normalizer=ObservationNormalizer(3))
    restored.load_state_dict(policy.state_dict())
    obs = torch.randn(8, 3)
    torch.testing.assert_close(restored.dist(obs).mean, policy.dist(obs).mean)


def test_value_network_outputs_one_value_per_state():
    assert ValueNetwork(6)(torch.randn(11, 6)).shape == (11,)
    assert ValueNetwork(6)(torch.randn(5, 4, 6)).shape == (5, 4)
