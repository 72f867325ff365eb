"""The Python API: trpo.train composes as the command line does; trpo.load gives an agent that acts."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import toy_envs  # noqa: F401  (registers the Toy* ids)
import trpo
from trpo.evaluate import deterministic_action, load_run


def test_train_applies_the_preset_and_returns_the_run(tmp_path):
    run = trpo.train("CartPole-v1", ["debug=smoke", "seed=2"], run_dir=tmp_path)
    assert run.run_dir == tmp_path and run.config.seed == 2
    assert run.config.algo.max_kl == 0.02 and run.config.env_id == "CartPole-v1"  # conf/env/CartPole-v1.yaml
    assert run.final_return == json.loads((tmp_path / "eval.json").read_text())["eval/episode_return"]


def test_train_raises_the_command_lines_errors_before_writing(tmp_path):
    with pytest.raises(ValueError, match="total_steps=10 is invalid: must be at least one batch"):
        trpo.train("CartPole-v1", ["debug=smoke", "total_steps=10"], run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="algo.max_k is not a config key; did you mean algo.max_kl"):
        trpo.train("CartPole-v1", ["algo.max_k=0.1"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1", "ToyMultiDiscrete-v0", "ToyMultiBinary-v0"])
def test_predict_is_the_evaluations_deterministic_action_from_a_run_and_from_a_saved_file(tmp_path, env_id):
    trpo.train(env_id, ["debug=smoke"], run_dir=tmp_path / "run")
    _, policy, space = load_run(tmp_path / "run")
    obs = np.random.default_rng(0).normal(size=(5, policy.normalizer.mean.numel()), scale=3).astype(np.float32)
    expected = deterministic_action(policy, obs, space)
    agent = trpo.load(tmp_path / "run")
    saved = trpo.load(agent.save(tmp_path / "agent.pt"))
    for loaded in (agent, saved):
        np.testing.assert_array_equal(loaded.predict(obs), expected)
        np.testing.assert_array_equal(loaded.predict(obs[0]), deterministic_action(policy, obs[:1], space)[0])
        assert loaded.config == agent.config
    assert torch.load(tmp_path / "agent.pt", weights_only=True)["config"]["env_id"] == env_id
    samples = agent.predict(np.repeat(obs[:1], 200, axis=0), deterministic=False)
    assert all(agent.action_space.contains(np.asarray(action, dtype=agent.action_space.dtype)) for action in samples)
    assert len(np.unique(samples, axis=0)) > 1  # drawn, not the mode
    if isinstance(space, gym.spaces.Box):
        assert np.abs(samples).max() <= space.high.max()  # clipped to the bounds


def test_a_run_keeps_its_final_policy_alone_and_loads_from_it_without_checkpoints(tmp_path):
    trpo.train("Pendulum-v1", ["debug=smoke"], run_dir=tmp_path)
    final = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)["policy"]
    kept = torch.load(tmp_path / "policy.pt", weights_only=True)["policy"]
    assert kept.keys() == final.keys() and all(torch.equal(kept[name], final[name]) for name in final)
    assert final["normalizer.count"] > 1  # the normalizer has seen the rollouts: the trained one is kept
    obs = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    expected = trpo.load(tmp_path).predict(obs)
    for name in ("latest.pt", "previous.pt"):
        (tmp_path / "checkpoints" / name).unlink(missing_ok=True)
    np.testing.assert_array_equal(trpo.load(tmp_path).predict(obs), expected)
    np.testing.assert_array_equal(trpo.load(tmp_path / "policy.pt").predict(obs), expected)
    assert (tmp_path / "policy.pt").stat().st_size < 100_000
