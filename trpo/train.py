"""Training entry point: `python -m trpo.train env=HalfCheetah-v4 [overrides]`."""

import copy
import json
import logging
import random
import sys
import time
from dataclasses import fields
from pathlib import Path

import gymnasium as gym
import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from trpo import checkpoint, collector, command_line
from trpo.advantages import gae
from trpo.collector import Rollout
from trpo.config import AlgoConfig, Config
from trpo.envs import load_reward_normalizer_state, make_envs, reward_normalizer_state
from trpo.evaluate import evaluate_policy
from trpo.logger import RunLogger
from trpo.policy import CategoricalPolicy, GaussianPolicy, ObservationNormalizer, Policy, ValueNetwork
from trpo.update import trpo_step
from trpo.value_process import ValueFitter

log = logging.getLogger(__name__)


def train(config: Config, run_dir: Path) -> float:
    """Train; writes config.yaml, metrics.jsonl, checkpoints/ and wandb/ under run_dir.

    Returns the mean return of the final deterministic evaluation (the sweep objective).
    """
    run_started = time.perf_counter()
    device = command_line.resolve_device(config.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    seed_everything(config.seed, config.torch_threads)
    envs = make_envs(config.env_id, config.env, config.algo.gamma, config.seed)
    policy, value = (m.to(device) for m in build_models(config, envs.single_observation_space,
                                                        envs.single_action_space))
    acting_policy = policy if device.type == "cpu" else copy.deepcopy(policy).cpu()
    algo = config.algo
    value_fitter = ValueFitter(value, algo.value_lr, algo.value_epochs, algo.value_minibatch_size, config.seed,
                               process=algo.value_process)
    generator = torch.Generator().manual_seed(config.seed)
    global_step, iteration, *episodes = resume(run_dir, config, policy, value, value_fitter, envs, generator)
    logger = RunLogger(run_dir, config.logger, OmegaConf.to_container(OmegaConf.structured(config)),
                       config.total_steps, iteration)
    state = collector.start(envs, config.seed + iteration, *episodes)
    try:
        with checkpoint.GracefulStop() as stop:
            unlogged = None  # an iteration's metrics wait for its value fit, which may run during the next rollout
            while global_step < config.total_steps and not stop.requested:
                started = time.perf_counter()
                rollout = collector.collect(envs, acting_policy, state, config.steps_per_env)
                collected = time.perf_counter()
                unlogged = log_iteration(logger, unlogged, value_fitter)  # the advantages need the fitted value
                if not torch.isfinite(rollout.next_obs).all():
                    save_checkpoint(run_dir, policy, value, value_fitter, envs, state, generator, global_step, iteration)
                    raise FloatingPointError(non_finite_message(config.env_id, rollout, global_step, run_dir))
                batch = advantage_batch(rollout, value, algo, device)
                normalizer = policy.normalizer.updated(batch["obs"]) if config.env.normalize_observations else None
                value_fitter.start(batch["obs"], batch["returns"], normalizer)  # with algo.value_process: meanwhile
                metrics = trpo_step(policy, batch["obs"], batch["actions"], batch["log_probs"], batch["advantages"],
                                    algo, generator)
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
                        config.env_id, acting_policy, config.eval.episodes, config.seed).mean())
                if iteration % config.checkpoint.every == 0:
                    unlogged = log_iteration(logger, unlogged, value_fitter)
                    save_checkpoint(run_dir, policy, value, value_fitter, envs, state, generator, global_step, iteration)
            log_iteration(logger, unlogged, value_fitter)
        save_checkpoint(run_dir, policy, value, value_fitter, envs, state, generator, global_step, iteration)
        if stop.requested:
            raise checkpoint.Stopped(stop.signal, global_step, run_dir)
        returns = evaluate_policy(config.env_id, acting_policy, config.eval.episodes, config.seed)
        final = {"eval/episode_return": float(returns.mean()), "eval/episode_return_std": float(returns.std()),
                 "eval/episodes": len(returns), "global_step": global_step,
                 "time/wall_s": time.perf_counter() - run_started}
        (run_dir / "eval.json").write_text(json.dumps(final))
        logger.summary(final)
    finally:
        envs.close()
        value_fitter.close()
        logger.close()
    message = f"{config.env_id}: final deterministic evaluation {returns.mean():.2f} +- {returns.std():.2f} " \
              f"over {len(returns)} episodes, run directory {run_dir}"
    log.info(message)
    print(message)
    return final["eval/episode_return"]


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


