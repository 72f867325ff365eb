"""Learning curves and a results table from run directories: `python -m trpo.report <dir>... [--out DIR]`.

Finds every metrics.jsonl below the given directories, groups runs by env, by implementation (a peer's
run names it in its config.yaml; ours are "trpo") and by the settings that differ between them (seeds
aside), and writes one PNG per env (mean training return over seeds with
a 95% bootstrap band, x = environment steps; beside it, where the runs logged curvature diagnostics, the
Fisher's top eigenvalues and trace over training and its spectral density at four points of training)
and `results.md` (final return mean and 95% bootstrap CI,
steps, seeds, wall time, and the count of accepted policy updates whose exact KL exceeded algo.max_kl,
which TRPO's line search must make zero).
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

# Settings that never define an experiment: they change where or how a run is recorded, not what it learns.
IGNORED = ("seed", "logger.", "checkpoint.", "device", "torch_threads", "eval.", "diagnostics.")
CURVE_POINTS = 100
BOOTSTRAP_SAMPLES = 10_000


@dataclass(frozen=True)
class Run:
    env_id: str
    implementation: str  # "trpo", or the peer library a benchmark ran (benchmarks/peers.py)
    settings: dict[str, object]  # the flattened config, ignored keys removed
    steps: np.ndarray  # global_step per iteration
    returns: np.ndarray  # rollout/episode_return per iteration
    final_return: float  # final deterministic evaluation, or the last training return without one
    wall_s: float
    kl_violations: int | None  # accepted updates with policy/kl > algo.max_kl (None: no KL logged, e.g. a peer)
    curvature: "Curvature | None" = None  # the curvature diagnostics, where the run logged them


@dataclass(frozen=True)
class Curvature:
    """A run's curvature/* metrics (trpo.diagnostics) at the iterations that logged them."""

    steps: np.ndarray  # global_step [D]
    eigenvalues: np.ndarray  # top eigenvalues of F [D, k], largest first
    trace: np.ndarray  # [D]
    density: list[tuple[np.ndarray, np.ndarray]]  # Lanczos quadrature (nodes, weights) of F's spectrum, per row


def load_curvature(rows: list[dict]) -> Curvature | None:
    rows = [row for row in rows if "curvature/trace" in row]
    if not rows:
        return None
    k = sum(key.startswith("curvature/eigenvalue_") and key[-1].isdigit() for key in rows[0])
    return Curvature(np.array([row["global_step"] for row in rows], dtype=float),
                     np.array([[row[f"curvature/eigenvalue_{i + 1}"] for i in range(k)] for row in rows]),
                     np.array([row["curvature/trace"] for row in rows]),
                     [(np.array(row["curvature/density_nodes"]), np.array(row["curvature/density_weights"]))
                      for row in rows])


