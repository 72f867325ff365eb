"""Hessian-aware compression of a trained policy:
`python -m trpo.compress <run dir> method=rtn|gptq|incoherent|magnitude|obs [bits=4] [sparsity=0.9]
[group_size=<int>] [calibration_steps=<int>]`.

The layer functions take one linear layer: weight W [out, in], Hessian H [in, in] of the layer's
inputs (H = 2 X X^T / n over the states a policy visits), each returning the dequantized or pruned
weight in float.

Quantizers use an asymmetric min-max grid per output channel, or per group of `group_size` input
columns. The proxy loss they reduce is tr((W - Q) H (W - Q)^T).
- rtn_quantize: round to nearest.
- gptq_quantize: GPTQ (Frantar et al. 2023): columns in order, each rounding error spread over the
  columns not yet quantized through the Cholesky factor of H^-1, in blocks with lazy updates.
- incoherent_quantize: QuIP#-style incoherence (Tseng et al. 2024): random signs and Hadamard
  rotations on both sides (zero-padded to powers of two), GPTQ in the rotated basis, rotations undone.
- magnitude_prune: the smallest |w| of the layer set to zero.
- obs_prune: OBS saliency w^2 / [H^-1]_qq with the compensating update, row-wise as SparseGPT does
  (Frantar and Alistarh 2023).
"""

import copy
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor

from trpo.api import Agent
from trpo.config import Config
from trpo.curvature import mlp_pass
from trpo.evaluate import evaluate_policy, load_run
from trpo.kfac import layer_factors
from trpo.policy import Policy
from trpo.spectrum import fresh_states

BLOCK = 128  # GPTQ's lazy-update block of columns


