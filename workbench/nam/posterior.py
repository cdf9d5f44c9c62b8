"""Block-diagonal (one block per subnetwork) linearised Laplace for :class:`AdditiveNet`.

``structure="full"`` is LA-NAM's exact per-subnetwork curvature: for every subnetwork s the full
GGN block ``G_s = sum_n J_s(x_n)^T Lambda_n J_s(x_n)`` is accumulated for all subnetworks of a
group at once (batched einsum over the subnetwork axis, chunked over samples, float64
accumulators), with ``Lambda = 1/sigma^2`` (Gaussian), ``p(1-p)`` (Bernoulli) or
``diag(p) - p p^T`` (softmax), the Laplace core's :meth:`Likelihood.hessian
<workbench.laplace.likelihoods.Likelihood.hessian>` (one likelihood implementation for both).
``structure="kron"`` replaces the blocks of the MLP subnetworks
(numeric and pair groups) by KFAC factors per layer (:mod:`workbench.nam.kron`, the reference
LA-NAM's choice); lookup tables and the intercept keep their exact blocks. Prior precisions are
layerwise: one per parameter tensor per subnetwork (``log_prior[group]`` is ``(S, T)``). The
Laplace evidence follows the laplace-torch convention (see REFERENCES.md):

``log p(D) ~= log p(D | theta) - 1/2 sum_s [log det P_s - log det P0_s + theta_s^T P0_s theta_s]``.

Why not the generic core: the subnetworks are slices of shared, stacked tensors (that is what
makes them one batched op), so a name-based ``param_groups`` cannot express "one block per
subnetwork"; the closed-form Jacobians here make the whole curvature a handful of batched matmuls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from workbench.laplace.likelihoods import Likelihood, get_likelihood
from workbench.nam import kron
from workbench.nam.modules import AdditiveNet, MLPGroup

LIKELIHOODS = ("regression", "binary", "multiclass")
STRUCTURES = ("full", "kron")


def check_structure(structure: str) -> str:
    if structure not in STRUCTURES:
        raise ValueError(f"hessian_structure must be one of {STRUCTURES}, got {structure!r}")
    return structure


_CORE_NAMES = {"regression": "regression", "binary": "binary", "multiclass": "classification"}


def core_likelihood(likelihood: str) -> Likelihood:
    """The Laplace core's likelihood for LA-NAM's name (``"multiclass"`` is the core's
    ``"classification"``): its :meth:`~Likelihood.hessian` is the ``Lambda`` of the GGN blocks
    (Gaussian at sigma = 1; the evidence rescales by 1/sigma^2)."""
    if likelihood not in _CORE_NAMES:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    return get_likelihood(_CORE_NAMES[likelihood])


def data_term(lik: Likelihood, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gaussian: the sum of squared errors (sigma-free, so the evidence can vary sigma);
    classification: the summed log p(y | f). ``f`` is (N, K); ``y`` as the estimators encode it."""
    if lik.has_sigma:
        return lik.sum_squares(f, y.reshape(f.shape))
    if f.shape[-1] == 1:  # one logit: 0/1 targets shaped like it
        return lik.log_lik(f, y.to(f.dtype).reshape(f.shape))
    return lik.log_lik(f, y.long())


@dataclass
class Curvature:
    """GGN blocks and training-set statistics at one parameter value (all float64)."""

    ggn: dict[str, torch.Tensor]  # full groups -> (S, P, P) (Gaussian: unscaled, i.e. sigma = 1)
    theta: dict[str, torch.Tensor]  # group -> (S, P)
    data_term: float  # SSE (regression) or sum log-likelihood (classification)
    n_samples: int
    n_outputs: int
    mean_jac: dict[str, torch.Tensor]  # group -> (S, K, P): training mean of each Jacobian
    mean_out: dict[str, torch.Tensor]  # group -> (S, K): training mean of each subnetwork output
    kron: dict[str, list[kron.KronLayer]] = field(default_factory=dict)  # KFAC groups -> layers


