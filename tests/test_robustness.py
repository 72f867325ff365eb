"""Never lose a run: bad input, signals, resume, determinism, numerical faults, unsafe checkpoints."""

import copy
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import toy_envs  # noqa: F401  (registers the Toy* ids)
from test_train import ROOT, composed, read_metrics
from trpo import checkpoint, collector
from trpo.envs import check_spaces
from trpo.evaluate import evaluate_policy, load_run
from trpo.train import train

TIMING_KEYS = ("time/sps", "time/collect_s", "time/update_s")


def cli(*overrides, cwd):
    """The trainer in a process group of its own, which a test may signal as a whole."""
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT / "tests"))  # toy_envs:<id> imports
    return subprocess.Popen([sys.executable, "-m", "trpo.train", *overrides], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finished_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "finished"
    train(composed("CartPole-v1", "debug=smoke"), run_dir)
    return run_dir


def bad_checkpoint(finished: Path, name: str, content: bytes) -> Path:
    """A copy of the finished run's directory whose checkpoint is `content`."""
    run_dir = finished.parent / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / checkpoint.LATEST).write_bytes(content)
    (run_dir / "config.yaml").write_text((finished / "config.yaml").read_text())
    return run_dir


class RunsCode:
    """Unpickling this would create `marker`: a checkpoint must never run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_bad_input_gets_one_line_status_2_and_nothing_written(tmp_path):
    finished = finished_run(tmp_path)
    truncated = bad_checkpoint(finished, "truncated", (finished / "checkpoints" / checkpoint.LATEST).read_bytes()[:500])
    corrupted = bad_checkpoint(finished, "corrupted", b"not a checkpoint at all")
    marker = tmp_path / "code-ran"
    malicious = bad_checkpoint(finished, "malicious", pickle.dumps({"policy": RunsCode(marker)}))
    empty = bad_checkpoint(finished, "empty", b"")
    (tmp_path / "a-file").write_text("")
    cases = {  # overrides -> what the one line must say
        ("env=CartPol-v1",): "close matches: CartPole-v1",
        ("algo.max_k=0.1",): "did you mean algo.max_kl",
        ("algo.max_kl=0",): "algo.max_kl=0.0 is invalid: must be > 0",
        ("algo.damping=-1",): "algo.damping=-1.0 is invalid: must be >= 0",
        ("algo.cg_iters=0",): "algo.cg_iters=0 is invalid: must be an integer >= 1",
        ("algo.cg_preconditioner=ilu",): "algo.cg_preconditioner='ilu' is invalid: choose one of ('none', 'diagonal', 'kfac')",
        ("algo.value_optimizer=lbfgs",): "algo.value_optimizer='lbfgs' is invalid: choose one of ('adam', 'kfac')",
        ("algo.gae_lambda=1.5",): "algo.gae_lambda=1.5 is invalid: must be in [0, 1]",
        ("algo.gamma=-0.1",): "algo.gamma=-0.1 is invalid: must be in [0, 1]",
        ("total_steps=10",): "total_steps=10 is invalid: must be at least one batch",
        ("seed=abc",): "seed=abc: Value 'abc' of type 'str' could not be converted to Integer",
        ("algo=foo",): "Could not find 'algo/foo'; available: kfac, npg, trpo",
        ("env=Blackjack-v1",): "observation space Tuple(Discrete(32), Discrete(11), Discrete(2)); supported: a 1-D Box",
        ("env_id=CartPole-v1",): "choose the environment with env=<Gymnasium id>",
        (f"resume={tmp_path / 'nothing'}",): "no checkpoint at",
        (f"resume={truncated}",): f"checkpoint {truncated / 'checkpoints' / checkpoint.LATEST} cannot be loaded",
        (f"resume={corrupted}",): f"checkpoint {corrupted / 'checkpoints' / checkpoint.LATEST} cannot be loaded",
        (f"resume={malicious}",): "Weights only load failed",
        (f"resume={empty}",): f"checkpoint {empty / 'checkpoints' / checkpoint.LATEST} cannot be loaded: ",
        (f"hydra.run.dir={finished}",): f"output directory '{finished}' already holds a run (metrics.jsonl)",
        (f"hydra.run.dir={finished}", "checkpoint.resume=auto", "algo.max_kl=0.05"):
            f"checkpoint.resume=auto: algo.max_kl=0.05 changes the experiment saved in {finished} (algo.max_kl=0.02)",
        (f"resume={finished}", "algo.max_kl=0.05"): "algo.max_kl=0.05 changes the experiment saved in the run",
        (f"hydra.run.dir={tmp_path / 'a-file' / 'run'}",): "is not writable",
        ("env=no_such_module:Some-v0",): "env=no_such_module:Some-v0 is invalid: module 'no_such_module' cannot be imported",
        ("env=toy_envs:NoSuch-v0",): "env=toy_envs:NoSuch-v0 is invalid: importing toy_envs did not register 'NoSuch-v0'",
        ("env=toy_envs:ToySized-v0", "env.kwargs={colour:red}"):
            "env=toy_envs:ToySized-v0 with env.kwargs={'colour': 'red'} and env.wrappers=[] cannot be made: ",
        ("env.wrappers=[toy_envs:NoWrapper]",): "env.wrappers entry 'toy_envs:NoWrapper' is invalid: toy_envs has no 'NoWrapper'",
    }
    if not torch.cuda.is_available():
        cases[("device=cuda",)] = "device='cuda' is invalid: no CUDA GPU is available"
    work = tmp_path / "work"  # the commands' working directory: runs/ would appear here
    work.mkdir()

    def command(overrides):  # a resumed run takes its env and settings from the run directory
        return overrides if overrides[0].startswith("resume=") else ("env=CartPole-v1", "debug=smoke", *overrides)

    def run(overrides):
        process = cli(*command(overrides), cwd=work)
        return *process.communicate(), process.returncode

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, cases))
    wrong = {}
    for (overrides, expected), (stdout, stderr, status) in zip(cases.items(), results):
        lines = stderr.strip().splitlines()
        if not (status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]):
            wrong[overrides] = status, stderr
    assert not wrong
    assert list(work.iterdir()) == [] and not (finished / ".hydra").exists()
    assert not marker.exists()
    process = cli("env=CartPole-v1", "debug=smoke", "algo.max_kl=0.1=", cwd=work)  # Hydra's own syntax error
    process.communicate()
    assert process.returncode == 1


def descendants(pid: int) -> set[int]:
    """The processes below pid, from the process table."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_ctrl_c_during_start_up_exits_promptly_with_status_130_and_leaves_no_process(tmp_path):
    process = cli("env=Pendulum-v1", "debug=smoke", "env.workers=2", "algo.value_process=true",
                  f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (children := descendants(process.pid)):  # the first env worker is starting
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - sent < 8 and process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "stopped by SIGINT; no checkpoint was written"
    children |= descendants(process.pid)
    while any(Path(f"/proc/{pid}").exists() for pid in children):  # none outlives the trainer for long
        assert time.monotonic() - sent < 12, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children]
        time.sleep(0.05)


