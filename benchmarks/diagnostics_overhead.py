"""What the curvature diagnostics cost: the HalfCheetah preset with `diagnostics.every` at its default
against `diagnostics.every=0`, one run after the other, same seed.

    python benchmarks/diagnostics_overhead.py [--steps 1000000] [--seed 0] [--out benchmarks/results/diagnostics-overhead]

Prints the wall time of each run's training loop and of the whole run, and their ratios.
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
    off = train_seconds(args.out / "off", args.steps, args.seed, 0)
    on = train_seconds(args.out / "on", args.steps, args.seed, every)
    rows = [json.loads(line) for line in (args.out / "on" / "metrics.jsonl").read_text().splitlines()]
    diagnosed = [row["time/update_s"] for row in rows if "curvature/trace" in row]
    plain = [row["time/update_s"] for row in rows if "curvature/trace" not in row]
    extra = len(diagnosed) * (statistics.median(diagnosed) - statistics.median(plain))
    print(f"HalfCheetah-v4 preset, {args.steps} steps, seed {args.seed}, diagnostics.every=0 then {every}:\n"
          f"  training loop (sum of time/collect_s + time/update_s): {off[0]:.1f} s, {on[0]:.1f} s, "
          f"ratio {on[0] / off[0]:.3f}\n"
          f"  whole run (time/wall_s: start-up, loop, final evaluation): {off[1]:.1f} s, {on[1]:.1f} s, "
          f"ratio {on[1] / off[1]:.3f}\n"
          f"  within the diagnosed run: {len(diagnosed)} diagnosed updates took {statistics.median(diagnosed) * 1e3:.1f} ms "
          f"(median) against {statistics.median(plain) * 1e3:.1f} ms, {extra:.1f} s in all, "
          f"{100 * extra / on[0]:.1f}% of its loop")


if __name__ == "__main__":
    main()
