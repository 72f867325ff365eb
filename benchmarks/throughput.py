"""Training throughput against the simulator's own speed, in one run on one machine.

    python benchmarks/throughput.py [--env HalfCheetah-v4] [--steps 1000000] [--peers] [K=V ...] [--against K=V ...]

(a) raw simulator steps/s: the preset's vector env (same envs, vectorization, autoreset mode,
    wrappers, and with env.workers > 1 the same processes, each stepping its share of the envs)
    stepped with pre-drawn random actions;
(b) our end-to-end training steps/s with the env's preset (updates, logging, W&B offline included);
(c) the split of our wall time by phase, from a profiled run of the same length (cProfile
    cumulative times of the phase functions in the training process, as fractions: profiling
    inflates absolute times). With algo.value_process the value fit runs in a child process during
    the next rollout; what the trainer still spends on it is handing it over and waiting for it;
(d) with --peers: Stable-Baselines3-contrib's TRPO with the RL Zoo settings and Tianshou's TRPO with
    its MuJoCo example settings (the optional `bench` extra), for the same number of steps.
Ratios are what to compare across machines: (b)/(a) and (b)/(d).
"""

import argparse
import cProfile
import multiprocessing
import pstats
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from peers import sb3_steps_per_second, tianshou_trpo
from trpo.config import Config, EnvConfig
from trpo.train import train
from trpo.workers import make_envs

ROOT = Path(__file__).resolve().parents[1]
# Phase -> the function whose cumulative time is that phase (trpo.update.trpo_step's remainder is the
# surrogate gradient and the step length).
PHASES = {
    "collect": ("trpo/collector.py", "collect"),
    "values + GAE": ("trpo/train.py", "advantage_batch"),
    "policy step (all)": ("trpo/update.py", "trpo_step"),
    "  conjugate gradient": ("trpo/linalg.py", "conjugate_gradient_with_residual"),
    "  line search": ("trpo/trust_region.py", "line_search"),
    "value fit: hand over": ("trpo/value_process.py", "start"),
    "value fit: wait": ("trpo/value_process.py", "result"),
    "logging": ("trpo/logger.py", "log"),
    "checkpoints": ("trpo/train.py", "save_checkpoint"),
}


def preset(env_id: str, steps: int, overrides: list[str]) -> Config:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", [f"env={env_id}", f"total_steps={steps}", "logger.progress_bar=false",
                                 "eval.episodes=1", f"checkpoint.every={10**9}", *overrides])
    cfg.env_id = env_id
    return OmegaConf.to_object(cfg)


def raw_steps_per_second(config: Config, steps: int) -> float:
    """The preset's envs stepped with random actions, in as many processes as training steps them in
    (env.workers, each with its share of the envs), started together."""
    context = multiprocessing.get_context("spawn")
    shares = [len(share) for share in np.array_split(np.arange(config.env.num_envs), config.env.workers)]
    barrier, results = context.Barrier(len(shares)), context.Queue()
    processes = [context.Process(target=step_share, args=(config, replace(config.env, num_envs=share, workers=1),
                                                          steps * share // config.env.num_envs, barrier, results))
                 for share in shares]
    for process in processes:
        process.start()
    spans = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return sum(done for done, _, _ in spans) / (max(end for *_, end in spans) - min(start for _, start, _ in spans))


def step_share(config: Config, env_config: EnvConfig, steps: int, barrier, results) -> None:
    """One process's share of (a): steps done, and when its loop started and ended (a system-wide clock)."""
    envs = make_envs(config.env_id, env_config, config.algo.gamma)
    space = envs.single_action_space  # EnvPool's action_space is the single one too
    rng = np.random.default_rng(0)
    actions = rng.uniform(space.low, space.high, size=(64, envs.num_envs, *space.shape)).astype(space.dtype)
    envs.reset(seed=0)
    iterations = steps // envs.num_envs
    barrier.wait()
    started = time.monotonic()
    for i in range(iterations):
        envs.step(actions[i % 64])
    results.put((iterations * envs.num_envs, started, time.monotonic()))
    envs.close()


def training_steps_per_second(config: Config) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        config.logger.wandb_mode = "offline"
        started = time.perf_counter()
        train(config, Path(run_dir))
        return config.total_steps / (time.perf_counter() - started)


def phase_split(config: Config) -> dict[str, float]:
    config.logger.wandb_mode = "disabled"
    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as run_dir:
        profile.runcall(train, config, Path(run_dir))
    stats = pstats.Stats(profile).stats
    total = max(cumulative for (_, _, name), (_, _, _, cumulative, _) in stats.items() if name == "train")
    split = {}
    for phase, (file, function) in PHASES.items():
        split[phase] = sum(cumulative for (path, _, name), (_, _, _, cumulative, _) in stats.items()
                           if path.endswith(file) and name == function) / total
    return split


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--steps", type=int, default=1_000_000, help="the presets' length: one-time costs weigh as in a run")
    parser.add_argument("--peers", action="store_true", help="also time the peers (pip install -e '.[bench]')")
    parser.add_argument("--against", nargs="+", metavar="OVERRIDE",
                        help="also time our training with these overrides instead, e.g. algo.value_process=false")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for our runs, e.g. algo.fisher_subsample=0.25")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.env}, {args.steps} steps, torch {torch.__version__}, preset conf/env/{args.env}.yaml")
    raw = raw_steps_per_second(preset(args.env, args.steps, args.overrides), args.steps)
    ours = training_steps_per_second(preset(args.env, args.steps, args.overrides))
    print(f"(a) raw simulator: {raw:.0f} steps/s")
    print(f"(b) trpo training: {ours:.0f} steps/s   (b)/(a) = {ours / raw:.2f}")
    other = None
    if args.against:  # the same measurements, (a) included, for a second configuration
        other_raw = raw_steps_per_second(preset(args.env, args.steps, args.against), args.steps)
        other = training_steps_per_second(preset(args.env, args.steps, args.against))
        print(f"    with {' '.join(args.against)}: (a) {other_raw:.0f} steps/s, (b) {other:.0f} steps/s, "
              f"(b)/(a) = {other / other_raw:.2f}; (b) above / this (b) = {ours / other:.2f}")
    print("(c) share of training wall time (profiled run):")
    split = phase_split(preset(args.env, args.steps, args.overrides))
    for phase, share in split.items():
        print(f"    {phase:<22} {share:6.1%}")
    update = split["policy step (all)"] + split["value fit: hand over"] + split["value fit: wait"]
    print(f"    update (policy step + value fit in the trainer) {update:6.1%}")
    if args.peers:
        for name, peer in (("SB3-contrib TRPO (RL Zoo settings)", sb3_steps_per_second(args.env, args.steps)),
                           ("Tianshou TRPO (MuJoCo example settings)", tianshou_trpo(args.env, args.steps))):
            against = f"; with {' '.join(args.against)}: {other / peer:.2f}" if other else ""
            print(f"(d) {name}: {peer:.0f} steps/s   (b)/(d) = {ours / peer:.2f}{against}")


if __name__ == "__main__":
    main()
