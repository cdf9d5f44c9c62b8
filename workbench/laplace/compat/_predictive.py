"""Predictives, samples, posterior read-outs and prior tuning of the laplace-torch classes."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..gridsearch import gridsearch_prior_precision
from ._base import LINK_APPROX, PRED_TYPES, TO_NATIVE_PRIOR


class PredictiveMixin:
    # ---------------------------------------------------------------- predictive
    def __call__(
        self,
        x,
        pred_type="glm",
        joint=False,
        link_approx="probit",
        n_samples=100,
        diagonal_output=False,
        generator=None,
        fitting=False,
        **model_kwargs,
    ):
        self._check_predict_args(pred_type, link_approx, generator, model_kwargs)
        return self._predict(
            x, pred_type, joint, link_approx, n_samples, diagonal_output, generator
        )

    def _predict(self, x, pred_type, joint, link_approx, n_samples, diagonal_output, generator):
        self._check_H_init()
        la, x = self.native_, self._input(x)
        reg = self.likelihood == "regression"
        if pred_type == "nn":
            out = la(x, pred_type="nn", n_samples=n_samples, generator=generator)
            return (out[0], torch.diagonal(out[1], dim1=-2, dim2=-1)) if reg else out
        if reg:
            if joint:
                f_mu, cov = la(x, joint=True)
                n = f_mu.numel()
                return f_mu.reshape(n), cov.reshape(n, n)
            f_mu, f_var = la(x)
            return (
                (f_mu, torch.diagonal(f_var, dim1=-2, dim2=-1))
                if diagonal_output
                else (f_mu, f_var)
            )
        if link_approx == "mc" and diagonal_output:
            return torch.softmax(
                self.functional_samples(x, "glm", n_samples, True, generator), -1
            ).mean(0)
        return la(x, link_approx=link_approx, n_samples=n_samples, generator=generator)

    def predictive(self, x, pred_type, link_approx, n_samples):
        return self(x, pred_type=pred_type, link_approx=link_approx, n_samples=n_samples)

    def _check_predict_args(self, pred_type, link_approx, generator, model_kwargs):
        if pred_type not in PRED_TYPES:
            raise ValueError("Only glm and nn supported as prediction types.")
        if link_approx not in LINK_APPROX:
            raise ValueError(f"Unsupported link approximation {link_approx}.")
        if pred_type == "nn" and link_approx != "mc":
            raise ValueError("Only mc link approximation is supported for nn prediction type.")
        if generator is not None and (
            not isinstance(generator, torch.Generator) or generator.device != self._device
        ):
            raise ValueError("Invalid random generator (check type and device).")
        if model_kwargs:
            raise TypeError(f"model keyword arguments {sorted(model_kwargs)} are not supported")

    def _input(self, x):
        return x.to(self._device) if isinstance(x, torch.Tensor) else x

    def functional_samples(
        self, x, pred_type="glm", n_samples=100, diagonal_output=False, generator=None
    ):
        """Samples (n_samples, N, K) of the network outputs (no inverse link)."""
        self._check_H_init()
        if pred_type not in PRED_TYPES:
            raise ValueError("Only glm and nn supported as prediction types.")
        x = self._input(x)
        if pred_type == "nn":
            return self._nn_outputs(x, self._native_sample(n_samples, generator))
        f_mu, f_var = self._map_out(x), self.native_.functional_variance(x)
        return _normal_samples(f_mu, f_var, n_samples, diagonal_output, generator)

    def _map_out(self, x):
        """The MAP network's outputs at x (eval mode, no graph)."""
        net = self.native_.model
        was = net.training
        net.eval()
        try:
            with torch.no_grad():
                return net(x)
        finally:
            net.train(was)

    def predictive_samples(
        self, x, pred_type="glm", n_samples=100, diagonal_output=False, generator=None
    ):
        """Samples (n_samples, N, K): function values (regression) or class probabilities."""
        fs = self.functional_samples(x, pred_type, n_samples, diagonal_output, generator)
        return fs if self.likelihood == "regression" else torch.softmax(fs, -1)

    def _nn_outputs(self, x, thetas):
        la = self.native_
        net = la.model  # the user's network, or the subnetwork wrapper around it
        base = {k: v.detach() for k, v in net.named_parameters()}
        slices, names = la.param_slices, la.param_names
        shapes = {n: base[n].shape for n in names}
        was = net.training
        net.eval()
        try:
            with torch.no_grad():
                return torch.stack(
                    [
                        functional_call(
                            net,
                            {**base, **{n: t[slices[n]].reshape(shapes[n]) for n in names}},
                            (x,),
                        )
                        for t in thetas
                    ]
                )
        finally:
            net.train(was)

    def sample(self, n_samples=100, generator=None):
        """Parameter samples (n_samples, n_params) from the posterior."""
        self._check_H_init()
        return self.native_.sample(n_samples, generator)

    def _native_sample(self, n_samples, generator):
        return self.native_.sample(n_samples, generator)

    # ---------------------------------------------------------------- posterior read-outs
    @property
    def posterior_precision(self):
        self._check_H_init()
        if self._structure == "diag":
            return self.native_.posterior_precision_diagonal()
        return self.native_.posterior_precision()

    @property
    def posterior_covariance(self):
        if self._structure == "diag":
            raise AttributeError("DiagLaplace has posterior_variance, not posterior_covariance")
        self._check_H_init()
        return self.native_.posterior_covariance()

    @property
    def posterior_variance(self):
        if self._structure != "diag":
            raise AttributeError(
                f"{type(self).__name__} has posterior_covariance, not posterior_variance"
            )
        return 1 / self.posterior_precision

    @property
    def posterior_scale(self):
        """Diagonal: (P,) standard deviations; otherwise the lower Cholesky factor of the covariance."""
        if self._structure == "diag":
            return self.posterior_variance.sqrt()
        return torch.linalg.cholesky(self.posterior_covariance)

    def square_norm(self, value):
        delta = value - self.mean
        P = self.posterior_precision
        return delta @ (P * delta) if P.ndim == 1 else delta @ P @ delta

    def log_prob(self, value, normalized=True):
        if not normalized:
            return -self.square_norm(value) / 2
        n = self.n_params
        return (
            -n / 2 * torch.log(torch.tensor(2 * torch.pi))
            + self.log_det_posterior_precision / 2
            - self.square_norm(value) / 2
        )

    def functional_variance(self, Js):
        """Js (N, K, P) Jacobians -> (N, K, K) = Js Σ Jsᵀ (as laplace-torch: Jacobians given)."""
        self._check_jacobians(Js)
        if self._structure == "diag":
            return torch.einsum("ncp,p,nkp->nck", Js, self.posterior_variance, Js)
        return torch.einsum("ncp,pq,nkq->nck", Js, self.posterior_covariance, Js)

    def functional_covariance(self, Js):
        self._check_jacobians(Js)
        J = Js.reshape(-1, Js.shape[-1])
        if self._structure == "diag":
            return (J * self.posterior_variance) @ J.T
        return J @ self.posterior_covariance @ J.T

    def _check_jacobians(self, Js):
        if not isinstance(Js, torch.Tensor):
            raise ValueError("Jacobians have to be torch.Tensor.")
        if Js.device != self._device:
            raise ValueError("Jacobians need to be on the same device as Laplace.")
        if Js.ndim != 3 or Js.shape[-1] != self.native_.n_params:
            raise ValueError("Invalid Jacobians shape for Laplace posterior approx.")

    # ---------------------------------------------------------------- prior precision
    def optimize_prior_precision(
        self,
        pred_type="glm",
        method="marglik",
        n_steps=100,
        lr=1e-1,
        init_prior_prec=1.0,
        prior_structure="scalar",
        val_loader=None,
        loss=None,
        log_prior_prec_min=-4,
        log_prior_prec_max=4,
        grid_size=100,
        link_approx="probit",
        n_samples=100,
        verbose=False,
        progress_bar=False,
        log_prior_prec_base=10.0,
    ):
        """laplace-torch's post-hoc prior tuning: ``"marglik"`` (Adam on the log prior precision,
        started from ``init_prior_prec`` in ``prior_structure``) or ``"gridsearch"`` on ``val_loader``."""
        if pred_type not in PRED_TYPES:
            raise ValueError("Only glm and nn supported as prediction types.")
        self._check_H_init()
        if method == "marglik":
            if val_loader is not None:
                warnings.warn(
                    "`val_loader` will be ignored when `method` == 'marglik'. "
                    "Do you mean to set `method = 'gridsearch'`?",
                    stacklevel=2,
                )
            self.prior_precision = (
                init_prior_prec
                if isinstance(init_prior_prec, torch.Tensor)
                else float(init_prior_prec)
            )
            if len(self.prior_precision) == 1 and prior_structure != "scalar":
                self.prior_precision = self._expanded_prior(
                    float(self.prior_precision), prior_structure
                )
            self.native_.optimize_prior_precision(
                method="marglik", n_steps=n_steps, lr=lr, progress=progress_bar
            )
            self._prior_precision = self.native_.prior_precision.detach().clone()
        elif method == "gridsearch":
            if val_loader is None:
                raise ValueError("gridsearch requires a validation set DataLoader")
            grid = torch.logspace(
                log_prior_prec_min, log_prior_prec_max, grid_size, base=log_prior_prec_base
            )
            self._gridsearch(
                val_loader, loss, grid, pred_type, link_approx, n_samples, progress_bar
            )
        else:
            raise ValueError("For now only marglik and gridsearch is implemented.")
        if verbose:
            print(f"Optimized prior precision is {self.prior_precision}.")

    def _expanded_prior(self, value, prior_structure):
        if prior_structure not in TO_NATIVE_PRIOR:
            raise ValueError(f"Invalid prior structure {prior_structure}")
        n = {"layerwise": self.n_layers, "diag": self.n_params}[prior_structure]
        return torch.full((n,), value, device=self._device, dtype=self._dtype)

    def _gridsearch(self, val_loader, loss, grid, pred_type, link_approx, n_samples, progress_bar):
        """laplace-torch's grid search, including its running metric that is never reset between
        grid values (each value is scored by the metric accumulated over it and all before it).
        The native search sees the validation set as one batch; a metric is updated batch by
        batch as laplace-torch does, so even its float rounding (which decides between the equal
        MSEs of a GLM regression mean) is the same."""
        Xs, ys = zip(*[(b[0], b[1]) for b in val_loader])
        sizes = [len(t) for t in ys]
        batch = [(torch.cat(Xs).to(self._device), torch.cat(ys).to(self._device))]
        if loss is None:
            loss = _RunningMSE() if self.likelihood == "regression" else _RunningNLL()
        if hasattr(loss, "update") and hasattr(loss, "compute"):
            score = _metric_score(loss, sizes)
        else:
            score = _offline(loss)
        res = gridsearch_prior_precision(
            self.native_,
            val_loader=batch,
            grid=[float(g) for g in grid],
            loss=score,
            pred_type=pred_type,
            link_approx=link_approx,
            n_samples=n_samples,
            progress=progress_bar,
        )
        values = np.nan_to_num(res["loss"].values, nan=np.inf)
        self.prior_precision = grid[int(np.argmin(values))]


