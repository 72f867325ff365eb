"""Time acting in the collection loop: the policy's torch forward against trpo.acting's NumPy copy.

    python benchmarks/acting.py [--env HalfCheetah-v4] [--steps 1280]

Both act on the states of the preset's vector env as it steps (random actions), one call per vector
step, timed alone: between calls the simulator runs, as in a rollout, which evicts caches and makes
each call cost more than a tight loop would show. Prints microseconds per call and the ratio.
"""

import argparse
import time

import numpy as np
import torch

from throughput import preset
from trpo import acting
from trpo.models import build_models
from trpo.workers import make_envs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--steps", type=int, default=1280, help="vector-env steps per variant")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = preset(args.env, 10**6, [])  # the preset as it trains
    envs = make_envs(config.env_id, config.env, config.algo.gamma)
    policy, _ = build_models(config, envs.single_observation_space, envs.single_action_space)
    obs, _ = envs.reset(seed=0)
    policy.normalizer.update(torch.as_tensor(obs, dtype=torch.float32))  # non-trivial statistics
    actor, noise = acting.snapshot(policy), policy.action_noise(envs.num_envs)
    space = envs.single_action_space
    random_actions = np.random.default_rng(0).uniform(space.low, space.high, (64, envs.num_envs, *space.shape))

    def torch_forward(states: np.ndarray):
        with torch.no_grad():
            mean, log_std = policy(torch.from_numpy(states))
            return (mean + log_std.exp() * noise).numpy()

    def numpy_copy(states: np.ndarray):
        return actor(states, noise.numpy())

    print(f"{args.env}: {envs.num_envs} envs, {args.steps} calls each, torch {torch.__version__}, 1 thread")
    times = {}
    for name, act in [("policy forward (torch)", torch_forward), ("trpo.acting copy (NumPy)", numpy_copy)] * 2:
        spent = 0.0
        for step in range(args.steps):
            states = obs.astype(np.float32)
            started = time.perf_counter()
            act(states)
            spent += time.perf_counter() - started
            obs = envs.step(random_actions[step % 64])[0]
        times[name] = spent / args.steps * 1e6  # the second round of each counts (warm)
    for name, us in times.items():
        print(f"{name:26} {us:7.1f} us per call")
    print(f"torch / NumPy: {times['policy forward (torch)'] / times['trpo.acting copy (NumPy)']:.2f}")
    envs.close()


if __name__ == "__main__":
    main()
