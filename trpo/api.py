"""The Python API's results: a finished Run, and an Agent that acts with a trained policy.

`trpo.train(env_id, overrides, run_dir)` (trpo/train.py) returns a Run; `trpo.load(path)` an Agent.
"""

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from trpo import checkpoint
from trpo.config import Config
from trpo.evaluate import env_action, load_run
from trpo.models import build_models
from trpo.policy import Policy


@dataclass(frozen=True)
class Run:
    """A finished training run."""

    run_dir: Path  # everything the run wrote (README "Outputs")
    config: Config  # the resolved configuration it ran with
    final_return: float  # the mean return of its final deterministic evaluation


@dataclass(frozen=True)
class Agent:
    """A trained policy with its configuration, acting in the env's action space (normalizer frozen)."""

    policy: Policy
    config: Config
    action_space: gym.Space

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The action for one observation [obs_dim], or actions [B, ...] for a batch [B, obs_dim].

        deterministic: the Gaussian's mean or the most likely discrete action; otherwise a sample.
        The actions are the env's: clipped to a Box's bounds, offset by a Discrete's start.
        """
        obs = np.asarray(obs, dtype=np.float32)
        batch = obs[None] if obs.ndim == 1 else obs
        device = next(self.policy.parameters()).device
        with torch.inference_mode():
            dist = self.policy.dist(torch.as_tensor(batch, device=device))
            actions = env_action((dist.mode if deterministic else dist.sample()).cpu().numpy(), self.action_space)
        return actions[0] if obs.ndim == 1 else actions

    def save(self, path: str | Path) -> Path:
        """One file with the configuration, the weights and the spaces: trpo.load(path) needs neither the
        run directory nor the env. Loads with weights_only=True."""
        space = self.action_space
        first_layer = next(m for m in self.policy.modules() if isinstance(m, nn.Linear))
        spaces = {"obs_dim": first_layer.in_features, "action_space": type(space).__name__} | _space_arrays(space)
        path = Path(path)
        torch.save({"config": OmegaConf.to_container(OmegaConf.structured(self.config)), "spaces": spaces,
                    "policy": self.policy.state_dict()}, path)
        return path


def load(path: str | Path, device: str = "cpu") -> Agent:
    """The agent of a run directory (its latest checkpoint) or of a file that Agent.save wrote.

    device: where the policy runs ("cpu" or "cuda").
    """
    path = Path(path)
    if path.is_dir():
        config, policy, action_space = load_run(path)
    else:
        saved = checkpoint.load_file(path)
        config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), saved["config"]))
        spaces = saved["spaces"]
        action_space = _space(spaces)
        observation_space = gym.spaces.Box(-np.inf, np.inf, (spaces["obs_dim"],))
        policy, _ = build_models(config, observation_space, action_space)
        policy.load_state_dict(saved["policy"])
    return Agent(policy.to(device).eval(), config, action_space)


def _space_arrays(space: gym.Space) -> dict:
    """An action space as tensors and numbers, which a weights-only checkpoint holds."""
    if isinstance(space, gym.spaces.Box):
        return {"low": torch.as_tensor(space.low), "high": torch.as_tensor(space.high)}
    if isinstance(space, gym.spaces.Discrete):
        return {"n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"nvec": torch.as_tensor(space.nvec), "start": torch.as_tensor(space.start)}
    return {"n": int(space.n)}  # MultiBinary


def _space(saved: dict) -> gym.Space:
    kind = saved["action_space"]
    if kind == "Box":
        return gym.spaces.Box(saved["low"].numpy(), saved["high"].numpy())
    if kind == "Discrete":
        return gym.spaces.Discrete(saved["n"], start=saved["start"])
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(saved["nvec"].numpy(), start=saved["start"].numpy())
    return gym.spaces.MultiBinary(saved["n"])
