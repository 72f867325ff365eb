"""Policies over several discrete choices at once: MultiDiscrete (independent categoricals) and
MultiBinary (independent Bernoullis), with the interface of trpo.policy's policies."""

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Categorical, Distribution, Independent
from torch.nn import functional

from trpo.policy import ObservationNormalizer, mlp


class _Bernoulli(Bernoulli):
    """Bernoulli whose mode is 1 exactly where the logit is positive (torch's is NaN at p = 1/2) and
    whose log_prob takes integer actions as the rollouts store them."""

    @property
    def mode(self) -> Tensor:
        return (self.logits > 0).to(self.logits)

    def log_prob(self, value: Tensor) -> Tensor:
        return super().log_prob(value.to(self.logits))


class _FactoredPolicy(nn.Module):
    """An MLP of logits over all the choices, one distribution per state with one log-prob."""

    def __init__(self, obs_dim: int, n_logits: int, hidden: Sequence[int], activation: str,
                 normalizer: ObservationNormalizer | None):
        super().__init__()
        self.normalizer = nn.Identity() if normalizer is None else normalizer
        self.logits = mlp(obs_dim, n_logits, hidden, activation, out_gain=0.01)

    def forward(self, obs: Tensor) -> tuple[Tensor]:
        """Distribution parameters (logits [B, n_logits],) for obs [B, obs_dim]."""
        return (self.logits(self.normalizer(obs)),)

    def dist(self, obs: Tensor) -> Distribution:
        return self.distribution(self(obs))

    def sample_log_prob(self, obs: Tensor, actions: Tensor, noise: Tensor) -> Tensor:
        """log pi(a|s) [B] of actions drawn by trpo.acting (one forward pass)."""
        return self.dist(obs).log_prob(actions)


class MultiCategoricalPolicy(_FactoredPolicy):
    """Independent categoricals over nvec[k] choices each (gymnasium's MultiDiscrete), one MLP of logits.

    obs_dim: observation features.
    nvec: the number of choices of each component.
    hidden, activation, normalizer: as for CategoricalPolicy.
    """

    def __init__(self, obs_dim: int, nvec: Sequence[int], hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh", normalizer: ObservationNormalizer | None = None):
        super().__init__(obs_dim, sum(nvec), hidden, activation, normalizer)
        self.nvec = tuple(int(n) for n in nvec)
        starts = torch.tensor((0, *self.nvec[:-1])).cumsum(0)
        columns = torch.arange(max(self.nvec))
        self.register_buffer("padding", columns >= torch.tensor(self.nvec)[:, None], persistent=False)  # [K, max n]
        self.register_buffer("index", (starts[:, None] + columns).clamp(max=sum(self.nvec) - 1), persistent=False)

    def distribution(self, params: tuple[Tensor]) -> Distribution:
        """Categoricals over [B, K] padded to the widest component (padding has probability 0)."""
        padded = params[0][..., self.index].masked_fill(self.padding, torch.finfo(params[0].dtype).min)
        return Independent(Categorical(logits=padded, validate_args=False), 1, validate_args=False)

    def action_noise(self, *shape: int) -> Tensor:
        """Standard Gumbel noise [*shape, sum(nvec)] for trpo.acting (Gumbel-max in each component)."""
        return -torch.empty(*shape, sum(self.nvec)).exponential_().log()

    def kl(self, old: tuple[Tensor], new: tuple[Tensor]) -> Tensor:
        """KL(old || new) per state [B]: the sum of the components' KLs."""
        total = 0
        for old_logits, new_logits in zip(old[0].split(self.nvec, -1), new[0].split(self.nvec, -1)):
            log_p_old, log_p_new = old_logits.log_softmax(-1), new_logits.log_softmax(-1)
            total = total + (log_p_old.exp() * (log_p_old - log_p_new)).sum(-1)
        return total

    def fisher_metric(self, params: tuple[Tensor], tangent: tuple[Tensor]) -> tuple[Tensor]:
        """Block diagonal: each component's diag(p) - p p^T on its logits, applied to a tangent."""
        blocks = []
        for logits, t in zip(params[0].split(self.nvec, -1), tangent[0].split(self.nvec, -1)):
            p_t = logits.softmax(-1) * t
            blocks.append(p_t - logits.softmax(-1) * p_t.sum(-1, keepdim=True))
        return (torch.cat(blocks, -1),)


class BernoulliPolicy(_FactoredPolicy):
    """Independent Bernoullis over n bits (gymnasium's MultiBinary), one MLP of logits.

    obs_dim: observation features.
    n: the number of bits.
    hidden, activation, normalizer: as for CategoricalPolicy.
    """

    def __init__(self, obs_dim: int, n: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh",
                 normalizer: ObservationNormalizer | None = None):
        super().__init__(obs_dim, n, hidden, activation, normalizer)

    @staticmethod
    def distribution(params: tuple[Tensor]) -> Distribution:
        return Independent(_Bernoulli(logits=params[0], validate_args=False), 1, validate_args=False)

    def action_noise(self, *shape: int) -> Tensor:
        """Standard logistic noise [*shape, n] for trpo.acting: bit = logit + noise > 0, with P = sigmoid(logit)."""
        u = torch.rand(*shape, self.logits[-1].out_features).clamp(1e-7, 1 - 1e-7)
        return u.log() - (-u).log1p()

    @staticmethod
    def kl(old: tuple[Tensor], new: tuple[Tensor]) -> Tensor:
        """KL(old || new) per state [B], summed over the bits."""
        (old_logits,), (new_logits,) = old, new
        p_old = old_logits.sigmoid()
        on = functional.logsigmoid(old_logits) - functional.logsigmoid(new_logits)
        off = functional.logsigmoid(-old_logits) - functional.logsigmoid(-new_logits)
        return (p_old * on + (1 - p_old) * off).sum(-1)

    @staticmethod
    def fisher_metric(params: tuple[Tensor], tangent: tuple[Tensor]) -> tuple[Tensor]:
        """The Bernoulli Fisher on logits, p (1 - p), applied to a tangent."""
        p = params[0].sigmoid()
        return (p * (1 - p) * tangent[0],)
