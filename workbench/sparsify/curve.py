"""Sparsity curves: accuracy / NLL / ECE / cost versus sparsity as an ``xarray.Dataset``."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from workbench._atomic import atomic_file
from workbench._deprecation import renamed_arguments
from workbench._paths import DATA_DIR
from workbench._torch_utils import resolve_device, torch_threads
from workbench.progress import Progress, legacy_callback, report

from .criteria import CRITERIA
from .data import TASKS, Task, make_task
from .estimator import SpaM
from .flops import count_flops, count_parameters
from .masks import check_sparsity
from .models import make_model, prunable_layers
from .training import PRIORS

__all__ = ["CURVE_DIR", "DEFAULT_SPARSITIES", "TASK_DEFAULTS", "sparsity_curve",
           "cached_sparsity_curve", "curve_settings", "curve_path"]

#: where :func:`cached_sparsity_curve` keeps its files by default
CURVE_DIR = DATA_DIR / "sparsify"

DEFAULT_SPARSITIES = (0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)

#: training settings per task (CPU minutes for a whole curve)
TASK_DEFAULTS = {
    "breast_cancer": dict(n_epochs=60, lr=1e-2, batch_size=64, n_epochs_burnin=10,
                          marglik_frequency=5, n_hypersteps=30),
    "digits": dict(n_epochs=40, lr=1e-2, batch_size=64, n_epochs_burnin=5,
                   marglik_frequency=5, n_hypersteps=30),
}

METRICS = ("accuracy", "nll", "ece", "n_params", "flops", "param_sparsity")


def curve_settings(task="breast_cancer", priors=("map", "diagonal"),
                   criteria=("opd", "magnitude", "snip", "random"),
                   sparsities=DEFAULT_SPARSITIES, seeds=(0, 1, 2), structured=False,
                   hessian_structure="kron", finetune_epochs=0, map_prior_precision=1.0,
                   train_kwargs=None) -> dict:
    """Validated, JSON-able settings of a curve (the cache key)."""
    if isinstance(task, Task):
        task = task.name
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    priors, criteria = list(priors), list(criteria)
    if not priors or not criteria:
        raise ValueError("priors and criteria must be non-empty")
    for p in priors:
        if p not in PRIORS:
            raise ValueError(f"unknown prior {p!r}; known: {PRIORS}")
    for c in criteria:
        if c not in CRITERIA:
            raise ValueError(f"unknown criterion {c!r}; known: {sorted(CRITERIA)}")
    sparsities = [check_sparsity(s, "sparsities") for s in sparsities]
    if len(set(sparsities)) != len(sparsities) or len(set(priors)) != len(priors) \
            or len(set(criteria)) != len(criteria) or len(set(seeds)) != len(seeds):
        raise ValueError("priors, criteria, sparsities and seeds must not repeat entries")
    if hessian_structure not in ("kron", "diag"):
        raise ValueError(f"hessian_structure must be 'kron' or 'diag', got {hessian_structure!r}")
    train = dict(TASK_DEFAULTS[task])
    train.update(train_kwargs or {})
    return dict(task=task, priors=priors, criteria=criteria, sparsities=sorted(sparsities),
                seeds=[int(s) for s in seeds], structured=bool(structured),
                hessian_structure=hessian_structure, finetune_epochs=int(finetune_epochs),
                map_prior_precision=float(map_prior_precision), train_kwargs=train)


@renamed_arguments(num_threads="n_threads")
def sparsity_curve(task="breast_cancer", priors=("map", "diagonal"),
                   criteria=("opd", "magnitude", "snip", "random"),
                   sparsities: Sequence[float] = DEFAULT_SPARSITIES, seeds=(0, 1, 2),
                   structured: bool = False, hessian_structure: str = "kron",
                   finetune_epochs: int = 0, map_prior_precision: float = 1.0,
                   train_kwargs: dict | None = None, progress: bool = True,
                   callback=None, n_threads: int | None = None,
                   device=None) -> xr.Dataset:
    """Prune networks trained under each prior with each criterion at each sparsity.

    For every seed (data split, initialisation, random scores) and prior, one network is
    trained (``"map"``: weight decay; otherwise online marglik with that prior structure) and
    every criterion scores it once; each sparsity is then a one-shot prune (global for
    unstructured, per hidden layer for ``structured=True``, whose networks are physically
    shrunk), optionally fine-tuned with the mask kept, and evaluated on the test split.

    Returns a Dataset with dims ``(prior, criterion, sparsity, seed)`` holding ``accuracy``,
    ``nll``, ``ece``, ``n_params``, ``flops`` (per example) and ``param_sparsity`` (1 - params /
    dense params), ``layer_sparsity`` with an extra ``layer`` dim (fraction of each layer's
    weights that are zero), and ``log10_prior_precision`` over ``(prior, seed, parameter)``.
    With ``structured=True`` the ``sparsity`` coordinate is the fraction of units removed from
    every hidden layer; what that costs is measured on the shrunk network (``n_params``,
    ``flops``, ``param_sparsity``). Unstructured sparsity counts the prunable weights
    (Linear/Conv weights; biases are kept and counted in ``n_params``).

    ``callback(Progress)`` is called after every training epoch (stage ``"train"``, done / total
    = epochs of that network, state ``prior``/``seed``) and after every evaluated point (stage
    ``"curve"``, done / total = points, metric ``accuracy``, state ``prior``/``criterion``/
    ``sparsity``/``seed``); both states hold ``overall``, the share of the whole curve's work done
    (for progress bars). Returning True stops and the points not reached stay NaN. ``n_threads`` temporarily sets torch's intra-op threads
    (these models are tiny: 1 is fastest on a busy machine; ``num_threads`` is its deprecated
    name). ``device`` is where the networks train (None: CUDA when available).
    """
    callback = legacy_callback(callback, 3, _legacy_args, "sparsity_curve")
    cfg = curve_settings(task, priors, criteria, sparsities, seeds, structured,
                         hessian_structure, finetune_epochs, map_prior_precision, train_kwargs)
    with torch_threads(n_threads):
        return _curve(cfg, progress, callback, resolve_device(device))


def _legacy_args(p: Progress):
    return p.done, p.total, {**p.state, **p.metrics}


def _curve(cfg, progress, callback, device):
    P, C, S, R = cfg["priors"], cfg["criteria"], cfg["sparsities"], cfg["seeds"]
    ref = make_model(cfg["task"])
    layers = list(prunable_layers(ref))
    n_par = sum(p.numel() for p in ref.parameters())
    shape = (len(P), len(C), len(S), len(R))
    res = {m: np.full(shape, np.nan) for m in METRICS}
    res["layer_sparsity"] = np.full(shape + (len(layers),), np.nan)
    res["log10_prior_precision"] = np.full((len(P), len(R), n_par), np.nan)
    res["train_time"] = np.full((len(P), len(R)), np.nan)
    total, done = len(P) * len(C) * len(S) * len(R), 0
    # the share of the whole work that is done, for progress bars: one unit per training epoch
    # and one per evaluated point (training is most of the time)
    n_epochs = int(cfg["train_kwargs"].get("n_epochs", 1))
    units = len(R) * len(P) * (n_epochs + len(C) * len(S))
    units_done = 0
    bar = tqdm(total=total, disable=not progress, desc=f"sparsity curve ({cfg['task']})")
    t_start = time.perf_counter()
    dense = None
    try:
        for r, seed in enumerate(R):
            data = make_task(cfg["task"], random_state=seed)
            if dense is None:
                example = data.X_train[:1]
                dense = (count_parameters(ref, sparse=False), count_flops(ref, example, sparse=False))
            for p, prior in enumerate(P):
                t0 = time.perf_counter()
                on_epoch = _training_reporter(callback, units_done, units, prior, seed)
                est = SpaM(make_model(cfg["task"], random_state=seed), prior=prior,
                           hessian_structure=cfg["hessian_structure"],
                           prior_precision=cfg["map_prior_precision"], random_state=seed,
                           device=device, callback=on_epoch, **cfg["train_kwargs"])
                est.fit(data.X_train, data.y_train)
                if on_epoch is not None and on_epoch.stopped:
                    raise _Stop
                units_done += n_epochs
                res["train_time"][p, r] = time.perf_counter() - t0
                res["log10_prior_precision"][p, r] = np.log10(est.prior_precision_diag().numpy())
                for c, crit in enumerate(C):
                    scores = est.scores(crit)
                    for s, sp in enumerate(S):
                        pn = est.prune(sp, crit, structured=cfg["structured"],
                                       finetune_epochs=cfg["finetune_epochs"], scores=scores)
                        ev = _record(res, (p, c, s, r), pn, data, dense[0], layers)
                        done += 1
                        units_done += 1
                        bar.update()
                        if report(callback, done, total, "curve",
                                  f"{prior} / {crit} at sparsity {sp:g}, seed {seed}",
                                  {"accuracy": ev["accuracy"]},
                                  dict(prior=prior, criterion=crit, sparsity=sp, seed=seed,
                                       overall=units_done / units)):
                            raise _Stop
    except _Stop:
        pass
    finally:
        bar.close()
    return _to_dataset(cfg, res, ref, layers, dense, time.perf_counter() - t_start)


class _TrainingReporter:
    """SpaM's per-epoch callback inside a curve: reports stage ``"train"`` (done / total =
    epochs of this network; ``state["overall"]`` = share of the whole curve's work) and
    remembers when the curve's callback asked to stop."""

    def __init__(self, callback, units_done, units, prior, seed):
        self.callback, self.units_done, self.units = callback, units_done, units
        self.prior, self.seed, self.stopped = prior, seed, False

    def __call__(self, p: Progress) -> bool:
        overall = (self.units_done + p.done) / self.units
        self.stopped = bool(report(
            self.callback, p.done, p.total, "train",
            f"training the {self.prior} network for seed {self.seed}: epoch {p.done}/{p.total}",
            dict(p.metrics), dict(prior=self.prior, seed=self.seed, overall=overall)))
        return self.stopped


