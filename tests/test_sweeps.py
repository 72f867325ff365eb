"""Multirun sweeps through Hydra: seeds, the joblib and submitit launchers, Optuna."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(tmp_path: Path, *overrides: str, wandb_mode: str = "disabled") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "trpo.train", "--multirun", "env=CartPole-v1", "debug=smoke",
                           f"logger.wandb_mode={wandb_mode}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides],
                          cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)


def sweep(tmp_path: Path, *overrides: str, wandb_mode: str = "disabled") -> Path:
    result = run_sweep(tmp_path, *overrides, wandb_mode=wandb_mode)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "sweep"


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def objective(run_dir: Path) -> float:
    return json.loads((run_dir / "eval.json").read_text())["eval/episode_return"]


def test_multirun_over_seeds_writes_one_directory_per_job_grouped_in_wandb(tmp_path):
    sweep_dir = sweep(tmp_path, "seed=0,1", wandb_mode="offline")
    runs = job_dirs(sweep_dir)
    assert [run.name for run in runs] == ["0-CartPole-v1-s0", "1-CartPole-v1-s1"]
    for seed, run in enumerate(runs):
        assert OmegaConf.load(run / "config.yaml").seed == seed
        assert (run / "metrics.jsonl").read_text().count("\n") == 2
        objective(run)
        (wandb_file,) = run.glob("wandb/offline-run-*/*.wandb")
        assert sweep_dir.name.encode() in wandb_file.read_bytes()  # the W&B group: the sweep's name


def test_a_failing_job_is_reported_and_the_other_jobs_still_run(tmp_path):
    result = run_sweep(tmp_path, "total_steps=256,10,384")  # the second job's total_steps is invalid
    runs = job_dirs(tmp_path / "sweep")
    assert [run.name for run in runs] == [f"{job}-CartPole-v1-s0" for job in range(3)]
    assert "total_steps=10 is invalid" in (runs[1] / "train.log").read_text() and not (runs[1] / "eval.json").exists()
    assert [json.loads((run / "eval.json").read_text())["global_step"] for run in (runs[0], runs[2])] == [256, 384]
    assert result.returncode != 0 and "total_steps=10 is invalid" in result.stderr  # and the sweep says so at its end


def test_seeds_preset_with_parallel_local_jobs(tmp_path):
    runs = job_dirs(sweep(tmp_path, "sweep=[seeds,local]"))
    assert [run.name for run in runs] == [f"{i}-CartPole-v1-s{i}" for i in range(5)]
    assert all((run / "eval.json").is_file() for run in runs)


def test_submitit_local_launcher_runs_two_jobs(tmp_path):
    runs = job_dirs(sweep(tmp_path, "seed=3,4", "hydra/launcher=submitit_local"))
    assert [run.name for run in runs] == ["0-CartPole-v1-s3", "1-CartPole-v1-s4"]
    assert all((run / "checkpoints" / "latest.pt").is_file() for run in runs)


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                    reason="the optional 'sweep' extra is not installed")
def test_optuna_sweep_maximizes_the_objective_and_saves_the_best_parameters(tmp_path):
    sweep_dir = sweep(tmp_path, "sweep=optuna", "hydra.sweeper.n_trials=3", "total_steps=1024")
    runs = job_dirs(sweep_dir)
    assert len(runs) == 3
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.best_value == max(objective(run) for run in runs)
    assert set(results.best_params) == {"algo.max_kl", "algo.damping", "algo.gae_lambda", "algo.value_lr",
                                        "algo.value_epochs", "steps_per_env"}
    (best,) = [run for run in runs if objective(run) == results.best_value][:1]
    assert OmegaConf.load(best / "config.yaml").algo.max_kl == results.best_params["algo.max_kl"]


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                    reason="the optional 'sweep' extra is not installed")
def test_a_failed_optuna_trial_is_marked_failed_and_the_study_goes_on(tmp_path):
    # 256 steps for each of 2 envs is more than total_steps=256 allows: those trials fail before any work.
    result = run_sweep(tmp_path, "sweep=optuna", "hydra.sweeper.n_trials=4", "total_steps=256",
                       "hydra.sweeper.params.steps_per_env='choice(64,256)'")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = job_dirs(tmp_path / "sweep")
    failed = [run for run in runs if not (run / "eval.json").exists()]
    assert len(runs) == 4 and 0 < len(failed) < 4
    assert all("total_steps=256 is invalid" in (run / "train.log").read_text() for run in failed)
    assert (result.stdout + result.stderr).count("Failed experiment: total_steps=256 is invalid") == len(failed)
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.best_params["steps_per_env"] == 64
    assert results.best_value == max(objective(run) for run in runs if run not in failed)
