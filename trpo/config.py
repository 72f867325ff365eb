"""Configuration schema: dataclasses with range checks that name the key, the bad value and what is allowed."""

from dataclasses import dataclass

ALGO_NAMES = ("trpo", "npg")
FISHER_METHOD_CHOICES = ("auto", "analytic", "autograd")


def _check(section: str, name: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{section}.{name}={value!r} is invalid: {allowed}")


@dataclass(frozen=True)
class AlgoConfig:
    """The policy update (TRPO or NPG), advantage estimation and the value fit."""

    name: str = "trpo"  # trpo: KL-bounded line search | npg: the full natural-gradient step, no search
    max_kl: float = 0.01
    damping: float = 0.1
    cg_iters: int = 10
    cg_residual_tol: float = 1e-10
    max_backtracks: int = 10
    backtrack_ratio: float = 0.8
    accept_ratio: float = 0.1
    fisher_method: str = "auto"  # analytic | autograd | auto (per-device default)
    fisher_subsample: float = 1.0  # fraction of the batch used for Fisher-vector products
    normalize_advantages: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    value_lr: float = 1e-3
    value_epochs: int = 10
    value_minibatch_size: int = 64

    def __post_init__(self):
        checks = {
            "name": (self.name in ALGO_NAMES, f"choose one of {ALGO_NAMES}"),
            "max_kl": (self.max_kl > 0, "must be > 0"),
            "damping": (self.damping >= 0, "must be >= 0"),
            "cg_iters": (self.cg_iters >= 1, "must be an integer >= 1"),
            "cg_residual_tol": (self.cg_residual_tol >= 0, "must be >= 0"),
            "max_backtracks": (self.max_backtracks >= 1, "must be an integer >= 1"),
            "backtrack_ratio": (0 < self.backtrack_ratio < 1, "must be in (0, 1)"),
            "accept_ratio": (self.accept_ratio >= 0, "must be >= 0"),
            "fisher_method": (self.fisher_method in FISHER_METHOD_CHOICES, f"choose one of {FISHER_METHOD_CHOICES}"),
            "fisher_subsample": (0 < self.fisher_subsample <= 1, "must be in (0, 1]"),
            "gamma": (0 <= self.gamma <= 1, "must be in [0, 1]"),
            "gae_lambda": (0 <= self.gae_lambda <= 1, "must be in [0, 1]"),
            "value_lr": (self.value_lr > 0, "must be > 0"),
            "value_epochs": (self.value_epochs >= 1, "must be an integer >= 1"),
            "value_minibatch_size": (self.value_minibatch_size >= 1, "must be an integer >= 1"),
        }
        for name, (ok, allowed) in checks.items():
            _check("algo", name, getattr(self, name), ok, allowed)
