"""The Fisher spectrum of a trained policy: `python -m trpo.spectrum <run dir> [steps=<int>]`.

Collects `steps` fresh states by acting with the policy at the run's latest checkpoint (stochastic
actions, as in training; default: one training batch), takes the policy's Fisher over them in float64,
and writes `spectrum.json` and `spectrum.png` into the run directory: every eigenvalue by dense `eigh`
where the policy has at most 20,000 parameters, else the top eigenvalues, trace and spectral density
from `trpo.estimators`.
"""

import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from trpo import checkpoint
from trpo.curvature import fisher_matvec
from trpo.envs import vector_env_options
from trpo.estimators import MatVec, hutchinson_trace, spectral_density, top_eigenvalues
from trpo.evaluate import env_action, load_run
from trpo.policy import Policy

DENSE_LIMIT = 20_000  # parameters: a float64 Fisher of 20k is 3.2 GB, its eigh minutes on two cores
SPECTRUM_SEED_OFFSET = 2_000_000  # rollout seeds no training or evaluation env uses
ESTIMATED_TOP_K = 20


def fresh_states(env_id: str, policy: Policy, steps: int, num_envs: int, seed: int, env_config) -> Tensor:
    """`steps` states [steps, obs_dim] visited by the stochastic policy, num_envs envs at a time."""
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **vector_env_options(env_config))
    obs, _ = envs.reset(seed=seed + SPECTRUM_SEED_OFFSET)
    states = []
    with torch.inference_mode():
        while len(states) * num_envs < steps:
            states.append(torch.as_tensor(obs, dtype=torch.float32))
            action = policy.dist(states[-1]).sample().numpy()
            obs, *_ = envs.step(env_action(action, envs.single_action_space))
    envs.close()
    return torch.cat(states)[:steps]


def dense_matrix(matvec: MatVec, dim: int) -> Tensor:
    """The operator's float64 matrix, column by column, symmetrized."""
    columns = torch.eye(dim, dtype=torch.float64)
    matrix = torch.stack([matvec(column) for column in columns], dim=1)
    return (matrix + matrix.T) / 2


def half_trace_count(eigenvalues: np.ndarray) -> int:
    """How many of the largest eigenvalues carry half the trace."""
    ordered = np.sort(eigenvalues)[::-1]
    return int(np.searchsorted(np.cumsum(ordered), ordered.sum() / 2) + 1)


def fisher_spectrum(policy: Policy, obs: Tensor, damping: float, dense_limit: int = DENSE_LIMIT,
                    generator: torch.Generator | None = None) -> dict:
    """The Fisher's spectrum over obs: every eigenvalue (dim <= dense_limit) or estimates (above)."""
    policy = policy.double()
    matvec = fisher_matvec(policy, obs.double(), method="mlp")
    dim = sum(p.numel() for p in policy.parameters())
    result = {"dim": dim, "states": obs.shape[0], "damping": damping}
    if dim <= dense_limit:
        eigenvalues = torch.linalg.eigvalsh(dense_matrix(matvec, dim)).flip(0).numpy()
        largest, smallest = float(eigenvalues[0]), float(eigenvalues[-1])
        return result | {
            "method": "dense eigvalsh", "eigenvalues": eigenvalues.tolist(), "trace": float(eigenvalues.sum()),
            "lambda_max": largest, "lambda_min": smallest,
            "condition": largest / smallest if smallest > 0 else None,  # None: F is singular
            "condition_damped": (largest + damping) / (smallest + damping),
            "rank": int((eigenvalues > largest * dim * np.finfo(np.float64).eps).sum()),
            "half_trace_count": half_trace_count(np.clip(eigenvalues, 0, None)),
        }
    top = top_eigenvalues(matvec, dim, ESTIMATED_TOP_K, generator=generator)
    nodes, weights = spectral_density(matvec, dim, iters=120, probes=8, generator=generator)
    trace = hutchinson_trace(matvec, dim, 60, generator, method="hutchinson")
    smallest = float(nodes[0])  # the smallest Ritz value: an upper bound on lambda_min
    return result | {
        "method": "estimated (block Lanczos, Hutchinson, Lanczos quadrature)", "top_eigenvalues": top.tolist(),
        "trace": float(trace), "lambda_max": float(top[0]), "lambda_min_upper_bound": smallest,
        "condition_damped_lower_bound": (float(top[0]) + damping) / (smallest + damping),
        "density_nodes": nodes.tolist(), "density_weights": weights.tolist(),
    }


