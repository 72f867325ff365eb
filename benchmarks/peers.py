"""Peer TRPO implementations with their own published MuJoCo settings (the optional `bench` extra).

    python benchmarks/peers.py tianshou --env HalfCheetah-v4 --seed 0 [--steps 1000000] --run-dir DIR

Used by throughput.py (steps/s) and mujoco_suite.py (learning side by side). A learning run writes
the same files as ours into DIR: config.yaml (env_id, implementation, seed), metrics.jsonl (per
collection: global_step, rollout/episode_return as the mean of the last 10 training episodes, as
ours logs it) and eval.json (a final deterministic evaluation of 10 episodes with the observation
normalizer frozen, as ours evaluates).
"""

import argparse
import json
import time
from collections import deque
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf

TIANSHOU = "Tianshou 2.0.1 TRPO (examples/mujoco/mujoco_trpo.py settings)"
# The RL Zoo's TRPO settings for the MuJoCo -v4 envs (rl-baselines3-zoo, hyperparams/trpo.yml):
# 2 envs with VecNormalize, and these arguments, plus per-env changes.
RL_ZOO_TRPO = dict(batch_size=128, n_steps=1024, gamma=0.99, gae_lambda=0.95, sub_sampling_factor=1,
                   cg_max_steps=25, cg_damping=0.1, n_critic_updates=20, learning_rate=1e-3)
RL_ZOO_TRPO_ENV = {"HalfCheetah-v4": dict(target_kl=0.04), "Swimmer-v4": dict(gamma=0.9999)}


def sb3_steps_per_second(env_id: str, steps: int) -> float:
    """SB3-contrib TRPO with the RL Zoo's settings."""
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    envs = VecNormalize(make_vec_env(env_id, n_envs=2, seed=0))
    model = TRPO("MlpPolicy", envs, seed=0, device="cpu", **(RL_ZOO_TRPO | RL_ZOO_TRPO_ENV.get(env_id, {})))
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - started)


