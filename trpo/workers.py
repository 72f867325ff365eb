"""Rollouts on several cores: processes that each step their share of the envs through a whole rollout.

One process steps a Gymnasium vector env at one core's speed, and Gymnasium's Python around MuJoCo is
most of each step (benchmarks/README.md). With `env.workers=K`, each of K processes owns a vector env
of about num_envs / K envs (with its own episode statistics and reward scaling) and collects its
columns of a rollout from one message, the acting copy and its slice of the noise: the pipe is crossed
once each way per rollout, not per step. The envs and their seeds are those of one vector env of
num_envs (env i is seeded seed + i); only reward scaling keeps one running statistic per process.
"""

import multiprocessing
import os
import signal
import traceback
from dataclasses import replace
from typing import Any

import numpy as np

from trpo.acting import Actor
from trpo.config import EnvConfig


def _serve(connection, env_id: str, config: EnvConfig, gamma: float, seed: int) -> None:
    """The worker: answer (command, args) requests in order until close or until the trainer is gone."""
    for number in (signal.SIGINT, signal.SIGTERM):  # the trainer's to handle: it needs us for its checkpoint
        signal.signal(number, signal.SIG_IGN)
    from trpo import collector, envs as env_tools  # here, not at the top: the collector imports this module

    vector_env = env_tools.make_envs(env_id, config, gamma, seed)
    state = None  # until the first reset

    def step_rollout(actor: Actor, noise: np.ndarray) -> tuple:
        arrays = collector.step_envs(vector_env, actor, noise, state)
        finished = state.episode_returns, state.episode_lengths
        state.episode_returns, state.episode_lengths = [], []
        return arrays, *finished, state.obs

    def reset(seed: int) -> np.ndarray:
        nonlocal state
        state = collector.start(vector_env, seed)
        return state.obs

    commands = {
        "describe": lambda: (vector_env.single_observation_space, vector_env.single_action_space,
                             vector_env.metadata),
        "reset": reset,
        "step_rollout": step_rollout,
        "reward_normalizer_state": lambda: env_tools.reward_normalizer_state(vector_env),
        "load_reward_normalizer_state": lambda saved: env_tools.load_reward_normalizer_state(vector_env, saved),
    }
    while True:
        try:
            command, args = connection.recv()
        except EOFError:
            return
        if command == "close":  # nothing to flush: skip the interpreter's teardown
            vector_env.close()
            connection.close()
            os._exit(0)
        try:
            connection.send((True, commands[command](*args)))
        except Exception:
            connection.send((False, traceback.format_exc()))


class EnvWorkers:
    """num_envs envs stepped by config.workers processes; collector.collect steps them a rollout at a time.

    Like a vector env it has num_envs, single_observation_space, single_action_space, metadata,
    reset(seed) and close().
    """

    def __init__(self, env_id: str, config: EnvConfig, gamma: float, seed: int = 0):
        shares = np.array_split(np.arange(config.num_envs), config.workers)
        self.num_envs = config.num_envs
        self.slices = [slice(int(share[0]), int(share[-1]) + 1) for share in shares]
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch and W&B run threads
        self._connections, self._processes = [], []
        for index, columns in enumerate(self.slices):
            parent, child = context.Pipe()
            share = replace(config, num_envs=columns.stop - columns.start, workers=1)
            process = context.Process(target=_serve, args=(child, env_id, share, gamma, seed + columns.start),
                                      name=f"trpo-envs-{index}", daemon=True)
            process.start()
            child.close()
            self._connections.append(parent)
            self._processes.append(process)
        self.single_observation_space, self.single_action_space, self.metadata = self._request("describe")[0]

    def _request(self, command: str, args_per_worker: list[tuple] | None = None) -> list[Any]:
        """Send command to every worker (all first, so they work at once), then gather their replies."""
        args_per_worker = args_per_worker or [()] * len(self._connections)
        for connection, args in zip(self._connections, args_per_worker):
            connection.send((command, args))
        replies = []
        for index, (connection, process) in enumerate(zip(self._connections, self._processes)):
            try:
                ok, reply = connection.recv()
            except EOFError:
                raise RuntimeError(f"env worker {index} exited unexpectedly (exit code {process.exitcode})") from None
            if not ok:
                raise RuntimeError(f"in env worker {index}:\n{reply}")
            replies.append(reply)
        return replies

    def reset(self, seed: int) -> tuple[np.ndarray, dict]:
        """Reset every env: env i is seeded seed + i, as in one vector env."""
        return np.concatenate(self._request("reset", [(seed + s.start,) for s in self.slices])), {}

    def step_rollout(self, actor: Actor, noise: np.ndarray, state) -> dict[str, np.ndarray]:
        """collector.step_envs on every worker's share of the columns at once; updates state likewise."""
        replies = self._request("step_rollout", [(actor, noise[:, columns]) for columns in self.slices])
        for _, returns, lengths, _ in replies:
            state.episode_returns.extend(returns)
            state.episode_lengths.extend(lengths)
        state.obs = np.concatenate([obs for *_, obs in replies])
        return {name: np.concatenate([arrays[name] for arrays, *_ in replies], axis=1) for name in replies[0][0]}

    def reward_normalizer_state(self) -> list[dict]:
        """Each worker's running return statistics (empty dicts without reward scaling)."""
        return self._request("reward_normalizer_state")

    def load_reward_normalizer_state(self, states: list[dict]) -> None:
        if len(states) != len(self.slices):
            raise ValueError(f"the checkpoint holds the reward scaling of {len(states)} env workers; "
                             f"resume with env.workers={len(states)}, not {len(self.slices)}")
        self._request("load_reward_normalizer_state", [(state,) for state in states])

    def close(self) -> None:
        for connection, process in zip(self._connections, self._processes):
            if process.is_alive():
                connection.send(("close", ()))
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
