"""Configuration schema: dataclasses with range checks that name the key, the bad value and what is allowed."""

import math
from dataclasses import dataclass, field, replace
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from trpo.policy import ACTIVATIONS

# conf/config.yaml: a resumed run writes into the run directory it continues, beside the original .hydra/.
OmegaConf.register_new_resolver("if_resuming", lambda resume, resumed, fresh: fresh if resume is None else resumed,
                                replace=True)

ALGO_NAMES = ("trpo", "npg", "kfac")
FISHER_METHOD_CHOICES = ("auto", "mlp", "analytic", "autograd")
CG_PRECONDITIONERS = ("none", "diagonal", "kfac")
VALUE_OPTIMIZERS = ("adam", "kfac")


ACTIVATION_NAMES = tuple(ACTIVATIONS)


def _check(section: str, name: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        key = f"{section}.{name}" if section else name
        raise ValueError(f"{key}={value!r} is invalid: {allowed}")


@dataclass
class AlgoConfig:
    """The policy update (TRPO or NPG), advantage estimation and the value fit."""

    # trpo: CG direction, KL-bounded line search | npg: CG direction, the full step, no search |
    # kfac: the K-FAC direction (trpo.kfac), its length from the exact FVP, then TRPO's line search
    name: str = "trpo"
    max_kl: float = 0.01
    max_kl_decay: bool = False  # max_kl falls linearly towards 0 over the run's updates (value_lr_decay's twin)
    damping: float = 0.1
    cg_iters: int = 10
    cg_residual_tol: float = 1e-10
    cg_preconditioner: str = "none"  # none | diagonal (the exact Fisher diagonal) | kfac (trpo.kfac)
    acktr_kl_clip: bool = False  # algo=kfac: ACKTR's step min(acktr_lr, sqrt(2 max_kl / d^T F d)) d, no line search
    acktr_lr: float = 0.25  # ACKTR's largest step multiplier (Wu et al. 2017)
    max_backtracks: int = 10
    backtrack_ratio: float = 0.8
    accept_ratio: float = 0.1
    fisher_method: str = "auto"  # mlp | analytic | autograd | auto (per-device default)
    fisher_subsample: float = 1.0  # fraction of the batch used for Fisher-vector products
    normalize_advantages: bool = True
    entropy_coef: float = 0.0  # the step ascends surrogate + entropy_coef * mean entropy (baselines' entcoeff)
    gamma: float = 0.99
    gamma_final: float | None = None  # GAE's gamma goes linearly to this over the run (reward scaling keeps gamma)
    gae_lambda: float = 0.95
    value_lr: float = 1e-3
    value_lr_decay: bool = False  # Adam's value_lr falls linearly to 0 over the run's updates (Tianshou's lr_decay)
    value_epochs: int = 10
    value_minibatch_size: int = 64
    value_process: bool = False  # fit the value function in a child process during the policy step and next rollout
    value_optimizer: str = "adam"  # adam | kfac (ACKTR's critic: trpo.kfac.KFACCritic, value_lr unused)
    value_kfac_damping: float = 0.01  # value_optimizer=kfac: Tikhonov damping of its Gauss-Newton
    value_kfac_max_change: float = 0.01  # value_optimizer=kfac: largest 1/2 mean dV^2 of one step (the KL clip)

    def __post_init__(self):
        checks = {
            "name": (self.name in ALGO_NAMES, f"choose one of {ALGO_NAMES}"),
            "max_kl": (self.max_kl > 0, "must be > 0"),
            "damping": (self.damping >= 0, "must be >= 0"),
            "cg_iters": (self.cg_iters >= 1, "must be an integer >= 1"),
            "cg_residual_tol": (self.cg_residual_tol >= 0, "must be >= 0"),
            "cg_preconditioner": (self.cg_preconditioner in CG_PRECONDITIONERS, f"choose one of {CG_PRECONDITIONERS}"),
            "acktr_lr": (self.acktr_lr > 0, "must be > 0"),
            "max_backtracks": (self.max_backtracks >= 1, "must be an integer >= 1"),
            "backtrack_ratio": (0 < self.backtrack_ratio < 1, "must be in (0, 1)"),
            "accept_ratio": (self.accept_ratio >= 0, "must be >= 0"),
            "fisher_method": (self.fisher_method in FISHER_METHOD_CHOICES, f"choose one of {FISHER_METHOD_CHOICES}"),
            "fisher_subsample": (0 < self.fisher_subsample <= 1, "must be in (0, 1]"),
            "entropy_coef": (self.entropy_coef >= 0, "must be >= 0"),
            "gamma": (0 <= self.gamma <= 1, "must be in [0, 1]"),
            "gamma_final": (self.gamma_final is None or 0 <= self.gamma_final <= 1, "must be null or in [0, 1]"),
            "gae_lambda": (0 <= self.gae_lambda <= 1, "must be in [0, 1]"),
            "value_lr": (self.value_lr > 0, "must be > 0"),
            "value_epochs": (self.value_epochs >= 1, "must be an integer >= 1"),
            "value_minibatch_size": (self.value_minibatch_size >= 1, "must be an integer >= 1"),
            "value_optimizer": (self.value_optimizer in VALUE_OPTIMIZERS, f"choose one of {VALUE_OPTIMIZERS}"),
            "value_kfac_damping": (self.value_kfac_damping > 0, "must be > 0"),
            "value_kfac_max_change": (self.value_kfac_max_change > 0, "must be > 0"),
            "value_lr_decay": (not self.value_lr_decay or self.value_optimizer == "adam",
                               "needs value_optimizer=adam (K-FAC's critic has no learning rate)"),
        }
        for name, (ok, allowed) in checks.items():
            _check("algo", name, getattr(self, name), ok, allowed)

    def at_update(self, update: int, updates: int) -> "AlgoConfig":
        """The settings of update `update` (0, 1, ...) of `updates`: max_kl x (1 - update/updates) with max_kl_decay,
        gamma moved update/updates of the way to gamma_final when that is set."""
        progress = update / updates
        scheduled = {}
        if self.max_kl_decay:
            scheduled["max_kl"] = self.max_kl * (1 - progress)
        if self.gamma_final is not None:
            scheduled["gamma"] = self.gamma + (self.gamma_final - self.gamma) * progress
        return replace(self, **scheduled)


BACKENDS = ("gymnasium", "envpool")
VECTORIZATIONS = ("sync", "async")
AUTORESET_MODES = ("same_step", "next_step")
DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("offline", "online", "disabled")
RESUME_MODES = ("never", "auto")


@dataclass
class EnvConfig:
    """The vector environment: how many copies, how they step, and what is normalized."""

    num_envs: int = 8
    backend: str = "gymnasium"  # envpool: EnvPool's threaded C++ envs (pip install -e '.[envpool]')
    vectorization: str = "sync"  # gymnasium: sync is 3 to 5 times faster than async for MuJoCo on 2 cores
    workers: int = 1  # gymnasium: processes that each step num_envs / workers envs through a rollout
    autoreset_mode: str = "same_step"  # gymnasium; envpool always resets on the next step
    normalize_observations: bool = True
    observation_clip: float = 10.0
    normalize_rewards: bool = False  # scale rewards by the running std of the discounted return
    kwargs: dict[str, Any] = field(default_factory=dict)  # gymnasium: gym.make(env_id, **kwargs)
    wrappers: list[str] = field(default_factory=list)  # gymnasium: module:Name wrappers around each env, in order

    def __post_init__(self):
        _check("env", "kwargs", self.kwargs, not (self.kwargs or self.wrappers) or self.backend == "gymnasium",
               "env.kwargs and env.wrappers need env.backend=gymnasium")
        _check("env", "num_envs", self.num_envs, self.num_envs >= 1, "must be an integer >= 1")
        _check("env", "backend", self.backend, self.backend in BACKENDS, f"choose one of {BACKENDS}")
        _check("env", "vectorization", self.vectorization, self.vectorization in VECTORIZATIONS,
               f"choose one of {VECTORIZATIONS}")
        _check("env", "autoreset_mode", self.autoreset_mode, self.autoreset_mode in AUTORESET_MODES,
               f"choose one of {AUTORESET_MODES}")
        _check("env", "workers", self.workers, 1 <= self.workers <= self.num_envs,
               f"must be an integer from 1 to env.num_envs ({self.num_envs})")
        _check("env", "workers", self.workers, self.workers == 1 or self.backend == "gymnasium",
               "must be 1 with env.backend=envpool (its own threads step the envs)")
        _check("env", "observation_clip", self.observation_clip, self.observation_clip > 0, "must be > 0")


@dataclass
class ModelConfig:
    """Policy and value networks (same architecture, separate parameters)."""

    hidden: list[int] = field(default_factory=lambda: [64, 64])
    policy_hidden: list[int] | None = None  # the policy's own widths (default: hidden)
    value_hidden: list[int] | None = None  # the value network's own widths (default: hidden)
    activation: str = "tanh"
    log_std_init: float = 0.0

    def __post_init__(self):
        for name in ("hidden", "policy_hidden", "value_hidden"):
            widths = getattr(self, name) or []
            _check("model", name, widths, all(w >= 1 for w in widths), "widths must be >= 1")
        _check("model", "activation", self.activation, self.activation in ACTIVATION_NAMES,
               f"choose one of {ACTIVATION_NAMES}")


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl."""

    wandb_mode: str = "offline"  # offline needs no account and never prompts; `wandb sync` uploads later
    project: str = "trpo"
    entity: str | None = None
    group: str | None = None  # W&B group; a sweep sets it to the sweep directory's name
    progress_bar: bool = True

    def __post_init__(self):
        _check("logger", "wandb_mode", self.wandb_mode, self.wandb_mode in WANDB_MODES, f"choose one of {WANDB_MODES}")


@dataclass
class CheckpointConfig:
    every: int = 10  # iterations between checkpoints; one is also written at the end and on SIGINT/SIGTERM
    resume: str = "never"  # auto: continue from the run directory's latest checkpoint when there is one (requeued jobs)

    def __post_init__(self):
        _check("checkpoint", "every", self.every, self.every >= 1, "must be an integer >= 1")
        _check("checkpoint", "resume", self.resume, self.resume in RESUME_MODES, f"choose one of {RESUME_MODES}")


TRACE_METHODS = ("hutchinson", "hutch++")


@dataclass
class DiagnosticsConfig:
    """Curvature diagnostics on the update's own Fisher product (curvature/* metrics, trpo.diagnostics)."""

    every: int = 20  # iterations between diagnostics (0: off); about 2% of the HalfCheetah preset's wall time
    top_k: int = 5  # eigenvalues logged, and the eigenspace the gradient and step are measured in
    iters: int | None = None  # Fisher products of block Lanczos (default: trpo.estimators.default_iters(top_k))
    trace_samples: int = 30  # Fisher products of the trace estimate
    trace_method: str = "hutchinson"  # hutchinson | hutch++ (neither wins on trained Fishers: benchmarks/README.md)

    def __post_init__(self):
        _check("diagnostics", "every", self.every, self.every >= 0, "must be an integer >= 0 (0: off)")
        _check("diagnostics", "top_k", self.top_k, self.top_k >= 1, "must be an integer >= 1")
        _check("diagnostics", "iters", self.iters, self.iters is None or self.iters >= self.top_k,
               f"must be an integer >= diagnostics.top_k ({self.top_k}), or null for the default")
        _check("diagnostics", "trace_method", self.trace_method, self.trace_method in TRACE_METHODS,
               f"choose one of {TRACE_METHODS}")
        minimum = 3 if self.trace_method == "hutch++" else 1
        _check("diagnostics", "trace_samples", self.trace_samples, self.trace_samples >= minimum,
               f"must be an integer >= {minimum} with diagnostics.trace_method={self.trace_method}")


@dataclass
class EvalConfig:
    episodes: int = 10  # deterministic episodes of each evaluation
    every: int = 0  # environment steps between evaluations during training, logged as eval/episode_return (0: off)
    video: bool = False  # record one deterministic episode at each evaluation and the final one (videos/, W&B)

    def __post_init__(self):
        _check("eval", "episodes", self.episodes, self.episodes >= 1, "must be an integer >= 1")
        _check("eval", "every", self.every, self.every >= 0, "must be an integer >= 0 (0: only the final evaluation)")


@dataclass
class Config:
    """A training run. `env_id` comes from the `env=` choice on the command line."""

    env_id: str = "HalfCheetah-v4"
    seed: int = 0
    total_steps: int = 1_000_000
    steps_per_env: int = 256  # rollout length T; one iteration collects T * env.num_envs steps
    device: str = "auto"  # the update's device; acting always runs on the CPU
    torch_threads: int = 1  # one thread: acting with two on 2 busy cores costs up to 10 ms a call
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    resume: str | None = None  # a run directory to continue, with the config saved there

    @property
    def batch_size(self) -> int:
        return self.steps_per_env * self.env.num_envs

    @property
    def updates(self) -> int:
        """Policy updates (and value fits) in a run: one per batch until total_steps is reached."""
        return math.ceil(self.total_steps / self.batch_size)

    def __post_init__(self):
        _check("", "seed", self.seed, self.seed >= 0, "must be an integer >= 0")
        _check("", "steps_per_env", self.steps_per_env, self.steps_per_env >= 1, "must be an integer >= 1")
        _check("", "device", self.device, self.device in DEVICES, f"choose one of {DEVICES}")
        _check("", "torch_threads", self.torch_threads, self.torch_threads >= 1, "must be an integer >= 1")
        _check("", "total_steps", self.total_steps, self.total_steps >= self.batch_size,
               f"must be at least one batch, steps_per_env * env.num_envs = {self.batch_size}")


_schema = OmegaConf.structured(Config)
OmegaConf.set_struct(_schema.env.kwargs, False)  # the env's own arguments: env.kwargs.<any name>=...
ConfigStore.instance().store(name="schema", node=_schema)  # conf/config.yaml's defaults start with it
