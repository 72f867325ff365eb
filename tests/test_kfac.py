"""K-FAC factors, the exact Fisher diagonal and preconditioned CG, against brute-force references."""

import pytest
import torch
from torch import nn

from policies import KINDS, OBS_DIM, tiny_policy
from reference import dense_fisher, dense_matrix, reference_kl
from trpo.kfac import fisher_diagonal, kfac_preconditioner, layer_factors
from trpo.linalg import conjugate_gradient
from trpo.policy import GaussianPolicy


def states(size=40, seed=1):
    return torch.randn(size, OBS_DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_kfac_is_exact_without_a_hidden_layer_and_without_damping():
    torch.manual_seed(0)
    policy = GaussianPolicy(OBS_DIM, 2, hidden=(), log_std_init=-0.7).double()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    obs = states()
    fisher = dense_fisher(policy, obs)
    precondition = kfac_preconditioner(policy, obs, damping=0.0)
    for seed in range(3):
        v = torch.randn(fisher.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(precondition(fisher @ v), v, rtol=1e-9, atol=1e-9)
    hidden = tiny_policy("gaussian")  # with a hidden layer it is an approximation, and visibly so
    fisher = dense_fisher(hidden, obs)
    v = torch.randn(fisher.shape[0], dtype=torch.float64)
    assert (kfac_preconditioner(hidden, obs, 0.0)(fisher @ v) - v).norm() > 1e-3 * v.norm()


def brute_force_factors(policy, obs):
    """Per layer (A, G) from per-state Jacobians of the network's output at that layer's pre-activation,
    with M per state as the Hessian of KL(pi_s || .) in the output (torch.autograd, torch.distributions)."""
    body = policy.mean if isinstance(policy, GaussianPolicy) else policy.logits
    modules = list(body)
    linear_at = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
    factors = []
    for index in linear_at:
        A = torch.zeros(modules[index].in_features + 1, modules[index].in_features + 1, dtype=torch.float64)
        G = torch.zeros(modules[index].out_features, modules[index].out_features, dtype=torch.float64)
        for state in obs:
            with torch.no_grad():
                x = policy.normalizer(state[None])
                for module in modules[:index]:
                    x = module(x)
                pre_activation = modules[index](x)[0]
                outputs = policy(state[None])
            rest = lambda s: nn.Sequential(*modules[index + 1:])(s[None])[0]  # noqa: E731
            jacobian = torch.autograd.functional.jacobian(rest, pre_activation)  # [C, out]
            old = tuple(o.detach() for o in outputs)

            def kl_in_output(first, old=old):
                return reference_kl(policy, old, (first[None],) + old[1:]).sum()

            metric = torch.autograd.functional.hessian(kl_in_output, old[0][0])
            x_tilde = torch.cat([x[0], torch.ones(1, dtype=torch.float64)])
            A += torch.outer(x_tilde, x_tilde) / len(obs)
            G += jacobian.T @ metric @ jacobian / len(obs)
        factors.append((A, G))
    return factors


@pytest.mark.parametrize("kind", KINDS)
def test_the_factors_equal_brute_force_per_state_jacobians_and_the_preconditioner_inverts_their_kronecker_blocks(kind):
    policy = tiny_policy(kind, normalize=True)
    obs = states(12)
    ours, brute = layer_factors(policy, obs), brute_force_factors(policy, obs)
    assert len(ours) == len(brute) == 2
    for layer, (A, G) in zip(ours, brute):
        torch.testing.assert_close(layer.A, A, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer.G, G, rtol=1e-8, atol=1e-10)
    damping = 0.1
    blocks = []  # the damped Kronecker block of each layer, in the flat order of the parameters
    for name, p in policy.named_parameters():
        if name == "log_std":
            blocks.append(torch.eye(p.numel(), dtype=torch.float64) * (2 + damping))
    for A, G in brute:
        pi = torch.sqrt((A.trace() / A.shape[0]) / (G.trace() / G.shape[0]))
        blocks.append(torch.kron(G + damping ** 0.5 / pi * torch.eye(G.shape[0], dtype=torch.float64),
                                 A + damping ** 0.5 * pi * torch.eye(A.shape[0], dtype=torch.float64)))
    names = [name for name, _ in policy.named_parameters()]
    dim = sum(p.numel() for p in policy.parameters())
    # [W | b] row-major, per layer, against the flat order W (row-major) then b
    order = []
    offset = {name: sum(p.numel() for n, p in list(policy.named_parameters())[:i]) for i, (name, p) in
              enumerate(policy.named_parameters())}
    if "log_std" in names:
        order += list(range(offset["log_std"], offset["log_std"] + 2))
    for layer in ours:
        weight = dict(policy.named_parameters())[f"{layer.name}.weight"]
        out, fan_in = weight.shape
        for row in range(out):
            order += [offset[f"{layer.name}.weight"] + row * fan_in + col for col in range(fan_in)]
            order.append(offset[f"{layer.name}.bias"] + row)
    expected = torch.block_diag(*blocks)
    permutation = torch.tensor(order)
    inverse = dense_matrix(kfac_preconditioner(policy, obs, damping), dim)
    torch.testing.assert_close(torch.linalg.inv(inverse)[permutation][:, permutation], expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_the_exact_diagonal_is_the_dense_fishers(kind):
    policy = tiny_policy(kind, normalize=True)
    obs = states()
    torch.testing.assert_close(fisher_diagonal(policy, obs), dense_fisher(policy, obs).diagonal(), rtol=1e-9,
                               atol=1e-12)


def test_preconditioned_cg_reaches_the_same_solution_in_fewer_iterations():
    n = 60
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    core = basis @ torch.diag(torch.linspace(1, 4, n, dtype=torch.float64)) @ basis.T  # condition 4
    scales = torch.logspace(0, 5, n, dtype=torch.float64)
    matrix = scales.sqrt()[:, None] * core * scales.sqrt()[None]  # condition ~1e5, known preconditioner 1/scales
    b = torch.randn(n, generator=generator, dtype=torch.float64)
    exact = torch.linalg.solve(matrix, b)

    def error(iters, preconditioner):
        x = conjugate_gradient(lambda v: matrix @ v, b, iters, 1e-24, preconditioner)
        return ((x - exact).norm() / exact.norm()).item()

    def iterations_to(tolerance, preconditioner):
        return next(k for k in range(1, 400) if error(k, preconditioner) < tolerance)

    jacobi = lambda r: r / scales  # noqa: E731
    assert error(400, None) < 1e-6 and error(400, jacobi) < 1e-6  # both reach torch.linalg.solve's solution
    assert iterations_to(1e-6, jacobi) <= 20 < 60 <= iterations_to(1e-6, None)
    torch.testing.assert_close(conjugate_gradient(lambda v: matrix @ v, b, 7, 0.0, lambda r: r),
                               conjugate_gradient(lambda v: matrix @ v, b, 7, 0.0), rtol=1e-12, atol=0)
