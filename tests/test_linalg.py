import pytest
import torch

from trpo.linalg import conjugate_gradient, conjugate_gradient_with_residual


def random_spd(n, generator, condition=10.0):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.linspace(1.0, condition, n, dtype=torch.float64)
    return q @ torch.diag(eigenvalues) @ q.T


@pytest.mark.parametrize("n", [1, 2, 5, 20, 50])
def test_cg_matches_linalg_solve(n):
    generator = torch.Generator().manual_seed(n)
    A = random_spd(n, generator)
    b = torch.randn(n, generator=generator, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=n + 10, residual_tol=1e-24)
    expected = torch.linalg.solve(A, b)
    assert torch.linalg.norm(x - expected) / torch.linalg.norm(expected) < 1e-6


def test_one_iteration_is_the_exact_line_minimization_along_b():
    generator = torch.Generator().manual_seed(1)
    A = random_spd(10, generator)
    b = torch.randn(10, generator=generator, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=1)
    torch.testing.assert_close(x, (b @ b) / (b @ A @ b) * b, rtol=1e-12, atol=0)


def test_zero_right_hand_side_gives_zero():
    A = random_spd(5, torch.Generator().manual_seed(2))
    x, residual = conjugate_gradient_with_residual(lambda v: A @ v, torch.zeros(5, dtype=torch.float64))
    assert torch.equal(x, torch.zeros(5, dtype=torch.float64))
    assert residual == 0


def test_iterations_after_convergence_change_nothing():
    # Running far past convergence must neither divide 0 by 0 nor move x: it equals stopping early.
    generator = torch.Generator().manual_seed(3)
    A = random_spd(6, generator)
    b = torch.randn(6, generator=generator, dtype=torch.float64)
    early = conjugate_gradient(lambda v: A @ v, b, iters=6, residual_tol=1e-12)
    late = conjugate_gradient(lambda v: A @ v, b, iters=200, residual_tol=1e-12)
    assert torch.isfinite(late).all()
    torch.testing.assert_close(late, early, rtol=1e-10, atol=1e-12)


def test_reported_residual_is_the_squared_residual_of_x():
    generator = torch.Generator().manual_seed(4)
    A = random_spd(30, generator, condition=1000.0)
    b = torch.randn(30, generator=generator, dtype=torch.float64)
    x, residual = conjugate_gradient_with_residual(lambda v: A @ v, b, iters=5)
    true_residual = (b - A @ x) @ (b - A @ x)
    assert residual > 1e-6  # five iterations cannot solve a system this ill-conditioned
    torch.testing.assert_close(residual, true_residual, rtol=1e-6, atol=0)


def test_keeps_dtype_and_device_of_b():
    A = random_spd(4, torch.Generator().manual_seed(5)).float()
    b = torch.ones(4)
    x = conjugate_gradient(lambda v: A @ v, b)
    assert x.dtype == torch.float32 and x.device == b.device
