"""Training throughput against the simulator's own speed, in one run on one machine.

    python benchmarks/throughput.py [--env HalfCheetah-v4] [--steps 200000] [--peers] [K=V ...] [--against K=V ...]

(a) raw simulator steps/s: the preset's vector env (same envs, vectorization, autoreset mode,
    wrappers) stepped with pre-drawn random actions;
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
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from trpo.config import Config
from trpo.envs import make_envs
from trpo.train import train

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
    envs = make_envs(config.env_id, config.env, config.algo.gamma)
    space = envs.single_action_space  # EnvPool's action_space is the single one too
    rng = np.random.default_rng(0)
    actions = rng.uniform(space.low, space.high, size=(64, envs.num_envs, *space.shape)).astype(space.dtype)
    envs.reset(seed=0)
    iterations = steps // envs.num_envs
    started = time.perf_counter()
    for i in range(iterations):
        envs.step(actions[i % 64])
    elapsed = time.perf_counter() - started
    envs.close()
    return iterations * envs.num_envs / elapsed


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


def tianshou_steps_per_second(env_id: str, steps: int) -> float:
    """Tianshou's TRPO with the settings of its examples/mujoco/mujoco_trpo.py (16 shared-memory subprocess
    envs with observation normalization, 64x64 tanh, initial log-std -0.5, lr 1e-3 with linear decay,
    1024 steps per update, 20 critic iterations, max_kl 0.01, return scaling)."""
    import gymnasium as gym
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
    training_envs.seed(0)
    test_envs.seed(0)
    torch.manual_seed(0)
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
                                      action_scaling=True, action_bound_method="clip", action_space=env.action_space)
    algorithm = TRPO(policy=policy, critic=critic, optim=optim, gamma=0.99, gae_lambda=0.95, return_scaling=True,
                     advantage_normalization=True, optim_critic_iters=20, max_kl=0.01, backtrack_coeff=0.8,
                     max_backtracks=10)
    training_collector = Collector[CollectStats](algorithm, training_envs, VectorReplayBuffer(4096, 16),
                                                 exploration_noise=True)
    test_collector = Collector[CollectStats](algorithm, test_envs)
    started = time.perf_counter()
    algorithm.run_training(OnPolicyTrainerParams(
        training_collector=training_collector, test_collector=test_collector, max_epochs=1, epoch_num_steps=steps,
        update_step_num_repetitions=1, test_step_num_episodes=1, batch_size=None, collection_step_num_env_steps=1024,
        show_progress=False, verbose=False))
    elapsed = time.perf_counter() - started
    training_envs.close()
    test_envs.close()
    return steps / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--steps", type=int, default=200_000)
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
    if args.against:
        other = training_steps_per_second(preset(args.env, args.steps, args.against))
        print(f"    with {' '.join(args.against)}: {other:.0f} steps/s   (b) / this = {ours / other:.2f}")
    print("(c) share of training wall time (profiled run):")
    split = phase_split(preset(args.env, args.steps, args.overrides))
    for phase, share in split.items():
        print(f"    {phase:<22} {share:6.1%}")
    update = split["policy step (all)"] + split["value fit: hand over"] + split["value fit: wait"]
    print(f"    update (policy step + value fit in the trainer) {update:6.1%}")
    if args.peers:
        peer = sb3_steps_per_second(args.env, args.steps)
        print(f"(d) SB3-contrib TRPO (RL Zoo settings): {peer:.0f} steps/s   (b)/(d) = {ours / peer:.2f}")
        peer = tianshou_steps_per_second(args.env, args.steps)
        print(f"(d) Tianshou TRPO (MuJoCo example settings): {peer:.0f} steps/s   (b)/(d) = {ours / peer:.2f}")


if __name__ == "__main__":
    main()
