import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import toy_envs  # noqa: F401  (registers the Toy* ids)
from trpo import collector, stepping
from trpo.config import AlgoConfig, EnvConfig
from trpo.workers import make_envs
from trpo.evaluate import deterministic_action
from trpo.policy import CategoricalPolicy, GaussianPolicy, ValueNetwork
from trpo.train import advantage_batch
from trpo.update import fit_value


def toy_envs(env_id="ToyTruncated-v0", mode="same_step", num_envs=2):
    return make_envs(env_id, EnvConfig(num_envs=num_envs, autoreset_mode=mode), gamma=0.99)


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_next_obs_at_episode_end_is_the_final_observation(mode):
    envs = toy_envs(mode=mode)
    state = stepping.start(envs, seed=0)
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
    state = stepping.start(envs, seed=0)
    rollout = collector.collect(envs, GaussianPolicy(2, 1), state, num_steps=6)
    assert torch.equal(rollout.terminated, rollout.dones) and rollout.terminated.sum() == 6
    assert state.episode_returns == [2.0] * 6 and state.episode_lengths == [2] * 6


def test_env_gets_clipped_actions_while_the_rollout_keeps_the_sample():
    envs = make_envs("ToyTruncated-v0", EnvConfig(num_envs=1), gamma=0.99)
    policy = GaussianPolicy(2, 1, log_std_init=2.0)  # std e^2: most samples fall outside [-1, 1]
    state = stepping.start(envs, seed=0)
    rollout = collector.collect(envs, policy, state, num_steps=20)
    assert rollout.actions.abs().max() > 1.0
    sent = envs.unwrapped.envs[0].unwrapped.last_action
    np.testing.assert_allclose(sent, np.clip(rollout.actions[-1, 0].numpy(), -1, 1))
    torch.testing.assert_close(rollout.log_probs, policy.dist(rollout.obs.reshape(-1, 2)).log_prob(
        rollout.actions.reshape(-1, 1)).reshape(20, 1))


def test_collector_rejects_unknown_autoreset_mode():
    envs = gym.make_vec("ToyTruncated-v0", num_envs=1, vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED})
    with pytest.raises(ValueError, match="autoreset_mode"):
        collector.collect(envs, GaussianPolicy(2, 1), stepping.CollectorState(envs.reset(seed=0)[0], np.zeros(1, bool)), 1)


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_value_on_a_truncated_constant_reward_env_approaches_one_over_one_minus_gamma(mode):
    # Reward 1 forever, cut only by a time limit: V = 1 / (1 - gamma) = 10 in every state.
    torch.manual_seed(0)
    envs = toy_envs(mode=mode, num_envs=4)
    algo = AlgoConfig(gamma=0.9, gae_lambda=1.0)
    policy, value = GaussianPolicy(2, 1), ValueNetwork(2)
    optimizer = torch.optim.Adam(value.parameters(), lr=1e-2)
    state = stepping.start(envs, seed=0)
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
        envs = make_envs("Pendulum-v1", EnvConfig(num_envs=2, vectorization=vectorization), gamma=0.99)
        torch.manual_seed(0)
        policy = GaussianPolicy(3, 1)
        rollouts.append(collector.collect(envs, policy, stepping.start(envs, seed=0), num_steps=210))
        envs.close()
    sync, async_ = rollouts
    assert sync.dones.any()  # crosses an episode end (Pendulum truncates at 200 steps)
    for name in ("obs", "actions", "rewards", "next_obs", "dones"):
        assert torch.equal(getattr(sync, name), getattr(async_, name)), name


def test_envpool_backend_gives_the_returns_of_gymnasium():
    pytest.importorskip("envpool")
    returns = {}
    for backend in ("gymnasium", "envpool"):
        config = EnvConfig(num_envs=16, backend=backend, autoreset_mode="next_step", normalize_observations=False)
        envs = make_envs("HalfCheetah-v4", config, gamma=0.99, seed=0)
        torch.manual_seed(1)
        policy = GaussianPolicy(17, 6, log_std_init=-20.0)  # deterministic in effect
        with torch.no_grad():
            policy.mean[-1].weight.mul_(30)  # actions of a useful size, mostly inside the bounds
        state = stepping.start(envs, seed=0)
        collector.collect(envs, policy, state, num_steps=1001)  # one whole episode per env
        returns[backend] = np.array(state.episode_returns)
        envs.close()
    gymnasium, envpool = returns["gymnasium"], returns["envpool"]
    assert len(gymnasium) == len(envpool) == 16 and gymnasium.mean() < -50  # the policy does something
    standard_error = np.hypot(gymnasium.std() / 4, envpool.std() / 4)
    assert abs(gymnasium.mean() - envpool.mean()) < 3 * standard_error + 1.0  # reset noise differs; physics agree


def test_envpool_rejects_an_env_it_does_not_have():
    pytest.importorskip("envpool")
    with pytest.raises(ValueError, match="not an EnvPool environment"):
        make_envs("ToyTruncated-v0", EnvConfig(backend="envpool"), gamma=0.99)


def test_discrete_actions_reach_the_env_offset_by_the_space_start():
    envs = make_envs("ToyDiscreteStart-v0", EnvConfig(num_envs=2), gamma=0.99)  # Discrete(3, start=-1)
    policy = CategoricalPolicy(2, 3)
    rollout = collector.collect(envs, policy, stepping.start(envs, seed=0), num_steps=60)  # the env refuses 2
    assert set(rollout.actions.unique().tolist()) == {0, 1, 2}  # the policy's indices
    assert envs.unwrapped.envs[1].unwrapped.last_action == rollout.actions[-1, 1] - 1
    obs = np.zeros((4, 2), dtype=np.float32)
    torch.testing.assert_close(torch.as_tensor(deterministic_action(policy, obs, envs.single_action_space)),
                               policy.dist(torch.from_numpy(obs)).mode - 1)
