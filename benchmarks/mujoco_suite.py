"""The MuJoCo learning benchmark: envs x seeds at their presets, beside the best published TRPO figures.

    python benchmarks/mujoco_suite.py [--envs HalfCheetah-v4 Hopper-v4 ...] [--seeds 0 1 2 3 4] [--jobs 2]
                                      [--out benchmarks/results/mujoco] [--peer tianshou]
                                      [Hydra overrides for every run ...]

Each run is `python -m trpo.train env=<env> seed=<seed> hydra.run.dir=<out>/runs/<env>-s<seed>` in a
process of its own, `--jobs` at a time with one torch thread each. A failed run is reported and the
others go on; runs that already wrote eval.json are kept, so an interrupted benchmark continues where
it stopped. Then `trpo.report` draws the curves (`<out>/<env>.png`, `<out>/results.md`) and this script
writes `<out>/comparison.md`: per env the final deterministic evaluation (mean, 95% bootstrap CI over
seeds, worst seed), seeds, steps and wall time, next to the best published figure and the target.
With --peer tianshou it runs Tianshou's TRPO with its own MuJoCo example settings instead, for the
same envs and seeds and the preset's step budget (`benchmarks/peers.py`, into `<out>/peers/<env>-s<seed>`),
evaluated the same way; the table then shows its mean beside ours, and the target becomes the peer's mean where
that is higher.
(Not named mujoco.py: a script's folder comes first on sys.path, where it would shadow mujoco.)
"""

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from trpo.command_line import composed
from trpo.report import bootstrap_ci, load_run, write_report

ROOT = Path(__file__).resolve().parents[1]
# env: (best published TRPO at 1M steps, our target for the mean over >= 5 seeds)
PUBLISHED = {
    "HalfCheetah-v4": ("4471 (Tianshou, 10 seeds); here: Tianshou 4750 and 7099, SB3-contrib 3598", 6000),
    "Hopper-v4": ("3372 +- 215 (SB3-contrib, 3 seeds)", 3400),
    "Walker2d-v4": ("4502 +- 234 (SB3-contrib, 3 seeds)", 4500),
    "Ant-v4": ("3554 +- 591 (SB3-contrib, 3 seeds)", 3600),
    "Swimmer-v4": ("359 (SB3-contrib)", 360),
    "Humanoid-v4": ("810 (Tianshou); 1030 (Engstrom et al. 2020)", 1000),
    "InvertedDoublePendulum-v4": ("8435 (Tianshou TRPO); 9243 (Tianshou NPG)", 9000),
}
# The -v5 envs have no published TRPO figures: Tianshou's TRPO run here (--peer tianshou) is the anchor, and
# the target its mean; where v5 left the reward as in v4 (HalfCheetah, Swimmer) the v4 target stands too.
V5_ANCHOR = "none at 1M; Tianshou's TRPO here is the anchor"
PUBLISHED |= {f"{name}-v5": (V5_ANCHOR, PUBLISHED[f"{name}-v4"][1] if name in ("HalfCheetah", "Swimmer") else None)
              for name in ("HalfCheetah", "Hopper", "Walker2d", "Ant", "Swimmer", "Humanoid",
                           "InvertedPendulum", "InvertedDoublePendulum")}


def run(env_id: str, seed: int, out: Path, overrides: list[str], peer: str | None = None,
        steps: int | None = None) -> str | None:
    """One training run (ours, or the peer's); None when it succeeded (or had already), else the end of its stderr."""
    run_dir = out / ("peers" if peer else "runs") / f"{env_id}-s{seed}"
    if (run_dir / "eval.json").exists():
        return None
    if peer:
        command = [sys.executable, str(ROOT / "benchmarks" / "peers.py"), peer, "--env", env_id, "--seed", str(seed),
                   "--steps", str(steps), "--run-dir", str(run_dir)]
    else:
        command = [sys.executable, "-m", "trpo.train", f"env={env_id}", f"seed={seed}", f"hydra.run.dir={run_dir}",
                   "logger.progress_bar=false", "torch_threads=1", *overrides]
        if (run_dir / "checkpoints").exists():
            command.append("checkpoint.resume=auto")  # continue an interrupted run
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
    return None if result.returncode == 0 else result.stderr[-2000:]


def final_returns(directory: Path, env_id: str) -> tuple[np.ndarray, list[dict]]:
    evals = [json.loads(p.read_text()) for p in sorted(directory.glob(f"{env_id}-s*/eval.json"))]
    return np.array([e["eval/episode_return"] for e in evals]), evals


def results_table(out: Path) -> str:
    """The comparison over every env with runs in out (also those of earlier invocations)."""
    rng = np.random.default_rng(0)
    found = {p.parent.name.rsplit("-s", 1)[0] for p in (out / "runs").glob("*/eval.json")}
    envs = [env_id for env_id in PUBLISHED if env_id in found] + sorted(found - set(PUBLISHED))
    lines = ["| env | seeds | steps | final eval (mean) | 95% CI | worst seed | wall time (s, mean) | "
             "accepted updates over max_kl | Tianshou TRPO here (seeds: mean [95% CI]) | best published TRPO at 1M | "
             "target |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for env_id in envs:
        finals, evals = final_returns(out / "runs", env_id)
        low, high = bootstrap_ci(finals, rng)
        published, target = PUBLISHED.get(env_id, ("", float("nan")))
        peer, _ = final_returns(out / "peers", env_id)
        peer_cell = ""
        if len(peer):
            peer_low, peer_high = bootstrap_ci(peer, rng)
            peer_cell = f"{len(peer)}: {peer.mean():.1f} [{peer_low:.1f}, {peer_high:.1f}]"
            target = max(target or 0, round(float(peer.mean())))
        counts = [load_run(p.parent / "metrics.jsonl").kl_violations
                  for p in (out / "runs").glob(f"{env_id}-s*/eval.json")]
        violations = "n/a" if None in counts else sum(counts)  # n/a: some run logged no KL
        lines.append(f"| {env_id} | {len(finals)} | {min(e['global_step'] for e in evals)} | {finals.mean():.1f} | "
                     f"[{low:.1f}, {high:.1f}] | {finals.min():.1f} | "
                     f"{np.mean([e['time/wall_s'] for e in evals]):.0f} | {violations} | {peer_cell} | {published} | "
                     f"{'Tianshou here (not run yet)' if target is None else target} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=[env_id for env_id in PUBLISHED if env_id.endswith("-v4")])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mujoco")
    parser.add_argument("--peer", choices=["tianshou"], help="run this peer's TRPO instead of ours")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    jobs = [(env_id, seed) for env_id in args.envs for seed in args.seeds]
    # The peer trains for the preset's budget (200k for InvertedPendulum); composed here, as Hydra is not thread-safe.
    budgets = {env_id: composed([f"env={env_id}"])[0].total_steps for env_id in args.envs} if args.peer else {}
    with ThreadPoolExecutor(args.jobs) as pool:
        failures = list(pool.map(lambda job: run(*job, args.out, args.overrides, args.peer, budgets.get(job[0])), jobs))
    for (env_id, seed), failure in zip(jobs, failures):
        if failure:
            print(f"{env_id} seed {seed} failed:\n{failure}", file=sys.stderr)
    write_report([d for d in (args.out / "runs", args.out / "peers") if d.is_dir()], args.out)
    table = results_table(args.out)
    (args.out / "comparison.md").write_text(table)
    print(table)
    sys.exit(1 if any(failures) else 0)


if __name__ == "__main__":
    main()
