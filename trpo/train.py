"""Training entry point: `python -m trpo.train env=HalfCheetah-v4 [overrides]`."""

import copy
import functools
import json
import logging
import random
import sys
import time
import types
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import Callable, NoReturn

import gymnasium as gym
import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from trpo import checkpoint, collector, command_line, stepping
from trpo.advantages import gae
from trpo.api import Agent, Run
from trpo.collector import Rollout
from trpo.config import AlgoConfig, Config, DiagnosticsConfig
from trpo.diagnostics import curvature_diagnostics
from trpo.estimators import default_iters
from trpo.evaluate import evaluate_policy, record_video
from trpo.kfac import KFACCritic
from trpo.logger import RunLogger
from trpo.models import build_models
from trpo.policy import Policy, ValueNetwork
from trpo.update import trpo_step
from trpo.value_process import ValueFitter
from trpo.workers import load_reward_normalizer_state, make_envs, reward_normalizer_state

log = logging.getLogger(__name__)


def train(config: Config, run_dir: Path) -> float:
    """Train; writes config.yaml, metrics.jsonl, checkpoints/, wandb/, then eval.json and policy.pt under run_dir.

    Returns the mean return of the final deterministic evaluation (the sweep objective).
    """
    run_started = time.perf_counter()
    device = command_line.resolve_device(config.device)
    command_line.check_run_dir(config, run_dir)
    algo = config.algo
    # Every start-up step is under the cleanup, and a signal before the loop stops at once (issue 17).
    with checkpoint.GracefulStop() as stop, ExitStack() as cleanup:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
        if (note := command_line.preset_note(config.env_id)) is not None:
            log.warning(note)
        seed_everything(config.seed, config.torch_threads)
        envs = make_envs(config.env_id, config.env, algo.gamma, config.seed)
        cleanup.callback(envs.close)
        policy, value = (m.to(device) for m in build_models(config, envs.single_observation_space,
                                                            envs.single_action_space))
        critic = KFACCritic(algo.value_kfac_damping, algo.value_kfac_max_change) \
            if algo.value_optimizer == "kfac" else None
        value_fitter = ValueFitter(value, algo.value_lr, algo.value_epochs, algo.value_minibatch_size, config.seed,
                                   process=algo.value_process, critic=critic,
                                   lr_decay_fits=config.updates if algo.value_lr_decay else None)
        cleanup.callback(value_fitter.close)
        generator = torch.Generator().manual_seed(config.seed)
        global_step, iteration, *episodes = resume(run_dir, config, policy, value, value_fitter, envs, generator)
        acting_policy = acting_copy(policy)  # after resume: the first rollout acts with the trained policy
        logger = RunLogger(run_dir, config.logger, OmegaConf.to_container(OmegaConf.structured(config)),
                           config.total_steps, iteration)
        cleanup.callback(logger.close)
        state = stepping.start(envs, config.seed + iteration, *episodes)
        if not np.isfinite(state.obs).all():  # from here on the loop checks what every step returns
            raise FloatingPointError(f"{config.env_id} returned a non-finite observation at its reset")
        with stop.deferring():
            unlogged = None  # an iteration's metrics wait for its value fit, which may run during the next rollout
            while global_step < config.total_steps and not stop.requested:
                started = time.perf_counter()
                rollout = collector.collect(envs, acting_policy, state, config.steps_per_env)
                collected = time.perf_counter()
                unlogged = log_iteration(logger, unlogged, value_fitter)  # the advantages need the fitted value
                if (fault := first_non_finite(rollout)) is not None:  # checked before anything learns from it
                    save_checkpoint(run_dir, policy, value, value_fitter, envs, state, generator, global_step, iteration)
                    raise FloatingPointError(non_finite_message(config.env_id, fault, rollout, global_step, run_dir))
                update_config = algo.at_update(iteration, config.updates)
                batch = advantage_batch(rollout, value, update_config, device)
                normalizer = policy.normalizer.updated(batch["obs"]) if config.env.normalize_observations else None
                value_fitter.start(batch["obs"], batch["returns"], normalizer)  # with algo.value_process: meanwhile
                metrics = trpo_step(policy, batch["obs"], batch["actions"], batch["log_probs"], batch["advantages"],
                                    update_config, generator,
                                    diagnostics_due(config.diagnostics, algo, config.seed, iteration, device))
                if normalizer is not None:  # after the policy step, so that log pi_old matches theta_old
                    policy.normalizer.load_state_dict(normalizer)
                if acting_policy is not policy:
                    acting_policy.load_state_dict(policy.state_dict())
                global_step += rollout.rewards.numel()
                iteration += 1
                elapsed = time.perf_counter() - started
                unlogged = {"global_step": global_step, "iteration": iteration, **episode_metrics(state), **metrics,
                            "time/sps": rollout.rewards.numel() / elapsed, "time/collect_s": collected - started,
                            "time/update_s": time.perf_counter() - collected}
                if evaluation_due(config.eval.every, global_step, rollout.rewards.numel()):
                    unlogged["eval/episode_return"] = float(evaluate_policy(
                        config.env_id, acting_policy, config.eval.episodes, config.seed, config.env).mean())
                    if config.eval.video:
                        record_evaluation_video(config, acting_policy, run_dir, global_step, logger)
                if iteration % config.checkpoint.every == 0:
                    unlogged = log_iteration(logger, unlogged, value_fitter)
                    save_checkpoint(run_dir, policy, value, value_fitter, envs, state, generator, global_step, iteration)
            log_iteration(logger, unlogged, value_fitter)
            save_checkpoint(run_dir, policy, value, value_fitter, envs, state, generator, global_step, iteration)
        if stop.requested:
            raise checkpoint.Stopped(stop.signal, global_step, run_dir)
        returns = evaluate_policy(config.env_id, acting_policy, config.eval.episodes, config.seed, config.env)
        if config.eval.video:
            record_evaluation_video(config, acting_policy, run_dir, global_step, logger)
        final = {"eval/episode_return": float(returns.mean()), "eval/episode_return_std": float(returns.std()),
                 "eval/episodes": len(returns), "global_step": global_step,
                 "time/wall_s": time.perf_counter() - run_started}
        # The final policy alone (weights and observation normalizer): tens of KB, kept where checkpoints are not;
        # before eval.json, which marks a finished run.
        Agent(acting_policy, config, envs.single_action_space).save(run_dir / "policy.pt")
        (run_dir / "eval.json").write_text(json.dumps(final))
        logger.summary(final)
    message = f"{config.env_id}: final deterministic evaluation {returns.mean():.2f} +- {returns.std():.2f} " \
              f"over {len(returns)} episodes, run directory {run_dir}"
    log.info(message)
    print(message)
    return final["eval/episode_return"]


