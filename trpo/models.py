"""The networks a config asks for: policy and value network, sharing one observation normalizer."""

import gymnasium as gym

from trpo.config import Config
from trpo.policy import CategoricalPolicy, GaussianPolicy, ObservationNormalizer, Policy, ValueNetwork


def build_models(config: Config, observation_space: gym.Space, action_space: gym.Space) -> tuple[Policy, ValueNetwork]:
    """Policy and value network with separate parameters and one shared observation normalizer."""
    obs_dim = observation_space.shape[0]
    normalizer = ObservationNormalizer(obs_dim, clip=config.env.observation_clip) \
        if config.env.normalize_observations else None
    hidden, activation = tuple(config.model.hidden), config.model.activation
    if isinstance(action_space, gym.spaces.Discrete):
        policy = CategoricalPolicy(obs_dim, int(action_space.n), hidden, activation, normalizer=normalizer)
    else:
        policy = GaussianPolicy(obs_dim, action_space.shape[0], hidden, activation, config.model.log_std_init,
                                normalizer=normalizer)
    return policy, ValueNetwork(obs_dim, hidden, activation, normalizer=normalizer)
