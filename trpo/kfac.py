"""K-FAC: the policy's Fisher approximated per linear layer by a Kronecker product (Martens and Grosse 2015).

For a linear layer s = W x + b of the policy's MLP, write x~ = [x, 1] and J_s for the Jacobian of the
network's output at s. Its block of F = E[J^T M J] (M the distribution's own Fisher metric, C x C
per state, C the output width) is E[(J_s^T M J_s) (x) (x~ x~^T)] over the flat [out, in + 1]
layout, which K-FAC replaces by G (x) A with A = E[x~ x~^T] and G = E[J_s^T M J_s]. G is exact, not
sampled: the C rows of J_s are backpropagated through the network and contracted with M itself.
The Gaussian's log-std block of F is exactly 2 I, and F has no mean/log-std cross terms.

With no hidden layer and a state-independent M (the Gaussian), G (x) A is F's block exactly.
"""

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from trpo.curvature import mlp_pass, sequential_pass
from trpo.policy import Policy, ValueNetwork

STATISTICS_DECAY = 0.95  # the critic's running averages of its factors over minibatches


@dataclass(frozen=True)
class LayerFactors:
    """One linear layer's inputs and output Jacobians, from which its K-FAC factors and exact diagonal follow."""

    name: str  # the layer's prefix in policy.named_parameters(), e.g. "mean.0"
    inputs: Tensor  # x~ per state [B, in + 1]
    jacobian: Tensor  # d output / d s per state [B, C, out]
    metric: Tensor  # M per state [B, C, C]

    @property
    def A(self) -> Tensor:
        return self.inputs.T @ self.inputs / self.inputs.shape[0]

    @property
    def G(self) -> Tensor:
        return torch.einsum("bco,bcp->op", self.jacobian, self.metric @ self.jacobian) / self.jacobian.shape[0]

    def per_state_g_diagonal(self) -> Tensor:
        """diag(J_s^T M J_s) per state [B, out]."""
        return (self.jacobian * (self.metric @ self.jacobian)).sum(1)


def _metric(policy: Policy, outputs: tuple[Tensor, ...]) -> Tensor:
    """M per state [B, C, C], the policy's own metric on its first output, column by column."""
    first = outputs[0]
    columns = []
    for k in range(first.shape[-1]):
        basis = torch.zeros_like(first)
        basis[:, k] = 1.0
        columns.append(policy.fisher_metric(outputs, (basis,) + tuple(torch.zeros_like(o) for o in outputs[1:]))[0])
    return torch.stack(columns, dim=-1)


def layer_factors(policy: Policy, obs: Tensor) -> list[LayerFactors]:
    """Each linear layer's inputs and output Jacobians over obs [B, obs_dim], first layer first."""
    linears, inputs, slopes, outputs = mlp_pass(policy, obs)
    with torch.no_grad():
        metric = _metric(policy, outputs)
    return _factors(linears, inputs, slopes, metric)


def value_factors(value: ValueNetwork, obs: Tensor) -> list[LayerFactors]:
    """The value network's layers with M = 1: its K-FAC factors are those of the Gauss-Newton
    E[J^T J] of 1/2 mean (V - R)^2."""
    with torch.no_grad():
        linears, inputs, slopes = sequential_pass(value.body, "body", value.normalizer(obs))
    return _factors(linears, inputs, slopes, torch.ones(obs.shape[0], 1, 1, dtype=obs.dtype, device=obs.device))


def _factors(linears: dict[str, nn.Linear], inputs: list[Tensor], slopes: list[Tensor],
             metric: Tensor) -> list[LayerFactors]:
    """The C rows of the output Jacobian backpropagated to each layer's pre-activations."""
    with torch.no_grad():
        width = metric.shape[-1]
        batch = inputs[0].shape[0]
        back = torch.eye(width, dtype=metric.dtype, device=metric.device).expand(batch, width, width)
        jacobians = [back]
        layers = list(linears.values())
        for i in range(len(layers) - 1, 0, -1):
            back = (back @ layers[i].weight) * slopes[i - 1].unsqueeze(1)
            jacobians.append(back)
    ones = torch.ones_like(inputs[0][:, :1])
    return [LayerFactors(name, torch.cat([x, ones], 1), jacobian, metric)
            for name, x, jacobian in zip(linears, inputs, reversed(jacobians))]


def fisher_diagonal(policy: Policy, obs: Tensor) -> Tensor:
    """The exact diagonal of F over obs, flat in the order of policy.parameters()."""
    pieces = {}
    for layer in layer_factors(policy, obs):
        squared = layer.per_state_g_diagonal().T @ layer.inputs.square() / layer.inputs.shape[0]
        pieces[f"{layer.name}.weight"], pieces[f"{layer.name}.bias"] = squared[:, :-1], squared[:, -1]
    return _flat(policy, pieces, log_std=2.0)


def damped_factors(policy: Policy, obs: Tensor, damping: float) -> list[tuple[str, Tensor, Tensor]]:
    """(layer name, G + damping^1/2 / pi I, A + pi damping^1/2 I) per layer (`tikhonov`)."""
    if damping < 0:
        raise ValueError(f"damping={damping} must be >= 0")
    return [(layer.name, *tikhonov(layer.A, layer.G, damping)) for layer in layer_factors(policy, obs)]


def tikhonov(A: Tensor, G: Tensor, damping: float) -> tuple[Tensor, Tensor]:
    """Factored Tikhonov damping: (G + damping^1/2 / pi I, A + pi damping^1/2 I), with
    pi^2 = (tr A / dim A) / (tr G / dim G) balancing the two factors (Martens and Grosse 2015, 6.3)."""
    pi = torch.sqrt((A.trace() / A.shape[0]) / (G.trace() / G.shape[0]))
    root = damping ** 0.5
    eye = lambda n: torch.eye(n, dtype=A.dtype, device=A.device)  # noqa: E731
    return G + root / pi * eye(G.shape[0]), A + root * pi * eye(A.shape[0])