def _training_reporter(callback, units_done, units, prior, seed):
    return None if callback is None else _TrainingReporter(callback, units_done, units, prior, seed)


class _Stop(Exception):
    """The callback asked to stop: the points not reached stay NaN."""


def _record(res, idx, pn, data, dense_params, layers) -> dict:
    ev = pn.evaluate(data.X_test, data.y_test)
    for m in ("accuracy", "nll", "ece"):
        res[m][idx] = ev[m]
    res["n_params"][idx] = pn.n_params
    res["flops"][idx] = pn.flops
    res["param_sparsity"][idx] = 1.0 - pn.n_params / dense_params
    res["layer_sparsity"][idx] = [pn.layer_sparsity[k] for k in layers]
    return ev


def _to_dataset(cfg, res, ref, layers, dense, wall_time) -> xr.Dataset:
    player = np.concatenate([[n.rsplit(".", 1)[0]] * p.numel() for n, p in ref.named_parameters()])
    dims = ("prior", "criterion", "sparsity", "seed")
    ds = xr.Dataset(
        {m: (dims, res[m]) for m in METRICS}
        | {"layer_sparsity": (dims + ("layer",), res["layer_sparsity"]),
           "log10_prior_precision": (("prior", "seed", "parameter"), res["log10_prior_precision"]),
           "train_time": (("prior", "seed"), res["train_time"])},
        coords=dict(prior=cfg["priors"], criterion=cfg["criteria"], sparsity=cfg["sparsities"],
                    seed=cfg["seeds"], layer=layers, parameter=np.arange(len(player)),
                    parameter_layer=("parameter", player)))
    ds["accuracy"].attrs.update(long_name="test accuracy")
    ds["nll"].attrs.update(long_name="test NLL per example")
    ds["ece"].attrs.update(long_name="test ECE (15 bins)")
    ds["flops"].attrs.update(long_name="FLOPs per example", units="FLOP")
    ds["train_time"].attrs.update(units="s")
    ds.attrs.update(task=cfg["task"], structured=int(cfg["structured"]),
                    hessian_structure=cfg["hessian_structure"],
                    finetune_epochs=cfg["finetune_epochs"], n_params_dense=dense[0],
                    flops_dense=dense[1], wall_time_s=wall_time,
                    map_prior_precision=cfg["map_prior_precision"],
                    **_netcdf_attrs(cfg["train_kwargs"], prefix="train_"))
    # each parameter's tensor name is a coordinate (netCDF3 attributes cannot hold string lists)
    ptensor = np.concatenate([[n] * p.numel() for n, p in ref.named_parameters()])
    return ds.assign_coords(parameter_tensor=("parameter", ptensor))


