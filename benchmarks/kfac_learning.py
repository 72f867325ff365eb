"""K-FAC in learning: TRPO's preset beside K-FAC-preconditioned CG and algo=kfac, on the held-out seeds.

    .venv/bin/python benchmarks/kfac_learning.py [--envs HalfCheetah-v4 Hopper-v4 Walker2d-v4]
                                                 [--seeds 5 6 7 8 9] [--jobs 2] [--report-only]

The preset's runs are the held-out v4 runs (benchmarks/results/mujoco-heldout, not rerun); every other
variant runs through benchmarks/mujoco_suite.py into benchmarks/results/kfac-learning/<variant>/ with
the same protocol (1M steps, algo.value_process=false as the held-out runs), so interrupted variants
resume. Then summary.md (per env and variant: final evaluation mean, 95% CI, worst seed, the policy
update's median time per iteration, wall time) and curves.png (training return, mean over seeds with
a 95% band).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trpo.report import bootstrap_ci, curve, load_run  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PROTOCOL = ["algo.value_process=false"]  # as the held-out runs of the presets
VARIANTS = {  # name: (suite output directory, overrides beside the preset)
    "trpo (preset: CG, 10 iterations)": (RESULTS / "mujoco-heldout", None),
    "trpo + K-FAC-preconditioned CG": (RESULTS / "kfac-learning" / "pcg", ["algo.cg_preconditioner=kfac"]),
    "trpo + K-FAC-preconditioned CG, 3 iterations": (RESULTS / "kfac-learning" / "pcg-3",
                                                     ["algo.cg_preconditioner=kfac", "algo.cg_iters=3"]),
    "algo=kfac (K-FAC direction, TRPO's line search)": (RESULTS / "kfac-learning" / "kfac", ["algo=kfac"]),
}


def runs_of(directory: Path, env_id: str, seeds: list[int]) -> list:
    paths = [directory / "runs" / f"{env_id}-s{seed}" for seed in seeds]
    return [(load_run(p / "metrics.jsonl"), p) for p in paths if (p / "eval.json").is_file()]


def update_seconds(run_dir: Path) -> float:
    """The policy update's median time per iteration (time/update_s: the step, not the value fit)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(np.median([row["time/update_s"] for row in rows]))


def summary(envs: list[str], seeds: list[int]) -> str:
    rng = np.random.default_rng(0)
    lines = [f"# K-FAC in learning: held-out seeds {', '.join(map(str, seeds))}, 1M steps", "",
             "Command: `.venv/bin/python benchmarks/kfac_learning.py`. Final evaluation: 10 deterministic "
             "episodes per seed; update time: median over iterations of time/update_s (policy step, with its "
             "line search and the curvature diagnostics every 20 iterations); wall time: whole run, two runs "
             "at a time on two cores.", "",
             "| env | variant | seeds | final eval (mean) | 95% CI | worst seed | update (ms, median) | wall (s, mean) |",
             "|---|---|---|---|---|---|---|---|"]
    for env_id in envs:
        for name, (directory, _) in VARIANTS.items():
            found = runs_of(directory, env_id, seeds)
            if not found:
                lines.append(f"| {env_id} | {name} | 0 | | | | | |")
                continue
            finals = np.array([run.final_return for run, _ in found])
            low, high = bootstrap_ci(finals, rng)
            update = np.mean([update_seconds(path) for _, path in found]) * 1000
            wall = np.mean([run.wall_s for run, _ in found])
            lines.append(f"| {env_id} | {name} | {len(found)} | {finals.mean():.1f} | [{low:.1f}, {high:.1f}] | "
                         f"{finals.min():.1f} | {update:.1f} | {wall:.0f} |")
    return "\n".join(lines) + "\n"


def plot(envs: list[str], seeds: list[int], path: Path) -> None:
    rng = np.random.default_rng(0)
    figure, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.8), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        for name, (directory, _) in VARIANTS.items():
            found = runs_of(directory, env_id, seeds)
            if not found:
                continue
            grid, returns = curve([run for run, _ in found])
            low, high = bootstrap_ci(returns, rng)
            ax.plot(grid, returns.mean(0), label=f"{name} ({len(found)})")
            ax.fill_between(grid, low, high, alpha=0.2)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("training return")
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v4", "Hopper-v4", "Walker2d-v4"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[5, 6, 7, 8, 9])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="tables and plots from the runs already there")
    args = parser.parse_args()
    if not args.report_only:
        for directory, overrides in VARIANTS.values():
            if overrides is None:
                continue
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mujoco_suite.py"), "--envs", *args.envs,
                            "--seeds", *map(str, args.seeds), "--jobs", str(args.jobs), "--out", str(directory),
                            *PROTOCOL, *overrides], cwd=ROOT, check=False)
    out = RESULTS / "kfac-learning"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(summary(args.envs, args.seeds))
    plot(args.envs, args.seeds, out / "curves.png")
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
