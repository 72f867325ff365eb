"""Compression study: the return each method keeps on the held-out runs' final policies.

    .venv/bin/python benchmarks/compression_study.py [--envs HalfCheetah-v4 ...] [--seeds 5 6 7 8 9]

For every run benchmarks/results/mujoco-heldout/runs/<env>-s<seed> (its policy.pt, kept in the repo):
rtn, gptq and incoherent at 8, 4, 3 and 2 bits, magnitude and obs at 50, 75 and 90% sparsity, each
with trpo.compress's own functions and protocol (calibration and held-out states from the run's
policy, the run's evaluation episodes; the original is evaluated once per run). One JSON per setting
under <out>/runs/<env>-s<seed>/ (existing ones are kept: the study resumes), then summary.md and one
plot per family (quantization.png, pruning.png): return kept against bits or sparsity, a line per
method, mean over seeds with the min-max range.
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trpo.compress import compress_policy, compression_report, policy_states, setting_name  # noqa: E402
from trpo.evaluate import evaluate_policy, load_run  # noqa: E402

ENVS = ["HalfCheetah-v4", "Hopper-v4", "Walker2d-v4", "Ant-v4", "Swimmer-v4", "Humanoid-v4",
        "InvertedDoublePendulum-v4"]
BITS = [8, 4, 3, 2]
SPARSITIES = [0.5, 0.75, 0.9]
FAMILIES = {"quantization": (["rtn", "gptq", "incoherent"], BITS), "pruning": (["magnitude", "obs"], SPARSITIES)}
BASELINE = {"gptq": "rtn", "incoherent": "rtn", "obs": "magnitude"}
# (method, setting, least return kept) that issue 22 measures against
TARGETS = [("gptq", 4, 0.98), ("incoherent", 3, 0.90), ("obs", 0.75, 0.95)]


def settings(method: str) -> list:
    return BITS if method in FAMILIES["quantization"][0] else SPARSITIES


def result_name(method: str, value) -> str:
    bits, sparsity = (value, 0.0) if method in FAMILIES["quantization"][0] else (4, value)
    return f"{method}-{setting_name(method, bits, sparsity, None)}.json"


def study_run(run_dir: Path, out: Path) -> None:
    """Every setting not yet in out for one run."""
    todo = [(m, v) for methods, _ in FAMILIES.values() for m in methods for v in settings(m)
            if not (out / result_name(m, v)).is_file()]
    if not todo:
        return
    config, policy, _ = load_run(run_dir)
    steps = config.steps_per_env * config.env.num_envs
    calibration, held_out = policy_states(config, policy, steps)
    original = evaluate_policy(config.env_id, policy, config.eval.episodes, config.seed, config.env)
    out.mkdir(parents=True, exist_ok=True)
    for method, value in todo:
        bits, sparsity = (value, 0.0) if method in FAMILIES["quantization"][0] else (4, value)
        compressed = compress_policy(policy, calibration, method, bits, sparsity, None, config.seed)
        report = compression_report(config, policy, compressed, held_out, method, bits, sparsity, None, steps,
                                    original)
        (out / result_name(method, value)).write_text(json.dumps(report, indent=1))
        print(f"{run_dir.name} {method} {value}: kept {report['return_kept']:.3f}, "
              f"KL {report['kl_original_compressed']:.3g}", flush=True)


def load_results(out: Path, envs: list[str], seeds: list[int]) -> dict:
    """(env, method, setting) -> list of reports over the seeds that have one."""
    results = {}
    for env in envs:
        for methods, _ in FAMILIES.values():
            for method in methods:
                for value in settings(method):
                    paths = [out / "runs" / f"{env}-s{seed}" / result_name(method, value) for seed in seeds]
                    reports = [json.loads(p.read_text()) for p in paths if p.is_file()]
                    if reports:
                        results[env, method, value] = reports
    return results


def kept(reports: list[dict]) -> np.ndarray:
    return np.array([r["return_kept"] for r in reports])


def cell(reports: list[dict] | None) -> str:
    if not reports:
        return "-"
    values = 100 * kept(reports)
    kl = np.exp(np.mean(np.log([max(r["kl_original_compressed"], 1e-12) for r in reports])))
    return f"{values.mean():.1f} ({values.min():.0f}-{values.max():.0f}) · {kl:.1g}"


def summary(results: dict, envs: list[str], seeds: list[int]) -> str:
    lines = [f"# Compression study: held-out runs, seeds {', '.join(map(str, seeds))}", "",
             "Return kept = compressed / original mean evaluation return (10 deterministic episodes, the same "
             "seeds for both), in %: mean over seeds (min-max), then the geometric mean over seeds of "
             "KL(original || compressed) on held-out states. Command: "
             "`.venv/bin/python benchmarks/compression_study.py`.", ""]
    for family, (methods, values) in FAMILIES.items():
        unit = "bits" if family == "quantization" else "sparsity"
        lines += [f"## {family.capitalize()}", "", f"| env | method | " + " | ".join(f"{v:g} {unit}" for v in values)
                  + " |", "|---|---|" + "---|" * len(values)]
        for env in envs:
            for method in methods:
                lines.append(f"| {env} | {method} | " + " | ".join(cell(results.get((env, method, v))) for v in values)
                             + " |")
        lines.append("")
    lines += ["## Targets", "", "| env | " + " | ".join(f"{m} at {v:g}: >= {t:.0%}" for m, v, t in TARGETS)
              + " | beats its baseline where that loses > 2% |", "|---|" + "---|" * (len(TARGETS) + 1)]
    for env in envs:
        row = []
        for method, value, target in TARGETS:
            reports = results.get((env, method, value))
            row.append("-" if not reports else f"{kept(reports).mean():.1%} {'yes' if kept(reports).mean() >= target else 'no'}")
        misses = []
        for (e, method, value), reports in results.items():
            baseline = results.get((e, BASELINE.get(method), value))
            if e == env and baseline and kept(baseline).mean() < 0.98 and kept(reports).mean() <= kept(baseline).mean():
                misses.append(f"{method} {value:g}")
        row.append("yes" if not misses else "no: " + ", ".join(misses))
        lines.append(f"| {env} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def kl(reports: list[dict]) -> np.ndarray:
    return np.array([r["kl_original_compressed"] for r in reports])


def plot(results: dict, envs: list[str], family: str, path: Path, metric=kept) -> None:
    """One panel per env: the metric (return kept, or kl) against bits or sparsity, a line per method."""
    methods, values = FAMILIES[family]
    columns = 4
    rows = -(-len(envs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for ax, env in zip(axes.flat, envs):
        for method in methods:
            points = [(v, metric(results[env, method, v])) for v in values if (env, method, v) in results]
            if not points:
                continue
            x = [v for v, _ in points]
            ax.plot(x, [k.mean() for _, k in points], marker="o", label=method)
            ax.fill_between(x, [k.min() for _, k in points], [k.max() for _, k in points], alpha=0.2)
        if metric is kept:
            ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set_title(env)
        ax.set_xlabel("bits" if family == "quantization" else "sparsity")
        if metric is kept:
            ax.set_ylabel("return kept")
            ax.set_ylim(-0.1, 1.15)
        else:
            ax.set_ylabel("KL(original || compressed)")
            ax.set_yscale("log")
        if family == "quantization":
            ax.set_xscale("log", base=2)
            ax.set_xticks(values, [str(v) for v in values])
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(envs):]:
        ax.axis("off")
    what = "return kept by" if metric is kept else "KL on held-out states of"
    figure.suptitle(f"{family}: {what} the compressed policy (mean over seeds, min-max shaded)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=ENVS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[5, 6, 7, 8, 9])
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks/results/mujoco-heldout/runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/compression")
    parser.add_argument("--report-only", action="store_true", help="tables and plots from the results already there")
    args = parser.parse_args()
    torch.set_num_threads(1)  # layers of 64-256 columns: threads only contend with the envs (and other runs)
    if not args.report_only:
        for env in args.envs:
            for seed in args.seeds:
                run_dir = args.runs / f"{env}-s{seed}"
                if not (run_dir / "policy.pt").is_file():
                    sys.exit(f"error: {run_dir} has no policy.pt (finish its held-out run first)")
                study_run(run_dir, args.out / "runs" / run_dir.name)
    envs = [env for env in ENVS if env in args.envs] + [env for env in args.envs if env not in ENVS]
    results = load_results(args.out, envs, args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(summary(results, envs, args.seeds))
    for family in FAMILIES:
        plot(results, envs, family, args.out / f"{family}.png")
        plot(results, envs, family, args.out / f"{family}-kl.png", metric=kl)
    print(f"wrote {args.out / 'summary.md'}")


if __name__ == "__main__":
    main()
