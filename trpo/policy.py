"""Policy and value networks: MLPs with orthogonal init and a shared observation normalizer.

A policy's `forward(obs)` returns its distribution parameters as a tuple of tensors; the curvature
code differentiates through it with torch.func, and `dist(obs)` wraps it in a torch Distribution.
"""

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def mlp(in_dim: int, out_dim: int, hidden: Sequence[int], activation: str, out_gain: float) -> nn.Sequential:
    """An MLP with orthogonal weights (gain sqrt(2) on hidden layers, `out_gain` on the last) and zero biases.

    in_dim: input features.
    out_dim: output features.
    hidden: widths of the hidden layers.
    activation: a key of ACTIVATIONS.
    out_gain: orthogonal gain of the last layer (0.01 for policy heads, 1.0 for the value head).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not supported; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_orthogonal(nn.Linear(in_dim, width), math.sqrt(2)), ACTIVATIONS[activation]()]
        in_dim = width
    layers.append(_orthogonal(nn.Linear(in_dim, out_dim), out_gain))
    return nn.Sequential(*layers)


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ObservationNormalizer(nn.Module):
    """Running mean and variance of observations, kept as buffers so checkpoints carry them.

    The statistics change only through `update`, which the trainer calls on training data; evaluation
    simply never calls it, which freezes them.
    """

    def __init__(self, obs_dim: int, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.clip = clip
        self.epsilon = epsilon
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("var", torch.ones(obs_dim))
        self.register_buffer("count", torch.zeros(()))

    @torch.no_grad()
    def updated(self, obs: Tensor) -> dict[str, Tensor]:
        """The state_dict that update(obs) would leave, without changing these statistics."""
        batch = obs.reshape(-1, self.mean.shape[0]).to(self.mean.dtype)
        n = batch.shape[0]
        batch_mean, batch_var = batch.mean(0), batch.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        return {"mean": self.mean + delta * n / total, "var": m2 / total, "count": total}

    def update(self, obs: Tensor) -> None:
        """Merge a batch [..., obs_dim] into the running statistics (Chan et al. parallel variance)."""
        self.load_state_dict(self.updated(obs))

    def forward(self, obs: Tensor) -> Tensor:
        return ((obs - self.mean) / torch.sqrt(self.var + self.epsilon)).clamp(-self.clip, self.clip)


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian policy: MLP mean, state-independent log-std parameter.

    obs_dim: observation features.
    act_dim: action dimensions.
    hidden: widths of the hidden layers.
    activation: a key of ACTIVATIONS.
    log_std_init: initial log standard deviation of every action dimension.
    normalizer: observation normalizer shared with the value network, or None for raw observations.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        normalizer: ObservationNormalizer | None = None,
    ):
        super().__init__()
        self.normalizer = nn.Identity() if normalizer is None else normalizer
        self.mean = mlp(obs_dim, act_dim, hidden, activation, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Distribution parameters (mean [B, A], log_std [B, A]) for obs [B, obs_dim]."""
        mean = self.mean(self.normalizer(obs))
        return mean, self.log_std.expand_as(mean)

    @staticmethod
    def distribution(params: tuple[Tensor, Tensor]) -> Distribution:
        mean, log_std = params
        return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)

    def dist(self, obs: Tensor) -> Distribution:
        """The action distribution at obs [B, obs_dim]; log_prob gives one value per state."""
        return self.distribution(self(obs))

    def action_noise(self, *shape: int) -> Tensor:
        """Standard normal noise [*shape, A] for trpo.acting (mean + std * noise), from torch's global generator."""
        return torch.randn(*shape, self.log_std.shape[0])

    def sample_log_prob(self, obs: Tensor, actions: Tensor, noise: Tensor) -> Tensor:
        """log pi(a|s) [B] of actions drawn by trpo.acting from noise: a = mean + std * noise, so the
        density follows from the noise alone, without running the network again."""
        return Normal(0.0, 1.0, validate_args=False).log_prob(noise).sum(-1) - self.log_std.sum()

    @staticmethod
    def kl(old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]) -> Tensor:
        """KL(old || new) per state [B], closed form (no host synchronization, unlike torch's registry)."""
        (mean_old, log_std_old), (mean_new, log_std_new) = old, new
        var_ratio = torch.exp(2 * (log_std_old - log_std_new))
        mahalanobis = (mean_old - mean_new).square() * torch.exp(-2 * log_std_new)
        return 0.5 * (var_ratio + mahalanobis - 1).sum(-1) + (log_std_new - log_std_old).sum(-1)

    @staticmethod
    def fisher_metric(params: tuple[Tensor, Tensor], tangent: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """The Gaussian's own Fisher applied to a tangent: 1/sigma^2 on the mean, 2 on each log-std."""
        (_, log_std), (t_mean, t_log_std) = params, tangent
        return t_mean * torch.exp(-2 * log_std), 2 * t_log_std


class CategoricalPolicy(nn.Module):
    """Categorical policy over n_actions with MLP logits.

    obs_dim: observation features.
    n_actions: number of discrete actions.
    hidden: widths of the hidden layers.
    activation: a key of ACTIVATIONS.
    normalizer: observation normalizer shared with the value network, or None for raw observations.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        normalizer: ObservationNormalizer | None = None,
    ):
        super().__init__()
        self.normalizer = nn.Identity() if normalizer is None else normalizer
        self.logits = mlp(obs_dim, n_actions, hidden, activation, out_gain=0.01)

    def forward(self, obs: Tensor) -> tuple[Tensor]:
        """Distribution parameters (logits [B, n_actions],) for obs [B, obs_dim]."""
        return (self.logits(self.normalizer(obs)),)

    @staticmethod
    def distribution(params: tuple[Tensor]) -> Distribution:
        return Categorical(logits=params[0], validate_args=False)

    def dist(self, obs: Tensor) -> Distribution:
        """The action distribution at obs [B, obs_dim]."""
        return self.distribution(self(obs))

    def action_noise(self, *shape: int) -> Tensor:
        """Standard Gumbel noise [*shape, n_actions] for trpo.acting (Gumbel-max), from torch's global generator."""
        return -torch.empty(*shape, self.logits[-1].out_features).exponential_().log()

    def sample_log_prob(self, obs: Tensor, actions: Tensor, noise: Tensor) -> Tensor:
        """log pi(a|s) [B] of actions drawn by trpo.acting (the Gumbel noise does not give it: one forward pass)."""
        return self.dist(obs).log_prob(actions)

    @staticmethod
    def kl(old: tuple[Tensor], new: tuple[Tensor]) -> Tensor:
        """KL(old || new) per state [B]."""
        log_p_old, log_p_new = old[0].log_softmax(-1), new[0].log_softmax(-1)
        return (log_p_old.exp() * (log_p_old - log_p_new)).sum(-1)

    @staticmethod
    def fisher_metric(params: tuple[Tensor], tangent: tuple[Tensor]) -> tuple[Tensor]:
        """The categorical Fisher on logits, diag(p) - p p^T, applied to a tangent."""
        p, t = params[0].softmax(-1), tangent[0]
        p_t = p * t
        return (p_t - p * p_t.sum(-1, keepdim=True),)


class ValueNetwork(nn.Module):
    """State-value MLP V(s) -> [B], with the last layer at orthogonal gain 1.

    obs_dim: observation features.
    hidden: widths of the hidden layers.
    activation: a key of ACTIVATIONS.
    normalizer: the policy's observation normalizer (the same instance), or None.
    """

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        normalizer: ObservationNormalizer | None = None,
    ):
        super().__init__()
        self.normalizer = nn.Identity() if normalizer is None else normalizer
        self.body = mlp(obs_dim, 1, hidden, activation, out_gain=1.0)

    def forward(self, obs: Tensor) -> Tensor:
        return self.body(self.normalizer(obs)).squeeze(-1)


Policy = GaussianPolicy | CategoricalPolicy