def plot(spectrum: dict, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if "eigenvalues" in spectrum:
        eigenvalues = np.clip(np.array(spectrum["eigenvalues"]), 1e-12, None)
        left.semilogy(np.arange(1, len(eigenvalues) + 1), eigenvalues)
        left.set_xlabel("index")
        left.set_ylabel("eigenvalue of F")
        left.set_title(f"all {len(eigenvalues)} eigenvalues (dense)")
        right.semilogx(np.arange(1, len(eigenvalues) + 1), np.cumsum(eigenvalues) / eigenvalues.sum())
        right.axhline(0.5, color="gray", lw=0.5)
        right.set_xlabel("number of largest eigenvalues")
        right.set_ylabel("fraction of the trace")
        right.set_title(f"half the trace in the top {spectrum['half_trace_count']}")
    else:
        top = np.array(spectrum["top_eigenvalues"])
        left.semilogy(np.arange(1, len(top) + 1), top, "o-")
        left.set_xlabel("index")
        left.set_ylabel("eigenvalue of F")
        left.set_title(f"top {len(top)} of {spectrum['dim']} (block Lanczos)")
        nodes = np.log10(np.clip(spectrum["density_nodes"], 1e-12, None))
        grid = np.linspace(nodes.min() - 0.5, nodes.max() + 0.5, 400)
        density = np.exp(-0.5 * ((grid[:, None] - nodes[None]) / 0.15) ** 2) @ np.array(spectrum["density_weights"])
        right.plot(grid, density / (0.15 * np.sqrt(2 * np.pi)))
        right.set_xlabel("log10 eigenvalue")
        right.set_ylabel("density (Lanczos quadrature)")
        right.set_title("spectral density")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str]) -> None:
    if not argv or "=" in argv[0]:
        sys.exit("usage: python -m trpo.spectrum <run dir> [steps=<int>]")
    options = dict(arg.split("=", 1) for arg in argv[1:] if "=" in arg)
    unknown = set(options) - {"steps"} or (set(argv[1:]) - {f"{k}={v}" for k, v in options.items()})
    if unknown:
        sys.exit(f"unknown option(s) {sorted(unknown)}; allowed: steps=<int>")
    steps = options.get("steps")
    if steps is not None and (not steps.isdigit() or int(steps) < 1):
        sys.exit(f"steps={steps!r} is invalid: must be an integer >= 1")
    run_dir = Path(argv[0])
    try:
        config, policy, _ = load_run(run_dir)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    obs = fresh_states(config.env_id, policy, int(steps or config.batch_size), config.env.num_envs, config.seed,
                       config.env)
    spectrum = fisher_spectrum(policy, obs, config.algo.damping, generator=torch.Generator().manual_seed(config.seed))
    saved = (checkpoint.load(run_dir / "checkpoints") if checkpoint.exists(run_dir / "checkpoints")
             else json.loads((run_dir / "eval.json").read_text()))["global_step"]  # a run kept with policy.pt only
    spectrum = {"env_id": config.env_id, "global_step": saved} | spectrum
    (run_dir / "spectrum.json").write_text(json.dumps(spectrum))
    plot(spectrum, f"{config.env_id}, Fisher of the policy at step {saved} over {obs.shape[0]} fresh states",
         run_dir / "spectrum.png")
    summary = (f"dim {spectrum['dim']}, trace {spectrum['trace']:.4g}, lambda_max {spectrum['lambda_max']:.4g}"
               + (f", half the trace in the top {spectrum['half_trace_count']}, condition with damping "
                  f"{spectrum['condition_damped']:.4g}" if "eigenvalues" in spectrum else ""))
    print(f"{config.env_id}: {summary}; {run_dir / 'spectrum.json'}, {run_dir / 'spectrum.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
