"""K-FAC factors, the exact Fisher diagonal and preconditioned CG, against brute-force references."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn.utils import parameters_to_vector

import trpo
from policies import KINDS, OBS_DIM, tiny_batch, tiny_policy
from reference import dense_fisher, dense_matrix, reference_kl, reference_log_prob
from trpo.config import AlgoConfig
from trpo.kfac import KFACCritic, fisher_diagonal, kfac_preconditioner, layer_factors, value_factors
from trpo.linalg import conjugate_gradient
from trpo.policy import GaussianPolicy, ValueNetwork
from trpo.update import trpo_step

CONF = Path(__file__).resolve().parents[1] / "conf"


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


def kfac_reference_step(policy, obs, actions, log_probs, advantages, config):
    """d = P g (P: kfac_preconditioner), scaled by sqrt(2 max_kl / d^T (F + damping I) d) with the dense Fisher."""
    normalized = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = torch.exp(reference_log_prob(policy, policy(obs), actions) - log_probs)
    grads = torch.autograd.grad((ratio * normalized).mean(), list(policy.parameters()))
    g = torch.cat([gr.reshape(-1) for gr in grads])
    d = kfac_preconditioner(policy, obs, config.damping)(g)
    damped = dense_fisher(policy, obs) + config.damping * torch.eye(len(g), dtype=g.dtype)
    return d, torch.sqrt(2 * config.max_kl / (d @ damped @ d))


def flat(policy):
    return parameters_to_vector(policy.parameters()).detach().clone()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("max_kl", [0.001, 0.02])
def test_algo_kfac_steps_along_the_kfac_direction_and_never_accepts_a_step_over_max_kl(kind, seed, max_kl):
    policy = tiny_policy(kind, seed=seed)
    obs, actions, log_probs, advantages = batch = tiny_batch(policy, size=60, seed=seed)
    config = AlgoConfig(name="kfac", max_kl=max_kl)
    direction, scale = kfac_reference_step(policy, *batch, config)
    before, old = flat(policy), tuple(o.detach().clone() for o in policy(obs))
    stats = trpo_step(policy, *batch, config)
    kl = reference_kl(policy, old, policy(obs)).mean()
    assert kl <= max_kl
    assert stats["policy/accepted"].item() == 1  # these batches all have an acceptable step
    torch.testing.assert_close(flat(policy) - before, stats["policy/step_fraction"] * scale * direction,
                               rtol=1e-6, atol=1e-10)


def test_acktr_kl_clip_takes_the_clipped_full_step_without_a_line_search():
    policy = tiny_policy("gaussian")
    batch = tiny_batch(policy, size=60)
    for lr, max_kl in ((1e-3, 0.01), (10.0, 0.01)):  # the learning rate binds, then the KL clip does
        config = AlgoConfig(name="kfac", acktr_kl_clip=True, acktr_lr=lr, max_kl=max_kl)
        fresh = tiny_policy("gaussian")
        direction, scale = kfac_reference_step(fresh, *batch, config)
        before = flat(fresh)
        stats = trpo_step(fresh, *batch, config)
        torch.testing.assert_close(flat(fresh) - before, min(lr, scale.item()) * direction, rtol=1e-6, atol=1e-12)
        assert stats["policy/line_search_steps"].item() == 0


def test_algo_kfac_trains_with_an_env_preset(tmp_path):
    run = trpo.train("Pendulum-v1", ["debug=smoke", "algo=kfac"], run_dir=tmp_path)
    assert run.config.algo.name == "kfac"
    assert run.config.algo.max_kl == OmegaConf.load(CONF / "env" / "Pendulum-v1.yaml").algo.max_kl  # the preset's
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(row["policy/kl"] <= run.config.algo.max_kl for row in rows)
    assert any(row["policy/accepted"] == 1 for row in rows)


def linear_value_problem(seed=0):
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(200, OBS_DIM, generator=generator, dtype=torch.float64) * 2 + 1
    returns = obs @ torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64) + 3 + 0.1 * torch.randn(200, generator=generator,
                                                                                                dtype=torch.float64)
    torch.manual_seed(seed)
    return ValueNetwork(OBS_DIM, hidden=()).double(), obs, returns


def test_the_value_factors_are_the_gauss_newton_of_the_mse_blocks():
    torch.manual_seed(0)
    value = ValueNetwork(OBS_DIM, hidden=(4,)).double()
    obs = states()
    params = dict(value.named_parameters())
    jacobians = torch.func.vmap(lambda o: torch.func.jacrev(
        lambda p: torch.func.functional_call(value, p, (o[None],))[0])(params))(obs)
    for layer in value_factors(value, obs):
        # per state J = [dV/dW | dV/db] on the [out, in + 1] layout: E[J (x) J] against K-FAC's G (x) A
        per_state = torch.cat([jacobians[f"{layer.name}.weight"], jacobians[f"{layer.name}.bias"][..., None]], -1)
        flat = per_state.reshape(obs.shape[0], -1)
        exact = flat.T @ flat / obs.shape[0]
        g = layer.jacobian[:, 0, :]  # dV/ds per state
        torch.testing.assert_close(torch.einsum("bo,bi->boi", g, layer.inputs).reshape(obs.shape[0], -1), flat)
        if layer.name == "body.2":  # the last layer's G is E[1] = 1: its block is A exactly
            torch.testing.assert_close(torch.kron(layer.G, layer.A), exact)


def test_one_kfac_critic_step_on_a_linear_value_is_the_least_squares_solution():
    value, obs, returns = linear_value_problem()
    KFACCritic(damping=1e-20, max_change=1e6).step(value, obs, returns)
    design = torch.cat([obs, torch.ones(200, 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, returns[:, None]).solution[:, 0]
    layer = value.body[0]
    torch.testing.assert_close(torch.cat([layer.weight[0], layer.bias]), solution, rtol=1e-6, atol=1e-8)


def test_the_kfac_critic_step_stops_at_max_change():
    value, obs, returns = linear_value_problem(seed=1)
    with torch.no_grad():
        before = value(obs)
    KFACCritic(damping=1e-20, max_change=0.05).step(value, obs, returns)
    with torch.no_grad():
        change = 0.5 * (value(obs) - before).square().mean()
    assert change.item() == pytest.approx(0.05, rel=1e-6)  # the quadratic model is exact for a linear value


def test_algo_value_optimizer_kfac_fits_in_the_trainer_and_in_a_child_and_resumes(tmp_path):
    for process in ("false", "true"):
        run = trpo.train("Pendulum-v1", ["debug=smoke", "algo.value_optimizer=kfac",
                                         f"algo.value_process={process}"], run_dir=tmp_path / process)
        rows = [json.loads(line) for line in (tmp_path / process / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["value/explained_variance"] > rows[0]["value/explained_variance"]
    assert run.config.algo.value_optimizer == "kfac"
    saved = torch.load(next((tmp_path / "true" / "checkpoints").glob("*.pt")), weights_only=True)
    assert set(saved["value_fit"]["optimizer"]["factors"]) == {"body.0", "body.2", "body.4"}
