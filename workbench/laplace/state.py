"""``state_dict`` / ``load_state_dict`` of a fitted :class:`~.laplace.Laplace`.

A state holds the configuration, the MAP, the hyperparameters, the log-likelihood statistics and
each block's :meth:`~.structures.base.Block.state`. Loading re-plans the blocks on the model (so
they are bound to its layers again), checks that the saved blocks match that plan, and refuses a
model whose current weights are not the saved MAP: the posterior would silently be out of sync.
"""

from __future__ import annotations

import torch

CONFIG_KEYS = (
    "likelihood",
    "hessian_structure",
    "prior_structure",
    "curvature",
    "kfac",
    "subset_of_weights",
)
REQUIRED = (
    "config",
    "param_names",
    "mean",
    "prior_precision",
    "prior_mean",
    "sigma_noise",
    "sigma_fit",
    "n_data",
    "output_shape",
    "loglik_stats",
    "blocks",
)


def _det(t):
    return t.detach() if isinstance(t, torch.Tensor) else t


def laplace_state(la):
    return {
        "config": {
            "likelihood": la.lik_.name,
            "subset_of_weights": la.subset_of_weights,
            "hessian_structure": la.hessian_structure,
            "prior_structure": la.prior_structure,
            "curvature": la.curvature,
            "kfac": la.kfac,
            "temperature": la.temperature,
            "param_groups": la.param_groups,
            "group_structure": la.group_structure,
        },
        "param_names": list(la.spec_.names),
        "mean": la.mean.detach(),
        "prior_precision": la.prior_precision.detach(),
        "prior_mean": la.prior_mean.detach(),
        "sigma_noise": la.sigma_noise.detach(),
        "sigma_fit": la.sigma_fit_.detach(),
        "n_data": la.n_data,
        "output_shape": la.output_shape_,
        "input_shape": la.input_shape_,
        "loglik_stats": {k: _det(v) for k, v in la.loglik_stats_.items()},
        "blocks": [{k: _det(v) for k, v in b.state().items()} for b in la.blocks_],
    }


def _check_state(la, state):
    if not isinstance(state, dict):
        raise TypeError(
            f"state must be a dict from Laplace.state_dict(), got {type(state).__name__}"
        )
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ValueError(f"state is not a Laplace state_dict: it lacks {missing}")
    for k in ("mean", "prior_precision", "prior_mean", "sigma_noise", "sigma_fit"):
        if not isinstance(state[k], torch.Tensor):
            raise TypeError(f"state[{k!r}] must be a tensor, got {type(state[k]).__name__}")
    blocks = state["blocks"]
    if not isinstance(blocks, (list, tuple)) or not all(
        isinstance(b, dict) and "kind" in b and isinstance(b.get("idx"), torch.Tensor)
        for b in blocks
    ):
        raise ValueError("state['blocks'] must be the list of block states of Laplace.state_dict()")
    if not isinstance(state["loglik_stats"], dict) or not isinstance(state["config"], dict):
        raise ValueError("state['loglik_stats'] and state['config'] must be dicts")
    cfg = state["config"]
    for key in CONFIG_KEYS:
        mine = la.lik_.name if key == "likelihood" else getattr(la, key)
        if cfg.get(key) != mine:
            raise ValueError(
                f"state_dict was saved with {key}={cfg.get(key)!r}, this Laplace has {mine!r}"
            )


def _plan_on_model(la, state):
    if la.subset_of_weights == "last_layer":  # the saved names say which layer was last
        la.params, la.subset_of_weights = state["param_names"], "all"
        try:
            la.prepare(None)
        finally:
            la.subset_of_weights, la.params = "last_layer", None
    else:
        la.prepare(None)
    if list(la.spec_.names) != list(state["param_names"]):
        raise ValueError(
            "state_dict parameters do not match this model's selected parameters: saved "
            f"{list(state['param_names'])[:6]}, the model has {list(la.spec_.names)[:6]}"
        )


