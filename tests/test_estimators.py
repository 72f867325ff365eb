"""The spectrum, trace and diagonal estimators against dense references and their known statistics."""

import pytest
import torch

from reference import dense_fisher
from trpo.curvature import fisher_matvec
from trpo.diagnostics import curvature_diagnostics
from trpo.estimators import (block_lanczos, hutchinson_diagonal, hutchinson_trace, smoothed_density,
                             spectral_density, top_eigenvalues)
from trpo.policy import CategoricalPolicy, GaussianPolicy


def with_spectrum(values: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A symmetric matrix with these eigenvalues in a random orthonormal basis."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(len(values), len(values), generator=generator, dtype=torch.float64)).Q
    return basis @ torch.diag(values.double()) @ basis.T


def product(matrix: torch.Tensor):
    return lambda v: matrix @ v


def small_policy(kind: str):
    """Dim a few hundred: 4 observations, 16x16 tanh, 3 actions (Gaussian: 406 parameters) or 5 (categorical)."""
    torch.manual_seed(0)
    policy = GaussianPolicy(4, 3, (16, 16), log_std_init=-0.5) if kind == "gaussian" else CategoricalPolicy(4, 5, (16, 16))
    policy = policy.double()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return policy


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_top_eigenvalues_and_trace_match_eigvalsh_of_the_dense_fisher(kind):
    policy = small_policy(kind)
    obs = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fisher = dense_fisher(policy, obs)
    dim = fisher.shape[0]
    exact = torch.linalg.eigvalsh(fisher).flip(0)
    matvec = fisher_matvec(policy, obs, method="mlp")
    assert dim > 300
    top = top_eigenvalues(matvec, dim, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(top, exact[:5], rtol=1e-4, atol=0)  # the default 40 products
    # The trace within 4 standard deviations of Hutchinson's, 2 (||F||_F^2 - sum F_ii^2) / samples.
    samples = 200
    sd = (2 * (fisher.square().sum() - fisher.diagonal().square().sum()) / samples).sqrt()
    trace = hutchinson_trace(matvec, dim, samples, torch.Generator().manual_seed(0), method="hutchinson")
    assert abs(trace - exact.sum()) < 4 * sd
    assert sd < 0.05 * exact.sum()  # and that is a tight check


SPECTRA = {
    "decaying": 1.0 / torch.arange(1, 201, dtype=torch.float64) ** 2,
    "clustered": torch.cat([torch.tensor([10.0, 9.99, 9.98, 9.97]), torch.linspace(0, 5, 196)]).double(),
    "degenerate top": torch.cat([torch.tensor([10.0, 10.0, 10.0, 6.0]), torch.linspace(0, 3, 196)]).double(),
}


@pytest.mark.parametrize("name", SPECTRA)
def test_block_lanczos_finds_the_top_k_of_known_spectra(name):
    values = SPECTRA[name]
    matrix = with_spectrum(values)
    top = top_eigenvalues(product(matrix), 200, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(top, values.sort(descending=True).values[:4], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("seed", [3, 4])
def test_a_block_finds_every_copy_of_a_degenerate_eigenvalue_where_one_start_vector_finds_one(seed):
    # Why the block: one start vector's Krylov space holds one direction of the eigenspace of 10; the
    # other copies appear only as rounding errors grow (2 of 3 after 20 products, 3 after 40).
    matrix = with_spectrum(SPECTRA["degenerate top"])
    single = block_lanczos(product(matrix), 200, 1, 16, torch.Generator().manual_seed(seed))
    block = block_lanczos(product(matrix), 200, 4, 16, torch.Generator().manual_seed(seed))
    assert (single.values > 9.9).sum() == 1
    assert (block.values > 9.9).sum() == 3


def rms_errors(estimate, truth: float, samples_list, repeats: int) -> list[float]:
    errors = []
    for samples in samples_list:
        values = torch.stack([estimate(samples, torch.Generator().manual_seed(seed)) for seed in range(repeats)])
        errors.append(float((values - truth).square().mean().sqrt()))
    return errors


def test_hutchinson_is_unbiased_with_the_variance_of_rademacher_probes():
    # Half of ||A||_F^2 on the diagonal: Gaussian probes (variance 2 ||A||_F^2) would be 41% too wide.
    matrix = with_spectrum(torch.linspace(0.1, 1, 100)) + torch.diag(torch.linspace(0, 2, 100, dtype=torch.float64))
    variance = 2 * (matrix.square().sum() - matrix.diagonal().square().sum())
    repeats = 400
    for samples in (4, 16, 64):
        values = torch.stack([hutchinson_trace(product(matrix), 100, samples, torch.Generator().manual_seed(seed),
                                               method="hutchinson") for seed in range(repeats)])
        standard_error = (variance / samples / repeats).sqrt()
        assert abs(values.mean() - matrix.trace()) < 4 * standard_error
        # The sample variance of 400 draws is within 25% of the truth (its own spread is about 7%).
        assert 0.75 < values.var() * samples / variance < 1.25


def test_trace_errors_fall_like_one_over_root_samples_and_hutch_plus_plus_like_one_over_samples():
    matrix = with_spectrum(SPECTRA["decaying"])
    truth = float(matrix.trace())
    hutchinson = rms_errors(lambda s, g: hutchinson_trace(product(matrix), 200, s, g, method="hutchinson"),
                            truth, (15, 60), 300)
    hutch_plus_plus = rms_errors(lambda s, g: hutchinson_trace(product(matrix), 200, s, g, method="hutch++"),
                                 truth, (15, 60), 300)
    assert 0.4 < hutchinson[1] / hutchinson[0] < 0.6  # 1/sqrt(4) = 0.5
    assert hutch_plus_plus[1] / hutch_plus_plus[0] < 0.3  # 1/4 = 0.25 for a decaying spectrum
    assert hutch_plus_plus[1] < hutchinson[1] / 3


def test_hutch_plus_plus_is_unbiased():
    matrix = with_spectrum(torch.linspace(0, 1, 60) ** 3)
    values = torch.stack([hutchinson_trace(product(matrix), 60, 6, torch.Generator().manual_seed(seed),
                                           method="hutch++") for seed in range(2000)])
    assert abs(values.mean() - matrix.trace()) < 4 * values.std() / 2000 ** 0.5


def test_hutchinson_diagonal_is_unbiased_with_its_variance():
    matrix = with_spectrum(torch.linspace(0.1, 1, 50))
    samples, repeats = 8, 500
    values = torch.stack([hutchinson_diagonal(product(matrix), 50, samples, torch.Generator().manual_seed(seed))
                          for seed in range(repeats)])
    variance = (matrix.square().sum(1) - matrix.diagonal().square()) / samples  # per entry
    z = (values.mean(0) - matrix.diagonal()) / (variance / repeats).sqrt()
    assert z.abs().max() < 4.5
    assert 0.85 < (values.var(0) / variance).mean() < 1.15


def test_lanczos_quadrature_is_exact_for_each_probe_up_to_its_degree():
    matrix = with_spectrum(torch.linspace(0, 2, 150) ** 2)
    probes, iters = 4, 24  # six blocks: exact for polynomials of degree < 12
    nodes, weights = spectral_density(product(matrix), 150, iters, probes, torch.Generator().manual_seed(5))
    # The same draws as the function's: its start block is the Q of a Gaussian [dim, probes].
    start = torch.linalg.qr(torch.randn(150, probes, generator=torch.Generator().manual_seed(5),
                                        dtype=torch.float64)).Q
    assert torch.isclose(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    power = torch.eye(150, dtype=torch.float64)
    for degree in range(1, 12):
        power = power @ matrix
        exact = (start * (power @ start)).sum(0).mean()
        torch.testing.assert_close((weights * nodes ** degree).sum(), exact, rtol=1e-8, atol=1e-12)


def test_spectral_density_moments_approach_the_normalized_traces():
    values = torch.cat([torch.zeros(100), torch.linspace(1, 3, 100)])
    matrix = with_spectrum(values)
    nodes, weights = spectral_density(product(matrix), 200, 80, 20, torch.Generator().manual_seed(0))
    for degree in (1, 2, 3):
        assert abs((weights * nodes ** degree).sum() / (values ** degree).mean() - 1) < 0.1
    grid = torch.linspace(-1, 4, 2001, dtype=torch.float64)
    density = smoothed_density(nodes, weights, grid, 0.05)
    assert abs(torch.trapezoid(density, grid) - 1) < 1e-3
    half_mass_below_one_half = torch.trapezoid(density[grid < 0.5], grid[grid < 0.5])
    assert abs(half_mass_below_one_half - 0.5) < 0.1  # half the eigenvalues are 0


def test_curvature_diagnostics_against_the_dense_eigendecomposition():
    dim, damping = 60, 0.1
    values = torch.cat([torch.tensor([8.0, 5.0, 4.0]), torch.linspace(0, 1, 57) ** 2]).double()
    fisher = with_spectrum(values)
    damped = fisher + damping * torch.eye(dim, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    grad = torch.randn(dim, generator=generator, dtype=torch.float64)
    step = torch.linalg.solve(damped, grad) * 0.9  # an imperfect solve
    metrics = curvature_diagnostics(product(damped), grad, step, damped @ step, damping, top_k=3, iters=dim,
                                    trace_samples=2000, trace_method="hutchinson", generator=generator)
    eigenvalues, vectors = torch.linalg.eigh(fisher)
    top = vectors[:, -3:]
    for i in range(3):
        torch.testing.assert_close(metrics[f"curvature/eigenvalue_{i + 1}"], values.sort(descending=True).values[i])
    torch.testing.assert_close(metrics["curvature/eigenvalue_min"], eigenvalues[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(metrics["curvature/condition"], (8.0 + damping) / (eigenvalues[0] + damping))
    torch.testing.assert_close(metrics["curvature/grad_in_top_k"], (top.T @ grad).square().sum() / grad.square().sum())
    torch.testing.assert_close(metrics["curvature/step_in_top_k"], (top.T @ step).square().sum() / step.square().sum())
    torch.testing.assert_close(metrics["curvature/cg_relative_residual"],
                               (damped @ step - grad).norm() / grad.norm())
    assert abs(metrics["curvature/trace"] / values.sum() - 1) < 0.05
    torch.testing.assert_close(metrics["curvature/effective_rank"], metrics["curvature/trace"] / 8.0)
    torch.testing.assert_close(metrics["curvature/density_weights"].sum(), torch.tensor(1.0, dtype=torch.float64))


def test_fisher_products_take_float64_vectors_from_a_float32_policy():
    policy = GaussianPolicy(4, 3, (8,))
    obs = torch.randn(16, 4)
    matvec = fisher_matvec(policy, obs, damping=0.1)
    v = torch.randn(sum(p.numel() for p in policy.parameters()), dtype=torch.float64)
    result = matvec(v)
    assert result.dtype == torch.float64
    torch.testing.assert_close(result, matvec(v.float()).double(), rtol=1e-6, atol=1e-6)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="k=0"):
        top_eigenvalues(lambda v: v, 10, 0)
    with pytest.raises(ValueError, match="samples=2 must be >= 1 \\(>= 3 for hutch\\+\\+\\)"):
        hutchinson_trace(lambda v: v, 10, 2, method="hutch++")
    with pytest.raises(ValueError, match="method='xtrace'"):
        hutchinson_trace(lambda v: v, 10, 3, method="xtrace")
