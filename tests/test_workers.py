import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

import toy_envs  # noqa: F401  (the Toy* ids, also as toy_envs:<id> in the workers)

from trpo import collector, stepping
from trpo.acting import snapshot
from trpo.config import EnvConfig
from trpo.policy import GaussianPolicy
from trpo.processes import ChildError
from trpo.workers import EnvWorkers, load_reward_normalizer_state, make_envs, reward_normalizer_state


def pendulum_rollouts(workers: int, normalize_rewards: bool = False, rollouts: int = 2, steps: int = 110):
    envs = make_envs("Pendulum-v1", EnvConfig(num_envs=5, workers=workers, normalize_rewards=normalize_rewards),
                     gamma=0.99)
    try:
        torch.manual_seed(0)
        policy = GaussianPolicy(3, 1)
        state = stepping.start(envs, seed=7)
        return [collector.collect(envs, policy, state, num_steps=steps) for _ in range(rollouts)], state, envs
    finally:
        envs.close()


def test_workers_give_the_rollouts_of_one_vector_env():
    (one, one_state, _), (two, two_state, envs) = pendulum_rollouts(workers=1), pendulum_rollouts(workers=2)
    assert isinstance(envs, EnvWorkers) and [s.stop - s.start for s in envs.slices] == [3, 2]
    assert one[1].dones.any()  # crosses the episode ends (Pendulum truncates at 200 steps)
    for first, second in zip(one, two):
        for name in ("dones", "terminated", "valid"):
            assert torch.equal(getattr(first, name), getattr(second, name)), name
        for name in ("obs", "actions", "log_probs", "rewards", "next_obs"):  # acting batches round differently
            torch.testing.assert_close(getattr(first, name), getattr(second, name), rtol=0, atol=1e-4, msg=name)
    np.testing.assert_allclose(sorted(one_state.episode_returns), sorted(two_state.episode_returns), rtol=1e-5)
    assert len(two_state.episode_returns) == 5 and two_state.episode_lengths == [200] * 5
    np.testing.assert_allclose(two_state.obs, one_state.obs, atol=1e-4)


def test_each_worker_scales_rewards_and_its_statistics_round_trip_through_a_checkpoint():
    config = EnvConfig(num_envs=4, workers=2, normalize_rewards=True)
    envs = make_envs("Pendulum-v1", config, gamma=0.99)
    other = make_envs("Pendulum-v1", config, gamma=0.99)
    single = make_envs("Pendulum-v1", EnvConfig(num_envs=4, normalize_rewards=True), gamma=0.99)
    try:
        state = stepping.start(envs, seed=0)
        collector.collect(envs, GaussianPolicy(3, 1), state, num_steps=30)
        saved = reward_normalizer_state(envs)
        assert len(saved["workers"]) == 2 and all(worker["count"] > 30 for worker in saved["workers"])
        assert not torch.equal(saved["workers"][0]["mean"], saved["workers"][1]["mean"])  # each its own envs
        load_reward_normalizer_state(other, saved)
        for loaded, original in zip(reward_normalizer_state(other)["workers"], saved["workers"]):
            for key in original:
                torch.testing.assert_close(loaded[key], original[key])
        with pytest.raises(ValueError, match="env.workers=2"):
            load_reward_normalizer_state(single, saved)
        with pytest.raises(ValueError, match="env.workers=1"):
            load_reward_normalizer_state(envs, reward_normalizer_state(single))
    finally:
        for vector_env in (envs, other, single):
            vector_env.close()


def test_an_error_in_a_worker_reaches_the_trainer_with_its_traceback():
    envs = make_envs("Pendulum-v1", EnvConfig(num_envs=2, workers=2), gamma=0.99)
    try:
        state = stepping.start(envs, seed=0)
        actor = snapshot(GaussianPolicy(4, 1))  # expects 4 observations; Pendulum has 3
        with pytest.raises(ChildError, match="(?s)in env worker 0:\nTraceback.*ValueError: matmul"):
            envs.step_rollout(actor, np.zeros((3, 2, 1), dtype=np.float32), state)
    finally:
        envs.close()
    assert not any(child.process.is_alive() for child in envs.children)


@pytest.mark.parametrize("overrides, message", [
    ({"num_envs": 2, "workers": 3}, "env.workers=3 is invalid: must be an integer from 1 to env.num_envs \\(2\\)"),
    ({"workers": 0}, "env.workers=0 is invalid"),
    ({"workers": 2, "backend": "envpool"}, "env.workers=2 is invalid: must be 1 with env.backend=envpool"),
])
def test_bad_worker_counts_are_rejected_before_anything_starts(overrides, message):
    with pytest.raises(ValueError, match=message):
        EnvConfig(**overrides)


def pendulum_workers_stepping(steps: int):
    """Two Pendulum workers asked for a rollout of `steps` steps each (replies of about 40 bytes a step)."""
    envs = make_envs("Pendulum-v1", EnvConfig(num_envs=2, workers=2), gamma=0.99)
    state = stepping.start(envs, seed=0)
    return envs, state, snapshot(GaussianPolicy(3, 1)), np.zeros((steps, 2, 1), dtype=np.float32)


def test_an_interrupted_rollout_closes_workers_blocked_sending_their_replies():
    envs, state, actor, noise = pendulum_workers_stepping(40_000)  # replies of 1.6 MB: more than a pipe holds
    # A KeyboardInterrupt while they step, as the trainer's second Ctrl-C raises StoppedNow there
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        envs.step_rollout(actor, noise, state)
    timer.join()
    started = time.monotonic()
    envs.close()
    assert time.monotonic() - started < 15
    assert not any(child.process.is_alive() for child in envs.children)


def test_one_worker_failing_while_another_replies_raises_its_error_and_closes_promptly():
    # env 0 (seed 0, worker 0) fails at its first step; worker 1 steps 40000 and replies 1.3 MB.
    envs = EnvWorkers("toy_envs:ToyFailsOnEvenSeeds-v0", EnvConfig(num_envs=2, workers=2), gamma=0.99)
    state = stepping.start(envs, seed=0)
    noise = np.zeros((40_000, 2, 1), dtype=np.float32)
    with pytest.raises(ChildError, match="(?s)in env worker 0:.*this env fails on purpose"):
        envs.step_rollout(snapshot(GaussianPolicy(2, 1)), noise, state)
    started = time.monotonic()
    envs.close()
    assert time.monotonic() - started < 5
    assert [child.process.exitcode for child in envs.children] == [0, 0]  # both exited when asked
