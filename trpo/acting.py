"""Acting in rollouts: the policy's network copied into NumPy arrays, fixed for one rollout.

The rollout calls the network once per vector-env step on a few states (16 x 17 for HalfCheetah),
where torch's per-operation dispatch costs several times the arithmetic: in the collection loop the
policy's own forward took about 220 us a step, this copy about 60 (benchmarks/acting.py). tanh and
ReLU run in NumPy, in place; any other activation runs as the policy's own torch module on a
zero-copy view. Float32 results agree with the policy's to rounding (tests/test_acting.py).
"""

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import nn

from trpo.factored_policies import BernoulliPolicy, MultiCategoricalPolicy
from trpo.policy import GaussianPolicy, ObservationNormalizer, Policy


@dataclass(frozen=True)
class Actor:
    """Actions from states and pre-drawn noise (`policy.action_noise`), without torch on the hot path."""

    scale: np.ndarray | None  # the normalizer folded into obs * scale + shift, then clipped; None: raw obs
    shift: np.ndarray | None
    clip: float
    layers: list[tuple[np.ndarray, np.ndarray]]  # (W^T [in, out], b [out]) of each linear layer
    activation: Callable[[np.ndarray], np.ndarray] | None  # between linear layers; may work in place
    std: np.ndarray | None  # Gaussian: exp(log_std) [A]; None: choices from logits and noise
    boundaries: tuple[int, ...] | None = None  # MultiDiscrete: where each component's logits start
    bernoulli: bool = False  # MultiBinary: bit = logit + logistic noise > 0

    def __call__(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """obs [B, obs_dim] float32, noise [B, A] -> actions [B, A] (Gaussian, MultiDiscrete, MultiBinary) or
        [B] (categorical)."""
        x = obs
        if self.scale is not None:  # (np.clip costs more than these two)
            x = obs * self.scale
            x += self.shift
            np.minimum(np.maximum(x, -self.clip, out=x), self.clip, out=x)
        for i, (weight_t, bias) in enumerate(self.layers):
            x = x @ weight_t
            x += bias
            if i < len(self.layers) - 1:
                x = self.activation(x)
        if self.std is not None:
            x += self.std * noise
            return x
        x += noise
        if self.bernoulli:
            return (x > 0).astype(np.int64)
        if self.boundaries is not None:  # Gumbel-max in each component
            return np.stack([part.argmax(-1) for part in np.split(x, self.boundaries, axis=-1)], -1)
        return x.argmax(-1)


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x, out=x)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=x)


def _torch_activation(module: nn.Module, x: np.ndarray) -> np.ndarray:
    return module(torch.from_numpy(x)).numpy()


def _numpy_activation(module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Named functions, not lambdas: an Actor crosses a pipe to the env workers (trpo/workers.py)."""
    return {nn.Tanh: _tanh, nn.ReLU: _relu}.get(type(module), partial(_torch_activation, module))


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A float32 NumPy copy: the actor must not change when the policy's parameters do."""
    return tensor.detach().cpu().float().contiguous().numpy().copy()


@torch.no_grad()
def snapshot(policy: Policy) -> Actor:
    """The policy's current network as an Actor (on the CPU, float32)."""
    body = policy.mean if isinstance(policy, GaussianPolicy) else policy.logits
    layers = [(_array(m.weight.T), _array(m.bias)) for m in body if isinstance(m, nn.Linear)]
    activations = [m for m in body if not isinstance(m, nn.Linear)]
    scale = shift = None
    clip = 0.0
    if isinstance(policy.normalizer, ObservationNormalizer):
        normalizer = policy.normalizer
        inverse_std = torch.rsqrt(normalizer.var + normalizer.epsilon)
        scale, shift, clip = _array(inverse_std), _array(-normalizer.mean * inverse_std), normalizer.clip
    std = _array(policy.log_std.exp()) if isinstance(policy, GaussianPolicy) else None
    activation = _numpy_activation(activations[0]) if activations else None  # None: no hidden layer
    boundaries = tuple(np.cumsum(policy.nvec[:-1]).tolist()) if isinstance(policy, MultiCategoricalPolicy) else None
    return Actor(scale, shift, clip, layers, activation, std, boundaries, isinstance(policy, BernoulliPolicy))
