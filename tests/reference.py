"""Deliberately naive twins of the shipped math. The package never imports this file."""

import torch
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence
from torch.func import functional_call


def gae_loop(rewards, values, next_values, terminated, dones, gamma, lam):
    """GAE by plain Python loops over envs and time, on floats."""
    T, N = rewards.shape
    advantages = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            bootstrap = 0.0 if terminated[t, n] else gamma * float(next_values[t, n])
            delta = float(rewards[t, n]) + bootstrap - float(values[t, n])
            if dones[t, n]:
                running = 0.0
            running = delta + gamma * lam * running
            advantages[t, n] = running
    return advantages, advantages + values.double()


def distribution_of(policy_outputs):
    """A torch Distribution from a policy's forward outputs, built independently of the policy classes."""
    if len(policy_outputs) == 2:
        mean, log_std = policy_outputs
        return Independent(Normal(mean, log_std.exp()), 1)
    return Categorical(logits=policy_outputs[0])


def reference_kl(policy, old_outputs, new_outputs):
    """KL(old || new) per state by torch.distributions (a MultiDiscrete policy: the sum over its components)."""
    if hasattr(policy, "nvec"):
        return sum(kl_divergence(Categorical(logits=old), Categorical(logits=new)) for old, new in
                   zip(old_outputs[0].split(policy.nvec, -1), new_outputs[0].split(policy.nvec, -1)))
    if type(policy).__name__ == "BernoulliPolicy":
        return kl_divergence(Independent(Bernoulli(logits=old_outputs[0]), 1),
                             Independent(Bernoulli(logits=new_outputs[0]), 1))
    return kl_divergence(distribution_of(old_outputs), distribution_of(new_outputs))


def reference_entropy(policy, outputs):
    """Entropy per state by torch.distributions, independently of the policy classes."""
    if hasattr(policy, "nvec"):
        return sum(Categorical(logits=logits).entropy() for logits in outputs[0].split(policy.nvec, -1))
    if type(policy).__name__ == "BernoulliPolicy":
        return Independent(Bernoulli(logits=outputs[0]), 1).entropy()
    return distribution_of(outputs).entropy()


def reference_log_prob(policy, outputs, actions):
    """log pi(a|s) per state by torch.distributions, independently of the policy classes."""
    if hasattr(policy, "nvec"):
        return sum(Categorical(logits=logits).log_prob(actions[:, k])
                   for k, logits in enumerate(outputs[0].split(policy.nvec, -1)))
    if type(policy).__name__ == "BernoulliPolicy":
        return Independent(Bernoulli(logits=outputs[0]), 1).log_prob(actions.to(outputs[0]))
    return distribution_of(outputs).log_prob(actions)


def dense_fisher(policy, obs):
    """Hessian of the mean KL(pi_old || pi_theta) over obs at theta_old, by torch.autograd.functional.hessian."""
    names = [name for name, _ in policy.named_parameters()]
    shapes = [p.shape for _, p in policy.named_parameters()]
    theta_old = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    with torch.no_grad():
        old = policy(obs)

    def mean_kl(theta):
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = shape.numel()
            params[name] = theta[offset:offset + size].reshape(shape)
            offset += size
        return reference_kl(policy, old, functional_call(policy, params, (obs,))).mean()

    return torch.autograd.functional.hessian(mean_kl, theta_old)


def dense_matrix(matvec, n, dtype=torch.float64):
    """The matrix of a linear operator, one column per basis vector."""
    return torch.stack([matvec(column) for column in torch.eye(n, dtype=dtype)], dim=1)