def _grid(weight: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Asymmetric min-max grid per row of weight [rows, cols]: (scale, zero point) [rows, 1], with 0 on the grid."""
    low = weight.min(1, keepdim=True).values.clamp(max=0)
    high = weight.max(1, keepdim=True).values.clamp(min=0)
    scale = (high - low) / (2 ** bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, torch.round(-low / scale)


def _round(weight: Tensor, scale: Tensor, zero: Tensor, bits: int) -> Tensor:
    return scale * (torch.clamp(torch.round(weight / scale) + zero, 0, 2 ** bits - 1) - zero)


def _check_bits(bits: int) -> None:
    if not 2 <= bits <= 8:
        raise ValueError(f"bits={bits} is invalid: must be an integer from 2 to 8")


def rtn_quantize(weight: Tensor, bits: int, group_size: int | None = None) -> Tensor:
    """Round to nearest on a min-max grid per output channel, or per group of group_size columns."""
    _check_bits(bits)
    size = group_size or weight.shape[1]
    pieces = []
    for group in weight.split(size, dim=1):
        pieces.append(_round(group, *_grid(group, bits), bits))
    return torch.cat(pieces, 1)


def _damped(hessian: Tensor, weight: Tensor, damp: float) -> tuple[Tensor, Tensor]:
    """H + damp * mean(diag H) I, with dead inputs (H_ii = 0) given H_ii = 1 and their weights zeroed."""
    hessian = hessian.clone()
    weight = weight.clone()
    dead = hessian.diagonal() == 0
    hessian[dead, dead] = 1.0
    weight[:, dead] = 0.0
    hessian.diagonal().add_(damp * hessian.diagonal().mean())
    return hessian, weight


def _inverse_cholesky(hessian: Tensor) -> Tensor:
    """The upper Cholesky factor U of H^-1 (H^-1 = U^T U), whose rows drive GPTQ's and SparseGPT's updates."""
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)


def gptq_quantize(weight: Tensor, hessian: Tensor, bits: int, group_size: int | None = None,
                  act_order: bool = False, damp: float = 0.01) -> Tensor:
    """GPTQ: quantize columns one at a time, moving each one's error onto the columns still to come.

    act_order: columns in decreasing order of H_ii (the most sensitive first).
    damp: relative Tikhonov damping of H, for a well-posed inverse.
    """
    _check_bits(bits)
    hessian, work = _damped(hessian.to(torch.float64), weight.to(torch.float64), damp)
    order = torch.argsort(hessian.diagonal(), descending=True) if act_order else torch.arange(work.shape[1])
    work, hessian = work[:, order], hessian[order][:, order]
    factor = _inverse_cholesky(hessian)
    scale, zero = _grid(work, bits)  # per output channel, from the weights as they are
    columns = work.shape[1]
    width = group_size or BLOCK  # with groups a block is a group: its grid comes from its updated weights
    for start in range(0, columns, width):
        end = min(start + width, columns)
        block = work[:, start:end].clone()
        if group_size is not None:
            scale, zero = _grid(block, bits)
        errors = torch.zeros_like(block)
        for i in range(end - start):
            column = start + i
            quantized = _round(block[:, i:i + 1], scale, zero, bits)
            error = (block[:, i:i + 1] - quantized) / factor[column, column]
            block[:, i:] -= error @ factor[column:column + 1, column:end]
            block[:, i] = quantized[:, 0]
            errors[:, i] = error[:, 0]
        work[:, start:end] = block
        work[:, end:] -= errors @ factor[start:end, end:]  # the lazy update of every later block
    result = torch.empty_like(work)
    result[:, order] = work
    return result.to(weight.dtype)


def hadamard(n: int, dtype=torch.float64) -> Tensor:
    """The n x n Sylvester Hadamard matrix scaled to be orthogonal (n a power of two)."""
    matrix = torch.ones(1, 1, dtype=dtype)
    while matrix.shape[0] < n:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)], 0)
    return matrix / math.sqrt(n)


def incoherent_quantize(weight: Tensor, hessian: Tensor, bits: int, group_size: int | None = None,
                        act_order: bool = False, damp: float = 0.01,
                        generator: torch.Generator | None = None) -> Tensor:
    """GPTQ in a random incoherent basis: W' = U W V^T and H' = V H V^T with U, V random-sign Hadamard
    rotations (rows and columns zero-padded to powers of two), then Q = U^T Q' V, cropped back."""
    _check_bits(bits)
    rows, columns = weight.shape
    padded_rows, padded_columns = (2 ** math.ceil(math.log2(n)) for n in (rows, columns))
    signs = [torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2 - 1
             for n in (padded_rows, padded_columns)]
    left = hadamard(padded_rows) * signs[0]
    right = hadamard(padded_columns) * signs[1]
    padded = torch.zeros(padded_rows, padded_columns, dtype=torch.float64)
    padded[:rows, :columns] = weight.to(torch.float64)
    padded_hessian = torch.zeros(padded_columns, padded_columns, dtype=torch.float64)
    padded_hessian[:columns, :columns] = hessian.to(torch.float64)
    # padded inputs are always zero: any positive curvature there keeps H' invertible and costs nothing
    padded_hessian.diagonal()[columns:] = hessian.diagonal().mean().to(torch.float64)
    rotated = gptq_quantize(left @ padded @ right.T, right @ padded_hessian @ right.T, bits, group_size, act_order,
                            damp)
    return (left.T @ rotated @ right)[:rows, :columns].to(weight.dtype)


def _check_sparsity(sparsity: float) -> None:
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity} is invalid: must be in [0, 1)")


def magnitude_prune(weight: Tensor, sparsity: float) -> Tensor:
    """The round(sparsity * numel) weights of smallest magnitude set to zero."""
    _check_sparsity(sparsity)
    count = round(sparsity * weight.numel())
    pruned = weight.clone().reshape(-1)
    pruned[torch.argsort(pruned.abs())[:count]] = 0
    return pruned.reshape(weight.shape)