def acting_copy(policy: Policy) -> Policy:
    """The policy the rollouts act with, on the CPU: the policy itself there, else a copy synced after each update."""
    return policy if next(policy.parameters()).device.type == "cpu" else copy.deepcopy(policy).cpu()


def advantage_batch(rollout: Rollout, value: ValueNetwork, algo: AlgoConfig, device: torch.device) -> dict[str, Tensor]:
    """Values in two batched calls, GAE on [T, N], then the valid transitions flattened to [B] on device."""
    rollout = Rollout(**{f.name: getattr(rollout, f.name).to(device) for f in fields(rollout)})
    with torch.no_grad():
        values, next_values = value(rollout.obs), value(rollout.next_obs)
    advantages, returns = gae(rollout.rewards, values, next_values, rollout.terminated, rollout.dones,
                              algo.gamma, algo.gae_lambda)
    valid = rollout.valid
    return {"obs": rollout.obs[valid], "actions": rollout.actions[valid], "log_probs": rollout.log_probs[valid],
            "advantages": advantages[valid], "returns": returns[valid]}


def diagnostics_due(diagnostics: DiagnosticsConfig, algo: AlgoConfig, seed: int, iteration: int,
                    device: torch.device) -> Callable | None:
    """The curvature diagnostics for the update of this iteration (0, every, 2 every, ...), or None.

    Their generator is their own, seeded by (seed, iteration): switching them on moves no other random
    stream, and a resumed run repeats them exactly.
    """
    if diagnostics.every == 0 or iteration % diagnostics.every:
        return None
    generator = torch.Generator(device).manual_seed(seed * 1_000_003 + iteration)
    return functools.partial(curvature_diagnostics, damping=algo.damping, top_k=diagnostics.top_k,
                             iters=diagnostics.iters or default_iters(diagnostics.top_k),
                             trace_samples=diagnostics.trace_samples, trace_method=diagnostics.trace_method,
                             generator=generator)


