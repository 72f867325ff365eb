"""Layer compression: GPTQ and incoherence against rounding, OBS against magnitude, on correlated Hessians."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import trpo
from policies import OBS_DIM, tiny_policy
from trpo import GaussianPolicy
from trpo.compress import (compress_policy, gptq_quantize, incoherent_quantize, layer_sparsities, magnitude_prune,
                           obs_prune, rtn_quantize)

ROOT = Path(__file__).resolve().parents[1]


def layer(out: int, inputs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random weight and the Hessian 2 X X^T / n of inputs X with a few dominant, correlated directions."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, inputs, generator=generator, dtype=torch.float64)
    directions = torch.randn(inputs, 3, generator=generator, dtype=torch.float64)
    samples = (torch.randn(512, 3, generator=generator, dtype=torch.float64) * torch.tensor([10.0, 5.0, 3.0])
               @ directions.T + 0.1 * torch.randn(512, inputs, generator=generator, dtype=torch.float64))
    return weight, 2 * samples.T @ samples / samples.shape[0]


def proxy_loss(weight, compressed, hessian) -> float:
    delta = weight - compressed
    return float(torch.trace(delta @ hessian @ delta.T))


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("group_size", [None, 16])
def test_gptq_beats_rounding_on_a_correlated_hessian(bits, group_size):
    weight, hessian = layer(24, 64)
    rtn = rtn_quantize(weight, bits, group_size)
    for act_order in (False, True):
        gptq = gptq_quantize(weight, hessian, bits, group_size, act_order=act_order)
        assert proxy_loss(weight, gptq, hessian) < 0.5 * proxy_loss(weight, rtn, hessian)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_each_row_or_group_takes_at_most_two_to_the_bits_values(bits):
    weight, hessian = layer(12, 48, seed=1)
    for group_size in (None, 16):
        for quantized in (rtn_quantize(weight, bits, group_size), gptq_quantize(weight, hessian, bits, group_size)):
            for group in quantized.split(group_size or weight.shape[1], dim=1):
                assert max(len(torch.unique(row)) for row in group) <= 2 ** bits
    assert len(torch.unique(rtn_quantize(weight, 8)[0])) > 16  # 8 bits really uses its grid


def test_rounding_error_is_within_half_a_step():
    weight, _ = layer(10, 30, seed=2)
    quantized = rtn_quantize(weight, 4)
    step = (weight.max(1, keepdim=True).values - weight.min(1, keepdim=True).values) / 15
    assert ((weight - quantized).abs() <= step / 2 + 1e-12).all()


@pytest.mark.parametrize("shape", [(24, 64), (17, 11), (3, 376), (64, 5)])
def test_incoherent_quantization_takes_any_shape_and_beats_rounding(shape):
    weight, hessian = layer(*shape, seed=3)
    generator = torch.Generator().manual_seed(0)
    quantized = incoherent_quantize(weight, hessian, 3, generator=generator)
    assert quantized.shape == weight.shape and quantized.dtype == weight.dtype
    assert proxy_loss(weight, quantized, hessian) < proxy_loss(weight, rtn_quantize(weight, 3), hessian)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.75, 0.9])
def test_both_pruners_hit_the_sparsity(sparsity):
    weight, hessian = layer(20, 40, seed=4)
    for pruned in (magnitude_prune(weight, sparsity), obs_prune(weight, hessian, sparsity)):
        assert (pruned == 0).sum().item() == round(sparsity * weight.numel())


def test_obs_with_an_identity_hessian_keeps_the_kept_weights_and_prunes_by_magnitude():
    weight, _ = layer(20, 40, seed=5)
    pruned = obs_prune(weight, torch.eye(40, dtype=torch.float64), 0.75)
    kept = pruned != 0
    torch.testing.assert_close(pruned[kept], weight[kept], rtol=1e-12, atol=1e-12)
    assert torch.equal(kept, magnitude_prune(weight, 0.75) != 0)


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_obs_loses_less_than_magnitude_on_a_correlated_hessian(sparsity):
    weight, hessian = layer(20, 40, seed=6)
    assert (proxy_loss(weight, obs_prune(weight, hessian, sparsity), hessian)
            < 0.5 * proxy_loss(weight, magnitude_prune(weight, sparsity), hessian))


def test_obs_row_weights_move_the_budget_off_the_rows_that_count():
    weight, hessian = layer(10, 30, seed=7)
    rows = torch.ones(10, dtype=torch.float64)
    rows[3] = 1e6
    pruned = obs_prune(weight, hessian, 0.5, row_weights=rows)
    assert (pruned[3] != 0).all() and (pruned == 0).sum().item() == 150
    assert (obs_prune(weight, hessian, 0.5)[3] == 0).any()  # without the weight row 3 loses some


def states_for(policy, count=300, seed=2):
    return torch.randn(count, OBS_DIM, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


@pytest.mark.parametrize("method", ["gptq", "incoherent", "obs"])
def test_hessian_aware_methods_leave_no_mean_error_in_the_layer_output(method):
    torch.manual_seed(0)
    policy = GaussianPolicy(OBS_DIM, 2, hidden=(), log_std_init=-1.0)  # one layer: its output is the mean
    with torch.no_grad():
        policy.mean[0].weight.normal_()
    states = states_for(policy)
    compressed = compress_policy(policy, states, method, 2, 0.6, None, seed=0)
    with torch.no_grad():
        error = compressed(states)[0] - policy(states)[0]
    assert error.abs().mean() > 1e-3  # it did compress
    torch.testing.assert_close(error.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    naive = compress_policy(policy, states, "rtn" if method != "obs" else "magnitude", 2, 0.6, None, seed=0)
    with torch.no_grad():
        assert (naive(states)[0] - policy(states)[0]).mean(0).abs().max() > 1e-3  # the baselines keep their bias


def test_the_global_budget_is_exact_and_in_the_kls_units():
    policy = tiny_policy("gaussian", normalize=True).float()
    states = states_for(policy)
    shares = layer_sparsities(policy, states, 0.6)
    sizes = [m.weight.numel() for m in policy.mean if isinstance(m, torch.nn.Linear)]
    assert round(sum(s * n for s, n in zip(shares, sizes))) == round(0.6 * sum(sizes))
    assert len(set(shares)) > 1  # shared by saliency, not uniformly
    with torch.no_grad():
        policy.log_std.sub_(1.5)  # every output's curvature x e^3: the same relative costs
    assert layer_sparsities(policy, states, 0.6) == shares
    states[:, 1:] = 0.0  # two of three inputs constant: the first layer's weights on them cost nothing
    unnormalized = tiny_policy("gaussian").float()
    assert layer_sparsities(unnormalized, states, 0.4) == [10 / 15, 0.0]  # exactly those 10 of 25 weights go


def test_bad_settings_fail_naming_the_value():
    weight, hessian = layer(4, 8)
    with pytest.raises(ValueError, match="bits=1 is invalid: must be an integer from 2 to 8"):
        gptq_quantize(weight, hessian, 1)
    with pytest.raises(ValueError, match="bits=9 is invalid"):
        rtn_quantize(weight, 9)
    with pytest.raises(ValueError, match=r"sparsity=1.0 is invalid: must be in \[0, 1\)"):
        obs_prune(weight, hessian, 1.0)


def compress_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "trpo.compress", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_the_compress_command_writes_a_loadable_policy_and_its_report(tmp_path):
    trpo.train("Pendulum-v1", ["debug=smoke"], run_dir=tmp_path)
    result = compress_cli(tmp_path, "method=gptq", "bits=3", "calibration_steps=256")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "compressed" / "gptq-3bit"
    report = json.loads((out / "compression.json").read_text())
    assert report["method"] == "gptq" and report["bits"] == 3 and report["bytes_after"] < report["bytes_before"] / 4
    assert report["kl_original_compressed"] > 0
    agent, original = trpo.load(out), trpo.load(tmp_path)
    for name, module in agent.policy.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert max(len(torch.unique(row)) for row in module.weight) <= 8, name
            assert not torch.equal(module.weight, dict(original.policy.named_modules())[name].weight)
    evaluated = subprocess.run([sys.executable, "-m", "trpo.evaluate", str(out), "episodes=2"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    assert evaluated.returncode == 0 and "Pendulum-v1: return" in evaluated.stdout
    pruned = compress_cli(tmp_path, "method=obs", "sparsity=0.5", "calibration_steps=256")
    assert pruned.returncode == 0, pruned.stderr
    weights = [m.weight for m in trpo.load(tmp_path / "compressed" / "obs-sparsity0.5").policy.modules()
               if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == pytest.approx(0.5 * sum(w.numel() for w in weights), abs=2)  # one budget shared by the layers
    shares = json.loads((tmp_path / "compressed" / "obs-sparsity0.5" / "compression.json").read_text())["layer_sparsity"]
    assert list(shares.values()) == [float((w == 0).float().mean()) for w in weights]


@pytest.mark.parametrize("args, message", [
    (["method=gptq", "bits=9"], "bits=9 is invalid: must be an integer from 2 to 8"),
    (["method=gptq", "bits=1"], "bits=1 is invalid: must be an integer from 2 to 8"),
    (["method=obs", "sparsity=1"], "sparsity=1.0 is invalid: must be in [0, 1)"),
    (["method=zip"], "method='zip' is invalid: choose one of rtn, gptq, incoherent, magnitude, obs"),
])
def test_the_compress_command_rejects_bad_settings_in_one_line(tmp_path, args, message):
    result = compress_cli(tmp_path, *args, timeout=60)
    assert result.returncode != 0 and message in result.stderr


def test_the_compress_command_names_a_run_without_a_checkpoint(tmp_path):
    trpo.train("Pendulum-v1", ["debug=smoke"], run_dir=tmp_path)
    for leftover in [*(tmp_path / "checkpoints").iterdir(), tmp_path / "policy.pt"]:
        leftover.unlink()
    result = compress_cli(tmp_path, "method=rtn", timeout=60)
    assert result.returncode != 0 and "error: checkpoint" in result.stderr and "cannot be loaded" in result.stderr
