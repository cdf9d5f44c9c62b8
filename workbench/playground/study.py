"""Fit a small MLP with online marglik training and turn its Laplace posterior into xarray results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench._checks import check_positive_float, check_positive_int
from workbench._deprecation import renamed_arguments
from workbench._torch_utils import resolve_device
from workbench.laplace import marglik_training

from .problems import ToyProblem, make_problem

__all__ = ["PlaygroundResult", "fit_playground", "make_mlp", "marglik_curve", "predictive_grid"]

STRUCTURES = ("full", "kron", "diag")


def make_mlp(n_inputs: int, n_outputs: int, width: int = 50, depth: int = 1, dtype=torch.float32) -> nn.Sequential:
    """A tanh MLP with ``depth`` hidden layers of ``width`` units."""
    if width < 1 or depth < 0:
        raise ValueError(f"width must be >= 1 and depth >= 0, got width={width}, depth={depth}")
    layers: list[nn.Module] = []
    d = n_inputs
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.Tanh()]
        d = width
    layers.append(nn.Linear(d, n_outputs))
    return nn.Sequential(*layers).to(dtype)


@dataclass
class PlaygroundResult:
    """A fitted toy model: its Laplace posterior, the training history and the chosen hyperparameters."""

    problem: ToyProblem
    la: object
    history: xr.Dataset
    hessian_structure: str
    width: int
    depth: int

    @property
    def prior_precision(self) -> float:
        return float(torch.as_tensor(self.la.prior_precision).detach().reshape(-1)[0])

    @property
    def sigma_noise(self) -> float | None:
        if self.problem.task != "regression":
            return None
        return float(torch.as_tensor(self.la.sigma_noise).detach().reshape(-1)[0])

    def training_data(self) -> xr.Dataset:
        """The training points as a Dataset over ``sample`` (for scatter overlays)."""
        X, y = self.problem.X.numpy(), self.problem.y.numpy()
        data = {f"x{i + 1}": ("sample", X[:, i]) for i in range(X.shape[1])}
        data["y"] = ("sample", y.reshape(-1))
        return xr.Dataset(data, coords={"sample": np.arange(len(X))})


@renamed_arguments(seed="random_state")
def fit_playground(
    problem: ToyProblem | str = "sine",
    hessian_structure: str = "kron",
    width: int = 50,
    depth: int = 1,
    n_epochs: int = 300,
    random_state: int = 0,
    lr: float = 1e-2,
    callback: Callable | None = None,
    progress: bool = False,
    device=None,
) -> PlaygroundResult:
    """Train an MLP on a toy problem with online marglik (scalar prior, and sigma for regression).

    After training, the prior precision is optimised once more with the final curvature held fixed,
    so the chosen value is the maximum of :func:`marglik_curve`. ``device``: ``None`` = CUDA when
    available, else CPU; results (:func:`predictive_grid`, :func:`marglik_curve`) come back on CPU.
    """
    if hessian_structure not in STRUCTURES:
        raise ValueError(f"unknown hessian_structure {hessian_structure!r}; choose one of {STRUCTURES}")
    width, n_epochs = check_positive_int("width", width), check_positive_int("n_epochs", n_epochs)
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"depth must be an integer >= 0, got {depth!r}")
    lr = check_positive_float("lr", lr)
    dev = resolve_device(device)
    if isinstance(problem, str):
        problem = make_problem(problem, random_state=random_state)
    torch.manual_seed(random_state)
    model = make_mlp(problem.n_inputs, problem.n_outputs, width, depth, dtype=problem.X.dtype).to(dev)
    data = TensorDataset(problem.X.to(dev), problem.y.to(dev))
    loader = DataLoader(data, batch_size=len(problem.X), shuffle=False)
    model, la, history = marglik_training(
        model,
        loader,
        problem.task,
        hessian_structure=hessian_structure,
        prior_structure="scalar",
        n_epochs=n_epochs,
        lr=lr,
        n_epochs_burnin=max(1, n_epochs // 10),
        marglik_frequency=max(1, n_epochs // 30),
        n_hypersteps=30,
        progress=progress,
        callback=callback,
    )
    la.optimize_prior_precision(method="marglik")
    return PlaygroundResult(problem, la, history, hessian_structure, width, depth)


def _device(result: PlaygroundResult) -> torch.device:
    return next(result.la.model.parameters()).device


def _grid_1d(bounds, n):
    return np.linspace(bounds[0][0], bounds[0][1], n)


def predictive_grid(result: PlaygroundResult, n: int = 200, level_std: float = 2.0) -> xr.Dataset:
    """GLM predictive on a grid over the problem's box.

    Regression -> Dataset over ``x`` with ``mean``, ``epistemic_std`` (sqrt of J Σ Jᵀ),
    ``predictive_std`` (with the observation noise) and the band ``lower``/``upper`` at
    ``level_std`` predictive standard deviations. Classification -> Dataset over (``x2``, ``x1``)
    with the probit-approximated ``prob`` per class, the ``confidence`` (max probability) and the
    predictive ``entropy``.
    """
    la, problem = result.la, result.problem
    dtype, dev = problem.X.dtype, _device(result)
    if problem.task == "regression":
        x = _grid_1d(problem.bounds, n)
        with torch.no_grad():
            f_mu, f_var = la(torch.as_tensor(x[:, None], dtype=dtype, device=dev), pred_type="glm")
        mean = f_mu.reshape(-1).cpu().numpy()
        epi = f_var.reshape(len(x), -1)[:, 0].clamp_min(0).sqrt().cpu().numpy()
        pred = np.sqrt(epi**2 + result.sigma_noise**2)
        return xr.Dataset(
            {
                "mean": ("x", mean),
                "epistemic_std": ("x", epi),
                "predictive_std": ("x", pred),
                "lower": ("x", mean - level_std * pred),
                "upper": ("x", mean + level_std * pred),
            },
            coords={"x": x},
            attrs={"sigma_noise": result.sigma_noise, "prior_precision": result.prior_precision, "band_std": level_std},
        )
    (a0, a1), (b0, b1) = problem.bounds
    x1, x2 = np.linspace(a0, a1, n), np.linspace(b0, b1, n)
    g1, g2 = np.meshgrid(x1, x2)
    pts = torch.as_tensor(np.stack([g1.ravel(), g2.ravel()], 1), dtype=dtype, device=dev)
    with torch.no_grad():
        probs = la(pts, pred_type="glm", link_approx="probit").reshape(n, n, -1).cpu().numpy()
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(-1)
    return xr.Dataset(
        {
            "prob": (("x2", "x1", "class"), probs),
            "confidence": (("x2", "x1"), probs.max(-1)),
            "entropy": (("x2", "x1"), entropy),
        },
        coords={"x1": x1, "x2": x2, "class": np.arange(probs.shape[-1])},
        attrs={"prior_precision": result.prior_precision},
    )


def marglik_curve(result: PlaygroundResult, prior_precisions=None) -> xr.DataArray:
    """Log marginal likelihood over a grid of scalar prior precisions, curvature held at the fit."""
    grid = np.logspace(-3, 3, 61) if prior_precisions is None else np.asarray(prior_precisions, dtype=float)
    la = result.la
    dtype, dev = result.problem.X.dtype, _device(result)
    with torch.no_grad():
        values = [float(la.log_marginal_likelihood(prior_precision=torch.tensor(p, dtype=dtype, device=dev)))
                  for p in grid]
    return xr.DataArray(
        np.asarray(values),
        dims="prior_precision",
        coords={"prior_precision": grid},
        name="log_marglik",
        attrs={"chosen_prior_precision": result.prior_precision, "long_name": "log marginal likelihood"},
    )
