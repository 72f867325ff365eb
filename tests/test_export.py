"""Exported actors (ONNX through onnxruntime, TorchScript) act exactly as the PyTorch policy does."""

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import trpo
from trpo.api import Agent
from trpo.export import export_actor, run_exported
from policies import OBS_DIM, tiny_policy

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("onnxruntime", reason="the export extra (pip install -e '.[export]') is not installed")

SPACES = {
    # bounds tight enough that the clipping is exercised; starts that the offset must add
    "gaussian": gym.spaces.Box(-0.2, 0.3, (2,)),
    "categorical": gym.spaces.Discrete(4, start=2),
    "multi_categorical": gym.spaces.MultiDiscrete([2, 4, 3], start=[1, 0, -1]),
    "bernoulli": gym.spaces.MultiBinary(3),
}


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", list(SPACES))
def test_an_exported_actor_gives_the_policys_actions(tmp_path, kind, format):
    policy = tiny_policy(kind, normalize=True).float().eval()
    space = SPACES[kind]
    path = export_actor(policy, space, tmp_path / f"actor.{format}", format)
    obs = np.random.default_rng(0).normal(1.0, 3.0, (37, OBS_DIM)).astype(np.float32)  # not the export's batch size
    expected = Agent(policy, None, space).predict(obs)
    exported = run_exported(path, obs)
    assert exported.shape == expected.shape
    if kind == "gaussian":
        np.testing.assert_allclose(exported, expected, rtol=0, atol=1e-5)
        assert (exported == 0.3).any() and (exported == -0.2).any() and ((exported > -0.2) & (exported < 0.3)).any()
    else:
        np.testing.assert_array_equal(exported, expected)
        assert len(np.unique(exported)) > 1


def test_a_bad_format_is_rejected():
    with pytest.raises(ValueError, match="format='tflite' is invalid: choose one of onnx, torchscript"):
        export_actor(tiny_policy("gaussian").float(), SPACES["gaussian"], "actor.tflite", "tflite")


def export_cli(*args):
    return subprocess.run([sys.executable, "-m", "trpo.export", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_the_export_command_writes_a_run_and_a_compressed_run(tmp_path):
    trpo.train("Pendulum-v1", ["debug=smoke"], run_dir=tmp_path)
    compressed = subprocess.run([sys.executable, "-m", "trpo.compress", str(tmp_path), "method=gptq", "bits=3",
                                 "calibration_steps=256"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert compressed.returncode == 0, compressed.stderr
    env = gym.make("Pendulum-v1")
    obs = np.stack([env.reset(seed=seed)[0] for seed in range(50)]).astype(np.float32)
    for run_dir in (tmp_path, tmp_path / "compressed" / "gptq-3bit"):
        result = export_cli(run_dir, "--format", "onnx")
        assert result.returncode == 0, result.stderr
        assert "largest action difference from PyTorch" in result.stdout
        np.testing.assert_allclose(run_exported(run_dir / "actor.onnx", obs), trpo.load(run_dir).predict(obs),
                                   rtol=0, atol=1e-5)
    original, quantized = (run_exported(d / "actor.onnx", obs) for d in (tmp_path, tmp_path / "compressed/gptq-3bit"))
    assert not np.allclose(original, quantized)  # the compressed weights were exported, not the original's
    scripted = export_cli(tmp_path, "--format", "torchscript", "--out", tmp_path / "actor.pt")
    assert scripted.returncode == 0, scripted.stderr
    with torch.no_grad():
        np.testing.assert_array_equal(run_exported(tmp_path / "actor.pt", obs), trpo.load(tmp_path).predict(obs))


def test_the_export_command_rejects_bad_input_in_one_line(tmp_path):
    result = export_cli(tmp_path, "--format", "tflite")
    assert result.returncode != 0 and "invalid choice: 'tflite' (choose from 'onnx', 'torchscript')" in result.stderr
    missing = export_cli(tmp_path / "nowhere", "--format", "onnx")
    assert missing.returncode != 0 and missing.stderr.strip().splitlines()[-1].startswith("error:")