def first_non_finite(rollout: Rollout) -> tuple[int, int, str, float] | None:
    """(t, env, what, value) of the first non-finite observation or reward the envs returned; None if none.

    t is the step that returned it: obs[t] came from step t - 1 (t = -1: the last step of the rollout before).
    """
    found = []
    for what, values, returned_at in (("observation", rollout.obs, -1), ("observation", rollout.next_obs, 0),
                                      ("reward", rollout.rewards.unsqueeze(-1), 0)):
        finite = torch.isfinite(values.flatten(2))
        bad = ~finite.all(-1)
        if bad.any():
            t, env = bad.nonzero()[0].tolist()
            found.append((t + returned_at, env, what, values.flatten(2)[t, env][~finite[t, env]][0].item()))
    return min(found, default=None)


def non_finite_message(env_id: str, fault: tuple[int, int, str, float], rollout: Rollout, global_step: int,
                       run_dir: Path) -> str:
    t, env, what, value = fault
    step = global_step + t * rollout.rewards.shape[1] + env + 1
    return (f"{env_id} returned a non-finite {what} ({value}) at environment step {step} (env {env} of the vector env); "
            f"stopped after a checkpoint of step {global_step} in {run_dir / 'checkpoints'}")


def episode_metrics(state: stepping.CollectorState, recent: int = 10) -> dict[str, float]:
    """Mean raw return and length of the last `recent` finished episodes (0 with rollout/episodes 0 before any)."""
    returns, lengths = state.episode_returns[-recent:], state.episode_lengths[-recent:]
    return {"rollout/episode_return": float(np.mean(returns)) if returns else 0.0,
            "rollout/episode_length": float(np.mean(lengths)) if lengths else 0.0,
            "rollout/episodes": len(state.episode_returns)}


def record_evaluation_video(config: Config, policy: Policy, run_dir: Path, global_step: int,
                            logger: RunLogger) -> None:
    """One deterministic episode (evaluation episode 0) as videos/step-<global_step>.mp4, and into W&B;
    once per step (a periodic evaluation at the last step has recorded the final one)."""
    path = run_dir / "videos" / f"step-{global_step:09d}.mp4"
    if path.exists():
        return
    record_video(config.env_id, policy, path, config.seed, config.env)
    logger.video(path, global_step)


def evaluation_due(every: int, global_step: int, steps: int) -> bool:
    """Whether the last `steps` steps, ending at global_step, crossed a multiple of `every` (0: never)."""
    return every > 0 and global_step // every > (global_step - steps) // every


def log_iteration(logger: RunLogger, metrics: dict | None, value_fitter: ValueFitter) -> None:
    """Log an iteration's metrics once its value fit has finished (nothing before the first iteration)."""
    if metrics is not None:
        logger.log(metrics | value_fitter.result())


def save_checkpoint(run_dir: Path, policy: Policy, value: ValueNetwork, value_fitter: ValueFitter,
                    envs: gym.vector.VectorEnv, state: stepping.CollectorState, generator: torch.Generator,
                    global_step: int, iteration: int) -> None:
    checkpoint.save(run_dir / "checkpoints", {
        "policy": policy.state_dict(), "value": value.state_dict(), "value_fit": value_fitter.state(),
        "reward_normalizer": reward_normalizer_state(envs), "rng": checkpoint.rng_state(generator),
        "episode_returns": torch.tensor(state.episode_returns, dtype=torch.float64),
        "episode_lengths": torch.tensor(state.episode_lengths, dtype=torch.int64),
        "global_step": global_step, "iteration": iteration,
    })


