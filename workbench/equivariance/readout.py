"""Per-layer readouts of a soft-equivariant network as xarray objects over (layer, pathway).

Quantities per layer and pathway (``conv`` = equivariant, ``free`` = fully connected):

``prior_precision``
    the learned prior precision δ of the pathway's parameters. When a pathway has several
    parameter tensors with their own precisions (``prior_structure="layerwise"``) this is their
    geometric mean weighted by tensor size (exactly the shared value under one precision per
    pathway).
``weight_norm``
    ‖θ_pathway‖₂ over all of the pathway's parameters.
``effective_dim``
    effective number of parameters Σ λ/(λ + δ) over the eigenvalues λ of the pathway's
    curvature block (``Laplace.effective_dimensions()``, summed over the pathway's tensors).
``output_rms``
    root mean square of the pathway's contribution to the layer output on a batch of inputs.
``n_params``
    number of parameters.

The **equivariance score** of a layer is the equivariant pathway's share, in [0, 1], measured two
ways (coordinate ``measure``):

``effective_dim``   d_conv / (d_conv + d_free)  — share of the parameters the data determine;
``output_rms``      r_conv / (r_conv + r_free)  — share of the layer's output signal.

A pathway a layer does not have counts as 0, so a pure convolution layer scores exactly 1 and a
pure free layer exactly 0 under both measures; when both terms are 0 the score is NaN (undefined,
e.g. a layer the data switched off entirely). The effective-dimension share is the Bayesian
reading (how many directions of each pathway the data pin down against its prior); the output
share is what the layer computes. They can disagree: a free pathway with many weakly determined
parameters can carry noticeable effective dimensions while contributing little output.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr

from workbench.equivariance.layers import PATHWAYS
from workbench.equivariance.models import SoftEquivariantNet, pathway_of_parameter

MEASURES = ("effective_dim", "output_rms")
READOUT_VARS = ("prior_precision", "weight_norm", "effective_dim", "output_rms", "n_params")


def equivariance_score(conv: xr.DataArray | np.ndarray, free: xr.DataArray | np.ndarray):
    """Share ``conv / (conv + free)`` of two non-negative amounts; NaN where both are 0."""
    conv_v, free_v = np.asarray(conv, dtype=float), np.asarray(free, dtype=float)
    if np.any(conv_v < 0) or np.any(free_v < 0):
        raise ValueError("equivariance_score needs non-negative amounts (effective dims, norms)")
    total = conv + free
    with np.errstate(invalid="ignore", divide="ignore"):
        share = conv / total
    if isinstance(share, xr.DataArray):
        return share.where(total > 0)
    return np.where(np.asarray(total) > 0, share, np.nan)


def add_equivariance(ds: xr.Dataset) -> xr.Dataset:
    """Add ``equivariance`` (…, layer, measure) computed from ``effective_dim`` and ``output_rms``."""
    scores = [equivariance_score(ds[m].sel(pathway="conv").fillna(0.0),
                                 ds[m].sel(pathway="free").fillna(0.0)) for m in MEASURES]
    eq = xr.concat(scores, dim=xr.DataArray(list(MEASURES), dims="measure", name="measure"))
    eq = eq.drop_vars("pathway", errors="ignore").transpose(..., "layer", "measure")
    eq.attrs = {"long_name": "equivariance score (equivariant pathway's share)",
                "description": "effective_dim: d_conv/(d_conv+d_free); output_rms: "
                               "r_conv/(r_conv+r_free); 1 = pure convolution, 0 = pure free"}
    return ds.assign(equivariance=eq)


def _tensor_values(model: SoftEquivariantNet, la) -> dict[str, dict[str, float]]:
    """Per parameter tensor: precision, squared norm, effective dim, size."""
    eff = la.effective_dimensions() if la is not None else {}
    prior = la.prior_precision_diag.detach() if la is not None else None
    slices = la.param_slices if la is not None else {}
    out = {}
    for name, p in model.named_parameters():
        v = {"sq_norm": float(p.detach().double().pow(2).sum()), "n": p.numel(),
             "delta": math.nan, "eff": math.nan}
        if name in slices:
            v["delta"] = float(prior[slices[name]].double().mean())
            v["eff"] = float(eff[name])
        out[name] = v
    return out


def layer_readout(model: SoftEquivariantNet, la=None, X: torch.Tensor | None = None) -> xr.Dataset:
    """Readout of ``model`` (and its fitted Laplace ``la``) as a Dataset over (layer, pathway).

    ``la`` may be None (then precisions and effective dims are NaN); ``X`` is a batch of inputs
    for ``output_rms`` (NaN without it). Pathways a layer does not have read NaN, except
    ``n_params`` (0) and ``output_rms`` (0 when ``X`` is given).
    """
    if not isinstance(model, SoftEquivariantNet):
        raise TypeError(f"model must be a SoftEquivariantNet, got {type(model).__name__}")
    layers = model.layer_names
    shape = (len(layers), len(PATHWAYS))
    acc = {k: np.zeros(shape) for k in ("sq_norm", "n", "log_delta_n", "n_delta", "eff")}
    has_eff = np.zeros(shape, dtype=bool)
    owner = pathway_of_parameter(model)
    for name, v in _tensor_values(model, la).items():
        layer, pathway = owner[name]
        if layer == "head":
            continue
        i, j = layers.index(layer), PATHWAYS.index(pathway)
        acc["sq_norm"][i, j] += v["sq_norm"]
        acc["n"][i, j] += v["n"]
        if not math.isnan(v["delta"]):
            acc["log_delta_n"][i, j] += math.log(v["delta"]) * v["n"]
            acc["n_delta"][i, j] += v["n"]
        if not math.isnan(v["eff"]):
            acc["eff"][i, j] += v["eff"]
            has_eff[i, j] = True
    present = acc["n"] > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = np.where(acc["n_delta"] > 0, np.exp(acc["log_delta_n"] / acc["n_delta"]), np.nan)
    eff = np.where(has_eff, acc["eff"], np.nan)
    if X is not None:
        rms = model.pathway_output_norms(X).double().cpu().numpy()
    else:
        rms = np.full(shape, np.nan)
    dims = ("layer", "pathway")
    ds = xr.Dataset(
        {
            "prior_precision": (dims, prior, {"long_name": "learned prior precision δ"}),
            "weight_norm": (dims, np.where(present, np.sqrt(acc["sq_norm"]), np.nan),
                            {"long_name": "weight norm ‖θ‖₂"}),
            "effective_dim": (dims, eff, {"long_name": "effective number of parameters "
                                                       "Σ λ/(λ+δ)"}),
            "output_rms": (dims, rms, {"long_name": "RMS of the pathway's output"}),
            "n_params": (dims, acc["n"].astype(np.int64), {"long_name": "number of parameters"}),
        },
        coords={"layer": np.arange(len(layers)), "pathway": list(PATHWAYS)},
    )
    if la is not None:
        # a missing pathway determines nothing: its effective dimension is 0, not unknown
        ds["effective_dim"] = ds["effective_dim"].where(present | has_eff, 0.0)
    return add_equivariance(ds)
