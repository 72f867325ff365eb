import pytest
import torch
from torch.nn.utils import parameters_to_vector

from policies import KINDS, num_params, tiny_batch, tiny_policy
from reference import dense_fisher, distribution_of, reference_entropy, reference_kl, reference_log_prob
from trpo.config import AlgoConfig
from trpo.curvature import subsample_rows
from trpo.policy import ValueNetwork
from trpo.update import fit_value, trpo_step




def reference_full_step(policy, obs, actions, log_probs, advantages, config, fisher_obs=None):
    """s = sqrt(2 max_kl / x^T A x) x with x = solve(A, g), A = dense Fisher + damping I, g the gradient of
    the surrogate plus config.entropy_coef times the mean entropy."""
    normalized = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    outputs = policy(obs)
    ratio = torch.exp(reference_log_prob(policy, outputs, actions) - log_probs)
    objective = (ratio * normalized).mean() + config.entropy_coef * reference_entropy(policy, outputs).mean()
    grads = torch.autograd.grad(objective, list(policy.parameters()))
    g = torch.cat([gr.reshape(-1) for gr in grads])
    fisher = dense_fisher(policy, obs if fisher_obs is None else fisher_obs)
    A = fisher + config.damping * torch.eye(len(g), dtype=g.dtype)
    x = torch.linalg.solve(A, g)
    return torch.sqrt(2 * config.max_kl / (x @ A @ x)) * x


def surrogate_and_kl(old_policy_outputs, policy, obs, actions, log_probs, advantages):
    normalized = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    with torch.no_grad():
        new = policy(obs)
        surrogate = (torch.exp(reference_log_prob(policy, new, actions) - log_probs) * normalized).mean()
        kl = reference_kl(policy, old_policy_outputs, new).mean()
    return surrogate, kl


def flat(policy):
    return parameters_to_vector(policy.parameters()).detach().clone()


@pytest.mark.parametrize("preconditioner", ["none", "diagonal", "kfac"])
@pytest.mark.parametrize("kind", KINDS)
def test_npg_moves_exactly_the_full_step_along_the_dense_natural_gradient(kind, preconditioner):
    policy = tiny_policy(kind)
    batch = tiny_batch(policy)
    config = AlgoConfig(name="npg", max_kl=0.01, damping=0.1, cg_iters=3 * num_params(policy),
                        cg_residual_tol=1e-28, cg_preconditioner=preconditioner)
    expected = reference_full_step(policy, *batch, config)
    before = flat(policy)
    stats = trpo_step(policy, *batch, config)
    torch.testing.assert_close(flat(policy) - before, expected, rtol=1e-6, atol=1e-9)
    assert stats["policy/accepted"].item() == 1 and stats["policy/step_fraction"].item() == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("max_kl", [0.001, 0.01, 0.05])
def test_trpo_step_follows_the_natural_gradient_within_the_kl_bound(kind, max_kl):
    policy = tiny_policy(kind, seed=2)
    obs, actions, log_probs, advantages = batch = tiny_batch(policy, size=60, seed=5)
    config = AlgoConfig(max_kl=max_kl, cg_iters=3 * num_params(policy), cg_residual_tol=1e-28)
    expected = reference_full_step(policy, *batch, config)
    before, old_outputs = flat(policy), tuple(o.detach().clone() for o in policy(obs))
    surrogate_before, _ = surrogate_and_kl(old_outputs, policy, *batch)
    stats = trpo_step(policy, *batch, config)
    surrogate_after, kl = surrogate_and_kl(old_outputs, policy, *batch)

    assert stats["policy/accepted"].item() == 1
    torch.testing.assert_close(flat(policy) - before, stats["policy/step_fraction"] * expected, rtol=1e-6, atol=1e-9)
    assert kl <= max_kl
    torch.testing.assert_close(stats["policy/kl"], kl)
    assert surrogate_after > surrogate_before
    torch.testing.assert_close(stats["policy/surrogate_gain"], surrogate_after - surrogate_before)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_accepted_steps_never_exceed_max_kl_with_default_settings(kind, seed):
    policy = tiny_policy(kind, seed=seed)
    obs, *_ = batch = tiny_batch(policy, size=80, seed=seed)
    config = AlgoConfig(max_kl=0.02)
    old_outputs = tuple(o.detach().clone() for o in policy(obs))
    stats = trpo_step(policy, *batch, config)
    _, kl = surrogate_and_kl(old_outputs, policy, *batch)
    assert kl <= 0.02
    assert stats["policy/accepted"].item() == 1 or kl == 0