def tianshou_trpo(env_id: str, steps: int, seed: int = 0, run_dir: Path | None = None,
                  eval_episodes: int = 10) -> float:
    """Tianshou's TRPO with the settings of its examples/mujoco/mujoco_trpo.py (16 shared-memory subprocess
    envs with observation normalization, 64x64 tanh, initial log-std -0.5, lr 1e-3 with linear decay,
    1024 steps per update, 20 critic iterations, max_kl 0.01, return scaling). Returns its steps/s;
    with run_dir, also writes the run's files there (see the module docstring)."""
    from tianshou.algorithm import TRPO
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory, LRSchedulerFactoryLinear
    from tianshou.data import Collector, CollectStats, VectorReplayBuffer
    from tianshou.env import ShmemVectorEnv, VectorEnvNormObs
    from tianshou.trainer import OnPolicyTrainerParams
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic
    from torch.distributions import Independent, Normal

    env = gym.make(env_id)
    training_envs = VectorEnvNormObs(ShmemVectorEnv([lambda: gym.make(env_id)] * 16))
    test_envs = VectorEnvNormObs(ShmemVectorEnv([lambda: gym.make(env_id)]), update_obs_rms=False)
    training_envs.seed(seed)
    test_envs.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    shape, actions = env.observation_space.shape, env.action_space.shape
    actor = ContinuousActorProbabilistic(preprocess_net=Net(state_shape=shape, hidden_sizes=[64, 64],
                                                            activation=torch.nn.Tanh),
                                         action_shape=actions, unbounded=True)
    critic = ContinuousCritic(preprocess_net=Net(state_shape=shape, hidden_sizes=[64, 64], activation=torch.nn.Tanh))
    torch.nn.init.constant_(actor.sigma_param, -0.5)
    for module in [*actor.modules(), *critic.modules()]:
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.orthogonal_(module.weight, gain=np.sqrt(2))
            torch.nn.init.zeros_(module.bias)
    for module in actor.mu.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.data.mul_(0.01)
    optim = AdamOptimizerFactory(lr=1e-3)
    optim.with_lr_scheduler_factory(LRSchedulerFactoryLinear(max_epochs=1, epoch_num_steps=steps,
                                                             collection_step_num_env_steps=1024))
    policy = ProbabilisticActorPolicy(actor=actor, dist_fn=lambda loc_scale: Independent(Normal(*loc_scale), 1),
                                      action_scaling=True, action_bound_method="clip", action_space=env.action_space,
                                      deterministic_eval=True)
    algorithm = TRPO(policy=policy, critic=critic, optim=optim, gamma=0.99, gae_lambda=0.95, return_scaling=True,
                     advantage_normalization=True, optim_critic_iters=20, max_kl=0.01, backtrack_coeff=0.8,
                     max_backtracks=10)
    training_collector = Collector[CollectStats](algorithm, training_envs, VectorReplayBuffer(4096, 16),
                                                 exploration_noise=True)
    test_collector = Collector[CollectStats](algorithm, test_envs)
    if run_dir is not None:
        metrics = record_training_episodes(training_collector, run_dir)
    started = time.perf_counter()
    algorithm.run_training(OnPolicyTrainerParams(
        training_collector=training_collector, test_collector=test_collector, max_epochs=1, epoch_num_steps=steps,
        update_step_num_repetitions=1, test_step_num_episodes=1, batch_size=None, collection_step_num_env_steps=1024,
        show_progress=False, verbose=False))
    elapsed = time.perf_counter() - started
    if run_dir is not None:
        metrics.close()
        evaluation = VectorEnvNormObs(ShmemVectorEnv([lambda: gym.make(env_id)]), update_obs_rms=False)
        evaluation.set_obs_rms(training_envs.get_obs_rms())  # frozen at the end of training
        evaluation.seed(seed + 10_000)
        returns = Collector[CollectStats](algorithm, evaluation).collect(n_episode=eval_episodes,
                                                                         reset_before_collect=True).returns
        evaluation.close()
        (run_dir / "eval.json").write_text(json.dumps({
            "eval/episode_return": float(np.mean(returns)), "eval/episode_return_std": float(np.std(returns)),
            "eval/episodes": len(returns), "global_step": steps, "time/wall_s": elapsed}))
    training_envs.close()
    test_envs.close()
    return steps / elapsed


def record_training_episodes(collector, run_dir: Path):
    """Wrap collector.collect to append one metrics.jsonl line per collection; returns the open file."""
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = open(run_dir / "metrics.jsonl", "w")
    collect, recent = collector.collect, deque(maxlen=10)
    state = {"global_step": 0, "episodes": 0, "last": time.perf_counter()}

    def recorded(*args, **kwargs):
        started = time.perf_counter()
        stats = collect(*args, **kwargs)
        if kwargs.get("n_step") is None:  # the trainer's own test or reset calls
            return stats
        recent.extend(stats.returns.tolist())
        state["global_step"] += stats.n_collected_steps
        state["episodes"] += len(stats.returns)
        now = time.perf_counter()
        metrics.write(json.dumps({
            "global_step": state["global_step"], "rollout/episode_return": float(np.mean(recent)) if recent else 0.0,
            "rollout/episodes": state["episodes"], "time/collect_s": now - started,
            "time/update_s": started - state["last"]}) + "\n")
        state["last"] = now
        return stats

    collector.collect = recorded
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=["tianshou"])
    parser.add_argument("--env", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(
        {"env_id": args.env, "implementation": TIANSHOU, "seed": args.seed, "total_steps": args.steps}))
    steps_per_second = tianshou_trpo(args.env, args.steps, args.seed, args.run_dir)
    print(f"{args.env} seed {args.seed}: {steps_per_second:.0f} steps/s, "
          f"final evaluation {json.loads((args.run_dir / 'eval.json').read_text())['eval/episode_return']:.1f}")


if __name__ == "__main__":
    main()
