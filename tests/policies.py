"""Tiny float64 policies with generic parameters (sigma != 1, non-trivial logits) for the math tests."""

import torch

from trpo.factored_policies import BernoulliPolicy, MultiCategoricalPolicy
from trpo.policy import CategoricalPolicy, GaussianPolicy, ObservationNormalizer

KINDS = ["gaussian", "categorical", "multi_categorical", "bernoulli"]

OBS_DIM = 3


def tiny_policy(kind: str, seed: int = 0, normalize: bool = False):
    torch.manual_seed(seed)
    normalizer = ObservationNormalizer(OBS_DIM) if normalize else None
    if kind == "gaussian":
        policy = GaussianPolicy(OBS_DIM, 2, hidden=(5,), log_std_init=-0.7, normalizer=normalizer)
    elif kind == "categorical":
        policy = CategoricalPolicy(OBS_DIM, 4, hidden=(5,), normalizer=normalizer)
    elif kind == "multi_categorical":
        policy = MultiCategoricalPolicy(OBS_DIM, (2, 4, 3), hidden=(5,), normalizer=normalizer)
    else:
        policy = BernoulliPolicy(OBS_DIM, 3, hidden=(5,), normalizer=normalizer)
    policy = policy.double()
    with torch.no_grad():
        for p in policy.parameters():  # move away from the 0.01-scaled init so every term matters
            p.add_(0.3 * torch.randn_like(p))
        if normalize:
            normalizer.update(torch.randn(64, OBS_DIM, dtype=torch.float64) * 3 + 1)
    return policy


def tiny_batch(policy, size: int = 40, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(size, OBS_DIM, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        dist = policy.dist(obs)
        actions = dist.sample()
        log_probs = dist.log_prob(actions)
    advantages = torch.randn(size, generator=generator, dtype=torch.float64)
    return obs, actions, log_probs, advantages


def num_params(policy) -> int:
    return sum(p.numel() for p in policy.parameters())
