"""Laplace approximations and the log marginal likelihood, on ``torch.func`` and module hooks.

No BackPACK / ASDL / curvlinops / laplace-torch dependency. Public API (docs/architecture.md)::

    la = Laplace(model, likelihood,                # regression | classification | binary | heteroscedastic
                 subset_of_weights="all",          # | "last_layer"
                 hessian_structure="full",         # | "diag" | "kron"
                 prior_precision=1.0, prior_structure="scalar",  # | layerwise | unitwise | diagonal | group
                 prior_mean=0.0, sigma_noise=1.0, temperature=1.0,
                 curvature="ggn",                  # | "ef"
                 kfac="expand",                    # | "reduce"
                 param_groups=None, group_structure=None, params=None,
                 kfac_fallback="diag",             # | "error"
                 chunk_budget=2**25)
    la.fit(train_loader, create_graph=False, progress=False) -> la
    la.log_marginal_likelihood(prior_precision=None, sigma_noise=None) -> scalar tensor
    la.optimize_prior_precision(method="marglik", n_steps=100, lr=0.1, optimize_sigma=False) -> list
    la(x, pred_type="glm", link_approx="probit", n_samples=100, generator=None)
    la.functional_variance(x, group=None)          # (N, K, K)
    la.predictive_samples(x, n_samples=100, pred_type="glm", generator=None)
    la.sample(n_samples=100, generator=None)       # (n_samples, P) parameter samples
    la.posterior_covariance(group=None)            # dense, small models
    la.state_dict(); la.load_state_dict(state)
    la.mean, la.param_names, la.param_slices, la.prior_precision, la.sigma_noise,
    la.prior_precision_diag, la.prior_labels, la.n_params, la.n_data,
    la.posterior_precision_diagonal(), la.effective_dimensions()

    model, la, history = marglik_training(model, train_loader, likelihood, ...,
                                          callback=None)   # callback(workbench.progress.Progress)
    la = fit_laplace(model, train_loader, likelihood, **laplace_kwargs)

Curvature structures are classes in :mod:`workbench.laplace.structures` (``register_structure``
adds one; its docstring says how).

Conventions: every block covers parameters by their index in the flat vector (``la.mean``);
the likelihood factor is 1/(σ²T); KFAC keeps the exact log-determinant for every
Kronecker-structured prior and uses the eigenbasis-diagonal approximation for a per-parameter
(``diagonal``) prior (see :mod:`workbench.laplace.structures.kron`).
"""

from ._validation import NotFittedError
from .laplace import Laplace, fit_laplace
from .likelihoods import get_likelihood
from .structures import register_structure
from .training import marglik_training

__all__ = [
    "Laplace",
    "marglik_training",
    "fit_laplace",
    "NotFittedError",
    "get_likelihood",
    "register_structure",
]
