"""Curvature diagnostics of a policy update: the Fisher's top spectrum, trace and conditioning, and
how the gradient, the natural step and conjugate gradient's solve sit in it."""

import torch
from torch import Tensor

from trpo.estimators import MatVec, block_lanczos, hutchinson_trace


def curvature_diagnostics(damped_matvec: MatVec, grad: Tensor, step: Tensor, damped_step: Tensor, damping: float,
                          top_k: int, iters: int, trace_samples: int, trace_method: str,
                          generator: torch.Generator) -> dict[str, Tensor]:
    """Metrics from the update's own operator, (F + damping I) v, on its own batch.

    grad: the surrogate's gradient g; step: CG's solution x of (F + damping I) x = g; damped_step:
    (F + damping I) x, which the update computes anyway. Eigenvalues, trace and effective rank are of F;
    the condition number is of the damped F that CG solves with, its lambda_min the smallest Ritz value
    (an upper bound on lambda_min, so the condition number is a lower bound on the true one).
    `curvature/density_nodes` and `curvature/density_weights` are the Lanczos quadrature of F's
    spectral density from the block's start vectors (`trpo.estimators.spectral_density`).
    """
    dim = grad.numel()
    fisher = lambda v: damped_matvec(v) - damping * v  # noqa: E731
    ritz = block_lanczos(fisher, dim, top_k, iters, generator)
    top = ritz.values.flip(0)[:top_k]
    top_vectors = ritz.vectors[:, -top_k:]
    trace = hutchinson_trace(fisher, dim, trace_samples, generator, method=trace_method)
    grad, step = grad.to(torch.float64), step.to(torch.float64)
    metrics = {f"curvature/eigenvalue_{i + 1}": value for i, value in enumerate(top)}
    return metrics | {
        "curvature/eigenvalue_min": ritz.values[0],
        "curvature/trace": trace,
        "curvature/condition": (top[0] + damping) / (ritz.values[0] + damping),
        "curvature/effective_rank": trace / top[0],
        "curvature/grad_in_top_k": (top_vectors.T @ grad).square().sum() / grad.square().sum(),
        "curvature/step_in_top_k": (top_vectors.T @ step).square().sum() / step.square().sum(),
        "curvature/cg_relative_residual": (damped_step.to(torch.float64) - grad).norm() / grad.norm(),
        "curvature/density_nodes": ritz.values,
        "curvature/density_weights": ritz.start_weights.mean(0),
    }
