"""Env construction: MuJoCo's own warnings reach the console once; v5 ids that the presets treat as v4."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(int(version("mujoco").split(".")[0]) < 4, reason="the warning comes with MuJoCo 4")
def test_a_mujoco_warning_is_shown_once_not_once_per_env():
    # MuJoCo 4 warns that HalfCheetah's model uses a deprecated compiler attribute, for every model it loads.
    script = ("from trpo.config import EnvConfig; from trpo.envs import make_vector_env; "
              "make_vector_env('HalfCheetah-v4', EnvConfig(num_envs=4), gamma=0.99).close()")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("settotalmass") == 1  # shown, as a Python warning, not four times from C
    assert "RuntimeWarning: MuJoCo: compiler attribute 'settotalmass' is deprecated" in result.stderr


@pytest.mark.parametrize("name, changed", [("HalfCheetah", False), ("Swimmer", False), ("Hopper", True)])
def test_v5_steps_as_v4_where_the_v5_preset_says_nothing_changed(name, changed):
    # conf/env/{HalfCheetah,Swimmer}-v5.yaml take the v4 tuning and target as they are because the env is the
    # same; Hopper-v5, whose reward changed (no healthy reward on the terminating step), shows the test can tell.
    old, new = gym.make(f"{name}-v4"), gym.make(f"{name}-v5")
    rng = np.random.default_rng(0)
    differences = [np.abs(old.reset(seed=3)[0] - new.reset(seed=3)[0]).max()]
    for _ in range(300):
        action = rng.uniform(-1, 1, old.action_space.shape)
        (obs_old, reward_old, end_old, cut_old, _), (obs_new, reward_new, end_new, cut_new, _) = \
            old.step(action), new.step(action)
        differences += [np.abs(obs_old - obs_new).max(), abs(reward_old - reward_new)]
        assert (end_old, cut_old) == (end_new, cut_new)
        if end_old:
            break
    assert (max(differences) > 0) == changed
