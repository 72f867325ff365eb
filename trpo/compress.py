"""Hessian-aware compression of one linear layer: weight W [out, in], Hessian H [in, in] of the layer's
inputs (H = 2 X X^T / n over the states a policy visits), each function returning the dequantized or
pruned weight in float.

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

import math

import torch
from torch import Tensor

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


def obs_prune(weight: Tensor, hessian: Tensor, sparsity: float, damp: float = 0.01) -> Tensor:
    """OBS pruning row-wise (SparseGPT with one block of all columns): the round(sparsity * numel) weights
    of least saliency w^2 / [U]_qq^2 (U the Cholesky factor of H^-1) are removed column by column, each
    removal's error compensated on the row's later columns."""
    _check_sparsity(sparsity)
    hessian, work = _damped(hessian.to(torch.float64), weight.to(torch.float64), damp)
    factor = _inverse_cholesky(hessian)
    saliency = work.square() / factor.diagonal().square()
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
