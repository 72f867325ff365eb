"""Four frames of a trained policy's evaluation video side by side, for the README.

    python benchmarks/frame_strip.py [--run benchmarks/results/mujoco-heldout/runs/HalfCheetah-v4-s5]
                                     [--out benchmarks/results/videos/HalfCheetah-v4-strip.png]

Renders evaluation episode 0 as `python -m trpo.evaluate <run> video=true` does (the camera that
follows the agent) and keeps the frames at 0, 1/3, 2/3 and the end of the episode.
"""

import argparse
from pathlib import Path

import imageio
import numpy as np

from trpo.envs import make_render_env
from trpo.evaluate import EVAL_SEED_OFFSET, deterministic_action, load_run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "benchmarks/results/mujoco-heldout/runs/HalfCheetah-v4-s5")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/videos/HalfCheetah-v4-strip.png")
    args = parser.parse_args()
    config, policy, _ = load_run(args.run)
    env = make_render_env(config.env_id, config.env)
    obs, _ = env.reset(seed=config.seed + EVAL_SEED_OFFSET)
    frames, done, total = [env.render()], False, 0.0
    while not done:
        obs, reward, terminated, truncated, _ = env.step(deterministic_action(policy, obs[None], env.action_space)[0])
        frames.append(env.render())
        total, done = total + float(reward), terminated or truncated
    env.close()
    picks = [round(fraction * (len(frames) - 1)) for fraction in (0, 1 / 3, 2 / 3, 1)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(args.out, np.concatenate([frames[i][::2, ::2] for i in picks], axis=1))
    print(f"{config.env_id}: return {total:.1f}, frames {picks} of {len(frames)} -> {args.out}")


if __name__ == "__main__":
    main()
