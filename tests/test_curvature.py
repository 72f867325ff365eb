import pytest
import torch

from policies import KINDS, num_params, tiny_batch, tiny_policy
from reference import dense_fisher, dense_matrix
from trpo.curvature import fisher_matvec, fisher_vector_product, subsample_rows
from trpo.policy import ACTIVATIONS, CategoricalPolicy, GaussianPolicy, ObservationNormalizer

CASES = [(kind, method, normalize) for kind in KINDS
         for method in ("mlp", "analytic", "autograd") for normalize in (False, True)]


@pytest.mark.parametrize("kind, method, normalize", CASES)
def test_fvp_equals_dense_fisher_from_kl_hessian(kind, method, normalize):
    policy = tiny_policy(kind, normalize=normalize)
    obs = tiny_batch(policy)[0]
    reference = dense_fisher(policy, obs)
    matrix = dense_matrix(fisher_matvec(policy, obs, method=method), num_params(policy))
    assert reference.abs().max() > 1e-2  # a non-trivial Fisher
    torch.testing.assert_close(matrix, reference, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_mlp_product_equals_dense_fisher_for_deeper_networks_and_every_activation(kind, activation):
    torch.manual_seed(0)
    normalizer = ObservationNormalizer(3)
    normalizer.update(torch.randn(50, 3) * 2 + 1)
    policy = (GaussianPolicy(3, 2, (4, 5, 3), activation, -0.4, normalizer) if kind == "gaussian"
              else CategoricalPolicy(3, 4, (4, 5, 3), activation, normalizer)).double()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    obs = torch.randn(30, 3, dtype=torch.float64) * 2
    reference = dense_fisher(policy, obs)
    assert reference.abs().max() > 1e-2
    torch.testing.assert_close(dense_matrix(fisher_matvec(policy, obs, method="mlp"), num_params(policy)), reference,
                               rtol=1e-8, atol=1e-10)


def test_gaussian_sigma_is_not_one():
    log_std = tiny_policy("gaussian").log_std
    assert (log_std.detach().exp() - 1).abs().min() > 0.1


@pytest.mark.parametrize("method", ["mlp", "analytic", "autograd"])
@pytest.mark.parametrize("kind", KINDS)
def test_damping_adds_exactly_damping_times_v(kind, method):
    policy = tiny_policy(kind)
    obs = tiny_batch(policy)[0]
    v = torch.randn(num_params(policy), dtype=torch.float64)
    plain = fisher_vector_product(policy, obs, v, damping=0.0, method=method)
    damped = fisher_vector_product(policy, obs, v, damping=0.37, method=method)
    torch.testing.assert_close(damped - plain, 0.37 * v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["mlp", "analytic", "autograd"])
@pytest.mark.parametrize("kind", KINDS)
def test_implied_matrix_is_symmetric_positive_semidefinite(kind, method):
    policy = tiny_policy(kind, seed=3)
    obs = tiny_batch(policy, size=5)[0]  # fewer states than parameters: F is singular
    matrix = dense_matrix(fisher_matvec(policy, obs, method=method), num_params(policy))
    torch.testing.assert_close(matrix, matrix.T, rtol=1e-10, atol=1e-12)
    eigenvalues = torch.linalg.eigvalsh(matrix)
    assert eigenvalues.min() > -1e-10
    assert eigenvalues.max() > 1e-3


def test_subsample_takes_distinct_rows_of_the_batch_reproducibly():
    batch = torch.arange(100.0).unsqueeze(1)
    rows = subsample_rows(batch, 0.25, torch.Generator().manual_seed(0))
    again = subsample_rows(batch, 0.25, torch.Generator().manual_seed(0))
    assert rows.shape == (25, 1) and torch.equal(rows, again)
    assert len(set(rows.squeeze(1).tolist())) == 25
    assert subsample_rows(batch, 1.0) is batch
    with pytest.raises(ValueError, match="fraction=0"):
        subsample_rows(batch, 0.0)


def test_unknown_method_is_rejected_by_name():
    policy = tiny_policy("gaussian")
    with pytest.raises(ValueError, match="'hessian'.*mlp.*analytic.*autograd"):
        fisher_matvec(policy, tiny_batch(policy)[0], method="hessian")
