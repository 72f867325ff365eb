import inspect

import trpo


def parameters(function):
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]


def test_public_names_import_from_the_package():
    assert set(trpo.__all__) == {"conjugate_gradient", "fisher_vector_product", "gae",
                                 "GaussianPolicy", "CategoricalPolicy", "train", "load", "Agent", "Run",
                                 "top_eigenvalues", "hutchinson_trace", "hutchinson_diagonal", "spectral_density",
                                 "kfac_preconditioner"}
    assert all(getattr(trpo, name) is not None for name in trpo.__all__)


def test_signatures_follow_the_design():
    empty = inspect.Parameter.empty
    assert parameters(trpo.conjugate_gradient) == [("matvec", empty), ("b", empty), ("iters", 10),
                                                   ("residual_tol", 1e-10), ("preconditioner", None)]
    assert parameters(trpo.fisher_vector_product) == [("policy", empty), ("obs", empty), ("v", empty),
                                                      ("damping", 0.0), ("method", "analytic")]
    assert parameters(trpo.gae) == [(name, empty) for name in
                                    ("rewards", "values", "next_values", "terminated", "dones", "gamma", "lam")]
    assert parameters(trpo.GaussianPolicy)[:4] == [("obs_dim", empty), ("act_dim", empty),
                                                   ("hidden", (64, 64)), ("activation", "tanh")]
    assert parameters(trpo.train) == [("env_id", empty), ("overrides", None), ("run_dir", None)]
    assert parameters(trpo.load) == [("path", empty), ("device", "cpu")]
    # issue 19: the estimators' leading parameters (more may follow, with defaults)
    assert parameters(trpo.top_eigenvalues)[:5] == [("matvec", empty), ("dim", empty), ("k", empty), ("iters", None),
                                                    ("generator", None)]
    assert parameters(trpo.hutchinson_trace)[:4] == [("matvec", empty), ("dim", empty), ("samples", empty),
                                                     ("generator", None)]
    assert parameters(trpo.kfac_preconditioner) == [("policy", empty), ("obs", empty), ("damping", empty)]  # issue 21
    assert parameters(trpo.CategoricalPolicy)[:4] == [("obs_dim", empty), ("n_actions", empty),
                                                      ("hidden", (64, 64)), ("activation", "tanh")]