def obs_prune(weight: Tensor, hessian: Tensor, sparsity: float, damp: float = 0.01,
              row_weights: Tensor | None = None) -> Tensor:
    """OBS pruning row-wise (SparseGPT with one block of all columns): the round(sparsity * numel) weights
    of least saliency g_i w^2 / [U]_qq^2 (U the Cholesky factor of H^-1, g_i the row's weight, default 1)
    are removed column by column, each removal's error compensated on the row's later columns.

    row_weights [out]: how much an error in each output counts (the diagonal of the layer's output-side
    curvature), which decides how the budget is shared between rows; rows are compensated alike."""
    _check_sparsity(sparsity)
    hessian, work = _damped(hessian.to(torch.float64), weight.to(torch.float64), damp)
    factor = _inverse_cholesky(hessian)
    saliency = work.square() / factor.diagonal().square()
    if row_weights is not None:
        saliency = saliency * row_weights.to(torch.float64)[:, None]
    count = round(sparsity * work.numel())
    mask = torch.zeros(work.numel(), dtype=torch.bool)
    mask[torch.argsort(saliency.reshape(-1))[:count]] = True
    mask = mask.reshape(work.shape)
    for column in range(work.shape[1]):
        pruned = torch.where(mask[:, column], work[:, column], torch.zeros_like(work[:, column]))
        error = pruned / factor[column, column]
        work[:, column:] -= error[:, None] * factor[column:column + 1, column:]
        work[mask[:, column], column] = 0.0
    return work.to(weight.dtype)


METHODS = ("rtn", "gptq", "incoherent", "magnitude", "obs")
QUANTIZERS = ("rtn", "gptq", "incoherent")
CALIBRATION_SEED, HELD_OUT_SEED = 3_000_000, 4_000_000  # rollout seeds no training, evaluation or spectrum uses


def compress_layer(method: str, weight: Tensor, hessian: Tensor, bits: int, sparsity: float, group_size: int | None,
                   generator: torch.Generator, row_weights: Tensor | None = None) -> Tensor:
    if method == "rtn":
        return rtn_quantize(weight, bits, group_size)
    if method == "gptq":
        return gptq_quantize(weight, hessian, bits, group_size)
    if method == "incoherent":
        return incoherent_quantize(weight, hessian, bits, group_size, generator=generator)
    if method == "magnitude":
        return magnitude_prune(weight, sparsity)
    return obs_prune(weight, hessian, sparsity, row_weights=row_weights)


@dataclass(frozen=True)
class LayerStatistics:
    """What compressing one linear layer needs from the states: its input mean, the centered Hessian
    2 Cov(x) (the bias absorbs any mean error, so only the centered part costs) and the diagonal of its
    output-side curvature g = diag E[J^T M J] (K-FAC's G: how much each output moves the policy's KL)."""

    layer: torch.nn.Linear
    input_mean: Tensor
    hessian: Tensor
    output_curvature: Tensor


def layer_statistics(policy: Policy, states: Tensor) -> list[LayerStatistics]:
    """Each linear layer of the policy with its statistics over states (computed in float64), first layer first."""
    linears = list(mlp_pass(policy, states[:1])[0].values())
    statistics = []
    for layer, factors in zip(linears, layer_factors(copy.deepcopy(policy).double(), states.double())):
        x = factors.inputs[:, :-1]
        centered = x - x.mean(0)
        statistics.append(LayerStatistics(layer, x.mean(0), 2 * centered.T @ centered / x.shape[0],
                                          factors.per_state_g_diagonal().mean(0)))
    return statistics


def layer_sparsities(policy: Policy, states: Tensor, sparsity: float, damp: float = 0.01) -> list[float]:
    """Each layer's share of one global budget: the fraction `sparsity` of all MLP weights with the least
    estimated KL cost g_i w_ij^2 / [U]_jj^2 (obs_prune's saliency in the KL's units, comparable across layers)."""
    saliencies = []
    for stats in layer_statistics(policy, states):
        hessian, weight = _damped(stats.hessian, stats.layer.weight.detach().double(), damp)
        factor = _inverse_cholesky(hessian)
        saliencies.append((stats.output_curvature[:, None] * weight.square() / factor.diagonal().square()).reshape(-1))
    ranked = torch.cat(saliencies).sort().values
    count = round(sparsity * ranked.numel())
    if count == 0:
        return [0.0] * len(saliencies)
    threshold = ranked[count - 1]
    counts = [int((s <= threshold).sum()) for s in saliencies]
    counts[-1] -= sum(counts) - count  # ties at the threshold: the total stays exact
    return [c / s.numel() for c, s in zip(counts, saliencies)]


