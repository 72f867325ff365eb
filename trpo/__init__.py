"""trpo: trust-region and natural-gradient reinforcement learning."""

from trpo.advantages import gae
from trpo.curvature import fisher_vector_product
from trpo.linalg import conjugate_gradient
from trpo.policy import CategoricalPolicy, GaussianPolicy

__all__ = ["conjugate_gradient", "fisher_vector_product", "gae", "GaussianPolicy", "CategoricalPolicy"]
