"""Matrix-free estimators of a symmetric operator's spectrum, trace and diagonal.

Every function takes only `matvec`, v -> A v on float64 vectors of length `dim` (a policy's Fisher:
`trpo.curvature.fisher_matvec`, which computes in the policy's dtype), and works in float64 on
`device` (default: the generator's device, else the CPU), drawing only from `generator`, so that
diagnostics never move the training's random streams.

Why our own and not a library's (curvlinops-for-pytorch 3.0.1, scipy's eigsh, torch.lobpcg), measured
by `benchmarks/estimators.py` against dense `eigh` on trained HalfCheetah and Ant Fishers:
- torch.lobpcg takes a matrix, not a matrix-free product.
- scipy's eigsh (ARPACK) is exact with fewer products on the CPU (33 and 47 for the top 5, against
  our 40-60), but runs on NumPy arrays: on a GPU every product would be a host round trip.
- curvlinops' Lanczos (`fast_lanczos`, Papyan 2020) does not reorthogonalize, so copies of the top
  eigenvalues ("ghosts") enter its top 5 once enough products are taken: HalfCheetah's is off by 190%
  from 40 products on, Ant's exact at 40 but 15% off at 60 and 20% at 100; block Lanczos here is
  within 5e-4 at 40 and exact from 60 on both. Its trace estimators (Hutchinson, Hutch++, XTrace)
  are as accurate as ours but draw from torch's global generator, which diagnostics must not move.
The estimators here are each a few lines of torch on the basis that block Lanczos builds.

Top eigenvalues come from block Lanczos with full reorthogonalization and a block of k start
vectors: a single-vector Krylov space holds one direction of each eigenspace, so an eigenvalue of
multiplicity m shows up once, its other copies only as rounding errors grow, late and by chance
(tests/test_estimators.py), while a block of k finds every copy among the top k. Fishers have such
eigenvalues: at initialization the output layer's block repeats per action dimension (HalfCheetah:
the top 5 are equal), and a Gaussian policy's log-std block is 2 I.
"""

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class RitzPairs:
    """Rayleigh-Ritz on a Krylov basis: values ascending, vectors [dim, m] as columns, and each
    start vector's squared components along them [block, m] (its Gauss quadrature weights)."""

    values: Tensor
    vectors: Tensor
    start_weights: Tensor