def test_unsupported_action_space_is_named():
    with pytest.raises(ValueError, match=r"action space MultiBinary\(\(2, 2\)\); supported: a 1-D Box, Discrete, "
                                         r"a 1-D MultiDiscrete or a 1-D MultiBinary"):
        check_spaces("Some-v0", gym.spaces.Box(-1, 1, (2,)), gym.spaces.MultiBinary((2, 2)))
    for supported in (gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(3), gym.spaces.Discrete(3, start=-1)):
        check_spaces("Some-v0", gym.spaces.Box(-1, 1, (2,)), supported)


def test_malicious_checkpoint_does_not_run_its_code(tmp_path):
    marker = tmp_path / "code-ran"
    (tmp_path / checkpoint.LATEST).write_bytes(pickle.dumps({"x": RunsCode(marker)}))
    with pytest.raises(ValueError, match="cannot be loaded"):
        checkpoint.load(tmp_path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(RunsCode(marker)))  # the payload is live: plain unpickling runs it
    assert marker.exists()


@pytest.mark.parametrize("number, status, processes, group", [
    (signal.SIGTERM, 143, [], False), (signal.SIGINT, 130, [], False),
    (signal.SIGTERM, 143, ["algo.value_process=true"], False),
    (signal.SIGINT, 130, ["env.workers=2", "env.normalize_rewards=true"], True),  # as Ctrl-C reaches the group
    (signal.SIGTERM, 143, ["env.workers=2", "env.normalize_rewards=true", "algo.value_process=true"], True),
])
def test_signal_stops_after_a_checkpoint_and_resume_finishes_with_continuous_metrics(tmp_path, number, status,
                                                                                      processes, group):
    run_dir = tmp_path / "run"
    overrides = ["env=CartPole-v1", "debug=smoke", "total_steps=6400", "checkpoint.every=1000",
                 "algo.value_process=false", *processes, f"hydra.run.dir={run_dir}"]
    process = cli(*overrides, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not ((run_dir / "metrics.jsonl").exists() and len(read_metrics(run_dir)) >= 3):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    if group:  # the children, in groups of their own, are left to the trainer (kill -- -PGID, Ctrl-C)
        os.killpg(process.pid, number)
    else:
        process.send_signal(number)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert f"stopped by {signal.Signals(number).name}" in stderr and f"resume={run_dir}" in stderr
    saved = checkpoint.load(run_dir / "checkpoints")
    before = read_metrics(run_dir)
    assert saved["iteration"] == len(before) < 50 and not (run_dir / "eval.json").exists()
    hydra_record = (run_dir / ".hydra" / "overrides.yaml").read_text()

    resumed = cli(f"resume={run_dir}", cwd=tmp_path)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    rows = read_metrics(run_dir)
    assert rows[:len(before)] == before  # as logged before the stop, timings included: not run again
    assert [row["iteration"] for row in rows] == list(range(1, 51))
    assert [row["global_step"] for row in rows] == [128 * i for i in range(1, 51)]
    assert (run_dir / "eval.json").exists()
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == hydra_record  # the run's own record
    (resume_record,) = (run_dir / ".hydra").glob("resumed-*/overrides.yaml")
    assert f"resume={run_dir}" in resume_record.read_text()


def test_in_the_loop_a_signal_asks_to_stop_outside_it_and_on_a_second_sigint_the_run_stops_at_once():
    usr1 = signal.getsignal(signal.SIGUSR1)
    with checkpoint.GracefulStop() as stop:
        assert signal.getsignal(signal.SIGUSR1) is usr1
        with pytest.raises(checkpoint.StoppedNow, match="stopped by SIGTERM"):  # start-up: nothing to save yet
            os.kill(os.getpid(), signal.SIGTERM)
        assert not stop.requested
        with stop.deferring():
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested and stop.signal == signal.SIGINT
            with pytest.raises(checkpoint.StoppedNow, match="stopped by SIGINT"):
                os.kill(os.getpid(), signal.SIGINT)


def test_a_resumed_run_steps_only_the_remaining_env_steps(tmp_path, monkeypatch):
    overrides = ("debug=smoke", "steps_per_env=6", "checkpoint.every=1")  # 12 env steps an iteration
    train(composed("ToyTruncated-v0", *overrides, "total_steps=24"), tmp_path)
    before = read_metrics(tmp_path)
    steps = []
    step = toy_envs.CountingEnv.step
    monkeypatch.setattr(toy_envs.CountingEnv, "step", lambda env, action: steps.append(1) or step(env, action))
    train(composed("ToyTruncated-v0", *overrides, "total_steps=48", "checkpoint.resume=auto"), tmp_path)
    assert len(steps) == 24 + 2 * 3  # two more iterations, and the final evaluation: 2 episodes of 3 steps
    rows = read_metrics(tmp_path)
    assert rows[:2] == before and [row["global_step"] for row in rows] == [12, 24, 36, 48]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_a_resumed_run_acts_and_evaluates_with_the_trained_policy(tmp_path, monkeypatch, device):
    overrides = ("debug=smoke", "checkpoint.resume=auto", f"device={device}")
    train(composed("Pendulum-v1", *overrides), tmp_path)
    trained = checkpoint.load(tmp_path / "checkpoints")["policy"]
    if device == "cpu":  # the separate acting copy that device=cuda makes
        monkeypatch.setattr("trpo.train.acting_copy", lambda policy: copy.deepcopy(policy).cpu())
    acted_with = []
    collect = collector.collect
    monkeypatch.setattr(collector, "collect", lambda envs, policy, *args: acted_with.append(
        {name: tensor.clone() for name, tensor in policy.state_dict().items()}) or collect(envs, policy, *args))
    (tmp_path / "eval.json").unlink()
    train(composed("Pendulum-v1", *overrides), tmp_path)  # no steps left: only the final evaluation
    _, policy, _ = load_run(tmp_path)
    expected = evaluate_policy("Pendulum-v1", policy, 2, 0).mean()
    assert acted_with == [] and json.loads((tmp_path / "eval.json").read_text())["eval/episode_return"] == expected
    train(composed("Pendulum-v1", *overrides, "total_steps=384"), tmp_path)  # one more iteration
    assert acted_with[0].keys() == trained.keys()
    assert all(torch.equal(acted_with[0][name], tensor) for name, tensor in trained.items())


def comparable(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_same_seed_gives_identical_metrics(tmp_path):
    for name in ("a", "b"):
        train(composed("Pendulum-v1", "debug=smoke", "total_steps=640", "env.normalize_rewards=true"), tmp_path / name)
    assert comparable(read_metrics(tmp_path / "a")) == comparable(read_metrics(tmp_path / "b"))
    assert len(read_metrics(tmp_path / "a")) == 5


def test_resume_at_an_iteration_boundary_equals_the_uninterrupted_run(tmp_path):
    # ToyTruncated episodes last 3 steps and start alike, so with 6 steps per env every iteration ends
    # on episode boundaries: the restarted envs are where the uninterrupted ones would be (MuJoCo
    # states in mid-episode are not saved; README "Resuming").
    overrides = ("debug=smoke", "steps_per_env=6", "env.normalize_rewards=true", "checkpoint.every=1")
    train(composed("ToyTruncated-v0", *overrides, "total_steps=48"), tmp_path / "whole")
    train(composed("ToyTruncated-v0", *overrides, "total_steps=24"), tmp_path / "split")
    train(composed("ToyTruncated-v0", *overrides, "total_steps=48", "checkpoint.resume=auto"), tmp_path / "split")
    whole, split = (checkpoint.load(tmp_path / name / "checkpoints") for name in ("whole", "split"))
    for key in ("policy", "value"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, split[key][name]), (key, name)
    assert comparable(read_metrics(tmp_path / "whole")) == comparable(read_metrics(tmp_path / "split"))


@pytest.mark.parametrize("env_id, workers", [("ToyNaNReward-v0", 1), ("toy_envs:ToyNaNReward-v0", 2)])
def test_a_non_finite_reward_stops_the_run_with_the_reward_scaling_intact(tmp_path, env_id, workers):
    # Reward scaling on, as in every MuJoCo preset. The NaN comes at each env's fifth step (vector step 4),
    # so env 0's is environment step 4 * 2 + 1 = 9 of the first iteration.
    config = composed("ToyNaNReward-v0", "debug=smoke", "steps_per_env=12", "env.normalize_rewards=true",
                      f"env.workers={workers}")
    config.env_id = env_id  # the workers' processes find the toy envs by module
    with pytest.raises(FloatingPointError, match=r"returned a non-finite reward \(nan\) at environment step 9 "
                                                 r"\(env 0 of the vector env\); stopped after a checkpoint of step 0"):
        train(config, tmp_path)
    saved = checkpoint.load(tmp_path / "checkpoints")["reward_normalizer"]
    for scaling in saved["workers"] if workers > 1 else [saved]:
        assert scaling["count"] > 4 and all(torch.isfinite(scaling[key]).all() for key in scaling)


def test_non_finite_observation_stops_the_run_after_a_checkpoint(tmp_path):
    # 2 envs x 2 steps an iteration: the NaN comes at step 2 of episode 1 (step 5 of env 0), in iteration 3.
    with pytest.raises(FloatingPointError, match=r"ToyNaNObservation-v0 returned a non-finite observation \(nan\) at "
                                                 r"environment step 9 \(env 0 of the vector env\)"):
        train(composed("ToyNaNObservation-v0", "debug=smoke", "steps_per_env=2"), tmp_path)
    assert checkpoint.load(tmp_path / "checkpoints")["global_step"] == 8


def test_a_non_finite_reset_observation_stops_the_run(tmp_path):
    # Same-step autoreset: episode 1's reset observation comes with step 3 of each env (vector step 2), and
    # only as the next obs to act on: env 0's is environment step 2 * 2 + 1 = 5.
    with pytest.raises(FloatingPointError, match=r"ToyNaNReset-v0 returned a non-finite observation \(nan\) at "
                                                 r"environment step 5 \(env 0 of the vector env\)"):
        train(composed("ToyNaNReset-v0", "debug=smoke", "steps_per_env=6", "env.autoreset_mode=same_step"), tmp_path)
    with pytest.raises(FloatingPointError, match="ToyNaNFirstReset-v0 returned a non-finite observation at its reset"):
        train(composed("ToyNaNFirstReset-v0", "debug=smoke"), tmp_path / "first")


def test_wandb_key_is_never_written(tmp_path, monkeypatch):
    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    train(composed("CartPole-v1", "debug=smoke", "logger.wandb_mode=offline"), tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("wandb" in str(p) for p in files)
    assert not [p for p in files if secret.encode() in p.read_bytes()]


def test_resumed_run_continues_the_same_wandb_run(tmp_path):
    overrides = ("debug=smoke", "logger.wandb_mode=offline", "checkpoint.resume=auto")
    train(composed("CartPole-v1", *overrides), tmp_path)
    run_id = (tmp_path / "wandb_run_id").read_text()
    train(composed("CartPole-v1", *overrides, "total_steps=512"), tmp_path)
    assert (tmp_path / "wandb_run_id").read_text() == run_id
    runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(f"-{run_id}" in name for name in runs)  # W&B adds -1 within a second
    assert [row["iteration"] for row in read_metrics(tmp_path)] == [1, 2, 3, 4]
