"""Subnetwork Laplace (Daxberger et al., ICML 2021): a Laplace over a chosen set of weights.

The chosen entries of the network's flat parameter vector (trainable parameters in
``model.named_parameters()`` order — ``torch.nn.utils.parameters_to_vector`` of them) become one
parameter tensor ``theta`` of a thin wrapper module, :class:`SubnetworkModel`; every other weight
stays fixed at its MAP value. ``Laplace(model, likelihood, subset_of_weights="subnetwork",
subnetwork_indices=idx, hessian_structure="full")`` is then the ordinary Laplace over ``theta``:
evidence, predictives, samples and prior tuning are those of the full Laplace restricted to the
indices (the dense reference test checks exactly that).

:func:`select_subnetwork` picks indices by the largest marginal variance under a diagonal
Laplace over all weights, by the largest magnitude, or at random.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from .._torch_utils import seed_from

SELECTIONS = ("largest_variance", "largest_magnitude", "random")


def trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def check_indices(indices, n_params):
    """A sorted 1-D LongTensor of distinct indices in [0, n_params)."""
    if not isinstance(indices, torch.Tensor):
        try:
            indices = torch.as_tensor(indices)
        except (TypeError, ValueError) as err:
            raise TypeError("subnetwork_indices must be a 1-D tensor of integer indices") from err
    if indices.ndim != 1 or indices.numel() == 0 or indices.is_floating_point():
        raise ValueError(
            "subnetwork_indices must be a non-empty 1-D tensor of integer indices, got shape "
            f"{tuple(indices.shape)} and dtype {indices.dtype}"
        )
    indices = indices.long().cpu()
    if indices.min() < 0 or indices.max() >= n_params:
        raise ValueError(
            f"subnetwork_indices must lie in [0, {n_params}) (the trainable parameters)"
        )
    if indices.unique().numel() != indices.numel():
        raise ValueError("subnetwork_indices must not contain duplicate entries")
    return indices.sort().values


class SubnetworkModel(nn.Module):
    """``model`` with the flat-vector entries ``indices`` replaced by the parameter ``theta``.

    ``module`` is the wrapped network; ``theta`` starts at the network's current values of those
    entries (build the wrapper after training: the MAP of the subnetwork is that copy)."""

    def __init__(self, model, indices):
        super().__init__()
        params = trainable(model)
        n_total = sum(p.numel() for _, p in params)
        self.module = model
        self.register_buffer("indices", check_indices(indices, n_total), persistent=False)
        flat = torch.cat([p.detach().reshape(-1) for _, p in params])
        self.theta = nn.Parameter(flat[self.indices.to(flat.device)].clone())
        self._touched, off, pos = {}, 0, 0
        for name, p in params:
            inside = self.indices[(self.indices >= off) & (self.indices < off + p.numel())]
            if inside.numel():
                self._touched[name] = (inside - off, torch.arange(pos, pos + inside.numel()))
                pos += inside.numel()
            off += p.numel()
        # per-sample gradients w.r.t. theta pass through whole weight tensors: the Jacobian chunk
        # budget (numbers of theta-gradients) is scaled by this so memory stays bounded
        self.chunk_scale = len(self.indices) / sum(dict(params)[n].numel() for n in self._touched)

    def forward(self, x):
        replaced = {}
        for name, (local, pos) in self._touched.items():
            owner, _, attr = name.rpartition(".")
            p = getattr(self.module.get_submodule(owner), attr)  # also under functional_call
            flat = p.reshape(-1).index_put((local.to(p.device),), self.theta[pos.to(p.device)])
            replaced[name] = flat.reshape(p.shape)
        return functional_call(self.module, replaced, (x,))

    def full_vector(self, theta=None):
        """The network's flat trainable parameter vector with ``theta`` (default: the current one)
        in place: (P_total,), or (n, P_total) for a batch of ``theta`` rows."""
        base = torch.cat([p.detach().reshape(-1) for _, p in trainable(self.module)])
        theta = self.theta.detach() if theta is None else theta
        out = base.expand(*theta.shape[:-1], base.numel()).clone()
        out[..., self.indices.to(out.device)] = theta
        return out


def wrap_subnetwork(model, indices, params, hessian_structure):
    """(SubnetworkModel, ["theta"]) for ``Laplace(subset_of_weights="subnetwork")``."""
    if indices is None:
        raise ValueError(
            "subset_of_weights='subnetwork' needs subnetwork_indices=... (e.g. from "
            "workbench.laplace.subnetwork.select_subnetwork)"
        )
    if params is not None:
        raise ValueError("pass either params=... or subset_of_weights='subnetwork', not both")
    if hessian_structure == "kron":
        raise ValueError("subset_of_weights='subnetwork' needs hessian_structure 'full' or 'diag'")
    return SubnetworkModel(model, indices), ["theta"]


def select_subnetwork(
    model,
    n_params,
    method="largest_variance",
    train_loader=None,
    likelihood=None,
    random_state=0,
    **laplace_kwargs,
):
    """Indices (sorted LongTensor) of ``n_params`` entries of the flat trainable parameter vector.

    method : "largest_variance" (marginal variance under a diagonal Laplace over all weights,
        fitted on ``train_loader`` with ``likelihood`` and ``laplace_kwargs``, e.g. prior_precision)
        | "largest_magnitude" | "random" (seeded by ``random_state``).
    """
    from .laplace import Laplace  # noqa: PLC0415 (laplace imports this module)

    if method not in SELECTIONS:
        raise ValueError(f"method={method!r} is not supported; expected one of {list(SELECTIONS)}")
    flat = torch.cat([p.detach().reshape(-1) for _, p in trainable(model)])
    if (
        isinstance(n_params, bool)
        or not isinstance(n_params, int)
        or not 1 <= n_params <= flat.numel()
    ):
        raise ValueError(f"n_params must be an int in [1, {flat.numel()}], got {n_params!r}")
    if method == "largest_magnitude":
        score = flat.abs()
    elif method == "random":
        g = torch.Generator().manual_seed(seed_from(random_state))
        score = torch.rand(flat.numel(), generator=g)
    else:
        if train_loader is None or likelihood is None:
            raise ValueError("method='largest_variance' needs train_loader=... and likelihood=...")
        names = [n for n, _ in trainable(model)]
        la = Laplace(model, likelihood, hessian_structure="diag", params=names, **laplace_kwargs)
        score = 1 / la.fit(train_loader).posterior_precision_diagonal()
    top = torch.argsort(score.cpu(), descending=True, stable=True)[:n_params]
    return top.sort().values
