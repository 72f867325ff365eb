"""Curvature diagnostics in training, `trpo.spectrum` and the report's curvature panels."""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector

from policies import num_params, tiny_batch, tiny_policy
from reference import dense_fisher
from test_train import ROOT, composed, read_metrics
from trpo.config import AlgoConfig, DiagnosticsConfig
from trpo.diagnostics import curvature_diagnostics
from trpo.report import load_run, log_density
from trpo.spectrum import fisher_spectrum, half_trace_count
from trpo.train import train
from trpo.update import trpo_step


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_the_update_diagnoses_the_fisher_of_its_own_batch_before_the_step(kind):
    policy = tiny_policy(kind)
    batch = tiny_batch(policy)
    before = parameters_to_vector(policy.parameters()).detach().clone()
    exact = torch.linalg.eigvalsh(dense_fisher(policy, batch[0])).flip(0)
    dim = num_params(policy)
    diagnose = functools.partial(curvature_diagnostics, damping=0.1, top_k=3, iters=dim, trace_samples=1,
                                 trace_method="hutchinson", generator=torch.Generator().manual_seed(0))
    stats = trpo_step(policy, *batch, AlgoConfig(damping=0.1, fisher_method="mlp"), diagnose=diagnose)
    assert stats["policy/accepted"] == 1
    assert not torch.allclose(parameters_to_vector(policy.parameters()), before)  # the step moved theta
    torch.testing.assert_close(torch.stack([stats[f"curvature/eigenvalue_{i}"] for i in (1, 2, 3)]), exact[:3])
    torch.testing.assert_close(stats["curvature/condition"], (exact[0] + 0.1) / (exact[-1] + 0.1))


def test_diagnostics_every_k_iterations_move_no_random_stream(tmp_path):
    def run(every: int):
        config = composed("Pendulum-v1", "debug=smoke", "total_steps=640", f"diagnostics.every={every}",
                          "diagnostics.top_k=2", "diagnostics.iters=8", "diagnostics.trace_samples=4")
        train(config, tmp_path / str(every))
        return read_metrics(tmp_path / str(every))

    plain, diagnosed = run(0), run(2)
    assert [row["iteration"] for row in diagnosed if "curvature/trace" in row] == [1, 3, 5]
    assert not any(key.startswith("curvature/") for row in plain for key in row)
    for a, b in zip(plain, diagnosed):
        assert a["policy/kl"] == b["policy/kl"] and a["value/loss"] == b["value/loss"]
    row = diagnosed[0]
    assert row["curvature/eigenvalue_1"] >= row["curvature/eigenvalue_2"] > 0
    assert len(row["curvature/density_nodes"]) == len(row["curvature/density_weights"]) == 8
    run_ = load_run(tmp_path / "2" / "metrics.jsonl")
    assert run_.curvature.eigenvalues.shape == (3, 2)
    np.testing.assert_array_equal(run_.curvature.steps, [r["global_step"] for r in diagnosed if "curvature/trace" in r])


@pytest.mark.parametrize("key, value, allowed", [
    ("every", -1, r"must be an integer >= 0 \(0: off\)"),
    ("top_k", 0, "must be an integer >= 1"),
    ("iters", 3, r"must be an integer >= diagnostics.top_k \(5\)"),
    ("trace_method", "xtrace", "choose one of"),
])
def test_bad_diagnostics_settings_fail_naming_the_value(key, value, allowed):
    with pytest.raises(ValueError, match=rf"^diagnostics\.{key}={value!r} is invalid: {allowed}"):
        DiagnosticsConfig(**{key: value})


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_the_spectrum_is_the_dense_fishers_and_its_estimates_agree(kind):
    policy = tiny_policy(kind).float()
    obs = tiny_batch(policy.double())[0].float()
    exact = torch.linalg.eigvalsh(dense_fisher(policy.double(), obs.double())).flip(0).numpy()
    dense = fisher_spectrum(policy, obs, damping=0.1)
    np.testing.assert_allclose(dense["eigenvalues"], exact, rtol=1e-8, atol=1e-10)
    assert dense["half_trace_count"] == 1 + next(i for i in range(len(exact)) if exact[:i + 1].sum() >= exact.sum() / 2)
    assert dense["condition_damped"] == pytest.approx((exact[0] + 0.1) / (exact[-1] + 0.1))
    estimated = fisher_spectrum(policy, obs, damping=0.1, dense_limit=0, generator=torch.Generator().manual_seed(0))
    top = min(20, len(exact))
    np.testing.assert_allclose(estimated["top_eigenvalues"][:top], exact[:top], rtol=1e-6)


def test_half_trace_count_by_a_plain_loop():
    values = np.array([5.0, 3.0, 1.0, 1.0])
    assert half_trace_count(values) == 1  # 5 of 10
    assert half_trace_count(np.array([4.0, 3.0, 2.0, 1.0])) == 2  # 4 < 5, 7 >= 5


def test_spectrum_command_writes_json_and_png_of_a_run(tmp_path):
    train(composed("CartPole-v1", "debug=smoke", "model.hidden=[16]"), tmp_path)
    env = dict(os.environ, WANDB_MODE="disabled")
    result = subprocess.run([sys.executable, "-m", "trpo.spectrum", str(tmp_path), "steps=100"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    spectrum = json.loads((tmp_path / "spectrum.json").read_text())
    assert spectrum["states"] == 100 and spectrum["global_step"] == 256 and spectrum["env_id"] == "CartPole-v1"
    assert len(spectrum["eigenvalues"]) == spectrum["dim"] == 4 * 16 + 16 + 16 * 2 + 2
    assert (tmp_path / "spectrum.png").stat().st_size > 10_000
    bad = subprocess.run([sys.executable, "-m", "trpo.spectrum", str(tmp_path), "steps=0"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and bad.stderr.strip() == "steps='0' is invalid: must be an integer >= 1"


def test_the_reports_density_is_a_density_in_log10_lambda(tmp_path):
    from trpo.report import Curvature, Run

    nodes, weights = np.array([1e-3, 1.0, 100.0]), np.array([0.5, 0.3, 0.2])
    curvature = Curvature(np.array([0.0, 10.0]), np.ones((2, 1)), np.ones(2), [(nodes, weights), (nodes, weights)])
    runs = [Run("E", "trpo", {}, np.zeros(1), np.zeros(1), 0.0, 0.0, None, curvature)]
    grid = np.linspace(-5, 4, 3000)
    step, density = log_density(runs, 1.0, grid)
    assert step == 10.0
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-6)
    assert np.trapezoid(density[grid < -1], grid[grid < -1]) == pytest.approx(0.5, abs=1e-3)