def non_finite_message(env_id: str, rollout: Rollout, global_step: int, run_dir: Path) -> str:
    """Which env step first returned a non-finite observation (next_obs holds every observation returned)."""
    t, env = (~torch.isfinite(rollout.next_obs).flatten(2).all(-1)).nonzero()[0].tolist()
    step = global_step + t * rollout.rewards.shape[1] + env + 1
    return (f"{env_id} returned a non-finite observation at environment step {step} (env {env} of the vector env); "
            f"stopped after a checkpoint of step {global_step} in {run_dir / 'checkpoints'}")


def episode_metrics(state: collector.CollectorState, recent: int = 10) -> dict[str, float]:
    """Mean raw return and length of the last `recent` finished episodes (0 with rollout/episodes 0 before any)."""
    returns, lengths = state.episode_returns[-recent:], state.episode_lengths[-recent:]
    return {"rollout/episode_return": float(np.mean(returns)) if returns else 0.0,
            "rollout/episode_length": float(np.mean(lengths)) if lengths else 0.0,
            "rollout/episodes": len(state.episode_returns)}


def build_models(config: Config, observation_space: gym.Space, action_space: gym.Space) -> tuple[Policy, ValueNetwork]:
    """Policy and value network with separate parameters and one shared observation normalizer."""
    obs_dim = observation_space.shape[0]
    normalizer = ObservationNormalizer(obs_dim, clip=config.env.observation_clip) \
        if config.env.normalize_observations else None
    hidden, activation = tuple(config.model.hidden), config.model.activation
    if isinstance(action_space, gym.spaces.Discrete):
        policy = CategoricalPolicy(obs_dim, int(action_space.n), hidden, activation, normalizer=normalizer)
    else:
        policy = GaussianPolicy(obs_dim, action_space.shape[0], hidden, activation, config.model.log_std_init,
                                normalizer=normalizer)
    return policy, ValueNetwork(obs_dim, hidden, activation, normalizer=normalizer)


def evaluation_due(every: int, global_step: int, steps: int) -> bool:
    """Whether the last `steps` steps, ending at global_step, crossed a multiple of `every` (0: never)."""
    return every > 0 and global_step // every > (global_step - steps) // every


def log_iteration(logger: RunLogger, metrics: dict | None, value_fitter: ValueFitter) -> None:
    """Log an iteration's metrics once its value fit has finished (nothing before the first iteration)."""
    if metrics is not None:
        logger.log(metrics | value_fitter.result())


def save_checkpoint(run_dir: Path, policy: Policy, value: ValueNetwork, value_fitter: ValueFitter,
                    envs: gym.vector.VectorEnv, state: collector.CollectorState, generator: torch.Generator,
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
    wanted = config.resume is not None or config.checkpoint.resume == "auto"
    if not (wanted and (run_dir / "checkpoints" / checkpoint.LATEST).is_file()):
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
    overrides = list(hydra_config.overrides.task)
    try:
        command_line.check_keys(overrides)
        config = command_line.load_config(cfg, command_line.overridden_keys(overrides))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if hydra_config.mode == RunMode.MULTIRUN and config.logger.group is None:
        config.logger.group = Path(hydra_config.sweep.dir).name
    run_dir = Path(config.resume or hydra_config.runtime.output_dir)
    try:
        return train(config, run_dir)
    except checkpoint.Stopped as stopped:
        print(f"{stopped}; continue with: python -m trpo.train resume={run_dir}", file=sys.stderr)
        sys.exit(128 + stopped.signal)
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if not any(argument.startswith("-") for argument in sys.argv[1:]):  # Hydra's flags and multiruns: Hydra checks
        try:
            command_line.check(sys.argv[1:])
        except ValueError as error:  # before Hydra makes the run directory
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    main()
