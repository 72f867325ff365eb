import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from trpo.advantages import gae
from trpo.config import Config
from trpo.evaluate import evaluate_policy, load_run
from trpo.train import train

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["global_step", "iteration", "rollout/episode_return", "rollout/episode_length", "rollout/episodes",
           "policy/kl", "policy/surrogate_gain", "policy/expected_gain", "policy/step_fraction", "policy/accepted",
           "policy/line_search_steps", "policy/cg_residual", "policy/grad_norm", "policy/entropy", "value/loss",
           "value/explained_variance", "time/sps", "time/collect_s", "time/update_s"]


def run_cli(*overrides, cwd=ROOT):
    env = dict(os.environ, WANDB_MODE="disabled")
    return subprocess.run([sys.executable, "-m", "trpo.train", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def composed(env_id: str, *overrides: str) -> Config:
    """The config `python -m trpo.train env=<env_id> <overrides>` would run, without Hydra's run directory."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", [f"env={env_id}", *overrides])
    cfg.env_id = env_id  # ${hydra:runtime.choices.env} resolves only inside a Hydra run
    return OmegaConf.to_object(cfg)


def test_smoke_run_writes_the_run_directory(tmp_path):
    result = run_cli("env=CartPole-v1", "debug=smoke", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    for name in (".hydra/config.yaml", "config.yaml", "metrics.jsonl", "checkpoints/latest.pt", "eval.json",
                 "train.log"):
        assert (tmp_path / name).is_file(), name
    rows = read_metrics(tmp_path)
    assert [row["iteration"] for row in rows] == [1, 2] and rows[-1]["global_step"] == 256
    for row in rows:
        assert set(METRICS) <= set(row) and all(math.isfinite(row[key]) for key in METRICS)
        assert row["policy/accepted"] == 0 or row["policy/kl"] <= 0.02  # the CartPole preset's max_kl
    assert "final deterministic evaluation" in result.stdout


def test_offline_wandb_needs_no_account_network_or_prompt(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "trpo.train", "env=CartPole-v1", "debug=smoke",
                             "logger=wandb_offline", "logger.wandb_mode=offline", f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (offline_run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert list(offline_run.glob("*.wandb"))  # the run's data, ready for `wandb sync`


def test_any_registered_id_without_a_preset_trains(tmp_path):
    result = run_cli("env=MountainCarContinuous-v0", "debug=smoke", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert OmegaConf.load(tmp_path / "config.yaml").env_id == "MountainCarContinuous-v0"


def test_unknown_env_id_names_close_matches(tmp_path):
    result = run_cli("env=HalfCheeta-v4", "debug=smoke", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "env='HalfCheeta-v4' is not a registered Gymnasium environment id" in result.stderr
    assert "HalfCheetah-v4" in result.stderr


def test_a_custom_env_trains_by_module_id_with_kwargs_wrappers_workers_and_the_value_process(tmp_path):
    # toy_envs is imported by its name (no test code runs in the trainer), in every process that makes envs.
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT / "tests"))
    result = subprocess.run([sys.executable, "-m", "trpo.train", "env=toy_envs:ToySized-v0", "debug=smoke",
                             "env.kwargs={size:5}", "env.wrappers=[toy_envs:DoubleReward]", "env.workers=2",
                             "algo.value_process=true", f"hydra.run.dir={tmp_path}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    saved = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert saved["policy"]["mean.0.weight"].shape[1] == 5  # the kwarg reached the envs
    assert OmegaConf.load(tmp_path / "config.yaml").env.kwargs == {"size": 5}
    assert read_metrics(tmp_path)[-1]["rollout/episode_return"] == 6.0  # 3 steps of reward 1, doubled
    assert json.loads((tmp_path / "eval.json").read_text())["eval/episode_return"] == 6.0
    evaluated = subprocess.run([sys.executable, "-m", "trpo.evaluate", str(tmp_path), "episodes=2"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
    assert evaluated.returncode == 0 and "return 6.00" in evaluated.stdout, evaluated.stderr


def test_presets_apply_and_command_line_overrides_win():
    config = composed("HalfCheetah-v4", "algo.max_kl=0.05", "env.num_envs=4")
    assert config.env.normalize_rewards and config.algo.value_epochs == 20  # from conf/env/HalfCheetah-v4.yaml
    assert config.algo.max_kl == 0.05 and config.env.num_envs == 4
    assert composed("MountainCarContinuous-v0").algo == Config().algo  # no preset: the schema's defaults


def learn(env_id: str, tmp_path: Path, total_steps: int, *overrides: str) -> tuple[float, list[dict]]:
    config = composed(env_id, f"total_steps={total_steps}", "logger=none", "logger.progress_bar=false", *overrides)
    final = train(config, tmp_path)
    return final, read_metrics(tmp_path)


# Thresholds rest on seeds 0 to 2 recorded by benchmarks/learning_checks.py (benchmarks/README.md):
# CartPole 178, 500, 500 from about 20 (one seed in three may settle early at 30k steps: the median is
# asserted), Pendulum -322 to -168 from about -1200.
def test_cartpole_learns(tmp_path):
    runs = [learn("CartPole-v1", tmp_path / f"s{seed}", 30_000, f"seed={seed}") for seed in (0, 1, 2)]
    assert all(rows[0]["rollout/episode_return"] < 100 for _, rows in runs)
    assert sorted(final for final, _ in runs)[1] >= 300


def test_pendulum_learns(tmp_path):
    final, rows = learn("Pendulum-v1", tmp_path, 100_000)
    assert rows[0]["rollout/episode_return"] < -900
    assert final >= -400


# Rewards count the action's components that match the target the observation sets (tests/toy_envs.py):
# a uniformly random policy gets 5/6 (MultiDiscrete [2, 3]) and 3/2 (MultiBinary 3), the best 2 and 3.
# Seed 0 reached 1.88 and 2.98 at these settings.
@pytest.mark.parametrize("env_id, random_return, threshold", [("ToyMultiDiscrete-v0", 0.83, 1.6),
                                                              ("ToyMultiBinary-v0", 1.5, 2.6)])
def test_multi_discrete_and_multi_binary_policies_learn(tmp_path, env_id, random_return, threshold):
    import toy_envs  # noqa: F401  (registers the Toy* ids)

    config = composed(env_id, "total_steps=16384", "logger=none", "logger.progress_bar=false", "eval.episodes=50",
                      "algo.max_kl=0.05")
    final = train(config, tmp_path)
    assert read_metrics(tmp_path)[0]["rollout/episode_return"] < random_return + 0.5  # the mean of 10 episodes
    assert final >= threshold


def test_evaluate_reproduces_the_runs_final_return(tmp_path):
    config = composed("Pendulum-v1", "debug=smoke")
    final = train(config, tmp_path)
    loaded_config, policy, _ = load_run(tmp_path)
    assert loaded_config == config
    returns = evaluate_policy(loaded_config.env_id, policy, loaded_config.eval.episodes, loaded_config.seed)
    assert returns.mean() == pytest.approx(final, abs=1e-6)
    assert json.loads((tmp_path / "eval.json").read_text())["eval/episode_return"] == pytest.approx(final)
    cli = subprocess.run([sys.executable, "-m", "trpo.evaluate", str(tmp_path), "episodes=2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and f"return {final:.2f}" in cli.stdout
    assert "RuntimeWarning" not in cli.stderr, cli.stderr  # `import trpo` must not import trpo.evaluate first


def test_evaluate_writes_a_video(tmp_path):
    train(composed("InvertedPendulum-v4", "debug=smoke"), tmp_path)
    cli = subprocess.run([sys.executable, "-m", "trpo.evaluate", str(tmp_path), "episodes=1", "video=true"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    video = tmp_path / "videos" / "eval.mp4"
    assert video.is_file() and video.stat().st_size > 1000


def test_evaluate_rejects_unknown_options(tmp_path):
    cli = subprocess.run([sys.executable, "-m", "trpo.evaluate", str(tmp_path), "episode=3"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1 and "unknown option(s) ['episode']" in cli.stderr


def test_env_id_override_points_to_env(tmp_path):
    result = run_cli("env_id=Hopper-v4", "debug=smoke", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "env=<Gymnasium id>" in result.stderr


def test_resume_continues_from_the_checkpoint_without_duplicate_iterations(tmp_path):
    first = composed("CartPole-v1", "debug=smoke", "checkpoint.resume=auto")
    train(first, tmp_path)
    saved = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert (saved["iteration"], saved["global_step"]) == (2, 256)
    with open(tmp_path / "metrics.jsonl", "a") as metrics:  # lines logged after the checkpoint, then a crash
        metrics.write(json.dumps({"iteration": 3, "global_step": 384}) + "\n")
        metrics.write('{"iteration": 4, "global_st')  # cut short by the crash
    train(composed("CartPole-v1", "debug=smoke", "checkpoint.resume=auto", "total_steps=512"), tmp_path)
    rows = read_metrics(tmp_path)
    assert [row["iteration"] for row in rows] == [1, 2, 3, 4]
    assert [row["global_step"] for row in rows] == [128, 256, 384, 512]
    assert all(set(METRICS) <= set(row) for row in rows)
    resumed = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert not torch.equal(resumed["policy"]["logits.0.weight"], saved["policy"]["logits.0.weight"])


def test_a_decaying_value_lr_reaches_zero_at_the_last_of_the_runs_updates(tmp_path):
    train(composed("CartPole-v1", "debug=smoke", "total_steps=320", "algo.value_lr_decay=true"), tmp_path)
    saved = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert saved["iteration"] == saved["value_fit"]["scheduler"]["last_epoch"] == 3  # ceil(320 / 128)
    assert saved["value_fit"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0, abs=1e-12)


def test_a_decaying_max_kl_bounds_each_updates_kl_by_its_share_of_the_run(tmp_path):
    kls = {}
    for decay in (False, True):
        run_dir = tmp_path / str(decay)
        train(composed("CartPole-v1", "debug=smoke", "total_steps=512", f"algo.max_kl_decay={decay}"), run_dir)
        rows = read_metrics(run_dir)
        assert all(row["policy/accepted"] == 1 for row in rows)
        kls[decay] = [row["policy/kl"] for row in rows]
    max_kl = 0.02  # CartPole-v1's preset; 4 updates of 128 steps
    assert all(kl <= max_kl * (1 - update / 4) for update, kl in enumerate(kls[True]))
    assert kls[False][3] > max_kl / 4  # the undecayed last step is larger than the decayed bound


def test_gae_discounts_each_update_with_the_gamma_scheduled_towards_gamma_final(tmp_path, monkeypatch):
    gammas = []

    def recording_gae(*args):
        gammas.append(args[5])
        return gae(*args)

    monkeypatch.setattr("trpo.train.gae", recording_gae)
    train(composed("CartPole-v1", "debug=smoke", "total_steps=512", "algo.gamma=0.99", "algo.gamma_final=0.9"),
          tmp_path)
    assert gammas == pytest.approx([0.99 - 0.09 * update / 4 for update in range(4)])  # 4 updates of 128 steps


def test_a_run_resumed_with_more_steps_decays_the_value_lr_over_its_new_length(tmp_path):
    train(composed("CartPole-v1", "debug=smoke", "total_steps=256", "algo.value_lr_decay=true"), tmp_path)
    ended = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    train(composed("CartPole-v1", "debug=smoke", "checkpoint.resume=auto", "total_steps=512",
                   "algo.value_lr_decay=true"), tmp_path)
    resumed = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert resumed["value_fit"]["scheduler"]["last_epoch"] == 4
    assert resumed["value_fit"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0, abs=1e-12)
    # at the old schedule's lr (0 from the second fit on) the critic would not move after the resume
    weights = [name for name in resumed["value"] if not name.startswith("normalizer.")]
    assert weights and any(not torch.equal(resumed["value"][name], ended["value"][name]) for name in weights)


def test_a_new_run_refuses_a_directory_that_holds_a_run(tmp_path):
    train(composed("CartPole-v1", "debug=smoke"), tmp_path)
    metrics = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="already holds a run \\(metrics.jsonl\\); continue it with resume="):
        train(composed("CartPole-v1", "debug=smoke"), tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == metrics


def test_periodic_evaluation_is_logged_every_eval_every_steps(tmp_path):
    train(composed("CartPole-v1", "debug=smoke", "total_steps=640", "eval.every=256"), tmp_path)
    rows = read_metrics(tmp_path)  # 128 steps an iteration: evaluations after steps 256 and 512
    assert [row["global_step"] for row in rows if "eval/episode_return" in row] == [256, 512]
    assert all(1 <= row["eval/episode_return"] <= 500 for row in rows if "eval/episode_return" in row)