def _netcdf_attrs(settings: dict, prefix: str) -> dict:
    """``settings`` as typed attributes netCDF3 can store (bools as 0/1; ``None`` left out)."""
    out = {}
    for k, v in settings.items():
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, (int, float, str)) or (isinstance(v, (list, tuple))
                                                and all(isinstance(x, (int, float)) for x in v)):
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out


def _key(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def curve_path(cache_dir: str | os.PathLike = CURVE_DIR, **settings) -> Path:
    """The file :func:`cached_sparsity_curve` keeps the curve with ``settings`` in (it may not
    exist yet); the settings are validated."""
    return Path(cache_dir) / f"curve-{_key(curve_settings(**settings))}.nc"


@renamed_arguments(num_threads="n_threads")
def cached_sparsity_curve(cache_dir: str | os.PathLike | None = CURVE_DIR,
                          progress: bool = True, callback=None, n_threads: int | None = None,
                          device=None, **settings) -> xr.Dataset:
    """:func:`sparsity_curve` memoised on disk (``<cache_dir>/curve-<hash>.nc``, atomic write).

    The key is the validated settings (:func:`curve_settings`); ``cache_dir`` defaults to
    ``sparsify/`` in the data directory (``$WORKBENCH_DATA``, else the repository's ``data/``),
    ``None`` disables the cache. A curve stopped early by its ``callback`` is not cached.
    """
    run = dict(progress=progress, callback=callback, n_threads=n_threads, device=device)
    if cache_dir is None:
        curve_settings(**settings)
        return sparsity_curve(**settings, **run)
    path = curve_path(cache_dir, **settings)
    if path.exists():
        with xr.open_dataset(path, engine="scipy") as ds:
            return ds.load()
    ds = sparsity_curve(**settings, **run)
    if ds["accuracy"].notnull().all():
        with atomic_file(path) as tmp:
            ds.to_netcdf(tmp, engine="scipy")
    return ds
