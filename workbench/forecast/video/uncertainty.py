"""Forecast uncertainty: a Laplace approximation over the forecaster's last layer.

The forecaster's read-out is a 1x1x1 convolution, i.e. a linear model ``w . phi_v + b`` on the
per-voxel features ``phi_v`` of the last hidden layer (for input down-sampling: the upsampled
features, which is the same linear map because trilinear upsampling is linear and keeps
constants). The Laplace core (``workbench.laplace.Laplace``, ``hessian_structure="full"``) fitted
on ``nn.Linear`` with those features as inputs and the scaled residual targets is exact for this
linear last layer: ``Sigma = (Phi^T Phi / sigma^2 + delta I)^-1``. The prior precision ``delta`` is
set by the marginal likelihood.

Predictive variance of a voxel: ``scale^2 [phi_v, 1] Sigma [phi_v, 1]^T + s_vox(l)^2``. A neuron's
trace is the mean over its voxels, again linear in the mean feature ``phi_n``, so its epistemic
variance is ``scale^2 [phi_n, 1] Sigma [phi_n, 1]^T`` exactly. The observation noise ``s(l)``
grows with the lead; it is estimated per lead (voxel and trace level separately) from the
residuals on validation windows (held-out from training), minus the mean epistemic part.
Calibration is reported as the coverage of central intervals on test windows.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from scipy.stats import norm
from sklearn.base import BaseEstimator, clone
from torch import nn

from ..._deprecation import renamed_arguments
from ..._torch_utils import resolve_device, seed_from, torch_threads
from ...exceptions import check_fitted
from ..protocol import windows as make_windows
from ..segments import segment_means
from .frames import take_frames

__all__ = ["LastLayerLaplace"]


def _volume(ds):
    vol = ds["volume"].transpose("time", "z", "y", "x")
    return vol.values if vol.chunks is None else vol


class LastLayerLaplace(BaseEstimator):
    """Last-layer Laplace for a :class:`~.estimator.VideoForecaster`.

    Parameters
    ----------
    forecaster : a VideoForecaster. A fitted one is used as it is (``forecaster_`` is the same
        object); an unfitted one (e.g. after ``sklearn.base.clone``) is cloned and fitted on the
        data given to :meth:`fit` first.
    prior_precision : initial prior precision of the read-out weights.
    optimize_prior : tune the prior precision by the Laplace marginal likelihood.
    n_fit_windows : training windows whose voxels enter the posterior.
    fit_leads : leads used for those windows (default 1, 2, 4, ... up to the horizon).
    n_noise_windows : validation windows for the per-lead noise (all leads 1..H).
    max_voxels : subsample at most this many (window, lead, voxel) rows for the posterior.
    random_state : seeds the choice of windows and voxels (``seed``: old name, deprecated).
    batch_size : windows per forward pass of the forecaster.
    device : where the posterior is fitted (``None``: CUDA when available); the forecaster keeps
        its own device and results are numpy / xarray on the CPU.
    n_threads : torch intra-op threads while working (``None``: unchanged).

    Missing target voxels (NaN) do not enter the posterior or the noise estimate.
    """

    @renamed_arguments(seed="random_state")
    def __init__(self, forecaster=None, prior_precision: float = 1.0, optimize_prior: bool = True,
                 n_fit_windows: int = 32, fit_leads=None, n_noise_windows: int = 32,
                 max_voxels: int = 200_000, random_state: int | None = 0, batch_size: int = 16,
                 device=None, n_threads: int | None = None):
        self.forecaster = forecaster
        self.prior_precision = prior_precision
        self.optimize_prior = optimize_prior
        self.n_fit_windows = n_fit_windows
        self.fit_leads = fit_leads
        self.n_noise_windows = n_noise_windows
        self.max_voxels = max_voxels
        self.random_state = random_state
        self.batch_size = batch_size
        self.device = device
        self.n_threads = n_threads

    # ------------------------------------------------------------------ helpers
    def _pick(self, starts, n, rng):
        if starts.size > n:
            starts = np.sort(rng.choice(starts, n, replace=False))
        return starts

    def _linear(self):
        ro = self.forecaster_.model_.readout
        lin = nn.Linear(ro.weight.shape[1], 1).double()
        with torch.no_grad():
            lin.weight.copy_(ro.weight.detach().reshape(1, -1).double().cpu())
            lin.bias.copy_(ro.bias.detach().reshape(1).double().cpu())
        return lin

    def _jac(self, phi):
        """Rows ``[phi, 1]`` in the Laplace's parameter order, (M, P) float64."""
        j = torch.zeros(phi.shape[0], self.la_.n_params, dtype=torch.float64)
        j[:, self.la_.param_slices["weight"]] = phi.double()
        j[:, self.la_.param_slices["bias"]] = 1.0
        return j

    def _epistemic(self, phi):
        """``[phi, 1] Sigma [phi, 1]^T`` for features of shape (..., P-1), in scaled units."""
        shp = phi.shape[:-1]
        j = self._jac(phi.reshape(-1, phi.shape[-1]))
        return ((j @ self.cov_) * j).sum(-1).reshape(shp)

    # ------------------------------------------------------------------ fit
    def _validate(self):
        from .estimator import VideoForecaster
        if not isinstance(self.forecaster, VideoForecaster):
            raise TypeError(f"forecaster must be a VideoForecaster, got {type(self.forecaster).__name__}")
        for name in ("n_fit_windows", "n_noise_windows", "max_voxels", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        pp = self.prior_precision
        if isinstance(pp, bool) or not isinstance(pp, int | float) or not np.isfinite(pp) or pp <= 0:
            raise ValueError(f"prior_precision must be a finite number > 0, got {pp!r}")
        return resolve_device(self.device)

    def fit(self, ds: xr.Dataset):
        """Fit the posterior on training windows and the per-lead noise on validation windows."""
        device = self._validate()
        with torch_threads(self.n_threads):
            f = self.forecaster
            self.forecaster_ = f if hasattr(f, "model_") else clone(f).fit(ds)
            return self._fit(ds, device)

    def _fit(self, ds, device):
        from ...laplace import Laplace
        f = self.forecaster_
        rng = np.random.default_rng(seed_from(self.random_state))
        C, H = int(f.context), int(f.horizon)
        vol = _volume(ds)
        stim = ds["stimulus"].values if f.stimulus else None
        mask = torch.as_tensor(np.asarray(ds["segmentation"].values) > 0)
        leads = (np.unique(np.minimum(2 ** np.arange(6), H)) if self.fit_leads is None
                 else np.asarray(self.fit_leads, np.int64))
        starts = self._pick(make_windows(ds, "train", C, H)["start"].values, self.n_fit_windows, rng)
        if starts.size == 0:
            raise ValueError("the dataset has no training windows for the last-layer Laplace")
        rows_phi, rows_r = [], []
        n_rows = starts.size * leads.size * int(mask.sum())
        keep_p = min(1.0, self.max_voxels / max(n_rows, 1))
        for lo in range(0, starts.size, self.batch_size):
            s = starts[lo:lo + self.batch_size]
            _, phi, base = f.predict_arrays(vol, s, leads, stim, self.batch_size, return_features=True)
            tgt_idx = s[:, None] + C - 1 + leads[None, :]
            y = take_frames(vol, tgt_idx, dtype=torch.float64)
            r = (y - f.offset_) / f.scale_ - base.double()                  # (w, l, z, y, x)
            phi_m = phi.movedim(2, -1)[:, :, mask]                          # (w, l, voxel, P-1)
            r_m = r[:, :, mask]
            sel = torch.as_tensor(rng.random(r_m.shape) < keep_p) & ~torch.isnan(r_m)   # observed only
            rows_phi.append(phi_m[sel].double())
            rows_r.append(r_m[sel])
        phi_all, r_all = torch.cat(rows_phi), torch.cat(rows_r)[:, None]
        if phi_all.shape[0] < 2:
            raise ValueError("too few observed target voxels in the training windows for the "
                             "last-layer Laplace (are the target frames missing?)")
        lin = self._linear()
        with torch.no_grad():
            sigma = float((r_all - lin(phi_all)).pow(2).mean().sqrt().clamp_min(1e-6))
        lin = lin.to(device)
        la = Laplace(lin, "regression", hessian_structure="full", prior_precision=float(self.prior_precision),
                     sigma_noise=sigma)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(phi_all.to(device), r_all.to(device)), batch_size=65536)
        la.fit(loader)
        if self.optimize_prior:
            la.optimize_prior_precision(method="marglik", n_steps=100, lr=0.1)
        self.la_ = la
        self.cov_ = la.posterior_covariance().detach().double().cpu()
        self.sigma_fit_ = sigma
        self.n_rows_ = int(phi_all.shape[0])
        self._fit_noise(ds, vol, stim, rng)
        return self

    def _fit_noise(self, ds, vol, stim, rng):
        f = self.forecaster_
        C, H = int(f.context), int(f.horizon)
        val = make_windows(ds, "val", C, H)["start"].values
        split = "val"
        if val.size == 0:
            val, split = make_windows(ds, "train", C, H)["start"].values, "train"
        val = self._pick(val, self.n_noise_windows, rng)
        out = self._moments(ds, vol, stim, val)
        resid_v, epi_v, resid_n, epi_n = out
        self.noise_split_ = split
        self.voxel_noise_ = np.sqrt(np.maximum(resid_v - epi_v, 1e-12))       # (lead,)
        self.trace_noise_ = np.sqrt(np.maximum(resid_n - epi_n, 1e-12))
        return self

    def _moments(self, ds, vol, stim, starts):
        """Mean squared residual and mean epistemic variance per lead (voxels, neurons)."""
        f = self.forecaster_
        n_neuron = int(ds.sizes["neuron"])
        seg = np.asarray(ds["segmentation"].values)
        mask = torch.as_tensor(seg > 0)
        m = mask.numpy()
        sums, counts = np.zeros((4, int(f.horizon))), np.zeros((4, int(f.horizon)))

        def add(k, values):                 # per-lead sums / counts over observed entries only
            ok = np.isfinite(values)
            sums[k] += np.where(ok, values, 0.0).sum(axis=(0, 2))
            counts[k] += ok.sum(axis=(0, 2))

        for lo in range(0, starts.size, self.batch_size):
            s = starts[lo:lo + self.batch_size]
            mu, var, tmu, tvar = self._predict_block(vol, stim, s, seg, n_neuron, noise=False)
            y = take_frames(vol, s[:, None] + f.context - 1 + np.arange(1, f.horizon + 1)[None],
                            dtype=torch.float64).numpy()
            tr = segment_means(y, seg, n_neuron)
            observed = np.isfinite(y[..., m])                       # missing targets do not count
            add(0, ((mu - y) ** 2)[..., m])
            add(1, np.where(observed, var[..., m], np.nan))
            add(2, (tmu - tr) ** 2)
            add(3, np.where(np.isfinite(tr), tvar, np.nan))
        if np.any(counts == 0):
            raise ValueError("no observed target voxels at some lead in the windows used for the "
                             "noise estimate (are the target frames missing?)")
        return tuple(sums / counts)

    # ------------------------------------------------------------------ predict
    def _predict_block(self, vol, stim, s, seg, n_neuron, leads=None, noise=True):
        f = self.forecaster_
        leads = np.arange(1, f.horizon + 1) if leads is None else np.asarray(leads, np.int64)
        pred, phi, _ = f.predict_arrays(vol, s, leads, stim, self.batch_size, return_features=True)
        sc2 = f.scale_ ** 2
        var = sc2 * self._epistemic(phi.movedim(2, -1)).numpy()              # (w, l, z, y, x)
        phi_n = segment_means(phi.double().numpy(), seg, n_neuron)           # (w, l, P-1, neuron)
        tvar = sc2 * self._epistemic(torch.as_tensor(np.moveaxis(np.nan_to_num(phi_n), 2, -1))).numpy()
        tvar[np.isnan(phi_n[:, :, 0])] = np.nan
        tmu = segment_means(pred.astype(np.float64), seg, n_neuron)
        if noise:
            li = leads - 1
            var = var + (self.voxel_noise_[li] ** 2)[None, :, None, None, None]
            tvar = tvar + (self.trace_noise_[li] ** 2)[None, :, None]
        return pred.astype(np.float64), var, tmu, tvar

    def predict(self, ds: xr.Dataset, starts, leads=None) -> xr.Dataset:
        """Mean and predictive std for volumes (window, lead, z, y, x) and traces (window, lead, neuron)."""
        check_fitted(self, "cov_", "predict")
        with torch_threads(self.n_threads):
            return self._predict(ds, starts, leads)

    def _predict(self, ds, starts, leads):
        f = self.forecaster_
        starts = np.asarray(starts, np.int64).reshape(-1)
        leads = np.arange(1, f.horizon + 1) if leads is None else np.asarray(leads, np.int64).reshape(-1)
        if leads.min() < 1 or leads.max() > f.horizon:
            raise ValueError(f"leads must lie in [1, {f.horizon}], got {leads.tolist()}")
        vol, stim = _volume(ds), (ds["stimulus"].values if f.stimulus else None)
        seg, n = np.asarray(ds["segmentation"].values), int(ds.sizes["neuron"])
        parts = [self._predict_block(vol, stim, starts[lo:lo + self.batch_size], seg, n, leads)
                 for lo in range(0, starts.size, self.batch_size)]
        mu, var, tmu, tvar = (np.concatenate(p) for p in zip(*parts))
        return xr.Dataset(
            {"forecast": (("window", "lead", "z", "y", "x"), mu.astype(np.float32)),
             "std": (("window", "lead", "z", "y", "x"), np.sqrt(var).astype(np.float32)),
             "trace_forecast": (("window", "lead", "neuron"), tmu),
             "trace_std": (("window", "lead", "neuron"), np.sqrt(tvar))},
            coords={"window": np.arange(starts.size), "start": ("window", starts), "lead": leads,
                    "neuron": np.arange(n)},
            attrs=dict(method="video + last-layer Laplace", prior_precision=float(self.la_.prior_precision.reshape(-1)[0])))

    def calibration(self, ds: xr.Dataset, split: str = "test", levels=(0.5, 0.8, 0.9, 0.95),
                    max_windows: int | None = None) -> xr.Dataset:
        """Coverage of central predictive intervals per nominal level and lead on a split's windows.

        Variables ``coverage_voxel`` and ``coverage_neuron`` (level, lead), the mean predictive
        std per lead (``mean_std_voxel``, ``mean_std_neuron``) and the MAE of the mean.
        """
        check_fitted(self, "cov_", "calibration")
        f = self.forecaster_
        levels = np.asarray(levels, np.float64)
        if np.any((levels <= 0) | (levels >= 1)):
            raise ValueError(f"levels must lie in (0, 1), got {levels.tolist()}")
        starts = make_windows(ds, split, int(f.context), int(f.horizon))["start"].values
        if max_windows is not None:
            starts = self._pick(starts, int(max_windows), np.random.default_rng(seed_from(self.random_state) + 1))
        vol, stim = _volume(ds), (ds["stimulus"].values if f.stimulus else None)
        seg, n = np.asarray(ds["segmentation"].values), int(ds.sizes["neuron"])
        m = seg > 0
        zq = norm.ppf(0.5 + levels / 2)
        hits_v, hits_n = np.zeros((levels.size, f.horizon)), np.zeros((levels.size, f.horizon))
        cnt_n = np.zeros(f.horizon)
        sd_v, sd_n = np.zeros(f.horizon), np.zeros(f.horizon)
        for lo in range(0, starts.size, self.batch_size):
            s = starts[lo:lo + self.batch_size]
            mu, var, tmu, tvar = self._predict_block(vol, stim, s, seg, n)
            y = take_frames(vol, s[:, None] + f.context - 1 + np.arange(1, f.horizon + 1)[None],
                            dtype=torch.float64).numpy()
            tr = segment_means(y, seg, n)
            zv = (np.abs(mu - y) / np.sqrt(var))[..., m]                       # (w, l, voxel)
            zn = np.abs(tmu - tr) / np.sqrt(tvar)                              # (w, l, neuron)
            hits_v += (zv[None] <= zq[:, None, None, None]).mean(-1).sum(1)
            ok = ~np.isnan(zn)
            hits_n += ((zn[None] <= zq[:, None, None, None]) & ok[None]).sum((1, 3))
            cnt_n += ok.sum((0, 2))
            sd_v += np.sqrt(var)[..., m].mean(-1).sum(0)
            sd_n += np.nanmean(np.sqrt(tvar), -1).sum(0)
        w = max(starts.size, 1)
        leads = np.arange(1, f.horizon + 1)
        return xr.Dataset(
            {"coverage_voxel": (("level", "lead"), hits_v / w),
             "coverage_neuron": (("level", "lead"), hits_n / np.maximum(cnt_n, 1)),
             "mean_std_voxel": ("lead", sd_v / w), "mean_std_neuron": ("lead", sd_n / w)},
            coords={"level": levels, "lead": leads},
            attrs=dict(split=split, n_windows=int(starts.size),
                       description="fraction of targets inside the central predictive interval"))
