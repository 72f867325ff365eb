"""Our estimators against curvlinops-for-pytorch 3.0.1 and scipy's eigsh, on a trained policy's Fisher
with its dense eigenvalues as the reference.

    pip install -e '.[bench]'   # curvlinops-for-pytorch 3.0.1
    python benchmarks/estimators.py [--run benchmarks/results/spectrum/runs/HalfCheetah-v4-s0] [--states 256]

The run needs its checkpoint (`python benchmarks/spectrum_study.py` trains it). Prints, for the top 5
eigenvalues, each method's worst relative error and its Fisher-vector products at equal budgets, and,
for the trace, the RMS relative error over 30 seeds at 30 and 60 products.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.sparse.linalg
import torch
from curvlinops._torch_base import PyTorchLinearOperator
from curvlinops.papyan2020traces.spectrum import fast_lanczos
from curvlinops.trace.epperly2024xtrace import xtrace
from curvlinops.trace.hutchinson import hutchinson_trace as curvlinops_hutchinson
from curvlinops.trace.meyer2020hutch import hutchpp_trace

from trpo.curvature import fisher_matvec
from trpo.estimators import hutchinson_trace, top_eigenvalues
from trpo.evaluate import load_run
from trpo.spectrum import dense_matrix, fresh_states

ROOT = Path(__file__).resolve().parents[1]
K = 5
SEEDS = 30


class Operator(PyTorchLinearOperator):
    """A symmetric matvec as a curvlinops operator."""

    SELF_ADJOINT = True

    def __init__(self, matvec, dim: int):
        super().__init__([(dim,)], [(dim,)])
        self.matvec = matvec

    def _matmat(self, X):
        (matrix,) = X
        return [torch.stack([self.matvec(column) for column in matrix.T], dim=1)]

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return torch.float64


def worst_relative(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.max(np.abs(np.sort(found)[::-1][:K] - exact[:K]) / exact[:K]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "benchmarks/results/spectrum/runs/HalfCheetah-v4-s0")
    parser.add_argument("--states", type=int, default=256)
    args = parser.parse_args()
    config, policy, _ = load_run(args.run)
    obs = fresh_states(config.env_id, policy, args.states, config.env.num_envs, config.seed, config.env)
    policy = policy.double()
    matvec = fisher_matvec(policy, obs.double(), method="mlp")
    dim = sum(p.numel() for p in policy.parameters())
    exact = torch.linalg.eigvalsh(dense_matrix(matvec, dim)).flip(0).numpy()
    print(f"{config.env_id} ({args.run.name}), Fisher over {args.states} fresh states, dim {dim}; "
          f"dense top {K}: {np.array2string(exact[:K], precision=4)}, trace {exact.sum():.5g}")

    print(f"\ntop {K} eigenvalues, worst relative error over the {K} (median over 5 seeds), per budget of products:")
    for products in (40, 60, 100):
        ours, ghosts = [], []
        for seed in range(5):
            generator = torch.Generator().manual_seed(seed)
            ours.append(worst_relative(top_eigenvalues(matvec, dim, K, iters=products, generator=generator).numpy(), exact))
            torch.manual_seed(seed)  # curvlinops draws its start vector from the global generator
            values, _ = fast_lanczos(Operator(matvec, dim), ncv=products)
            ghosts.append(worst_relative(values.numpy(), exact))
        print(f"  {products:4d} products: block Lanczos (ours) {np.median(ours):.2e}, "
              f"curvlinops fast_lanczos {np.median(ghosts):.2e}")
    counted = [0]

    def counting(v: np.ndarray) -> np.ndarray:
        counted[0] += 1
        return matvec(torch.as_tensor(v, dtype=torch.float64)).numpy()

    start = time.perf_counter()
    values = scipy.sparse.linalg.eigsh(scipy.sparse.linalg.LinearOperator((dim, dim), matvec=counting, dtype=np.float64),
                                       k=K, which="LA", tol=1e-6, return_eigenvectors=False)
    print(f"  scipy eigsh (ARPACK, tol 1e-6): {counted[0]} products, {time.perf_counter() - start:.1f} s, "
          f"error {worst_relative(values, exact):.2e}")

    print(f"\ntrace, RMS relative error over {SEEDS} seeds:")
    for products in (30, 60):
        errors = {name: [] for name in ("ours hutchinson", "ours hutch++", "curvlinops hutchinson",
                                        "curvlinops hutch++", "curvlinops xtrace")}
        for seed in range(SEEDS):
            for method in ("hutchinson", "hutch++"):
                estimate = hutchinson_trace(matvec, dim, products, torch.Generator().manual_seed(seed), method=method)
                errors[f"ours {method}"].append(float(estimate) / exact.sum() - 1)
            for name, estimator in (("hutchinson", curvlinops_hutchinson), ("hutch++", hutchpp_trace),
                                    ("xtrace", xtrace)):
                torch.manual_seed(seed)
                errors[f"curvlinops {name}"].append(float(estimator(Operator(matvec, dim), products)) / exact.sum() - 1)
        print(f"  {products} products: " + ", ".join(f"{name} {100 * np.sqrt(np.mean(np.square(e))):.2f}%"
                                                    for name, e in errors.items()))


if __name__ == "__main__":
    main()
