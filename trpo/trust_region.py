"""Step length from the quadratic KL model and the KL-bounded backtracking line search.

By default the candidates are all evaluated, then one is chosen with tensor ops, so nothing reads a
value back to the host: the search runs on the GPU without synchronization. On the CPU, where a read
is free, `stop_at_first` evaluates them in order and stops at the first that passes (the same result
for a fraction of the work: the full step usually passes).
"""

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


@dataclass(frozen=True)
class LineSearchResult:
    """The chosen parameters and what the search saw there (all tensors)."""

    params: Tensor  # theta_old + fraction * full_step, or theta_old itself when nothing passed
    kl: Tensor  # exact mean KL of the chosen candidate (0 when none)
    surrogate_gain: Tensor  # L(candidate) - L(theta_old) (0 when none)
    step_fraction: Tensor  # backtrack_ratio^k of the chosen candidate (0 when none)
    accepted: Tensor  # bool
    line_search_steps: Tensor  # backtracks taken: k when accepted, the number of candidates when not


def full_step(step_dir: Tensor, curvature: Tensor, max_kl: float) -> Tensor:
    """Scale x so the quadratic KL model 0.5 s^T (F + damping I) s equals max_kl.

    step_dir: x, the CG solution of (F + damping I) x = g.
    curvature: x^T (F + damping I) x.
    max_kl: the trust region radius.
    """
    return torch.sqrt(2.0 * max_kl / curvature) * step_dir


def line_search(
    evaluate: Callable[[Tensor], tuple[Tensor, Tensor]],
    params: Tensor,
    step: Tensor,
    expected_gain: Tensor,
    max_kl: float,
    max_backtracks: int = 10,
    backtrack_ratio: float = 0.8,
    accept_ratio: float = 0.1,
    valid: Tensor | None = None,
    stop_at_first: bool = False,
) -> LineSearchResult:
    """Take the first theta_old + backtrack_ratio^k step (k = 0..max_backtracks-1) that passes.

    evaluate: flat parameters -> (exact mean KL from theta_old, surrogate gain over theta_old).
    params: theta_old, flat.
    step: the full step s.
    expected_gain: g . s, the linear model's gain for the full step.
    max_kl: a candidate passes only with KL <= max_kl ...
    max_backtracks: number of candidates.
    backtrack_ratio: shrink factor between candidates, in (0, 1).
    accept_ratio: ... and surrogate gain > 0 and >= accept_ratio * fraction * expected_gain.
    valid: a bool tensor; False rejects every candidate (the update guard).
    stop_at_first: evaluate candidates in order until one passes (reads each verdict on the host).
    """
    fractions = backtrack_ratio ** torch.arange(max_backtracks, device=params.device, dtype=params.dtype)
    valid = torch.ones((), dtype=torch.bool, device=params.device) if valid is None else valid

    def verdict(kl: Tensor, gain: Tensor, fraction: Tensor) -> Tensor:
        return (kl <= max_kl) & (gain > 0) & (gain >= accept_ratio * fraction * expected_gain) & valid

    kls, gains, passes = [], [], []
    for fraction in fractions:
        kl, gain = evaluate(params + fraction * step)
        kls.append(kl)
        gains.append(gain)
        passes.append(verdict(kl, gain, fraction))
        if stop_at_first and bool(passes[-1]):
            break
    unevaluated = max_backtracks - len(passes)  # only after an early stop; they do not pass
    kl = torch.cat([torch.stack(kls), kl.new_zeros(unevaluated)])
    gain = torch.cat([torch.stack(gains), gain.new_zeros(unevaluated)])
    passes = torch.cat([torch.stack(passes), passes[-1].new_zeros(unevaluated)])
    accepted = passes.any()
    first = passes.to(torch.int8).argmax()  # the first passing index (0 when none passes)
    chosen = params + fractions[first] * step
    zero = torch.zeros((), dtype=params.dtype, device=params.device)
    return LineSearchResult(
        params=torch.where(accepted, chosen, params),
        kl=torch.where(accepted, kl[first], zero),
        surrogate_gain=torch.where(accepted, gain[first], zero),
        step_fraction=torch.where(accepted, fractions[first], zero),
        accepted=accepted,
        line_search_steps=torch.where(accepted, first, max_backtracks),
    )


def natural_gradient_step(
    evaluate: Callable[[Tensor], tuple[Tensor, Tensor]], params: Tensor, step: Tensor, valid: Tensor
) -> LineSearchResult:
    """NPG: take the full step whatever it does to the surrogate, unless the guard `valid` is False."""
    kl, gain = evaluate(params + step)
    zero = torch.zeros((), dtype=params.dtype, device=params.device)
    return LineSearchResult(
        params=torch.where(valid, params + step, params),
        kl=torch.where(valid, kl, zero),
        surrogate_gain=torch.where(valid, gain, zero),
        step_fraction=torch.where(valid, 1.0, zero),
        accepted=valid,
        line_search_steps=torch.zeros((), dtype=torch.int64, device=params.device),
    )