def _check_mean(la, mean):
    params = dict(la.model.named_parameters())
    current = torch.cat([params[n].detach().reshape(-1) for n in la.spec_.names])
    saved = mean.to(device=current.device, dtype=current.dtype)
    if saved.shape != current.shape:
        raise ValueError(
            f"state_dict mean has shape {tuple(saved.shape)}, expected {tuple(current.shape)}"
        )
    scale = float(current.abs().max()) if current.numel() else 1.0
    diff = float((current - saved).abs().max()) if current.numel() else 0.0
    if not diff <= 1e-6 * max(1.0, scale):
        raise ValueError(
            "the model's current weights are not the MAP this state_dict was fitted at "
            f"(max |difference| {diff:.3g}): load the model's weights first "
            "(model.load_state_dict(...)), then la.load_state_dict(state), or refit the Laplace"
        )


def _check_values(state):
    for k in ("sigma_noise", "sigma_fit"):
        t = state[k].detach()
        if t.numel() == 0 or not torch.isfinite(t).all() or (t <= 0).any():
            raise ValueError(f"state[{k!r}] must be finite and > 0")
    if state["sigma_noise"].shape != state["sigma_fit"].shape or state["sigma_fit"].ndim > 1:
        raise ValueError(
            f"state['sigma_noise'] has shape {tuple(state['sigma_noise'].shape)}, state['sigma_fit'] "
            f"{tuple(state['sigma_fit'].shape)}: they must be equal scalars or 1-D (one per output)"
        )
    stats = state["loglik_stats"]
    sse = stats.get("sse")
    if sse is not None and (not isinstance(sse, torch.Tensor) or sse.ndim != 1):
        raise ValueError("state['loglik_stats']['sse'] must be a 1-D tensor (one sum per output)")
    for k, v in stats.items():
        if v is not None and not torch.isfinite(torch.as_tensor(v)).all():
            raise ValueError(f"state['loglik_stats'][{k!r}] is not finite")
    n = state["n_data"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"state['n_data'] must be a positive int, got {n!r}")
    shape = state["output_shape"]
    if (
        not isinstance(shape, (tuple, list))
        or not shape
        or not all(isinstance(d, int) and d > 0 for d in shape)
    ):
        raise ValueError(f"state['output_shape'] must be a tuple of positive ints, got {shape!r}")


def load_laplace_state(la, state):
    """Check ``state`` against ``la`` (re-planned on its model), load the blocks' curvature, and
    return the other fitted values {mean, prior_precision, prior_mean, sigma_noise, sigma_fit,
    n_data, output_shape, input_shape, loglik_stats} on the model's device."""
    _check_state(la, state)
    _plan_on_model(la, state)
    ref = next(la.model.parameters())
    to = lambda t: t.to(device=ref.device) if isinstance(t, torch.Tensor) else t  # noqa: E731
    _check_mean(la, state["mean"])
    saved = state["blocks"]
    if len(saved) != len(la.blocks_) or any(
        st["kind"] != b.kind or not torch.equal(st["idx"].cpu(), b.idx.cpu())
        for st, b in zip(saved, la.blocks_)
    ):
        raise ValueError(
            "state_dict blocks do not match this Laplace's posterior blocks (other param_groups, "
            "group_structure or model architecture?)"
        )
    for st, b in zip(saved, la.blocks_):
        b.load({k: to(v) for k, v in st.items() if k not in ("kind", "idx", "names")})
        if not b.is_finite():
            raise ValueError(
                f"state_dict: the curvature of the {b.kind} block of {b.names} has NaN/inf"
            )
    _check_values(state)
    return {
        "mean": to(state["mean"]).to(ref.dtype),
        "prior_precision": la.layout_.check(to(state["prior_precision"])),
        "prior_mean": to(state["prior_mean"]),
        "sigma_noise": to(state["sigma_noise"]),
        "sigma_fit": to(state["sigma_fit"]),
        "n_data": state["n_data"],
        "output_shape": tuple(state["output_shape"]),
        "input_shape": state.get("input_shape"),
        "loglik_stats": {k: to(v) for k, v in state["loglik_stats"].items()},
    }
