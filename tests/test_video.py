"""Evaluation videos: the camera follows the agent, and training records one video per evaluation."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless, as trpo.evaluate sets it; before MuJoCo loads OpenGL

import mujoco  # noqa: E402
import numpy as np
import pytest

import trpo
from trpo.config import EnvConfig
from trpo.envs import make_env, make_render_env

ROOT = Path(__file__).resolve().parents[1]


def agent_share(env) -> float:
    """The fraction of the env's frame that shows the agent (any geom not on the world body), by MuJoCo's
    segmentation rendering through the camera the env itself just rendered with."""
    frame = env.render()
    unwrapped = env.unwrapped
    renderer = mujoco.Renderer(unwrapped.model, frame.shape[0], frame.shape[1])
    renderer.enable_segmentation_rendering()
    renderer.update_scene(unwrapped.data, camera=unwrapped.mujoco_renderer.viewer.cam)
    segmentation = renderer.render()
    renderer.close()
    geoms = (segmentation[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & (segmentation[..., 0] >= 0)
    on_agent = unwrapped.model.geom_bodyid[np.clip(segmentation[..., 0], 0, None)] != 0
    return float((geoms & on_agent).mean())


def shares_along_a_run(env, metres: float, seed: int = 0) -> list[float]:
    """Agent shares at the start, the middle and the end of a run of `metres` along x: the agent's root
    is moved there (as a fast policy would carry it) and a few physics steps settle it."""
    env.reset(seed=seed)
    unwrapped = env.unwrapped
    start = unwrapped.data.qpos.copy()
    shares = []
    for fraction in (0.0, 0.5, 1.0):
        qpos = start.copy()
        qpos[0] += fraction * metres
        unwrapped.set_state(qpos, np.zeros_like(unwrapped.data.qvel))
        for _ in range(3):
            env.step(np.zeros(env.action_space.shape))
        shares.append(agent_share(env))
    return shares


@pytest.mark.parametrize("env_id, minimum", [("HalfCheetah-v4", 0.02), ("Ant-v4", 0.05), ("Hopper-v4", 0.015),
                                             ("Walker2d-v4", 0.013), ("Swimmer-v4", 0.025), ("Humanoid-v4", 0.01),
                                             ("HalfCheetah-v5", 0.02), ("Ant-v5", 0.05)])
def test_the_camera_keeps_the_agent_in_the_frame_as_it_travels(env_id, minimum):
    env = make_render_env(env_id, EnvConfig())
    shares = shares_along_a_run(env, metres=30.0)
    env.close()
    assert min(shares) >= minimum, shares
    fixed = make_env(env_id, EnvConfig(), render_mode="rgb_array")  # Gymnasium's default camera: the floor only
    assert shares_along_a_run(fixed, metres=30.0)[1:] == [0.0, 0.0]
    fixed.close()


def test_envs_without_a_tracking_camera_render_as_before():
    env = make_render_env("InvertedPendulum-v4", EnvConfig())
    env.reset(seed=0)
    assert env.unwrapped.mujoco_renderer.camera_id == -1 and env.render().ndim == 3
    env.close()


def test_training_records_one_video_per_evaluation_into_the_run_and_offline_wandb(tmp_path):
    run = trpo.train("InvertedPendulum-v4", ["debug=smoke", "eval.every=128", "eval.video=true", "eval.episodes=1",
                                             "logger.wandb_mode=offline"], run_dir=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evaluated = [row["global_step"] for row in rows if "eval/episode_return" in row]
    steps = evaluated + [json.loads((tmp_path / "eval.json").read_text())["global_step"]]
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert [path.name for path in videos] == [f"step-{step:09d}.mp4" for step in sorted(set(steps))]
    assert len(evaluated) >= 2 and all(path.stat().st_size > 1000 for path in videos)
    logged = list((tmp_path / "wandb").glob("offline-run-*/files/media/videos/eval/*.mp4"))
    assert len(logged) == len(videos), logged
    assert run.config.eval.video


def test_evaluate_records_several_episodes_and_rejects_bad_counts(tmp_path):
    trpo.train("InvertedPendulum-v4", ["debug=smoke"], run_dir=tmp_path)
    cli = subprocess.run([sys.executable, "-m", "trpo.evaluate", str(tmp_path), "episodes=2", "video=true",
                          "video_episodes=2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert "video of 2 episode(s)" in cli.stdout and (tmp_path / "videos" / "eval.mp4").stat().st_size > 1000
    bad = subprocess.run([sys.executable, "-m", "trpo.evaluate", str(tmp_path), "video=true", "video_episodes=0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "video_episodes='0' is invalid: must be an integer >= 1" in bad.stderr


def test_the_wider_floor_changes_the_picture_only():
    rendered, plain = make_render_env("HalfCheetah-v4", EnvConfig()), make_env("HalfCheetah-v4", EnvConfig())
    actions = np.random.default_rng(0).uniform(-1, 1, size=(200, 6))
    observations, rewards = [], []
    for env in (rendered, plain):
        obs, _ = env.reset(seed=3)
        steps = [env.step(action) for action in actions]
        observations.append(np.stack([obs] + [step[0] for step in steps]))
        rewards.append([step[1] for step in steps])
        env.close()
    np.testing.assert_array_equal(observations[0], observations[1])
    assert rewards[0] == rewards[1]
    floor = rendered.unwrapped.model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE
    assert (rendered.unwrapped.model.geom_size[floor, 0] > plain.unwrapped.model.geom_size[floor, 0]).all()
