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
from trpo.report import write_report

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
    run_dirs = [args.out / "runs" / f"{env_id}-s{seed}" for env_id, seed in jobs]
    for run_dir in run_dirs:
        if (failure := final_spectrum(run_dir)) is not None:
            print(f"spectrum of {run_dir} failed:\n{failure}", file=sys.stderr)
    write_report([args.out / "runs"], args.out)
    summary = study_summary(args.envs, args.seeds, args.out / "runs")
    (args.out / "summary.md").write_text(summary)
    print(summary)


def diagnostic_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "curvature/trace" in row]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def study_summary(envs: list[str], seeds: list[int], runs: Path) -> str:
    """Two tables: the dense spectrum at the end of training, and the diagnostics over training."""
    final = ["| env | dim | states | trace | lambda_max | eigenvalues carrying half the trace | numerical rank | "
             "eigenvalues above the damping | condition of F | condition of F + damping I |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    during = ["| env | lambda_1: first -> last | trace: first -> last | effective rank (median) | "
              "condition of F + damping I (median, estimated) | CG relative residual (median) | "
              "Spearman(log condition, CG residual) | grad in top 5 (median) | step in top 5 (median) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for env_id in envs:
        dirs = [runs / f"{env_id}-s{seed}" for seed in seeds if (runs / f"{env_id}-s{seed}" / "eval.json").exists()]
        spectra = [json.loads((d / "spectrum.json").read_text()) for d in dirs if (d / "spectrum.json").exists()]
        mean = lambda key: np.mean([s[key] for s in spectra if s.get(key) is not None])  # noqa: E731
        if spectra and "eigenvalues" in spectra[0]:
            conditions = [s["condition"] for s in spectra]
            singular = sum(c is None for c in conditions)
            condition = (f"{np.median([c for c in conditions if c is not None]):.3g}" if singular < len(spectra)
                         else "") + (f" ({singular} of {len(spectra)} singular)" if singular else "")
            final.append(f"| {env_id} | {spectra[0]['dim']} | {spectra[0]['states']} | {mean('trace'):.4g} | "
                         f"{mean('lambda_max'):.4g} | {mean('half_trace_count'):.1f} "
                         f"({100 * mean('half_trace_count') / spectra[0]['dim']:.2f}% of dim) | {mean('rank'):.0f} | "
                         f"{np.mean([np.sum(np.array(s['eigenvalues']) > s['damping']) for s in spectra]):.0f} | "
                         f"{condition} | {np.median([s['condition_damped'] for s in spectra]):.4g} |")
        elif spectra:
            final.append(f"| {env_id} | {spectra[0]['dim']} | {spectra[0]['states']} | {mean('trace'):.4g} | "
                         f"{mean('lambda_max'):.4g} | (estimated: dim > 20k) | | | | >= "
                         f"{np.median([s['condition_damped_lower_bound'] for s in spectra]):.4g} |")
        rows = [diagnostic_rows(d) for d in dirs]
        if not rows:
            continue
        flat = [row for run_rows in rows for row in run_rows]
        median = lambda key: np.median([row[key] for row in flat])  # noqa: E731
        first = lambda key: np.mean([run_rows[0][key] for run_rows in rows])  # noqa: E731
        last = lambda key: np.mean([run_rows[-1][key] for run_rows in rows])  # noqa: E731
        correlation = spearman(np.log([row["curvature/condition"] for row in flat]),
                               np.array([row["curvature/cg_relative_residual"] for row in flat]))
        during.append(f"| {env_id} | {first('curvature/eigenvalue_1'):.3g} -> {last('curvature/eigenvalue_1'):.3g} | "
                      f"{first('curvature/trace'):.3g} -> {last('curvature/trace'):.3g} | "
                      f"{median('curvature/effective_rank'):.1f} | {median('curvature/condition'):.3g} | "
                      f"{median('curvature/cg_relative_residual'):.3f} | {correlation:.2f} | "
                      f"{median('curvature/grad_in_top_k'):.3f} | {median('curvature/step_in_top_k'):.4f} |")
    return ("At the end of training (`python -m trpo.spectrum`, one training batch of fresh states, mean over seeds; "
            "condition numbers: median):\n\n" + "\n".join(final) + "\n\nOver training (`curvature/*` every "
            "`diagnostics.every` iterations; first -> last: mean over seeds; medians over every diagnostic of every "
            "seed):\n\n" + "\n".join(during) + "\n")


if __name__ == "__main__":
    main()
