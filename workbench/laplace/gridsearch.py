"""Prior precision by grid search on a validation set (or by K-fold cross-validation).

The marginal likelihood picks the prior precision from the training data alone; when a held-out
set exists, the predictive's validation loss is the other common criterion (laplace-torch's
``method="gridsearch"``). Only the prior precision changes along the grid, so for every posterior
structure the curvature is fitted once and each grid value costs one predictive pass over the
validation set. Cross-validation (``cv=K``) refits the curvature on K-1 folds of the training data
(the MAP network stays the one trained on all of it), scores the held-out fold, and averages.

The default loss is the predictive negative log-likelihood per sample: for regression the
Gaussian NLL with variance ``f_var + σ²`` — the GLM predictive *mean* does not depend on the prior
precision, so a mean-squared-error criterion cannot choose one (laplace-torch's regression default;
:mod:`workbench.laplace.compat` keeps it for compatibility).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .._torch_utils import seed_from, torch_generator
from ..progress import check_callback, report
from ._validation import check_choice, unpack_batch

LOSSES = ("nll", "mse", "brier", "accuracy_error")


def prior_precision_grid(log_prior_prec_min=-4.0, log_prior_prec_max=4.0, grid_size=100, base=10.0):
    """``grid_size`` values ``base**t`` for t evenly spaced in [min, max] (laplace-torch's grid)."""
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    if not log_prior_prec_min <= log_prior_prec_max:
        raise ValueError(
            f"log_prior_prec_min={log_prior_prec_min} must be <= log_prior_prec_max={log_prior_prec_max}"
        )
    return np.asarray(base, float) ** np.linspace(log_prior_prec_min, log_prior_prec_max, grid_size)


def _batch_loss(la, pred, y, loss):
    """Summed loss of one batch and its number of samples."""
    name = la.lik_.name
    if callable(loss):
        return float(loss(pred, y)) * len(y), len(y)
    if name in ("regression", "heteroscedastic"):
        mu, var = pred
        mu = mu.reshape(len(mu), -1)
        y = y.reshape(mu.shape).to(mu.dtype)
        if loss == "mse":
            return float(((mu - y) ** 2).mean(-1).sum()), len(y)
        if loss != "nll":
            raise ValueError(f"loss={loss!r} is for classification; use 'nll' or 'mse'")
        v = torch.diagonal(var.reshape(len(mu), mu.shape[1], -1), dim1=-2, dim2=-1)
        if name == "regression":
            v = v + (la.sigma_noise**2).reshape(-1).expand(mu.shape[1])
        nll = 0.5 * (((y - mu) ** 2) / v + torch.log(2 * math.pi * v)).sum(-1)
        return float(nll.sum()), len(y)
    p = pred if name == "classification" else torch.cat([1 - pred, pred], -1)
    yy = y.reshape(-1).long()
    if loss == "nll":
        return float(-torch.log(p[torch.arange(len(yy)), yy].clamp_min(1e-300)).sum()), len(yy)
    if loss == "brier":
        onehot = torch.nn.functional.one_hot(yy, p.shape[-1]).to(p.dtype)
        return float(((p - onehot) ** 2).sum(-1).sum()), len(yy)
    if loss == "accuracy_error":
        return float((p.argmax(-1) != yy).sum()), len(yy)
    raise ValueError(f"loss={loss!r} is for regression; use one of {list(LOSSES)}")


def validation_loss(
    la, loader, loss="nll", pred_type="glm", link_approx="probit", n_samples=100, random_state=0
):
    """Mean per-sample ``loss`` of the Laplace predictive over ``loader`` of (X, y) batches.

    ``loss``: "nll" | "mse" (regression) | "brier" | "accuracy_error" (classification) or a
    callable ``loss(prediction, y) -> float`` (the batch mean; prediction as returned by ``la(X)``).
    """
    if not callable(loss):
        check_choice("loss", loss, LOSSES)
    gen = torch_generator(random_state, la.mean.device)
    total, count = 0.0, 0
    for bi, batch in enumerate(loader):
        X, y = unpack_batch(batch, bi)
        y = torch.as_tensor(y, device=la.mean.device)
        with torch.no_grad():
            pred = la(
                X, pred_type=pred_type, link_approx=link_approx, n_samples=n_samples, generator=gen
            )
        s, n = _batch_loss(la, pred, y, loss)
        total, count = total + s, count + n
    if count == 0:
        raise ValueError("val_loader is empty")
    return total / count


def _scan(la, grid, loader, kw, bar, out, done, total, callback):
    """Append the loss of each grid value to ``out``; raise StopIteration when asked to stop."""
    for v in grid:
        la.prior_precision = float(v)
        try:
            val = validation_loss(la, loader, **kw)
        except torch.linalg.LinAlgError:  # a grid value the posterior cannot factorise: skip it
            val = math.inf
        out.append(val if math.isfinite(val) else math.inf)
        done += 1
        bar.update(1)
        if report(
            callback,
            done,
            total,
            "gridsearch",
            f"prior precision {v:.3g}: loss {val:.4g}",
            {"loss": val},
        ):
            raise StopIteration
    return done


def _folds(train_loader, cv, random_state, batch_size):
    Xs, ys = zip(*(unpack_batch(b, i) for i, b in enumerate(train_loader)))
    X, y = torch.cat([torch.as_tensor(x) for x in Xs]), torch.cat([torch.as_tensor(t) for t in ys])
    n = len(X)
    if not 2 <= cv <= n:
        raise ValueError(
            f"cv must be an integer in [2, {n}] (the number of training samples), got {cv}"
        )
    perm = torch.from_numpy(np.random.default_rng(seed_from(random_state)).permutation(n))
    for k, held in enumerate(torch.tensor_split(perm, cv)):
        keep = perm[~torch.isin(perm, held)]
        fit = [
            (X[keep[i : i + batch_size]], y[keep[i : i + batch_size]])
            for i in range(0, len(keep), batch_size)
        ]
        yield k, fit, [(X[held], y[held])]


def gridsearch_prior_precision(
    la,
    val_loader=None,
    grid=None,
    loss="nll",
    pred_type="glm",
    link_approx="probit",
    n_samples=100,
    cv=None,
    train_loader=None,
    batch_size=256,
    random_state=0,
    progress=False,
    callback=None,
):
    """Choose the prior precision minimising the validation (or K-fold CV) loss; sets it on ``la``.

    grid : prior precisions to try (default :func:`prior_precision_grid`: 10^-4 .. 10^4, 100 values);
        each value is one scalar precision for every parameter.
    val_loader : validation (X, y) batches; or ``cv=K`` with ``train_loader`` (the data ``la`` was
        fitted on) for K-fold cross-validation, after which ``la`` is refitted on all of it.
    Returns an ``xarray.Dataset`` over ``prior_precision`` with ``loss`` (and ``fold_loss (fold,
    prior_precision)`` for CV); ``attrs["best"]`` is the chosen value. ``callback(Progress)`` is
    called per grid value; returning True stops the search (the best value so far is kept).
    """
    check_callback(callback)
    grid = prior_precision_grid() if grid is None else np.asarray(grid, float).reshape(-1)
    if len(grid) == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError("grid must hold finite prior precisions > 0")
    if (val_loader is None) == (cv is None):
        raise ValueError(
            "pass either val_loader=... (validation set) or cv=K with train_loader=..."
        )
    if cv is not None and train_loader is None:
        raise ValueError("cv=K needs train_loader=... (the data the Laplace was fitted on)")
    kw = dict(
        loss=loss,
        pred_type=pred_type,
        link_approx=link_approx,
        n_samples=n_samples,
        random_state=random_state,
    )
    n_scans = 1 if cv is None else int(cv)
    total = len(grid) * n_scans
    losses, done = [], 0
    with tqdm(total=total, desc="prior precision grid", disable=not progress, leave=False) as bar:
        try:
            if cv is None:
                losses.append([])
                done = _scan(la, grid, val_loader, kw, bar, losses[-1], done, total, callback)
            else:
                for _k, fit, held in _folds(train_loader, int(cv), random_state, batch_size):
                    la.fit(fit)
                    losses.append([])
                    done = _scan(la, grid, held, kw, bar, losses[-1], done, total, callback)
        except StopIteration:
            pass
    if cv is not None:
        la.fit(train_loader)
    return _result(la, grid, losses, cv)


def _result(la, grid, losses, cv):
    n = len(grid)
    arr = np.full((max(1, len(losses)), n), np.nan)
    for i, row in enumerate(losses):
        arr[i, : len(row)] = row
    mean = arr.mean(0) if cv is None else np.where(np.isnan(arr).any(0), np.nan, arr.mean(0))
    scored = np.where(np.isnan(mean), np.inf, mean)
    if not np.isfinite(scored).any():
        raise ValueError("no grid value gave a finite validation loss")
    best = float(grid[int(np.argmin(scored))])
    la.prior_precision = best
    data = {"loss": ("prior_precision", mean)}
    if cv is not None:
        data["fold_loss"] = (("fold", "prior_precision"), arr)
    return xr.Dataset(
        data,
        coords={
            "prior_precision": grid,
            **({"fold": np.arange(arr.shape[0])} if cv is not None else {}),
        },
        attrs={"best": best, "criterion": "cv" if cv is not None else "validation"},
    )
