"""Deterministic evaluation of a trained policy: `python -m trpo.evaluate <run dir> [episodes=10] [video=true]`."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede any OpenGL import

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.vector import RecordEpisodeStatistics
from omegaconf import OmegaConf

from trpo import checkpoint
from trpo.config import Config
from trpo.policy import Policy

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes start from seeds no training env uses


def evaluate_policy(env_id: str, policy: Policy, episodes: int, seed: int) -> np.ndarray:
    """Returns of `episodes` deterministic episodes (mean action or most likely action), one env each.

    The policy's observation normalizer is only read, never updated, so it stays frozen.
    """
    envs = RecordEpisodeStatistics(gym.make_vec(env_id, num_envs=episodes, vectorization_mode="sync"))
    space = envs.single_action_space
    obs, _ = envs.reset(seed=seed + EVAL_SEED_OFFSET)
    returns = np.full(episodes, np.nan)
    while np.isnan(returns).any():
        with torch.inference_mode():
            action = policy.dist(torch.as_tensor(obs, dtype=torch.float32)).mode.numpy()
        if isinstance(space, gym.spaces.Box):
            action = np.clip(action, space.low, space.high)
        obs, _, _, _, info = envs.step(action)
        if "episode" in info:
            first = info["_episode"] & np.isnan(returns)
            returns[first] = info["episode"]["r"][first]
    envs.close()
    return returns


def load_run(run_dir: Path) -> tuple[Config, Policy]:
    """The run's configuration and its policy at the latest checkpoint, on the CPU."""
    from trpo.train import build_models  # train imports this module

    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"run directory {str(run_dir)!r} has no config.yaml; pass a directory under runs/")
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(run_dir / "config.yaml")))
    probe = gym.make(config.env_id)
    policy, _ = build_models(config, probe.observation_space, probe.action_space)
    probe.close()
    policy.load_state_dict(checkpoint.load(run_dir / "checkpoints")["policy"])
    return config, policy


def main(argv: list[str]) -> None:
    if not argv or "=" in argv[0]:
        sys.exit("usage: python -m trpo.evaluate <run dir> [episodes=10] [video=true]")
    options = dict(arg.split("=", 1) for arg in argv[1:])
    unknown = set(options) - {"episodes"}
    if unknown:
        sys.exit(f"unknown option(s) {sorted(unknown)}; allowed: episodes=<int>")
    config, policy = load_run(Path(argv[0]))
    returns = evaluate_policy(config.env_id, policy, int(options.get("episodes", config.eval.episodes)), config.seed)
    print(f"{config.env_id}: return {returns.mean():.2f} +- {returns.std():.2f} over {len(returns)} episodes")


if __name__ == "__main__":
    main(sys.argv[1:])
