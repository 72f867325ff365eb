"""What the curvature diagnostics cost: the HalfCheetah preset with `diagnostics.every` at its default
against `diagnostics.every=0`, same seed, in the order off, on, on, off, so that a drift of the
machine's speed over the benchmark (seen here: 5% between two runs of the same setting) cancels.

    python benchmarks/diagnostics_overhead.py [--steps 1000000] [--seed 0] [--out benchmarks/results/diagnostics-overhead]

Prints the wall time of the training loops and of the whole runs, their ratios, and what the
diagnosed updates cost inside the diagnosed runs.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from trpo.config import DiagnosticsConfig

ROOT = Path(__file__).resolve().parents[1]


def train_seconds(run_dir: Path, steps: int, seed: int, every: int) -> tuple[float, float]:
    """(the training loop's seconds, the whole run's) of one run."""
    shutil.rmtree(run_dir, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "trpo.train", "env=HalfCheetah-v4", f"seed={seed}", f"total_steps={steps}",
                    f"diagnostics.every={every}", f"hydra.run.dir={run_dir}", "logger.progress_bar=false"],
                   cwd=ROOT, check=True, capture_output=True)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    loop = sum(line["time/collect_s"] + line["time/update_s"] for line in lines)
    return loop, json.loads((run_dir / "eval.json").read_text())["time/wall_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/diagnostics-overhead")
    args = parser.parse_args()
    every = DiagnosticsConfig().every
    order = [("off-1", 0), ("on-1", every), ("on-2", every), ("off-2", 0)]
    seconds = {name: train_seconds(args.out / name, args.steps, args.seed, k) for name, k in order}
    off = [sum(seconds[name][i] for name in ("off-1", "off-2")) for i in (0, 1)]
    on = [sum(seconds[name][i] for name in ("on-1", "on-2")) for i in (0, 1)]
    per_run = ", ".join(f"{name} {loop:.1f} s" for name, (loop, _) in seconds.items())
    print(f"HalfCheetah-v4 preset, {args.steps} steps, seed {args.seed}, diagnostics.every=0 / {every}, "
          f"runs in this order: {per_run} (training loops)\n"
          f"  training loops (sum of time/collect_s + time/update_s), both off against both on: {off[0]:.1f} s, "
          f"{on[0]:.1f} s, ratio {on[0] / off[0]:.3f}\n"
          f"  whole runs (time/wall_s: start-up, loop, final evaluation): {off[1]:.1f} s, {on[1]:.1f} s, "
          f"ratio {on[1] / off[1]:.3f}")
    for name in ("on-1", "on-2"):
        rows = [json.loads(line) for line in (args.out / name / "metrics.jsonl").read_text().splitlines()]
        diagnosed = [row["time/update_s"] for row in rows if "curvature/trace" in row]
        plain = [row["time/update_s"] for row in rows if "curvature/trace" not in row]
        extra = len(diagnosed) * (statistics.median(diagnosed) - statistics.median(plain))
        print(f"  within {name}: {len(diagnosed)} diagnosed updates took {statistics.median(diagnosed) * 1e3:.1f} ms "
              f"(median) against {statistics.median(plain) * 1e3:.1f} ms, {extra:.1f} s in all, "
              f"{100 * extra / seconds[name][0]:.1f}% of its loop")


if __name__ == "__main__":
    main()
