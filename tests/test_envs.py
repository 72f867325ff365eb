"""Vector env construction: MuJoCo's own warnings reach the console once."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

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
