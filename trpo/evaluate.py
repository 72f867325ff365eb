"""Deterministic evaluation of a trained policy:
`python -m trpo.evaluate <run dir> [episodes=10] [video=true] [video_episodes=1]`."""

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
from trpo.config import Config, EnvConfig
from trpo.envs import make_env, make_render_env, route_mujoco_warnings, vector_env_options
from trpo.models import build_models
from trpo.policy import Policy

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes start from seeds no training env uses


def evaluate_policy(env_id: str, policy: Policy, episodes: int, seed: int, env: EnvConfig | None = None) -> np.ndarray:
    """Returns of `episodes` deterministic episodes (mean action or most likely action), one env each.

    env: the run's env settings, for its env.kwargs and env.wrappers (default: none).
    The policy's observation normalizer is only read, never updated, so it stays frozen.
    """
    route_mujoco_warnings()
    env = env or EnvConfig()
    envs = RecordEpisodeStatistics(gym.make_vec(env_id, num_envs=episodes, vectorization_mode="sync",
                                                **vector_env_options(env)))
    obs, _ = envs.reset(seed=seed + EVAL_SEED_OFFSET)
    returns = np.full(episodes, np.nan)
    while np.isnan(returns).any():
        obs, _, _, _, info = envs.step(deterministic_action(policy, obs, envs.single_action_space))
        if "episode" in info:
            first = info["_episode"] & np.isnan(returns)
            returns[first] = info["episode"]["r"][first]
    envs.close()
    return returns


def deterministic_action(policy: Policy, obs: np.ndarray, space: gym.Space) -> np.ndarray:
    """The Gaussian's mean clipped to the bounds, or the most likely discrete action (offset by the space's
    start), for a batch of obs."""
    with torch.inference_mode():
        action = policy.dist(torch.as_tensor(obs, dtype=torch.float32)).mode.numpy()
    return env_action(action, space)


def env_action(action: np.ndarray, space: gym.Space) -> np.ndarray:
    """What the env takes for the policy's actions [B, ...]: clipped to a Box, offset by a (Multi)Discrete's
    start, as integers for the discrete spaces."""
    if isinstance(space, gym.spaces.Box):
        return np.clip(action, space.low, space.high)
    return action.astype(np.int64) + getattr(space, "start", 0)


def record_video(env_id: str, policy: Policy, path: Path, seed: int, env_config: EnvConfig,
                 episodes: int = 1) -> list[float]:
    """Render `episodes` deterministic episodes one after another into an MP4 at path; returns their returns.

    Episode i starts from evaluation episode i's seed, so the video shows episodes `evaluate_policy`
    scores; MuJoCo envs render through the camera that follows the agent (`make_render_env`).
    """
    try:
        import imageio
    except ImportError:
        sys.exit("video=true needs imageio and imageio-ffmpeg: pip install 'trpo[video]'")
    env = make_render_env(env_id, env_config)
    frames, returns = [], []
    for episode in range(episodes):
        try:
            obs, _ = env.reset(seed=seed + EVAL_SEED_OFFSET + episode)
            frames.append(env.render())
        except Exception as error:  # MuJoCo raises several types when no OpenGL/EGL library loads
            env.close()
            sys.exit(f"rendering {env_id} failed ({type(error).__name__}: {error}). Headless MuJoCo rendering uses "
                     "EGL (MUJOCO_GL=egl): install the system packages libegl1 and libgl1-mesa-dri "
                     "(apt-get install libegl1 libgl1-mesa-dri)")
        total, done = 0.0, False
        while not done:
            action = deterministic_action(policy, obs[None], env.action_space)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
            frames.append(env.render())
        returns.append(total)
    fps = env.metadata.get("render_fps", 30)
    env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, frames, fps=fps)
    return returns


def load_run(run_dir: Path) -> tuple[Config, Policy, gym.Space]:
    """The run's configuration, its policy at the latest checkpoint (on the CPU) and its env's action space.

    Without checkpoints/ (a run kept in git with only its final policy) the policy is policy.pt's."""
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"run directory {str(run_dir)!r} has no config.yaml; pass a directory under runs/")
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(run_dir / "config.yaml")))
    route_mujoco_warnings()
    probe = make_env(config.env_id, config.env)
    policy, _ = build_models(config, probe.observation_space, probe.action_space)
    probe.close()
    final_policy = run_dir / "policy.pt"
    if checkpoint.exists(run_dir / "checkpoints") or not final_policy.is_file():
        policy.load_state_dict(checkpoint.load(run_dir / "checkpoints")["policy"])
    else:
        policy.load_state_dict(checkpoint.load_file(final_policy)["policy"])
    return config, policy, probe.action_space


def main(argv: list[str]) -> None:
    usage = "usage: python -m trpo.evaluate <run dir> [episodes=10] [video=true] [video_episodes=1]"
    if not argv or "=" in argv[0]:
        sys.exit(usage)
    options = dict(arg.split("=", 1) for arg in argv[1:] if "=" in arg)
    allowed = {"episodes", "video", "video_episodes"}
    unknown = set(options) - allowed or (set(argv[1:]) - {f"{k}={v}" for k, v in options.items()})
    if unknown:
        sys.exit(f"unknown option(s) {sorted(unknown)}; allowed: episodes=<int>, video=true|false, "
                 "video_episodes=<int>")
    if options.get("video", "false") not in ("true", "false"):
        sys.exit(f"video={options['video']!r} is invalid: use video=true or video=false")
    for key in ("episodes", "video_episodes"):
        if key in options and (not options[key].isdigit() or int(options[key]) < 1):
            sys.exit(f"{key}={options[key]!r} is invalid: must be an integer >= 1")
    run_dir = Path(argv[0])
    config, policy, _ = load_run(run_dir)
    returns = evaluate_policy(config.env_id, policy, int(options.get("episodes", config.eval.episodes)), config.seed,
                              config.env)
    print(f"{config.env_id}: return {returns.mean():.2f} +- {returns.std():.2f} over {len(returns)} episodes")
    if options.get("video") == "true":
        path = run_dir / "videos" / "eval.mp4"
        video_returns = record_video(config.env_id, policy, path, config.seed, config.env,
                                     int(options.get("video_episodes", 1)))
        print(f"video of {len(video_returns)} episode(s) (returns {', '.join(f'{r:.2f}' for r in video_returns)}): "
              f"{path}")


if __name__ == "__main__":
    main(sys.argv[1:])