def compress_policy(policy: Policy, calibration: Tensor, method: str, bits: int, sparsity: float,
                    group_size: int | None, seed: int) -> Policy:
    """A copy with every linear layer of the policy's MLP compressed, first to last, each layer's Hessian
    from its inputs in the already-compressed network (as GPTQ does); log-std and normalizer kept.

    rtn and magnitude are the naive baselines: each layer alone, biases kept. The Hessian-aware methods
    see the centered Hessian, and the bias then takes the mean error: b += (W - Q) E[x]. obs shares one
    global sparsity budget between the layers by KL saliency (`layer_sparsities`)."""
    compressed = copy.deepcopy(policy)
    generator = torch.Generator().manual_seed(seed)
    layers = len(mlp_pass(compressed, calibration[:1])[0])
    shares = layer_sparsities(compressed, calibration, sparsity) if method == "obs" else [sparsity] * layers
    for index in range(layers):
        stats = layer_statistics(compressed, calibration)[index]
        layer, weight = stats.layer, stats.layer.weight.detach().double()
        result = compress_layer(method, weight, stats.hessian, bits, shares[index], group_size, generator,
                                stats.output_curvature)
        with torch.no_grad():
            layer.weight.copy_(result.to(layer.weight.dtype))
            if method in ("gptq", "incoherent", "obs"):
                layer.bias.add_(((weight - result) @ stats.input_mean).to(layer.bias.dtype))
    return compressed


def packed_bytes(policy: Policy, method: str | None, bits: int, group_size: int | None) -> int:
    """Bytes of the policy in a packed format: float32 everywhere (method None); quantized MLP weights as
    bit-packed codes with a float16 scale and a uint8 zero point per row (or group); pruned ones as CSR
    (float32 values, uint16 column indices, int32 row pointers). Biases, log-std and normalizer float32."""
    total = 0
    weights = {f"{name}.weight" for name, module in policy.named_modules() if isinstance(module, torch.nn.Linear)}
    for name, tensor in policy.state_dict().items():
        if name not in weights or method is None:
            total += 4 * tensor.numel() if tensor.dim() else 4
            continue
        rows, columns = tensor.shape
        if method in QUANTIZERS:
            groups = rows * math.ceil(columns / (group_size or columns))
            total += math.ceil(bits * tensor.numel() / 8) + 3 * groups
        else:
            kept = int((tensor != 0).sum())
            total += 6 * kept + 4 * (rows + 1)
    return total


def mean_kl(policy: Policy, other: Policy, obs: Tensor) -> float:
    """Mean KL(policy || other) over obs."""
    with torch.no_grad():
        return float(policy.kl(policy(obs), other(obs)).mean())


def parse(argv: list[str]) -> tuple[Path, dict]:
    """The run directory and the options, checked: one line naming a bad value and what is allowed."""
    usage = ("usage: python -m trpo.compress <run dir> method=rtn|gptq|incoherent|magnitude|obs [bits=4] "
             "[sparsity=0.9] [group_size=<int>] [calibration_steps=<int>]")
    if not argv or "=" in argv[0]:
        sys.exit(usage)
    options = dict(arg.split("=", 1) for arg in argv[1:] if "=" in arg)
    allowed = {"method", "bits", "sparsity", "group_size", "calibration_steps"}
    unknown = set(options) - allowed or (set(argv[1:]) - {f"{k}={v}" for k, v in options.items()})
    if unknown:
        sys.exit(f"unknown option(s) {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")
    method = options.get("method")
    if method not in METHODS:
        sys.exit(f"method={method!r} is invalid: choose one of {', '.join(METHODS)}")
    parsed = {"method": method}
    for key, default in (("bits", "4"), ("group_size", None), ("calibration_steps", None)):
        value = options.get(key, default)
        if value is not None and not value.isdigit():
            sys.exit(f"{key}={value!r} is invalid: must be an integer")
        parsed[key] = None if value is None else int(value)
    if not 2 <= parsed["bits"] <= 8:
        sys.exit(f"bits={parsed['bits']} is invalid: must be an integer from 2 to 8")
    try:
        parsed["sparsity"] = float(options.get("sparsity", "0.9"))
    except ValueError:
        sys.exit(f"sparsity={options['sparsity']!r} is invalid: must be a number in [0, 1)")
    if not 0 <= parsed["sparsity"] < 1:
        sys.exit(f"sparsity={parsed['sparsity']} is invalid: must be in [0, 1)")
    for key in ("group_size", "calibration_steps"):
        if parsed[key] is not None and parsed[key] < 1:
            sys.exit(f"{key}={parsed[key]} is invalid: must be an integer >= 1")
    return Path(argv[0]), parsed


