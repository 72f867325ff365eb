"""Acting in rollouts: the policy's network copied into NumPy arrays, fixed for one rollout.

The rollout calls the network once per vector-env step on a few states (16 x 17 for HalfCheetah),
where torch's per-operation dispatch costs several times the arithmetic: in the collection loop the
policy's own forward took about 230 us a step, this copy about 60 (benchmarks/README.md). The hidden
activations are the policy's own torch modules, applied to zero-copy views, so both compute the same
function; float32 results agree to rounding.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trpo.policy import GaussianPolicy, ObservationNormalizer, Policy


@dataclass(frozen=True)
class Actor:
    """Actions from states and pre-drawn noise (`policy.action_noise`), without torch on the hot path."""

    scale: np.ndarray | None  # the normalizer folded into obs * scale + shift, then clipped; None: raw obs
    shift: np.ndarray | None
    clip: float
    layers: list[tuple[np.ndarray, np.ndarray]]  # (W^T [in, out], b [out]) of each linear layer
    activation: nn.Module  # between linear layers
    std: np.ndarray | None  # Gaussian: exp(log_std) [A]; None: categorical (Gumbel-max over logits)

    def __call__(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """obs [B, obs_dim] float32, noise [B, A] -> actions [B, A] (Gaussian) or [B] (categorical)."""
        x = obs
        if self.scale is not None:
            x = np.clip(x * self.scale + self.shift, -self.clip, self.clip)
        for i, (weight_t, bias) in enumerate(self.layers):
            x = x @ weight_t
            x += bias
            if i < len(self.layers) - 1:
                x = self.activation(torch.from_numpy(x)).numpy()
        if self.std is None:
            return (x + noise).argmax(-1)
        x += self.std * noise
        return x


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
    return Actor(scale, shift, clip, layers, activations[0] if activations else nn.Identity(), std)