def _device(generator: torch.Generator | None, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def _rademacher(dim: int, count: int, generator, device) -> Tensor:
    return torch.randint(0, 2, (dim, count), generator=generator, device=device).to(torch.float64) * 2 - 1


def _products(matvec: MatVec, vectors: Tensor) -> Tensor:
    return torch.stack([matvec(v) for v in vectors.T], dim=1)


def _orthogonalize(block: Tensor, basis: Tensor) -> Tensor:
    """Orthonormal columns spanning `block` with the basis projected out, twice (one pass loses orthogonality)."""
    for _ in range(2):
        block = block - basis @ (basis.T @ block)
        block = torch.linalg.qr(block).Q
    return block


def block_lanczos(matvec: MatVec, dim: int, block: int, iters: int, generator: torch.Generator | None = None,
                  device=None) -> RitzPairs:
    """Ritz pairs of A on the block Krylov space of `iters` products from `block` Gaussian start vectors.

    Full reorthogonalization (each new block against the whole basis) and Rayleigh-Ritz with the
    stored products, Q^T (A Q): no loss of orthogonality, hence no ghost eigenvalues. A rank-deficient
    block (an invariant subspace reached) is completed by QR's own directions, still orthogonal to the basis.
    """
    if not 1 <= block <= dim:
        raise ValueError(f"block={block} must be from 1 to dim={dim}")
    device = _device(generator, device)
    iters = min(iters, dim)
    start = torch.randn(dim, block, generator=generator, device=device, dtype=torch.float64)
    basis = torch.linalg.qr(start).Q
    products = _products(matvec, basis)
    while basis.shape[1] < iters:
        width = min(block, iters - basis.shape[1])
        new = _orthogonalize(products[:, -block:][:, :width], basis)
        basis = torch.cat([basis, new], dim=1)
        products = torch.cat([products, _products(matvec, new)], dim=1)
    rayleigh = basis.T @ products
    values, coordinates = torch.linalg.eigh((rayleigh + rayleigh.T) / 2)
    return RitzPairs(values, basis @ coordinates, coordinates[:block].square())


def default_iters(k: int) -> int:
    """Products for the top k: eight blocks of k, at least 40 (on HalfCheetah's Fisher, dim 5708, the
    fifth eigenvalue is within 0.5% at 40 products and 9% off at 30)."""
    return max(40, 8 * k)


def top_eigenvalues(matvec: MatVec, dim: int, k: int, iters: int | None = None,
                    generator: torch.Generator | None = None, device=None) -> Tensor:
    """The k largest eigenvalues of the symmetric A, largest first, by block Lanczos (block k, `iters` products)."""
    if not 1 <= k <= dim:
        raise ValueError(f"k={k} must be from 1 to dim={dim}")
    ritz = block_lanczos(matvec, dim, k, iters or default_iters(k), generator, device)
    return ritz.values.flip(0)[:k]


def hutchinson_trace(matvec: MatVec, dim: int, samples: int, generator: torch.Generator | None = None,
                     device=None, method: str = "hutchinson") -> Tensor:
    """An unbiased estimate of tr(A) from `samples` products with Rademacher probes.

    method "hutchinson": mean of v^T A v (variance 2 (||A||_F^2 - sum a_ii^2) / samples).
    method "hutch++" (Meyer et al. 2021): a third of the products sketch the top of the spectrum
    (Q = orth(A S)), a third take tr(Q^T A Q) exactly, a third estimate the rest by Hutchinson on
    (I - QQ^T) A (I - QQ^T); its error falls like 1/samples where the spectrum decays fast enough. On
    trained policies' Fishers neither wins at 30 products (RMS error, HalfCheetah: 4.0% against 5.7%,
    Ant: 4.5% against 3.1%; benchmarks/README.md), so the default is the simpler one.
    """
    if samples < 1 or (method == "hutch++" and samples < 3):
        raise ValueError(f"samples={samples} must be >= 1 (>= 3 for hutch++)")
    device = _device(generator, device)
    if method == "hutchinson":
        probes = _rademacher(dim, samples, generator, device)
        return (probes * _products(matvec, probes)).sum() / samples
    if method != "hutch++":
        raise ValueError(f"method={method!r} is not a trace estimator; choose hutch++ or hutchinson")
    sketch_size, rest = samples // 3, samples - 2 * (samples // 3)
    sketch = torch.linalg.qr(_products(matvec, _rademacher(dim, sketch_size, generator, device))).Q
    top = (sketch * _products(matvec, sketch)).sum()
    probes = _rademacher(dim, rest, generator, device)
    probes = probes - sketch @ (sketch.T @ probes)
    return top + (probes * _products(matvec, probes)).sum() / rest


def hutchinson_diagonal(matvec: MatVec, dim: int, samples: int, generator: torch.Generator | None = None,
                        device=None) -> Tensor:
    """An unbiased estimate of diag(A): the mean of v * A v over Rademacher probes v
    (entry i has variance sum_{j != i} a_ij^2 / samples)."""
    if samples < 1:
        raise ValueError(f"samples={samples} must be >= 1")
    probes = _rademacher(dim, samples, generator, _device(generator, device))
    return (probes * _products(matvec, probes)).mean(1)


def spectral_density(matvec: MatVec, dim: int, iters: int = 60, probes: int = 4,
                     generator: torch.Generator | None = None, device=None) -> tuple[Tensor, Tensor]:
    """Stochastic Lanczos quadrature: nodes [m] and weights [m] (summing to 1) of the spectral
    density (1/dim) sum_i delta(lambda - lambda_i).

    The probes are the start block of one block Lanczos run: each one's Gauss quadrature on the shared
    Krylov space integrates polynomials of degree < 2 * iters / probes exactly, and the weights are
    averaged over the probes. `smoothed_density` puts them on a grid.
    """
    ritz = block_lanczos(matvec, dim, probes, iters, generator, device)
    return ritz.values, ritz.start_weights.mean(0)


def smoothed_density(nodes: Tensor, weights: Tensor, grid: Tensor, width: float) -> Tensor:
    """The quadrature's density on a grid, each node a Gaussian of standard deviation `width`."""
    bumps = torch.exp(-0.5 * ((grid[:, None] - nodes[None, :]) / width) ** 2) / (width * (2 * torch.pi) ** 0.5)
    return bumps @ weights
