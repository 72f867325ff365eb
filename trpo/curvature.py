"""Curvature products of a policy: flat gradients and Fisher-vector products.

F is the Fisher of the policy at its current parameters: the Hessian of the mean
KL(pi_old(.|s) || pi_theta(.|s)) at theta = theta_old, over the flattened `policy.parameters()`.
"""

from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp
from torch.nn.utils import parameters_to_vector

from trpo.policy import GaussianPolicy, Policy

FISHER_METHODS = ("mlp", "analytic", "autograd")
# Per-device defaults from benchmarks/fvp.py (benchmarks/README.md): on the CPU the written-out MLP
# product is 1.4 to 3.4 times faster than the others. CUDA is not measured yet; mlp launches the fewest kernels.
DEFAULT_FISHER_METHOD = {"cpu": "mlp", "cuda": "mlp"}


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
    product = {"mlp": _mlp_product, "analytic": _analytic_product, "autograd": _autograd_product}[method](policy, obs)
    dtype = next(policy.parameters()).dtype
    # In the policy's dtype; a vector of another dtype (the float64 of trpo.estimators) is cast and cast back.
    return lambda v: product(v.to(dtype)).to(v.dtype) + damping * v


def fisher_vector_product(
    policy: Policy, obs: Tensor, v: Tensor, damping: float = 0.0, method: str = "analytic"
) -> Tensor:
    """(F + damping I) v.

    policy: a GaussianPolicy or CategoricalPolicy, at the parameters where F is taken.
    obs: states [B, obs_dim] over which F is averaged.
    v: a flat vector over `policy.parameters()`.
    damping: Tikhonov damping added to F.
    method: "mlp" (J^T M J v written out layer by layer for the policy's MLP), "analytic" (the same
        product by torch.func's jvp and vjp, for any network) or "autograd" (double backprop of the KL).
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


def sequential_pass(body: nn.Sequential, prefix: str, x: Tensor) -> tuple[dict[str, nn.Linear], list[Tensor],
                                                                       list[Tensor]]:
    """An MLP's forward pass over its inputs x, kept for its derivatives: its linear layers by parameter
    prefix (e.g. "mean.0"), each one's input and act'(z) of each hidden layer."""
    linears = {f"{prefix}.{i}": m for i, m in enumerate(body) if isinstance(m, nn.Linear)}
    activations = [m for m in body if not isinstance(m, nn.Linear)]
    with torch.no_grad():
        inputs, slopes = [], []
        for layer, activation in zip(linears.values(), activations):
            inputs.append(x)
            z = layer(x)
            x, slope = jvp(activation, (z,), (torch.ones_like(z),))  # elementwise: the derivative itself
            slopes.append(slope)
        inputs.append(x)
    return linears, inputs, slopes


def mlp_pass(policy: Policy, obs: Tensor) -> tuple[dict[str, nn.Linear], list[Tensor], list[Tensor],
                                                  tuple[Tensor, ...]]:
    """The policy MLP's `sequential_pass` over obs (normalized) and the policy's outputs."""
    prefix = "mean" if isinstance(policy, GaussianPolicy) else "logits"
    with torch.no_grad():
        linears, inputs, slopes = sequential_pass(getattr(policy, prefix), prefix, policy.normalizer(obs))
        outputs = tuple(o.detach() for o in policy(obs))
    return linears, inputs, slopes, outputs


def _mlp_product(policy: Policy, obs: Tensor) -> Callable[[Tensor], Tensor]:
    # The Gauss-Newton product of `_analytic_product` with the MLP's derivatives written out: a
    # forward pass of tangents (dz = x dW^T + db + dx W^T, dx' = act'(z) dz), the distribution's
    # metric, then ordinary backpropagation. Each product is a dozen matrix operations; torch.func's
    # generic transforms and autograd's graphs cost several times that on small networks.
    gaussian = isinstance(policy, GaussianPolicy)
    linears, inputs, slopes, outputs = mlp_pass(policy, obs)
    shapes = {name: p.shape for name, p in policy.named_parameters()}  # the order of the flat vector
    weights = [layer.weight.detach() for layer in linears.values()]
    scale = 1.0 / obs.shape[0]

    def product(v: Tensor) -> Tensor:
        pieces = dict(zip(shapes, torch.split(v, [shape.numel() for shape in shapes.values()])))
        grads = {}
        tangent = None
        for i, (name, weight) in enumerate(zip(linears, weights)):
            d_z = torch.addmm(pieces[f"{name}.bias"], inputs[i], pieces[f"{name}.weight"].view_as(weight).T)
            if tangent is not None:
                d_z = d_z.addmm_(tangent, weight.T)
            tangent = d_z * slopes[i] if i < len(slopes) else d_z
        output_tangent = (tangent, pieces["log_std"].expand_as(tangent)) if gaussian else (tangent,)
        metric = policy.fisher_metric(outputs, output_tangent)
        if gaussian:
            grads["log_std"] = metric[1].sum(0) * scale
        back = metric[0] * scale
        for i, name in reversed(list(enumerate(linears))):
            grads[f"{name}.weight"], grads[f"{name}.bias"] = (back.T @ inputs[i]).flatten(), back.sum(0)
            if i > 0:
                back = (back @ weights[i]) * slopes[i - 1]
        return torch.cat([grads[name] for name in shapes])

    return product