def sample_chunk(model: AdditiveNet, budget: int = 2**22) -> int:
    """Samples per chunk so that the per-sample Jacobians of all subnetworks, ``(chunk, S, K, P)``
    summed over groups, hold about ``budget`` numbers (16 MiB in float32). Fixed-size chunks would
    make the Jacobian tensors grow with the number of features until they fall out of cache (and
    every chunk pays fresh page faults): with 100 features and 2048 samples a chunk was 160 MB."""
    per_sample = sum(m.S * m.K * m.n_params for m in model.groups.values())
    return int(min(4096, max(32, budget // max(per_sample, 1))))


@torch.no_grad()
def compute_curvature(
    model: AdditiveNet, x_num: torch.Tensor, x_cat: torch.Tensor, y: torch.Tensor, likelihood: str,
    chunk: int | None = None, structure: str = "full",
) -> Curvature:
    """One pass over the data: the GGN block of every subnetwork (full, or KFAC factors for the
    MLP groups with ``structure="kron"``), vectorised over subnetworks (chunks of samples;
    ``chunk=None`` sizes them by :func:`sample_chunk`)."""
    n = x_num.shape[0]
    chunk = chunk or sample_chunk(model)
    groups = model.groups
    use_kron = check_structure(structure) == "kron"
    kron_groups = [g for g, m in groups.items() if use_kron and isinstance(m, MLPGroup)]
    f64 = {"dtype": torch.float64, "device": x_num.device}
    ggn = {g: torch.zeros(m.S, m.n_params, m.n_params, **f64)
           for g, m in groups.items() if g not in kron_groups}
    sums: dict[str, list] = {}
    sj = {g: torch.zeros(m.S, m.K, m.n_params, **f64) for g, m in groups.items()}
    so = {g: torch.zeros(m.S, m.K, **f64) for g, m in groups.items()}
    lik = core_likelihood(likelihood)
    total = 0.0
    for start in range(0, n, chunk):
        xs, cs = x_num[start : start + chunk], x_cat[start : start + chunk]
        contrib = model.contributions(xs, cs)
        f = sum(c.sum(1) for c in contrib.values())
        total += float(data_term(lik, f, y[start : start + chunk]))
        lam = lik.hessian(f)
        inputs = model.group_inputs(xs, cs)
        for g in groups:
            so[g] += contrib[g].sum(0).double()
        for g in kron_groups:
            terms, jac_sum = groups[g].kron_terms(inputs[g], lam)
            sums[g] = terms if g not in sums else [(a + ta, b + tb) for (a, b), (ta, tb) in zip(sums[g], terms)]
            sj[g] += jac_sum
        for g in ggn:
            jac = groups[g].jacobian(inputs[g])
            sj[g] += jac.sum(0).double()
            if jac.shape[2] == 1:
                js = jac[:, :, 0, :] * lam[:, 0, 0].clamp_min(0).sqrt()[:, None, None]
                block = torch.einsum("nsp,nsq->spq", js, js)
            else:
                jl = torch.einsum("nskp,nkl->nslp", jac, lam)
                block = torch.einsum("nslp,nslq->spq", jl, jac)
            ggn[g] += block.double()
    theta = {g: m.flat().detach().double() for g, m in groups.items()}
    return Curvature(
        ggn=ggn, theta=theta, data_term=total, n_samples=n, n_outputs=model.n_out,
        mean_jac={g: v / n for g, v in sj.items()}, mean_out={g: v / n for g, v in so.items()},
        kron={g: kron.make_layers(v, n) for g, v in sums.items()},
    )


def prior_diag(model: AdditiveNet, log_prior: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-parameter prior precision (S, P) of every group from the layerwise (S, T) log-precisions."""
    return {g: log_prior[g].exp()[:, m.slot_index().to(log_prior[g].device)] for g, m in model.groups.items()}


def _cholesky(a: torch.Tensor) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(a)
    if bool((info > 0).any()):
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        L = torch.linalg.cholesky(a + 1e-10 * a.diagonal(dim1=-2, dim2=-1).abs().mean() * eye)
    return L


class _LogDetPD(torch.autograd.Function):
    """``log det A`` of a batch of SPD matrices ``(S, P, P) -> (S,)`` with the closed-form gradient
    ``A^{-1}`` (one ``cholesky_inverse``): about 3x cheaper than differentiating through the
    Cholesky factorisation, which dominated the marglik hyper-steps of small tables."""

    @staticmethod
    def forward(ctx, a):
        L = _cholesky(a)
        ctx.save_for_backward(L)
        return 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        (L,) = ctx.saved_tensors
        return grad[..., None, None] * torch.cholesky_inverse(L)


def log_marginal_likelihood(
    model: AdditiveNet, curv: Curvature, log_prior: dict[str, torch.Tensor], log_sigma: torch.Tensor | None,
    likelihood: str,
) -> torch.Tensor:
    """Laplace evidence, differentiable w.r.t. the log prior precisions and log sigma."""
    deltas = prior_diag(model, {g: lp.double() for g, lp in log_prior.items()})
    if likelihood == "regression":
        s2 = torch.exp(2 * log_sigma.double())
        nk = curv.n_samples * curv.n_outputs
        loglik = -0.5 * nk * torch.log(2 * math.pi * s2) - 0.5 * curv.data_term / s2
        scale = 1.0 / s2
    else:
        loglik = torch.as_tensor(curv.data_term, dtype=torch.float64, device=deltas["bias"].device)
        scale = 1.0
    penalty = 0.0
    for g, G in curv.ggn.items():
        d = deltas[g]
        logdet = _LogDetPD.apply(G * scale + torch.diag_embed(d)).sum()
        penalty = penalty + logdet - torch.log(d).sum() + (d * curv.theta[g] ** 2).sum()
    for g, layers in curv.kron.items():  # exact log det of the KFAC blocks under the layerwise prior
        penalty = penalty + kron.log_det_ratio(layers, log_prior[g].double(), scale)
        penalty = penalty + (deltas[g] * curv.theta[g] ** 2).sum()
    return loglik - 0.5 * penalty


class BlockPosterior:
    """Gaussian posterior, one covariance block per subnetwork (plus the intercept): full, or
    Kronecker-factored per layer for the groups the curvature holds as KFAC factors."""

    def __init__(self, model: AdditiveNet, curv: Curvature, log_prior: dict[str, torch.Tensor],
                 log_sigma: torch.Tensor | None, likelihood: str):
        self.likelihood = likelihood
        self.curv = curv
        self.sigma = float(log_sigma.exp()) if likelihood == "regression" else 1.0
        scale = 1.0 / self.sigma**2 if likelihood == "regression" else 1.0
        deltas = prior_diag(model, {g: lp.detach().double() for g, lp in log_prior.items()})
        self.precision = {g: G * scale + torch.diag_embed(deltas[g]) for g, G in curv.ggn.items()}
        self.chol = {g: _cholesky(p) for g, p in self.precision.items()}
        self.kron = {g: kron.posterior_layers(layers, log_prior[g].detach().double(), scale)
                     for g, layers in curv.kron.items()}

    def structure(self, group: str) -> str:
        return "kron" if group in self.kron else "full"

    def covariance(self, group: str) -> torch.Tensor:
        """(S, P, P) posterior covariance blocks of a group (KFAC groups: block-diagonal over layers)."""
        if group in self.kron:
            return kron.covariance(self.kron[group])
        return torch.cholesky_inverse(self.chol[group])

    def functional_variance(self, group: str, jac: torch.Tensor, subnets: slice | None = None) -> torch.Tensor:
        """``J_s Sigma_s J_s^T`` for every sample and subnetwork: jac (N, S, K, P) -> (N, S, K, K);
        ``subnets`` selects which of the group's subnetworks ``jac`` belongs to (default: all)."""
        n, s, k, p = jac.shape
        if group in self.kron:
            sel = slice(None) if subnets is None else subnets
            layers = [kron.KronPosteriorLayer(Q=lay.Q[sel], U=lay.U[sel], w=lay.w[sel]) for lay in self.kron[group]]
            return kron.functional_variance(layers, jac)
        chol = self.chol[group] if subnets is None else self.chol[group][subnets]
        rhs = jac.double().permute(1, 3, 0, 2).reshape(s, p, n * k)
        z = torch.linalg.solve_triangular(chol, rhs, upper=False).reshape(s, p, n, k)
        return torch.einsum("spnk,spnl->nskl", z, z)
