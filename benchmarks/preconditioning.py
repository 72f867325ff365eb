"""What preconditioning buys TRPO's CG: none / diagonal / kfac on rollouts of the MuJoCo presets,
at a fresh policy and at a trained one.

    python benchmarks/preconditioning.py [--envs ...] [--runs benchmarks/results/spectrum/runs] [--seed 0]
                                         [--out benchmarks/results/preconditioning]

Per env and policy (fresh: the preset's initialization; trained: `<runs>/<env>-s<seed>`'s final
policy), on one preset batch of the policy's own fresh states, for the system (F + damping I) x = g
with g the surrogate's gradient on that batch (unit-normal advantages: a fresh policy has no critic), in float64:
- the error of x after 2, 5 and 10 CG iterations in the (F + damping I)-norm (what CG minimizes),
  relative to a converged solve (600 iterations of K-FAC-preconditioned CG), and the relative residual;
- how many iterations each preconditioner needs to match plain CG's error after 10;
- the condition numbers of F + damping I and of P^1/2 (F + damping I) P^1/2 (block Lanczos: the
  largest Ritz value over the smallest, the diagnostics' lower bound);
- the policy update's time (`trpo_step`, float32 as in training, the preset's CG iterations).
Writes `<out>/results.json` and `<out>/results.md`.
"""

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from mujoco_suite import PUBLISHED
from trpo.curvature import fisher_matvec, flat_grad
from trpo.envs import make_env
from trpo.estimators import block_lanczos
from trpo.evaluate import load_run
from trpo.kfac import cg_preconditioner, damped_factors, fisher_diagonal, layerwise
from trpo.linalg import conjugate_gradient_with_residual
from trpo.models import build_models
from trpo.spectrum import fresh_states
from trpo.update import trpo_step

ROOT = Path(__file__).resolve().parents[1]
PRECONDITIONERS = ("none", "diagonal", "kfac")
ITERATIONS = (2, 5, 10)


def inverse_root(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.rsqrt()) @ vectors.T


def root_preconditioner(name: str, policy, obs, damping: float):
    """v -> P^1/2 v for the symmetric preconditioned operator P^1/2 (F + damping I) P^1/2."""
    if name == "none":
        return lambda v: v
    if name == "diagonal":
        scale = (fisher_diagonal(policy, obs) + damping).rsqrt()
        return lambda v: v * scale
    roots = [(layer, inverse_root(G), inverse_root(A)) for layer, G, A in damped_factors(policy, obs, damping)]
    return layerwise(policy, roots, (2.0 + damping) ** -0.5)


def condition(matvec, dim: int) -> float:
    ritz = block_lanczos(matvec, dim, 4, 160, torch.Generator().manual_seed(0))
    return float(ritz.values[-1] / ritz.values[0])


def batch_of(config, policy, seed: int):
    """The preset's batch of the policy's own states, with sampled actions and unit-scale advantages."""
    obs = fresh_states(config.env_id, policy, config.steps_per_env * config.env.num_envs, config.env.num_envs, seed,
                       config.env)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dist = policy.dist(obs)
        actions = dist.sample()
        log_probs = dist.log_prob(actions)
    return obs, actions, log_probs, torch.randn(obs.shape[0], generator=generator)


def measure(config, policy, seed: int, fresh: bool) -> dict:
    obs, actions, log_probs, advantages = batch_of(config, policy, seed)
    if fresh and hasattr(policy.normalizer, "update"):  # as training does before its first update
        policy.normalizer.update(obs)
    damping = config.algo.damping
    policy64 = copy.deepcopy(policy).double()
    obs64 = obs.double()
    surrogate = (torch.exp(policy64.dist(obs64).log_prob(actions.double()) - log_probs.double())
                 * advantages.double()).mean()
    grad = flat_grad(surrogate, policy64.parameters()).detach()
    matvec = fisher_matvec(policy64, obs64, damping, method="mlp")
    dim = grad.numel()
    kfac = cg_preconditioner("kfac", policy64, obs64, damping)
    exact, _ = conjugate_gradient_with_residual(matvec, grad, 600, 1e-30, kfac)
    energy = lambda e: float(torch.sqrt(e @ matvec(e)))  # noqa: E731
    result = {"dim": dim, "states": obs.shape[0], "converged_relative_residual":
              float((matvec(exact) - grad).norm() / grad.norm())}
    for name in PRECONDITIONERS:
        preconditioner = cg_preconditioner(name, policy64, obs64, damping)
        for iters in range(1, 11):
            x, _ = conjugate_gradient_with_residual(matvec, grad, iters, 0.0, preconditioner)
            result[f"{name}/error_{iters}"] = energy(x - exact) / energy(exact)
            result[f"{name}/residual_{iters}"] = float((matvec(x) - grad).norm() / grad.norm())
        result[f"{name}/iterations_to_match"] = next(
            (k for k in range(1, 11) if result[f"{name}/error_{k}"] <= result["none/error_10"]), None)
        root = root_preconditioner(name, policy64, obs64, damping)
        result[f"{name}/condition"] = condition(lambda v: root(matvec(root(v))), dim)
        algo = copy.copy(config.algo)
        algo.cg_preconditioner = name
        times = []
        for _ in range(5):
            trial = copy.deepcopy(policy)
            started = time.perf_counter()
            trpo_step(trial, obs, actions, log_probs, advantages, algo)
            times.append(time.perf_counter() - started)
        result[f"{name}/update_ms"] = 1e3 * statistics.median(times)
    return result


def policies(env_id: str, runs: Path, seed: int):
    """(fresh, trained) policies with the run's config; fresh: the preset's initialization with seed."""
    run_dir = runs / f"{env_id}-s{seed}"
    config, trained, _ = load_run(run_dir)
    torch.manual_seed(seed)
    probe = make_env(env_id, config.env)
    fresh, _ = build_models(config, probe.observation_space, probe.action_space)
    probe.close()
    return config, {"fresh": fresh, "trained": trained}


def table(results: dict) -> str:
    lines = ["| env | policy | dim | CG error after 2 / 5 / 10 iterations: none | diagonal | kfac | "
             "relative residual after 10: none / diagonal / kfac | iterations to plain CG's error after 10: "
             "diagonal / kfac | condition: F + damping I | diagonal | kfac | update ms: none / diagonal / kfac |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        env_id, kind = key.split("/")
        errors = [" / ".join(f"{r[f'{name}/error_{k}']:.2f}" for k in ITERATIONS) for name in PRECONDITIONERS]
        residuals = " / ".join(f"{r[f'{name}/residual_10']:.2f}" for name in PRECONDITIONERS)
        conditions = [f"{r[f'{name}/condition']:.3g}" for name in PRECONDITIONERS]
        times = " / ".join(f"{r[f'{name}/update_ms']:.0f}" for name in PRECONDITIONERS)
        matched = " / ".join(str(r[f"{name}/iterations_to_match"] or "> 10") for name in ("diagonal", "kfac"))
        lines.append(f"| {env_id} | {kind} | {r['dim']} | {' | '.join(errors)} | {residuals} | {matched} | "
                     f"{' | '.join(conditions)} | {times} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(PUBLISHED))
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks/results/spectrum/runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/preconditioning")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for env_id in args.envs:
        config, kinds = policies(env_id, args.runs, args.seed)
        for kind, policy in kinds.items():
            results[f"{env_id}/{kind}"] = measure(config, policy, args.seed, fresh=kind == "fresh")
            print(env_id, kind, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
