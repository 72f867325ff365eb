"""trpo: trust-region and natural-gradient reinforcement learning.

`trpo.train(env_id, overrides=None, run_dir=None) -> Run` trains (the module trpo.train, callable);
`trpo.load(path, device="cpu") -> Agent` loads a trained agent.
`top_eigenvalues`, `hutchinson_trace`, `hutchinson_diagonal` and `spectral_density` estimate the
spectrum of any symmetric matvec, such as a policy's Fisher (`trpo.curvature.fisher_matvec`);
`kfac_preconditioner(policy, obs, damping)` applies K-FAC's approximate (F + damping I)^-1.
"""

import importlib

from trpo.advantages import gae
from trpo.curvature import fisher_vector_product
from trpo.estimators import hutchinson_diagonal, hutchinson_trace, spectral_density, top_eigenvalues
from trpo.kfac import kfac_preconditioner
from trpo.linalg import conjugate_gradient
from trpo.policy import CategoricalPolicy, GaussianPolicy

__all__ = ["conjugate_gradient", "fisher_vector_product", "gae", "GaussianPolicy", "CategoricalPolicy",
           "train", "load", "Agent", "Run", "top_eigenvalues", "hutchinson_trace", "hutchinson_diagonal",
           "spectral_density", "kfac_preconditioner"]


# Imported on first use, so that `python -m trpo.train` and `python -m trpo.evaluate` (which trpo.api
# imports) each run their module only once.
_LAZY = {"train": ("trpo.train", None), "load": ("trpo.api", "load"), "Agent": ("trpo.api", "Agent"),
         "Run": ("trpo.api", "Run")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'trpo' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
