"""Iterative linear algebra on matrix-free operators."""

from typing import Callable

import torch
from torch import Tensor


def conjugate_gradient_with_residual(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """Solve A x = b for a symmetric positive definite A given only x -> A x, starting from x = 0.

    matvec: the product with A, a function of a vector shaped like b.
    b: the right-hand side, shape [n].
    iters: the number of iterations at most.
    residual_tol: stop once the squared residual r.r falls below this.
    Returns x (b's dtype and device) and the final squared residual r.r as a 0-d tensor.

    The loop always runs `iters` products but freezes x once converged, which equals stopping
    early without reading the residual on the host (no device synchronization inside the loop).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot_r = r @ r
    for _ in range(iters):
        active = r_dot_r >= residual_tol
        A_p = matvec(p)
        p_A_p = p @ A_p
        alpha = torch.where(active, r_dot_r / torch.where(active, p_A_p, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * A_p
        new_r_dot_r = r @ r
        beta = torch.where(active, new_r_dot_r / torch.where(active, r_dot_r, 1.0), 0.0)
        p = torch.where(active, r + beta * p, p)
        r_dot_r = torch.where(active, new_r_dot_r, r_dot_r)
    return x, r_dot_r


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> Tensor:
    """Solve A x = b by conjugate gradient; see `conjugate_gradient_with_residual` for the arguments."""
    return conjugate_gradient_with_residual(matvec, b, iters, residual_tol)[0]