def setting_name(method: str, bits: int, sparsity: float, group_size: int | None) -> str:
    """The directory name of a setting: 4bit, 3bit-g16, sparsity0.75."""
    if method not in QUANTIZERS:
        return f"sparsity{sparsity:g}"
    return f"{bits}bit" + (f"-g{group_size}" if group_size else "")


def policy_states(config: Config, policy: Policy, steps: int) -> tuple[Tensor, Tensor]:
    """Calibration and held-out states, each from `steps` of the stochastic policy's own rollouts (seeded:
    the same states every time)."""
    states = []
    for offset in (CALIBRATION_SEED, HELD_OUT_SEED):
        with torch.random.fork_rng():
            torch.manual_seed(config.seed + offset)  # the actions' noise
            states.append(fresh_states(config.env_id, policy, steps, config.env.num_envs, config.seed + offset,
                                       config.env))
    return states[0], states[1]


def compression_report(config: Config, policy: Policy, compressed: Policy, held_out: Tensor, method: str, bits: int,
                       sparsity: float, group_size: int | None, calibration_states: int,
                       original_returns: np.ndarray) -> dict:
    """compression.json: the setting, packed bytes, KL on held-out states and both returns on the same episodes."""
    returns = evaluate_policy(config.env_id, compressed, config.eval.episodes, config.seed, config.env)
    return {
        "method": method, "bits": bits if method in QUANTIZERS else None,
        "sparsity": sparsity if method not in QUANTIZERS else None, "group_size": group_size,
        "calibration_states": calibration_states, "held_out_states": held_out.shape[0],
        "bytes_before": packed_bytes(policy, None, 32, None),
        "bytes_after": packed_bytes(compressed, method, bits, group_size),
        "kl_original_compressed": mean_kl(policy, compressed, held_out),
        "return_original": float(original_returns.mean()), "return_compressed": float(returns.mean()),
        "return_kept": float(returns.mean() / original_returns.mean()),
        "episodes": config.eval.episodes,
        "layer_sparsity": None if method in QUANTIZERS else {
            name: float((m.weight == 0).float().mean()) for name, m in mlp_pass(compressed, held_out[:1])[0].items()},
    }


def main(argv: list[str]) -> None:
    run_dir, options = parse(argv)
    try:
        config, policy, action_space = load_run(run_dir)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    method, bits, sparsity, group_size = (options[k] for k in ("method", "bits", "sparsity", "group_size"))
    steps = options["calibration_steps"] or config.steps_per_env * config.env.num_envs
    calibration, held_out = policy_states(config, policy, steps)
    compressed = compress_policy(policy, calibration, method, bits, sparsity, group_size, config.seed)
    out = run_dir / "compressed" / f"{method}-{setting_name(method, bits, sparsity, group_size)}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    Agent(compressed, config, action_space).save(out / "policy.pt")
    original_returns = evaluate_policy(config.env_id, policy, config.eval.episodes, config.seed, config.env)
    report = compression_report(config, policy, compressed, held_out, method, bits, sparsity, group_size, steps,
                                original_returns)
    (out / "compression.json").write_text(json.dumps(report, indent=1))
    print(f"{config.env_id} {out.name}: {report['bytes_before']} -> {report['bytes_after']} bytes, "
          f"KL {report['kl_original_compressed']:.3g}, return {report['return_original']:.1f} -> "
          f"{report['return_compressed']:.1f}; {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