def load_run(metrics_path: Path) -> Run:
    run_dir = metrics_path.parent
    all_rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    rows = [row for row in all_rows if row.get("rollout/episodes", 1) > 0]  # no return before the first episode ends
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    max_kl = config.get("algo", {}).get("max_kl")
    kl_violations = None if max_kl is None or not any("policy/kl" in row for row in all_rows) else sum(
        row.get("policy/accepted", 0) == 1 and row["policy/kl"] > max_kl for row in all_rows)
    settings = {k: v for k, v in flatten(config).items() if not k.startswith(IGNORED)}
    steps = np.array([row["global_step"] for row in rows], dtype=float)
    returns = np.array([row["rollout/episode_return"] for row in rows], dtype=float)
    final = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").is_file() else {}
    wall = final.get("time/wall_s", sum(row["time/collect_s"] + row["time/update_s"] for row in rows))
    final_return = final["eval/episode_return"] if "eval/episode_return" in final else \
        float(returns[-1]) if len(returns) else float("nan")
    return Run(config["env_id"], config.get("implementation", "trpo"), settings, steps, returns, final_return, wall,
               kl_violations, load_curvature(all_rows))


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def group_runs(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """{env: {label: runs}}, the label naming the implementation ("trpo" for ours) and the settings that
    differ between that env's runs of the same implementation."""
    groups: dict[str, dict[str, list[Run]]] = {}
    for env_id, implementation in sorted({(run.env_id, run.implementation) for run in runs}):
        same = [run for run in runs if run.env_id == env_id and run.implementation == implementation]
        varying = sorted(k for k in same[0].settings if len({run.settings.get(k) for run in same}) > 1)
        for run in same:
            label = " ".join([implementation] + [f"{k}={run.settings.get(k)}" for k in varying])
            groups.setdefault(env_id, {}).setdefault(label, []).append(run)
    return groups


def bootstrap_ci(samples: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile bootstrap interval of the mean over axis 0 (seeds)."""
    index = rng.integers(0, len(samples), size=(BOOTSTRAP_SAMPLES, len(samples)))
    means = samples[index].mean(axis=1)
    return np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


def curve(runs: list[Run]) -> tuple[np.ndarray, np.ndarray]:
    """Training returns of each run interpolated onto a common step grid: (grid, [seeds, points])."""
    grid = np.linspace(0, min(run.steps[-1] for run in runs), CURVE_POINTS)
    return grid, np.stack([np.interp(grid, run.steps, run.returns) for run in runs])


def log_curve(runs: list[Run], values) -> tuple[np.ndarray, np.ndarray]:
    """log10 of a curvature series of each run on a common step grid: (grid, [seeds, points])."""
    grid = np.linspace(0, min(run.curvature.steps[-1] for run in runs), CURVE_POINTS)
    return grid, np.stack([np.interp(grid, run.curvature.steps, np.log10(np.maximum(values(run.curvature), 1e-300)))
                           for run in runs])


DENSITY_POINTS = (0.0, 1 / 3, 2 / 3, 1.0)  # where in training the spectral density is drawn
DENSITY_WIDTH = 0.1  # decades: each quadrature node a Gaussian of this width in log10 lambda


def log_density(runs: list[Run], fraction: float, grid: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean over runs of the spectral density of log10 lambda at a fraction of training (mean step, density)."""
    densities, steps = [], []
    for run in runs:
        index = int(round(fraction * (len(run.curvature.steps) - 1)))
        nodes, weights = run.curvature.density[index]
        nodes = np.log10(np.maximum(nodes, nodes.max() * 1e-10))
        bumps = np.exp(-0.5 * ((grid[:, None] - nodes[None]) / DENSITY_WIDTH) ** 2) / (DENSITY_WIDTH * np.sqrt(2 * np.pi))
        densities.append(bumps @ weights)
        steps.append(run.curvature.steps[index])
    return float(np.mean(steps)), np.mean(densities, axis=0)


def draw_curvature(groups: dict[str, list[Run]], over_training, density_axes, rng: np.random.Generator) -> None:
    """Top eigenvalue, k-th eigenvalue and trace over training (log scale, mean over seeds with a 95% band),
    and the spectral density at DENSITY_POINTS of training."""
    peak = 1e-3  # the density axis's top: log autoscaling overshoots by decades
    for label, runs in groups.items():
        runs = [run for run in runs if run.curvature is not None]
        if not runs:
            continue
        k = runs[0].curvature.eigenvalues.shape[1]
        for name, values in (("lambda_1", lambda c: c.eigenvalues[:, 0]), (f"lambda_{k}", lambda c: c.eigenvalues[:, -1]),
                             ("trace", lambda c: c.trace)):
            grid, logs = log_curve(runs, values)
            low, high = bootstrap_ci(logs, rng)
            over_training.plot(grid, 10 ** logs.mean(axis=0), label=f"{name}, {label} ({len(runs)} seeds)")
            over_training.fill_between(grid, 10 ** low, 10 ** high, alpha=0.2)
        every_node = np.concatenate([np.log10(np.maximum(nodes, nodes.max() * 1e-10))
                                     for run in runs for nodes, _ in run.curvature.density])
        grid = np.linspace(every_node.min() - 0.5, every_node.max() + 0.5, 400)
        for fraction in DENSITY_POINTS:
            step, density = log_density(runs, fraction, grid)
            density_axes.plot(grid, density, label=f"step {step:.3g}, {label}")
            peak = max(peak, float(density.max()))
    over_training.set(yscale="log", xlabel="environment steps", ylabel="Fisher eigenvalue / trace",
                      title="curvature over training")
    over_training.legend(fontsize="x-small")
    over_training.grid(alpha=0.3)
    density_axes.set(xlabel="log10 eigenvalue of F", ylabel="spectral density (mean over seeds)", yscale="log",
                     ylim=(1e-4, 3 * peak), title="spectral density (Lanczos quadrature)")
    density_axes.legend(fontsize="x-small")
    density_axes.grid(alpha=0.3)


def write_report(directories: list[Path], out: Path) -> str:
    """Writes <env>.png per env and results.md into out; returns the Markdown table."""
    paths = sorted(p for d in directories for p in d.rglob("metrics.jsonl"))
    if not paths:
        raise ValueError(f"no metrics.jsonl found below {[str(d) for d in directories]}")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["| env | setting | seeds | steps | final return (mean) | 95% CI | wall time (s, mean) | "
             "accepted updates over max_kl |", "|---|---|---|---|---|---|---|---|"]
    runs = [load_run(p) for p in paths]
    for run in runs:
        if not len(run.steps):
            print(f"{run.env_id}: a run below {[str(d) for d in directories]} finished no episode; left out")
    for env_id, groups in group_runs([run for run in runs if len(run.steps)]).items():
        with_curvature = any(run.curvature is not None for runs in groups.values() for run in runs)
        figure, panels = plt.subplots(1, 3 if with_curvature else 1, figsize=(19 if with_curvature else 7, 4.5),
                                      squeeze=False)
        axes = panels[0, 0]
        for label, runs in groups.items():
            grid, returns = curve(runs)
            low, high = bootstrap_ci(returns, rng)
            axes.plot(grid, returns.mean(axis=0), label=f"{label} ({len(runs)} seeds)")
            axes.fill_between(grid, low, high, alpha=0.25)
            finals = np.array([run.final_return for run in runs])
            final_low, final_high = bootstrap_ci(finals, rng)
            steps = int(np.mean([run.steps[-1] for run in runs]))
            violations = [run.kl_violations for run in runs if run.kl_violations is not None]
            lines.append(f"| {env_id} | {label} | {len(runs)} | {steps} | {finals.mean():.1f} | "
                         f"[{final_low:.1f}, {final_high:.1f}] | {np.mean([run.wall_s for run in runs]):.0f} | "
                         f"{sum(violations) if violations else 'n/a'} |")
        axes.set(title=env_id, xlabel="environment steps", ylabel="training episode return")
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
        if with_curvature:
            draw_curvature(groups, panels[0, 1], panels[0, 2], rng)
        figure.tight_layout()
        figure.savefig(out / f"{env_id}.png", dpi=120)
        plt.close(figure)
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description="Learning curves and a results table from run directories.")
    parser.add_argument("directories", nargs="+", type=Path, help="run or sweep directories, searched recursively")
    parser.add_argument("--out", type=Path, default=Path("runs/report"), help="where the PNGs and results.md go")
    args = parser.parse_args()
    try:
        print(write_report(args.directories, args.out), end="")
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
