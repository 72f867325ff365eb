import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import toy_envs  # noqa: F401  (registers the Toy* ids)
from trpo import collector
from trpo.config import AlgoConfig, EnvConfig
from trpo import envs as trpo_envs
from trpo.env_groups import EnvGroups
from trpo.policy import GaussianPolicy, ValueNetwork
from trpo.train import advantage_batch
from trpo.update import fit_value


def toy_envs(env_id="ToyTruncated-v0", mode="same_step", num_envs=2):
    return EnvGroups(env_id, EnvConfig(num_envs=num_envs, autoreset_mode=mode), gamma=0.99)


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_next_obs_at_episode_end_is_the_final_observation(mode):
    envs = toy_envs(mode=mode)
    state = collector.start(envs, seed=0)
    rollout = collector.collect(envs, GaussianPolicy(2, 1), state, num_steps=9)
    steps = rollout.obs[..., 0]  # the step counter inside the episode
    ends = rollout.dones
    # Every episode ends on its third step, and its next_obs is the final observation (counter 3).
    assert ends.any()
    assert torch.equal(rollout.next_obs[..., 0][ends], torch.full((int(ends.sum()),), 3.0))
    assert torch.equal(rollout.next_obs[..., 1][ends], rollout.obs[..., 1][ends])  # same episode, not the next
    assert not rollout.terminated.any()  # time-limit truncation only
    valid = rollout.valid
    assert torch.equal(steps[valid] + 1, rollout.next_obs[..., 0][valid])
    if mode == "same_step":
        assert valid.all()
    else:  # the step after each episode end is a reset step, masked out
        expected_valid = torch.ones_like(valid)
        expected_valid[1:] = ~ends[:-1]
        assert torch.equal(valid, expected_valid) and not valid.all()
        assert torch.equal(rollout.rewards[~valid], torch.zeros(int((~valid).sum())))


def test_episode_statistics_are_raw_returns_of_finished_episodes():
    envs = toy_envs("ToyTerminating-v0")
    state = collector.start(envs, seed=0)
    rollout = collector.collect(envs, GaussianPolicy(2, 1), state, num_steps=6)
    assert torch.equal(rollout.terminated, rollout.dones) and rollout.terminated.sum() == 6
    assert state.episode_returns == [2.0] * 6 and state.episode_lengths == [2] * 6


def test_env_gets_clipped_actions_while_the_rollout_keeps_the_sample():
    envs = toy_envs(num_envs=1)
    policy = GaussianPolicy(2, 1, log_std_init=2.0)  # std e^2: most samples fall outside [-1, 1]
    state = collector.start(envs, seed=0)
    rollout = collector.collect(envs, policy, state, num_steps=20)
    assert rollout.actions.abs().max() > 1.0
    sent = envs._envs.groups[0].unwrapped.envs[0].unwrapped.last_action
    np.testing.assert_allclose(sent, np.clip(rollout.actions[-1, 0].numpy(), -1, 1))
    torch.testing.assert_close(rollout.log_probs, policy.dist(rollout.obs.reshape(-1, 2)).log_prob(
        rollout.actions.reshape(-1, 1)).reshape(20, 1))


def test_unknown_autoreset_mode_is_rejected(monkeypatch):
    monkeypatch.setitem(trpo_envs.AUTORESET, "same_step", AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match="autoreset_mode"):
        toy_envs()


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_value_on_a_truncated_constant_reward_env_approaches_one_over_one_minus_gamma(mode):
    # Reward 1 forever, cut only by a time limit: V = 1 / (1 - gamma) = 10 in every state.
    torch.manual_seed(0)
    envs = toy_envs(mode=mode, num_envs=4)
    algo = AlgoConfig(gamma=0.9, gae_lambda=1.0)
    policy, value = GaussianPolicy(2, 1), ValueNetwork(2)
    optimizer = torch.optim.Adam(value.parameters(), lr=1e-2)
    state = collector.start(envs, seed=0)
    for _ in range(60):
        rollout = collector.collect(envs, policy, state, num_steps=16)
        batch = advantage_batch(rollout, value, algo, torch.device("cpu"))
        fit_value(value, optimizer, batch["obs"], batch["returns"], epochs=20, minibatch_size=16)
    with torch.no_grad():
        predictions = value(batch["obs"])
    torch.testing.assert_close(predictions, torch.full_like(predictions, 10.0), rtol=0.05, atol=0)


def test_async_vector_env_gives_the_same_rollout_as_sync():
    rollouts = []
    for vectorization in ("sync", "async"):
        envs = EnvGroups("Pendulum-v1", EnvConfig(num_envs=2, vectorization=vectorization), gamma=0.99)
        torch.manual_seed(0)
        policy = GaussianPolicy(3, 1)
        rollouts.append(collector.collect(envs, policy, collector.start(envs, seed=0), num_steps=210))
        envs.close()
    sync, async_ = rollouts
    assert sync.dones.any()  # crosses an episode end (Pendulum truncates at 200 steps)
    for name in ("obs", "actions", "rewards", "next_obs", "dones"):
        assert torch.equal(getattr(sync, name), getattr(async_, name)), name


def test_env_groups_in_a_child_process_give_the_same_rollout_as_one_vector_env():
    rollouts = []
    for groups, subprocess in ((1, False), (2, False), (2, True)):
        envs = EnvGroups("Pendulum-v1", EnvConfig(num_envs=3, normalize_rewards=False), 0.99, groups, subprocess)
        torch.manual_seed(0)
        policy = GaussianPolicy(3, 1)
        state = collector.start(envs, seed=0)
        rollouts.append((collector.collect(envs, policy, state, num_steps=210), state.episode_returns))
        envs.close()
    (single, single_returns), (local, local_returns), (remote, remote_returns) = rollouts
    assert single.dones.any() and len(single_returns) == 3  # crosses the episode ends at 200 steps
    for name in ("obs", "actions", "log_probs", "rewards", "next_obs", "terminated", "dones", "valid"):
        assert torch.equal(getattr(local, name), getattr(remote, name)), name  # the transport changes nothing
        # Acting on batches of 2 and 1 instead of 3 changes float rounding in the last bit only.
        torch.testing.assert_close(getattr(single, name), getattr(local, name), rtol=1e-5, atol=1e-5)
    assert remote_returns == local_returns
    np.testing.assert_allclose(local_returns, single_returns, rtol=1e-5)


def test_env_process_reports_errors_and_keeps_reward_normalizer_state():
    envs = EnvGroups("Pendulum-v1", EnvConfig(num_envs=2, normalize_rewards=True), 0.99, groups=2, subprocess=True)
    envs.reset(seed=0)
    for _ in range(5):
        for group in range(2):
            envs.step_async(group, np.zeros((1, 1), np.float32))
            envs.step_wait()
    states = envs.reward_normalizer_state()
    assert len(states) == 2 and all(round(float(state["count"])) == 5 for state in states)  # 5 steps each
    states[0]["mean"] = torch.tensor(123.0, dtype=torch.float64)
    envs.load_reward_normalizer_state(states)
    assert envs.reward_normalizer_state()[0]["mean"] == 123.0
    envs.step_async(0, None)  # fails inside the child
    with pytest.raises(RuntimeError, match="in the environment process"):
        envs.step_wait()
    envs.close()
    assert not envs._process.is_alive()
