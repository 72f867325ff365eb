"""The networks a config asks for: policy and value network, sharing one observation normalizer."""

import gymnasium as gym

from trpo.config import Config
from trpo.factored_policies import BernoulliPolicy, MultiCategoricalPolicy
from trpo.policy import CategoricalPolicy, GaussianPolicy, ObservationNormalizer, Policy, ValueNetwork


def build_models(config: Config, observation_space: gym.Space, action_space: gym.Space) -> tuple[Policy, ValueNetwork]:
    """Policy and value network with separate parameters (sizes model.policy_hidden and model.value_hidden,
    each model.hidden unless given) and one shared observation normalizer."""
    obs_dim = observation_space.shape[0]
    normalizer = ObservationNormalizer(obs_dim, clip=config.env.observation_clip) \
        if config.env.normalize_observations else None
    model = config.model
    policy_hidden = tuple(model.hidden if model.policy_hidden is None else model.policy_hidden)
    value_hidden = tuple(model.hidden if model.value_hidden is None else model.value_hidden)
    if isinstance(action_space, gym.spaces.Discrete):
        policy = CategoricalPolicy(obs_dim, int(action_space.n), policy_hidden, model.activation, normalizer=normalizer)
    elif isinstance(action_space, gym.spaces.MultiDiscrete):
        policy = MultiCategoricalPolicy(obs_dim, action_space.nvec.tolist(), policy_hidden, model.activation,
                                        normalizer=normalizer)
    elif isinstance(action_space, gym.spaces.MultiBinary):
        policy = BernoulliPolicy(obs_dim, int(action_space.shape[0]), policy_hidden, model.activation,
                                 normalizer=normalizer)
    else:
        policy = GaussianPolicy(obs_dim, action_space.shape[0], policy_hidden, model.activation, model.log_std_init,
                                normalizer=normalizer)
    return policy, ValueNetwork(obs_dim, value_hidden, model.activation, normalizer=normalizer)
