"""Curvature products of a policy: flat gradients and Fisher-vector products.

F is the Fisher of the policy at its current parameters: the Hessian of the mean
KL(pi_old(.|s) || pi_theta(.|s)) at theta = theta_old, over the flattened `policy.parameters()`.
"""

from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp
from torch.nn.utils import parameters_to_vector

from trpo.policy import Policy

FISHER_METHODS = ("analytic", "autograd")
# Per-device defaults from benchmarks/fvp.py (benchmarks/README.md): on the CPU autograd is 6 to 30%
# faster for the 64x64 policies of the presets. CUDA is not measured yet: analytic until it is.
DEFAULT_FISHER_METHOD = {"cpu": "autograd", "cuda": "analytic"}


def flat_grad(output: Tensor, params: Iterable[nn.Parameter], **kwargs) -> Tensor:
    """d output / d params, flattened in the order of `params`; kwargs go to torch.autograd.grad."""
    return parameters_to_vector(torch.autograd.grad(output, list(params), **kwargs))


def unflatten(flat: Tensor, named_params: dict[str, Tensor]) -> dict[str, Tensor]:
    """Views of a flat vector shaped like `named_params`, for torch.func.functional_call."""
    sizes = [p.numel() for p in named_params.values()]
    chunks = torch.split(flat, sizes)
    return {name: c.view_as(p) for (name, p), c in zip(named_params.items(), chunks)}


def subsample_rows(batch: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """A random subset of round(fraction * B) rows (at least one) of batch [B, ...]; all rows at 1.0."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1]")
    if fraction == 1.0:
        return batch
    count = max(1, round(fraction * batch.shape[0]))
    device = generator.device if generator is not None else batch.device
    index = torch.randperm(batch.shape[0], generator=generator, device=device)[:count]
    return batch[index.to(batch.device)]


def fisher_matvec(
    policy: Policy, obs: Tensor, damping: float = 0.0, method: str = "analytic"
) -> Callable[[Tensor], Tensor]:
    """v -> (F + damping I) v at the policy's current parameters, F averaged over obs [B, obs_dim].

    The work shared by every product (the forward pass, the KL gradient graph) is done once here,
    so conjugate gradient pays only for the products.
    """
    if method not in FISHER_METHODS:
        raise ValueError(f"method={method!r} is not a Fisher-vector product method; choose one of {FISHER_METHODS}")
    product = _analytic_product(policy, obs) if method == "analytic" else _autograd_product(policy, obs)
    return lambda v: product(v) + damping * v


def fisher_vector_product(
    policy: Policy, obs: Tensor, v: Tensor, damping: float = 0.0, method: str = "analytic"
) -> Tensor:
    """(F + damping I) v.

    policy: a GaussianPolicy or CategoricalPolicy, at the parameters where F is taken.
    obs: states [B, obs_dim] over which F is averaged.
    v: a flat vector over `policy.parameters()`.
    damping: Tikhonov damping added to F.
    method: "analytic" (J^T M J v by one jvp and one vjp) or "autograd" (double backprop of the KL).
    """
    return fisher_matvec(policy, obs, damping, method)(v)


def _analytic_product(policy: Policy, obs: Tensor) -> Callable[[Tensor], Tensor]:
    # Gauss-Newton form: F = E_s[J^T M J], J = d(distribution parameters)/d theta, M the
    # distribution's own Fisher. Exact for the KL Hessian because the KL's gradient in the
    # distribution parameters vanishes at theta_old.
    named = {name: p.detach() for name, p in policy.named_parameters()}

    def dist_params(params: dict[str, Tensor]) -> tuple[Tensor, ...]:
        return functional_call(policy, params, (obs,))

    outputs, pullback = vjp(dist_params, named)
    outputs = tuple(o.detach() for o in outputs)
    scale = 1.0 / obs.shape[0]

    def product(v: Tensor) -> Tensor:
        _, jacobian_v = jvp(dist_params, (named,), (unflatten(v, named),))
        weighted = tuple(w * scale for w in policy.fisher_metric(outputs, jacobian_v))
        (grads,) = pullback(weighted)
        return parameters_to_vector(grads[name] for name in named)

    return product


def _autograd_product(policy: Policy, obs: Tensor) -> Callable[[Tensor], Tensor]:
    params = list(policy.parameters())
    with torch.enable_grad():
        new = policy(obs)
        old = tuple(p.detach() for p in new)
        kl_grad = flat_grad(policy.kl(old, new).mean(), params, create_graph=True)

    def product(v: Tensor) -> Tensor:
        with torch.enable_grad():
            return flat_grad(kl_grad @ v, params, retain_graph=True)

    return product
