"""build_models: the networks a config asks for."""

import gymnasium as gym
from torch import nn

from test_train import composed
from trpo.evaluate import load_run
from trpo.models import build_models
from trpo.train import train

SPACES = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (1,))


def widths(net: nn.Module) -> list[int]:
    return [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]


def test_policy_and_value_take_their_own_sizes_or_both_model_hidden():
    policy, value = build_models(composed("Pendulum-v1", "model.hidden=[24,24]"), *SPACES)
    assert widths(policy.mean) == [24, 24, 1] and widths(value) == [24, 24, 1]
    policy, value = build_models(composed("Pendulum-v1", "model.policy_hidden=[32]", "model.value_hidden=[16,8]"),
                                 *SPACES)
    assert widths(policy.mean) == [32, 1] and widths(value) == [16, 8, 1]
    assert policy.normalizer is value.normalizer  # still one normalizer


def test_a_run_with_separate_sizes_trains_and_loads(tmp_path):
    train(composed("Pendulum-v1", "debug=smoke", "model.policy_hidden=[32]", "model.value_hidden=[16,8]"), tmp_path)
    config, policy, _ = load_run(tmp_path)
    assert config.model.value_hidden == [16, 8] and widths(policy.mean) == [32, 1]
