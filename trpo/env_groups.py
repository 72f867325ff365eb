"""The training envs as groups of vector envs, stepped in the trainer's process or in one child process.

With `env.subprocess=true`, one child process owns the envs in two groups and steps them in the order
their actions arrive: while it simulates one group, the trainer picks the other group's actions, so
the simulation never waits for the policy and the trainer's core is free for acting and learning.
Both ways run the same `_Envs` methods; only the transport differs.
"""

import multiprocessing
import signal
import traceback
from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from trpo.config import EnvConfig
from trpo.envs import load_reward_normalizer_state, make_envs, reward_normalizer_state


class _Envs:
    """The vector envs of the groups, where they run."""

    def __init__(self, env_id: str, config: EnvConfig, gamma: float, sizes: list[int]):
        self.groups = [make_envs(env_id, replace(config, num_envs=n), gamma) for n in sizes]
        self.offsets = np.cumsum([0, *sizes[:-1]]).tolist()

    def describe(self) -> tuple:
        first = self.groups[0]
        return first.single_observation_space, first.single_action_space, first.metadata.get("autoreset_mode")

    def reset(self, seed: int) -> np.ndarray:
        """Env i of the whole set is seeded with seed + i, however the envs are grouped."""
        return np.concatenate([envs.reset(seed=seed + offset)[0] for envs, offset in zip(self.groups, self.offsets)])

    def step(self, group: int, actions: np.ndarray) -> tuple:
        return self.groups[group].step(actions)

    def state(self) -> list[dict[str, np.ndarray]]:
        return [{k: v.numpy() for k, v in reward_normalizer_state(envs).items()} for envs in self.groups]

    def load_state(self, states: list[dict[str, np.ndarray]]) -> None:
        for envs, state in zip(self.groups, states):
            load_reward_normalizer_state(envs, {k: torch.as_tensor(v) for k, v in state.items()})

    def close(self) -> None:
        for envs in self.groups:
            envs.close()


def _serve(pipe, *args) -> None:
    """The child process: answer (method, args) requests in order until close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle: it closes us
    try:
        envs = _Envs(*args)
    except Exception:
        envs = None
        failure = traceback.format_exc()
    while True:
        try:
            method, method_args = pipe.recv()
        except EOFError:  # the trainer is gone
            return
        try:
            if envs is None:
                raise RuntimeError(failure)
            pipe.send((True, getattr(envs, method)(*method_args)))
        except Exception:
            pipe.send((False, traceback.format_exc()))
        if method == "close":
            return


class EnvGroups:
    """num_envs environments split into `groups` vector envs; step a group with step_async then step_wait.

    env_id, config, gamma: as for `trpo.envs.make_envs` (config.num_envs is the total).
    groups: how many vector envs to split the envs into (as evenly as possible).
    subprocess: run them in one child process; otherwise in this process.
    Requests are answered in the order they are made.
    """

    def __init__(self, env_id: str, config: EnvConfig, gamma: float, groups: int = 1, subprocess: bool = False):
        sizes = [len(part) for part in np.array_split(np.arange(config.num_envs), groups)]
        self.num_envs = config.num_envs
        self.slices = [slice(start, start + n) for start, n in zip(np.cumsum([0, *sizes[:-1]]).tolist(), sizes)]
        self._pending: deque = deque()
        if subprocess:
            context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has threads
            self._pipe, child = context.Pipe()
            self._process = context.Process(target=_serve, args=(child, env_id, config, gamma, sizes),
                                            name="trpo-envs", daemon=True)
            self._process.start()
            child.close()
        else:
            self._envs, self._process = _Envs(env_id, config, gamma, sizes), None
        self.single_observation_space, self.single_action_space, self.autoreset_mode = self._call("describe")
        if self.autoreset_mode not in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
            self.close()
            raise ValueError(f"autoreset_mode={self.autoreset_mode!r} is not supported; use SAME_STEP or NEXT_STEP")

    def _send(self, method: str, *args) -> None:
        if self._process is None:
            self._pending.append((method, args))
        else:
            self._pipe.send((method, args))

    def _receive(self) -> Any:
        if self._process is None:
            method, args = self._pending.popleft()
            return getattr(self._envs, method)(*args)
        try:
            ok, result = self._pipe.recv()
        except EOFError:
            raise RuntimeError(f"the environment process exited unexpectedly (exit code {self._process.exitcode})")
        if not ok:
            raise RuntimeError(f"in the environment process:\n{result}")
        return result

    def _call(self, method: str, *args) -> Any:
        self._send(method, *args)
        return self._receive()

    def reset(self, seed: int) -> np.ndarray:
        """First observations of all envs [num_envs, ...]; env i is seeded with seed + i."""
        return self._call("reset", seed)

    def step_async(self, group: int, actions: np.ndarray) -> None:
        self._send("step", group, actions)

    def step_wait(self) -> tuple:
        """The (obs, reward, terminated, truncated, info) of the earliest step requested and not yet taken."""
        return self._receive()

    def reward_normalizer_state(self) -> list[dict[str, torch.Tensor]]:
        return [{k: torch.as_tensor(v) for k, v in state.items()} for state in self._call("state")]

    def load_reward_normalizer_state(self, states: list[dict[str, torch.Tensor]]) -> None:
        self._call("load_state", [{k: v.numpy() for k, v in state.items()} for state in states])

    def close(self) -> None:
        if self._process is None:
            self._envs.close()
            return
        if self._process.is_alive():
            try:
                self._call("close")
            except (RuntimeError, OSError):
                pass  # it is going away either way
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