def _offline(loss):
    def score(pred, y):
        out = loss(*pred, y) if isinstance(pred, tuple) else loss(pred, y)
        return float(out)

    return score


def _metric_score(metric, sizes):
    def score(pred, y):
        parts = [p.split(sizes) for p in pred] if isinstance(pred, tuple) else [pred.split(sizes)]
        for i, yb in enumerate(y.split(sizes)):
            out = tuple(p[i] for p in parts)
            try:
                metric.update(*out, yb)
            except TypeError:  # a metric taking (prediction, target) only
                metric.update(out[0], yb)
        return float(torch.as_tensor(metric.compute()).sum())

    return score


class _RunningNLL:
    """laplace-torch's default classification metric: mean NLL over everything updated so far."""

    def __init__(self):
        self.nll_sum, self.n = 0.0, 0

    def update(self, probs, y):
        p = probs.reshape(-1, probs.shape[-1])
        self.nll_sum = self.nll_sum + F.nll_loss(p.log(), y.reshape(-1), reduction="sum")
        self.n += len(p)

    def compute(self):
        return self.nll_sum / self.n


class _RunningMSE:
    """torchmetrics' MeanSquaredError(num_outputs=K) as laplace-torch uses it: per-output MSE over
    everything updated so far (never reset), summed over outputs by the caller."""

    def __init__(self):
        self.sse, self.n = 0.0, 0

    def update(self, mean, y):
        K = mean.shape[-1] if mean.ndim > 1 else 1
        diff = mean.reshape(-1) - y.reshape(-1) if K == 1 else mean - y.reshape(mean.shape)
        self.sse = self.sse + torch.sum(diff * diff, dim=0)
        self.n += len(y)

    def compute(self):
        return self.sse / self.n


def _normal_samples(f_mu, f_var, n_samples, diagonal_output, generator):
    """Samples (n_samples, N, K) of N(f_mu, f_var) (only its diagonal with ``diagonal_output``)."""
    shape = (n_samples, *f_mu.shape)
    z = torch.randn(*shape, 1, dtype=f_mu.dtype, device=f_mu.device, generator=generator)
    if diagonal_output:
        return f_mu + z.squeeze(-1) * torch.diagonal(f_var, dim1=-2, dim2=-1).sqrt()
    return f_mu + (_psd_cholesky(f_var) @ z).squeeze(-1)


def _psd_cholesky(cov):
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    jitter = 1e-10 * torch.diagonal(cov, dim1=-2, dim2=-1).mean().clamp_min(1e-30)
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if not info.any():
            return L
        jitter = jitter * 100
    raise torch.linalg.LinAlgError("functional covariance is not positive semi-definite")