def layerwise(policy: Policy, matrices: list[tuple[str, Tensor, Tensor]],
              log_std_scale: float) -> Callable[[Tensor], Tensor]:
    """v -> per layer left @ [V_W | V_b] @ right (the Kronecker product left (x) right on the flat
    [out, in + 1] layout), and log_std_scale * v on a Gaussian's log-std."""
    shapes = {name: p.shape for name, p in policy.named_parameters()}

    def apply(v: Tensor) -> Tensor:
        pieces = dict(zip(shapes, torch.split(v, [shape.numel() for shape in shapes.values()])))
        out = {}
        for name, left, right in matrices:
            weight = pieces[f"{name}.weight"].view(shapes[f"{name}.weight"])
            matrix = left @ torch.cat([weight, pieces[f"{name}.bias"].unsqueeze(1)], 1) @ right
            out[f"{name}.weight"], out[f"{name}.bias"] = matrix[:, :-1], matrix[:, -1]
        if "log_std" in pieces:
            out["log_std"] = pieces["log_std"] * log_std_scale
        return torch.cat([out[name].reshape(-1) for name in shapes])

    return apply


def kfac_preconditioner(policy: Policy, obs: Tensor, damping: float) -> Callable[[Tensor], Tensor]:
    """v -> approximately (F + damping I)^-1 v, F the policy's Fisher over obs, by K-FAC.

    Per layer (G + damping^1/2 / pi I)^-1 V (A + pi damping^1/2 I)^-1 on V = [V_W | V_b]
    (`damped_factors`), the inverses by Cholesky without a host synchronization (torch.linalg.eigh
    would check its result on the host); the log-std block divides by 2 + damping. Exact where K-FAC
    is (no hidden layer, Gaussian) with damping 0.
    """
    inverses = [(name, _spd_inverse(G), _spd_inverse(A)) for name, G, A in damped_factors(policy, obs, damping)]
    return layerwise(policy, inverses, 1.0 / (2.0 + damping))


def cg_preconditioner(name: str, policy: Policy, obs: Tensor, damping: float) -> Callable[[Tensor], Tensor] | None:
    """The preconditioner `algo.cg_preconditioner` names, for CG on (F + damping I) x = g over obs: None for
    "none", r / (diag F + damping) for "diagonal", K-FAC for "kfac"."""
    if name == "none":
        return None
    if name == "diagonal":
        inverse = 1.0 / (fisher_diagonal(policy, obs) + damping)
        return lambda r: r * inverse
    if name == "kfac":
        return kfac_preconditioner(policy, obs, damping)
    raise ValueError(f"cg_preconditioner={name!r} is not a preconditioner; choose none, diagonal or kfac")


def _spd_inverse(matrix: Tensor) -> Tensor:
    """The inverse of a symmetric positive definite matrix by Cholesky (cholesky_ex: no host synchronization)."""
    factor, _ = torch.linalg.cholesky_ex(matrix)
    return torch.cholesky_inverse(factor)


def _flat(policy: Policy, pieces: dict[str, Tensor], log_std: float) -> Tensor:
    """pieces in the order of policy.parameters(); a Gaussian's log_std filled with the constant log_std."""
    return torch.cat([pieces[name].reshape(-1) if name in pieces else torch.full((p.numel(),), log_std, dtype=p.dtype,
                                                                                 device=p.device)
                      for name, p in policy.named_parameters()])


class KFACCritic:
    """The value fit by K-FAC instead of Adam (ACKTR's critic, with the exact Gauss-Newton, not sampled).

    Each minibatch: the factors A and G of F = E[J^T J] (`value_factors`), averaged over minibatches
    with decay STATISTICS_DECAY (a minibatch alone gives a rank-deficient A), damped (`tikhonov`),
    and the step -eta P g on the gradient g of 1/2 mean (V - R)^2, with eta = min(1, sqrt(2 max_change /
    g^T P g)): the Gauss-Newton step, shortened where its quadratic model says 1/2 mean dV^2 would pass
    max_change (ACKTR's KL clip, V read as the mean of a unit Gaussian). No host synchronization.
    """

    def __init__(self, damping: float, max_change: float):
        self.damping, self.max_change = damping, max_change
        self.factors: dict[str, tuple[Tensor, Tensor]] = {}  # layer name -> running (A, G)

    def step(self, value: ValueNetwork, obs: Tensor, returns: Tensor) -> None:
        inverses = []
        for layer in value_factors(value, obs):
            A, G = layer.A, layer.G
            if layer.name in self.factors:
                old_A, old_G = (f.to(A.device) for f in self.factors[layer.name])
                A, G = (STATISTICS_DECAY * old + (1 - STATISTICS_DECAY) * new for old, new in ((old_A, A), (old_G, G)))
            self.factors[layer.name] = (A, G)
            damped_G, damped_A = tikhonov(A, G, self.damping)
            inverses.append((layer.name, _spd_inverse(damped_G), _spd_inverse(damped_A)))
        params = list(value.parameters())
        loss = 0.5 * (value(obs) - returns).square().mean()
        grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        direction = layerwise(value, inverses, 1.0)(grad)
        eta = torch.sqrt(2 * self.max_change / (grad @ direction).clamp(min=1e-30)).clamp(max=1.0)
        with torch.no_grad():
            for param, piece in zip(params, torch.split(direction, [p.numel() for p in params])):
                param.sub_(eta * piece.view_as(param))

    def state_dict(self) -> dict:
        return {"factors": {name: list(pair) for name, pair in self.factors.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.factors = {name: tuple(pair) for name, pair in state["factors"].items()}
