"""Iterative linear algebra on matrix-free operators."""

from typing import Callable

import torch
from torch import Tensor


def conjugate_gradient_with_residual(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Solve A x = b for a symmetric positive definite A given only x -> A x, starting from x = 0.

    matvec: the product with A, a function of a vector shaped like b.
    b: the right-hand side, shape [n].
    iters: the number of iterations at most.
    residual_tol: stop once the squared residual r.r falls below this.
    preconditioner: r -> P r with P symmetric positive definite, P ~ A^-1 (preconditioned CG); None: P = I.
    Returns x (b's dtype and device) and the final squared residual r.r as a 0-d tensor.

    The loop always runs `iters` products but freezes x once converged, which equals stopping
    early without reading the residual on the host (no device synchronization inside the loop).
    """
    precondition = preconditioner or (lambda r: r)
    x = torch.zeros_like(b)
    r = b.clone()
    z = precondition(r)
    p = z.clone()
    r_dot_r = r @ r
    r_dot_z = r_dot_r if preconditioner is None else r @ z
    for _ in range(iters):
        active = r_dot_r >= residual_tol
        A_p = matvec(p)
        p_A_p = p @ A_p
        alpha = torch.where(active, r_dot_z / torch.where(active, p_A_p, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * A_p
        z = precondition(r)
        new_r_dot_r = r @ r
        new_r_dot_z = new_r_dot_r if preconditioner is None else r @ z
        beta = torch.where(active, new_r_dot_z / torch.where(active, r_dot_z, 1.0), 0.0)
        p = torch.where(active, z + beta * p, p)
        r_dot_r = torch.where(active, new_r_dot_r, r_dot_r)
        r_dot_z = torch.where(active, new_r_dot_z, r_dot_z)
    return x, r_dot_r


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Solve A x = b by conjugate gradient; see `conjugate_gradient_with_residual` for the arguments."""
    return conjugate_gradient_with_residual(matvec, b, iters, residual_tol, preconditioner)[0]