@pytest.mark.parametrize("kind", KINDS)
def test_entropy_bonus_adds_its_gradient_to_the_natural_gradient_step(kind):
    policy = tiny_policy(kind, seed=3)
    batch = tiny_batch(policy, size=50, seed=4)
    config = AlgoConfig(name="npg", entropy_coef=0.5, cg_iters=3 * num_params(policy), cg_residual_tol=1e-28)
    expected = reference_full_step(policy, *batch, config)
    without_bonus = reference_full_step(policy, *batch, AlgoConfig(name="npg"))
    assert (expected - without_bonus).norm() > 0.05 * expected.norm()  # the bonus changes the direction
    before = flat(policy)
    trpo_step(policy, *batch, config)
    torch.testing.assert_close(flat(policy) - before, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_with_zero_advantages_the_entropy_bonus_alone_raises_the_entropy_within_the_kl_bound(kind):
    policy = tiny_policy(kind, seed=1)
    obs, actions, log_probs, advantages = tiny_batch(policy)
    with torch.no_grad():
        old_outputs = tuple(o.detach().clone() for o in policy(obs))
        entropy_before = reference_entropy(policy, old_outputs).mean()
    config = AlgoConfig(entropy_coef=0.01, max_kl=0.01, normalize_advantages=False)
    stats = trpo_step(policy, obs, actions, log_probs, torch.zeros_like(advantages), config)
    with torch.no_grad():
        new_outputs = policy(obs)
        entropy_after = reference_entropy(policy, new_outputs).mean()
        kl = reference_kl(policy, old_outputs, new_outputs).mean()
    assert stats["policy/accepted"].item() == 1 and 0 < kl <= 0.01
    assert entropy_after > entropy_before
    torch.testing.assert_close(stats["policy/surrogate_gain"], 0.01 * (entropy_after - entropy_before))


def test_fisher_subsample_uses_the_generators_rows():
    policy = tiny_policy("gaussian")
    obs, *_ = batch = tiny_batch(policy, size=80)
    config = AlgoConfig(name="npg", fisher_subsample=0.5, cg_iters=200, cg_residual_tol=1e-28)
    fisher_obs = subsample_rows(obs, 0.5, torch.Generator().manual_seed(11))
    expected = reference_full_step(policy, *batch, config, fisher_obs=fisher_obs)
    before = flat(policy)
    trpo_step(policy, *batch, config, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(flat(policy) - before, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_when_no_candidate_passes_parameters_stay_bit_for_bit(kind):
    policy = tiny_policy(kind)
    batch = tiny_batch(policy)
    before = flat(policy)
    stats = trpo_step(policy, *batch, AlgoConfig(accept_ratio=1e9, max_backtracks=5))
    assert torch.equal(flat(policy), before)
    assert stats["policy/accepted"].item() == 0 and stats["policy/line_search_steps"].item() == 5
    assert stats["policy/kl"].item() == 0


@pytest.mark.parametrize("name", ["trpo", "npg"])
@pytest.mark.parametrize("kind", KINDS)
def test_nan_advantage_leaves_parameters_unchanged(kind, name):
    policy = tiny_policy(kind)
    obs, actions, log_probs, advantages = tiny_batch(policy)
    advantages[3] = float("nan")
    before = flat(policy)
    stats = trpo_step(policy, obs, actions, log_probs, advantages, AlgoConfig(name=name))
    assert torch.equal(flat(policy), before)
    assert stats["policy/accepted"].item() == 0 and stats["policy/rejected"].item() == 1


def test_zero_advantages_are_rejected_by_the_curvature_guard():
    policy = tiny_policy("gaussian")
    obs, actions, log_probs, advantages = tiny_batch(policy)
    before = flat(policy)
    config = AlgoConfig(name="npg", normalize_advantages=False)
    stats = trpo_step(policy, obs, actions, log_probs, torch.zeros_like(advantages), config)
    assert torch.equal(flat(policy), before) and stats["policy/accepted"].item() == 0
    assert stats["policy/rejected"].item() == 1


def test_statistics_are_tensors_with_the_metric_names():
    policy = tiny_policy("categorical")
    stats = trpo_step(policy, *tiny_batch(policy), AlgoConfig())
    assert set(stats) == {f"policy/{k}" for k in ("kl", "surrogate_gain", "expected_gain", "step_fraction",
                                                  "accepted", "rejected", "line_search_steps", "cg_residual",
                                                  "grad_norm", "entropy")}
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and torch.isfinite(v) for v in stats.values())
    probs = distribution_of(tiny_policy("categorical")(tiny_batch(policy)[0])).entropy().mean()
    torch.testing.assert_close(stats["policy/entropy"], probs)


def regression_problem(seed=0):
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(512, 3, generator=generator)
    returns = torch.sin(2 * obs[:, 0]) + obs[:, 1] ** 2 + 5.0
    return obs, returns


def test_fit_value_lowers_the_loss_and_reports_prefit_explained_variance():
    obs, returns = regression_problem()
    torch.manual_seed(0)
    value = ValueNetwork(3)
    with torch.no_grad():
        prediction = value(obs)
        loss_before = (prediction - returns).square().mean()
    optimizer = torch.optim.Adam(value.parameters(), lr=1e-2)
    stats = fit_value(value, optimizer, obs, returns, epochs=50, minibatch_size=64,
                      generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss_after = (value(obs) - returns).square().mean()
    assert loss_after < 0.05 * returns.var()  # far better than the best constant, not just the mean
    assert loss_before > 10 * returns.var()
    torch.testing.assert_close(stats["value/loss"], loss_after)
    torch.testing.assert_close(stats["value/explained_variance"],
                               1 - (returns - prediction).var() / returns.var())


def test_fit_value_leaves_out_non_finite_targets():
    obs, returns = regression_problem()
    poisoned_obs, poisoned_returns = obs.clone(), returns.clone()
    poisoned_returns[::7] = float("nan")
    poisoned_obs[3::11, 1] = float("inf")
    finite = torch.isfinite(poisoned_returns) & torch.isfinite(poisoned_obs).all(-1)
    fits = []
    for o, r in ((poisoned_obs, poisoned_returns), (obs[finite], returns[finite])):
        torch.manual_seed(0)
        value = ValueNetwork(3)
        optimizer = torch.optim.Adam(value.parameters(), lr=1e-2)
        stats = fit_value(value, optimizer, o, r, 3, 64, torch.Generator().manual_seed(1))
        fits.append((torch.nn.utils.parameters_to_vector(value.parameters()), stats["value/loss"]))
    (poisoned_params, poisoned_loss), (clean_params, clean_loss) = fits
    assert torch.isfinite(poisoned_params).all() and torch.isfinite(poisoned_loss)
    assert torch.equal(poisoned_params, clean_params)


def test_fit_value_is_reproducible_with_the_same_generator():
    obs, returns = regression_problem()
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        value = ValueNetwork(3)
        fit_value(value, torch.optim.Adam(value.parameters()), obs, returns, 2, 100,
                  torch.Generator().manual_seed(7))
        results.append(flat(value))
    assert torch.equal(*results)