def resume(run_dir: Path, config: Config, policy: Policy, value: ValueNetwork, value_fitter: ValueFitter,
           envs: gym.vector.VectorEnv, generator: torch.Generator) -> tuple[int, int, list[float], list[int]]:
    """Load the latest checkpoint when resuming and one exists.

    Returns global_step, iteration and the returns and lengths of the episodes finished so far.
    The environments restart their episodes (seeded by seed + iteration): simulator states are not saved.
    """
    if not command_line.resuming(config, run_dir):
        return 0, 0, [], []
    saved = checkpoint.load(run_dir / "checkpoints")
    policy.load_state_dict(saved["policy"])
    value.load_state_dict(saved["value"])
    value_fitter.load_state(saved["value_fit"])
    load_reward_normalizer_state(envs, saved["reward_normalizer"])
    checkpoint.restore_rng_state(saved["rng"], generator)
    log.info("resumed from %s at step %d", run_dir / "checkpoints", saved["global_step"])
    return (saved["global_step"], saved["iteration"], saved["episode_returns"].tolist(),
            saved["episode_lengths"].tolist())


def seed_everything(seed: int, threads: int) -> None:
    """One seed for Python, NumPy and torch (the envs are seeded by their first reset)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_config = HydraConfig.get()
    multirun = hydra_config.mode == RunMode.MULTIRUN
    overrides = list(hydra_config.overrides.task)
    try:
        command_line.check_keys(overrides)
        config = command_line.load_config(cfg, command_line.overridden_keys(overrides))
        run_dir = Path(config.resume or hydra_config.runtime.output_dir)
        command_line.check_run_dir(config, run_dir)  # train checks it too; here its error is one line
    except ValueError as error:
        failed(error, 2, multirun)
    if multirun and config.logger.group is None:
        config.logger.group = Path(hydra_config.sweep.dir).name
    try:
        return train(config, run_dir)
    except (checkpoint.Stopped, checkpoint.StoppedNow) as stopped:  # a stop ends a sweep too
        saved = checkpoint.exists(run_dir / "checkpoints")
        hint = f"; continue with: python -m trpo.train resume={run_dir}" if saved else "; no checkpoint was written"
        print(f"{stopped}{hint}", file=sys.stderr)
        sys.exit(128 + stopped.signal)
    except FloatingPointError as error:
        failed(error, 1, multirun)
    except Exception as error:
        if multirun:
            log.exception("this job failed (the sweep goes on): %s", error)
        raise


def failed(error: Exception, status: int, multirun: bool) -> NoReturn:
    """A single run: one line on stderr and the exit status. In a multirun the job fails alone: Hydra
    records the error and runs the other jobs (an Optuna trial is marked failed); train.log says why."""
    if multirun:
        log.error("error: %s (this job failed; the sweep goes on)", error)
        raise error
    print(f"error: {error}", file=sys.stderr)
    sys.exit(status)


def train_env(env_id: str, overrides: list[str] | None = None, run_dir: str | Path | None = None) -> Run:
    """Train as `python -m trpo.train env=<env_id> <overrides>` would: presets apply, and the same checks
    raise the same errors (ValueError) before anything is written.

    env_id: a Gymnasium id, or module:id for one's own env.
    overrides: the command line's key=value overrides, e.g. ["algo.max_kl=0.02", "seed=3"].
    run_dir: where to write (default: runs/<env id>/<date>_<time>-s<seed>, as on the command line).
    """
    config, run_dir = command_line.validated([f"env={env_id}", *(overrides or [])], run_dir and Path(run_dir))
    return Run(run_dir, config, train(config, run_dir))


class _CallableModule(types.ModuleType):
    """`trpo.train` is both this module (`python -m trpo.train`) and, called, the Python API: a plain
    function of that name in the package would be replaced by the module whenever the module is imported."""

    def __call__(self, env_id: str, overrides: list[str] | None = None, run_dir: str | Path | None = None) -> Run:
        return train_env(env_id, overrides, run_dir)


sys.modules[__name__].__class__ = _CallableModule


if __name__ == "__main__":
    if not any(argument.startswith("-") for argument in sys.argv[1:]):  # Hydra's flags and multiruns: Hydra checks
        try:
            command_line.check(sys.argv[1:])
        except ValueError as error:  # before Hydra makes the run directory
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    main()
