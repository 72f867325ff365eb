"""Rollouts on several cores: processes that each step their share of the envs through a whole rollout.

One process steps a Gymnasium vector env at one core's speed, and Gymnasium's Python around MuJoCo is
most of each step (benchmarks/README.md). With `env.workers=K`, each of K processes owns a vector env
of about num_envs / K envs (with its own episode statistics and reward scaling) and collects its
columns of a rollout from one message, the acting copy and its slice of the noise: the pipe is crossed
once each way per rollout, not per step. The envs and their seeds are those of one vector env of
num_envs (env i is seeded seed + i); only reward scaling keeps one running statistic per process.
"""

from contextlib import ExitStack
from dataclasses import replace

import gymnasium as gym
import numpy as np

from trpo import envs as env_tools
from trpo import stepping
from trpo.acting import Actor
from trpo.config import EnvConfig
from trpo.processes import Child, call_all, close_all


class _Worker:
    """A worker's vector env and collector state; its methods are what the trainer calls."""

    def __init__(self, env_id: str, config: EnvConfig, gamma: float, seed: int):
        self.vector_env = env_tools.make_vector_env(env_id, config, gamma, seed)
        self.state = None  # until the first reset

    def describe(self) -> tuple:
        return self.vector_env.single_observation_space, self.vector_env.single_action_space, self.vector_env.metadata

    def reset(self, seed: int) -> np.ndarray:
        self.state = stepping.start(self.vector_env, seed)
        return self.state.obs

    def step_rollout(self, actor: Actor, noise: np.ndarray) -> tuple:
        arrays = stepping.step_envs(self.vector_env, actor, noise, self.state)
        finished = self.state.episode_returns, self.state.episode_lengths
        self.state.episode_returns, self.state.episode_lengths = [], []
        return arrays, *finished, self.state.obs

    def reward_normalizer_state(self) -> dict:
        return env_tools.reward_normalizer_state(self.vector_env)

    def load_reward_normalizer_state(self, saved: dict) -> None:
        env_tools.load_reward_normalizer_state(self.vector_env, saved)


class EnvWorkers:
    """num_envs envs stepped by config.workers processes; collector.collect steps them a rollout at a time.

    Like a vector env it has num_envs, single_observation_space, single_action_space, metadata,
    reset(seed) and close().
    """

    def __init__(self, env_id: str, config: EnvConfig, gamma: float, seed: int = 0):
        shares = np.array_split(np.arange(config.num_envs), config.workers)
        self.num_envs = config.num_envs
        self.slices = [slice(int(share[0]), int(share[-1]) + 1) for share in shares]
        with ExitStack() as started:  # a failure while starting closes the workers started so far
            self.children = []
            for index, columns in enumerate(self.slices):
                share = replace(config, num_envs=columns.stop - columns.start, workers=1)
                child = Child(f"env worker {index}", _Worker, env_id, share, gamma, seed + columns.start)
                started.callback(child.close)
                self.children.append(child)
            self.single_observation_space, self.single_action_space, self.metadata = self._request("describe")[0]
            started.pop_all()

    def _request(self, method: str, args_per_worker: list[tuple] | None = None) -> list:
        return call_all(self.children, method, args_per_worker or [()] * len(self.children))

    def reset(self, seed: int) -> tuple[np.ndarray, dict]:
        """Reset every env: env i is seeded seed + i, as in one vector env."""
        return np.concatenate(self._request("reset", [(seed + s.start,) for s in self.slices])), {}

    def step_rollout(self, actor: Actor, noise: np.ndarray, state: stepping.CollectorState) -> dict[str, np.ndarray]:
        """stepping.step_envs on every worker's share of the columns at once; updates state likewise."""
        replies = self._request("step_rollout", [(actor, noise[:, columns]) for columns in self.slices])
        for _, returns, lengths, _ in replies:
            state.episode_returns.extend(returns)
            state.episode_lengths.extend(lengths)
        state.obs = np.concatenate([obs for *_, obs in replies])
        return {name: np.concatenate([arrays[name] for arrays, *_ in replies], axis=1) for name in replies[0][0]}

    def close(self) -> None:
        close_all(self.children)


def make_envs(env_id: str, config: EnvConfig, gamma: float, seed: int = 0) -> gym.vector.VectorEnv | EnvWorkers:
    """The training envs: one vector env here (trpo.envs.make_vector_env), or with config.workers > 1
    EnvWorkers, whose processes each make such a vector env of their share."""
    if config.workers > 1:
        return EnvWorkers(env_id, config, gamma, seed)
    return env_tools.make_vector_env(env_id, config, gamma, seed)


def reward_normalizer_state(envs: gym.vector.VectorEnv | EnvWorkers) -> dict:
    """The running return statistics of reward scaling, as tensors ({} without it).

    EnvWorkers: {"workers": [each worker's statistics]}.
    """
    if isinstance(envs, EnvWorkers):
        return {"workers": envs._request("reward_normalizer_state")}
    return env_tools.reward_normalizer_state(envs)


def load_reward_normalizer_state(envs: gym.vector.VectorEnv | EnvWorkers, state: dict) -> None:
    if not state:  # saved without reward scaling: nothing to restore
        return
    saved_workers = len(state["workers"]) if "workers" in state else 1
    workers = len(envs.children) if isinstance(envs, EnvWorkers) else 1
    if saved_workers != workers:
        raise ValueError(f"the checkpoint holds the reward scaling of env.workers={saved_workers}; "
                         f"resume with env.workers={saved_workers}, not {workers}")
    if isinstance(envs, EnvWorkers):
        envs._request("load_reward_normalizer_state", [(saved,) for saved in state["workers"]])
    else:
        env_tools.load_reward_normalizer_state(envs, state)
