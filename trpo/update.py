"""The TRPO / natural-gradient policy step and the value-function fit."""

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector

from trpo.advantages import normalize
from trpo.config import AlgoConfig
from trpo.curvature import DEFAULT_FISHER_METHOD, fisher_matvec, flat_grad, subsample_rows, unflatten
from trpo.kfac import KFACCritic, cg_preconditioner, kfac_preconditioner
from trpo.linalg import conjugate_gradient_with_residual
from trpo.policy import Policy
from trpo.trust_region import line_search, natural_gradient_step, full_step


def trpo_step(
    policy: Policy,
    obs: Tensor,
    actions: Tensor,
    log_probs: Tensor,
    advantages: Tensor,
    config: AlgoConfig,
    generator: torch.Generator | None = None,
    diagnose: Callable[..., dict[str, Tensor]] | None = None,
) -> dict[str, Tensor]:
    """One policy update in place; returns its statistics as tensors keyed by metric name.

    obs: states [B, obs_dim] (already on the policy's device).
    actions: actions taken [B, A] (Gaussian, unclipped) or [B] (categorical).
    log_probs: log pi_old(a|s) recorded while acting [B].
    advantages: advantage estimates [B]; normalized here when config.normalize_advantages.
    config: trust region and CG settings.
    generator: random source for the Fisher subsample.
    diagnose: called as diagnose(matvec, grad, step_dir, matvec(step_dir)) with the update's own damped
        Fisher product, before the step changes the parameters; its metrics are returned with the others
        (`trpo.diagnostics.curvature_diagnostics`).
    """
    params = list(policy.parameters())
    theta_old = parameters_to_vector(params).detach()
    named = dict(policy.named_parameters())
    if config.normalize_advantages:
        advantages = normalize(advantages)

    def objective(dist_params: tuple[Tensor, ...]) -> Tensor:
        """The importance-weighted surrogate, plus the entropy bonus when config.entropy_coef > 0."""
        distribution = policy.distribution(dist_params)
        value = (torch.exp(distribution.log_prob(actions) - log_probs) * advantages).mean()
        if config.entropy_coef > 0:
            value = value + config.entropy_coef * distribution.entropy().mean()
        return value

    old_dist_params = policy(obs)
    surrogate = objective(old_dist_params)
    grad = flat_grad(surrogate, params)
    old_dist_params = tuple(p.detach() for p in old_dist_params)

    method = config.fisher_method
    if method == "auto":
        method = DEFAULT_FISHER_METHOD[obs.device.type]
    fisher_obs = subsample_rows(obs, config.fisher_subsample, generator)
    matvec = fisher_matvec(policy, fisher_obs, config.damping, method)
    step_dir, damped_step, cg_residual = natural_direction(policy, fisher_obs, matvec, grad, config)
    curvature = step_dir @ damped_step
    diagnostics = diagnose(matvec, grad, step_dir, damped_step) if diagnose is not None else {}
    step = full_step(step_dir, curvature, config.max_kl)
    if config.name == "kfac" and config.acktr_kl_clip:  # ACKTR: min(lr, sqrt(2 max_kl / d^T F d)) d
        step = torch.clamp(torch.sqrt(2.0 * config.max_kl / curvature), max=config.acktr_lr) * step_dir
    expected_gain = grad @ step
    # Guard: a non-finite gradient or direction, or non-positive curvature, leaves theta unchanged.
    valid = torch.isfinite(grad).all() & torch.isfinite(step).all() & (curvature > 0)

    @torch.no_grad()
    def evaluate(candidate: Tensor) -> tuple[Tensor, Tensor]:
        new_dist_params = functional_call(policy, unflatten(candidate, named), (obs,))
        gain = objective(new_dist_params) - surrogate.detach()
        return policy.kl(old_dist_params, new_dist_params).mean(), gain

    if config.name == "trpo" or (config.name == "kfac" and not config.acktr_kl_clip):
        result = line_search(
            evaluate, theta_old, step, expected_gain, config.max_kl,
            config.max_backtracks, config.backtrack_ratio, config.accept_ratio, valid,
            stop_at_first=obs.device.type == "cpu",
        )
    else:
        result = natural_gradient_step(evaluate, theta_old, step, valid)
    entropy = policy.distribution(old_dist_params).entropy().mean()  # before the step: log_std is a view
    with torch.no_grad():  # into the parameters' own storage, so a resumed run computes exactly alike
        for param, new in zip(params, unflatten(result.params, named).values()):
            param.copy_(new)
    return {
        "policy/kl": result.kl,
        "policy/surrogate_gain": result.surrogate_gain,
        "policy/expected_gain": expected_gain.detach(),
        "policy/step_fraction": result.step_fraction,
        "policy/accepted": result.accepted.to(theta_old.dtype),
        "policy/rejected": (~valid).to(theta_old.dtype),
        "policy/line_search_steps": result.line_search_steps,
        "policy/cg_residual": cg_residual,
        "policy/grad_norm": grad.norm(),
        "policy/entropy": entropy,
        **diagnostics,
    }


def natural_direction(policy: Policy, obs: Tensor, matvec: Callable[[Tensor], Tensor], grad: Tensor,
                      config: AlgoConfig) -> tuple[Tensor, Tensor, Tensor]:
    """x ~ (F + damping I)^-1 g by CG (preconditioned as config says) or, for algo=kfac, by K-FAC alone;
    returns x, (F + damping I) x and the squared residual |(F + damping I) x - g|^2."""
    if config.name == "kfac":
        step_dir = kfac_preconditioner(policy, obs, config.damping)(grad)
        damped_step = matvec(step_dir)
        return step_dir, damped_step, (damped_step - grad).square().sum()
    preconditioner = cg_preconditioner(config.cg_preconditioner, policy, obs, config.damping)
    step_dir, residual = conjugate_gradient_with_residual(matvec, grad, config.cg_iters, config.cg_residual_tol,
                                                          preconditioner)
    return step_dir, matvec(step_dir), residual


def fit_value(
    value: nn.Module,
    optimizer: torch.optim.Optimizer | KFACCritic,
    obs: Tensor,
    returns: Tensor,
    epochs: int,
    minibatch_size: int,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Regress V(obs) on returns by minibatch MSE; returns the loss after fitting and explained variance.

    value: the value network, obs [B, obs_dim] -> [B].
    optimizer: its optimizer (Adam by default), or a KFACCritic.
    obs: states [B, obs_dim].
    returns: targets R_t [B].
    epochs: passes over the batch.
    minibatch_size: samples per optimizer step.
    generator: random source for the shuffles (CPU or the data's device).
    Explained variance is of the predictions before fitting (how well the value predicted the new
    returns), as Stable-Baselines3 and CleanRL report it. Samples with a non-finite return or state
    are left out, so one bad reward cannot poison the value network.
    """
    finite = torch.isfinite(returns) & torch.isfinite(obs).all(-1)
    obs, returns = obs[finite], returns[finite]
    with torch.no_grad():
        explained_variance = 1 - (returns - value(obs)).var() / returns.var()
    batch = obs.shape[0]
    for _ in range(epochs):
        device = generator.device if generator is not None else obs.device
        order = torch.randperm(batch, generator=generator, device=device).to(obs.device)
        for index in order.split(minibatch_size):
            if isinstance(optimizer, KFACCritic):
                optimizer.step(value, obs[index], returns[index])
                continue
            loss = (value(obs[index]) - returns[index]).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        final_loss = (value(obs) - returns).square().mean()
    return {"value/loss": final_loss, "value/explained_variance": explained_variance}
