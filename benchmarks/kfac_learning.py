"""K-FAC in learning: TRPO's preset beside K-FAC-preconditioned CG and algo=kfac, on the held-out seeds.

    .venv/bin/python benchmarks/kfac_learning.py [--envs HalfCheetah-v4 Hopper-v4 Walker2d-v4]
                                                 [--seeds 5 6 7 8 9] [--jobs 2] [--report-only] [--timing]

The preset's runs are the held-out v4 runs (benchmarks/results/mujoco-heldout, not rerun); every other
variant runs through benchmarks/mujoco_suite.py into benchmarks/results/kfac-learning/<variant>/ with
the same protocol (1M steps, algo.value_process=false as the held-out runs), so interrupted variants
resume. Then summary.md (per env and variant: final evaluation mean, 95% CI, worst seed, the policy
update's median time per iteration, wall time) and curves.png (training return, mean over seeds with
a 95% band). With --timing, update-timing.md: the policy step (`trpo_step`) of each variant on the same
batch (a preset rollout of the held-out seed-5 final policy), timed in turns in one process with one torch
thread, so that the variants' update costs compare as ratios measured in one run.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from throughput import preset  # noqa: E402
from trpo import collector, stepping  # noqa: E402
from trpo.evaluate import load_run as load_policy  # noqa: E402
from trpo.models import build_models  # noqa: E402
from trpo.report import bootstrap_ci, curve, load_run  # noqa: E402
from trpo.train import advantage_batch  # noqa: E402
from trpo.update import trpo_step  # noqa: E402
from trpo.workers import make_envs  # noqa: E402

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


def update_timing(envs: list[str], rounds: int = 60) -> str:
    """Median trpo_step milliseconds per variant on one batch per env, the variants timed in turns."""
    torch.set_num_threads(1)
    lines = ["# The policy step's cost per variant, measured in one run", "",
             "Command: `.venv/bin/python benchmarks/kfac_learning.py --report-only --timing`. Per env: one preset "
             f"rollout of the held-out seed-5 final policy; `trpo_step` of each variant on that batch, {rounds} rounds "
             "in turns after 3 warm-up rounds, one torch thread; median ms and the ratio to the preset's.", "",
             "| env | batch | " + " | ".join(VARIANTS) + " |", "|---|---|" + "---|" * len(VARIANTS)]
    for env_id in envs:
        _, policy, _ = load_policy(RESULTS / "mujoco-heldout" / "runs" / f"{env_id}-s5")
        configs = [preset(env_id, 10**6, [*PROTOCOL, *(overrides or [])]) for _, overrides in VARIANTS.values()]
        probe = make_envs(env_id, configs[0].env, configs[0].algo.gamma)
        _, value = build_models(configs[0], probe.single_observation_space, probe.single_action_space)
        rollout = collector.collect(probe, policy, stepping.start(probe, 0), configs[0].steps_per_env)
        probe.close()
        batch = advantage_batch(rollout, value, configs[0].algo, torch.device("cpu"))
        saved = {k: v.clone() for k, v in policy.state_dict().items()}
        times = [[] for _ in configs]
        for round_ in range(rounds + 3):
            for i, config in enumerate(configs):
                policy.load_state_dict(saved)
                started = time.perf_counter()
                trpo_step(policy, batch["obs"], batch["actions"], batch["log_probs"], batch["advantages"], config.algo,
                          torch.Generator().manual_seed(round_))
                if round_ >= 3:
                    times[i].append(time.perf_counter() - started)
        medians = [1000 * float(np.median(t)) for t in times]
        lines.append(f"| {env_id} | {len(batch['obs'])} | " +
                     " | ".join(f"{m:.1f} ({m / medians[0]:.2f}x)" for m in medians) + " |")
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
    parser.add_argument("--timing", action="store_true", help="also time each variant's policy step in one run")
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
    if args.timing:
        (out / "update-timing.md").write_text(update_timing(args.envs))
        print((out / "update-timing.md").read_text())


if __name__ == "__main__":
    main()
