"""Experiment runs: train on a task, return one xarray Dataset, save/load it atomically (netCDF).

A run Dataset is the estimator's ``history_`` plus the test accuracy, the task and the settings in
``attrs``; dashboards, the notebook and the benchmark all plot / tabulate these same objects.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import xarray as xr

from workbench._atomic import atomic_file
from workbench._deprecation import renamed_arguments, warn_renamed
from workbench._paths import DATA_DIR
from workbench.equivariance.tasks import TASKS, make_task

MODELS = {"soft": ("conv", "free"), "cnn": "conv", "fc": "free"}
#: version of what a cached run means (training algorithm, parameterisation, defaults, saved
#: variables); part of every cache key, so changing it makes old files stale instead of reused
RUN_FORMAT_VERSION = 4
DEFAULT_DIR = DATA_DIR
RUN_DIR = DEFAULT_DIR / "equivariance"


@renamed_arguments(seed="random_state")
def run_equivariance(task: str = "translated", model: str = "soft", random_state: int = 0,
                     n_train: int = 1000, n_test: int = 500, canvas: int = 16,
                     **estimator_kwargs) -> xr.Dataset:
    """Train a :class:`LearnedEquivarianceClassifier` (``model`` = soft / cnn / fc) on ``task``
    (data and network seeded by ``random_state``; ``seed`` is its deprecated name)."""
    from workbench.equivariance.training import LearnedEquivarianceClassifier

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {tuple(MODELS)}")
    if task not in ("translated", "quadrant"):
        raise ValueError(f"learned equivariance runs on 'translated' or 'quadrant', got {task!r}")
    data = make_task(task, n_train, n_test, canvas, random_state=random_state)
    est = LearnedEquivarianceClassifier(pathways=MODELS[model], random_state=random_state,
                                        **estimator_kwargs)
    est.fit(data.X_train, data.y_train, data.X_test, data.y_test)
    ds = est.history_.copy()
    ds.attrs.update(task=task, model=model, n_train=n_train, n_test=n_test, canvas=canvas,
                    test_accuracy=est.score(data.X_test, data.y_test), fit_time=est.fit_time_,
                    settings=json.dumps({k: _jsonable(v) for k, v in estimator_kwargs.items()
                                         if k != "callback"}))
    return ds


@renamed_arguments(seed="random_state")
def run_invariance(learn_invariance: bool = True, random_state: int = 0, n_train: int = 1000,
                   n_test: int = 500, canvas: int = 16, max_rotation: float = 1.5707963267948966,
                   **estimator_kwargs) -> xr.Dataset:
    """Train a :class:`LearnedInvarianceClassifier` on the rotated-digits task (seeded by
    ``random_state``; ``seed`` is its deprecated name)."""
    from workbench.equivariance.invariance import LearnedInvarianceClassifier

    data = make_task("rotated", n_train, n_test, canvas, random_state=random_state,
                     max_rotation=max_rotation)
    est = LearnedInvarianceClassifier(learn_invariance=learn_invariance,
                                      random_state=random_state, **estimator_kwargs)
    est.fit(data.X_train, data.y_train, data.X_test, data.y_test)
    ds = est.history_.copy()
    ds.attrs.update(task="rotated", model="lila" if learn_invariance else "plain",
                    n_train=n_train, n_test=n_test, canvas=canvas, max_rotation=max_rotation,
                    test_accuracy=est.score(data.X_test, data.y_test), fit_time=est.fit_time_,
                    settings=json.dumps({k: _jsonable(v) for k, v in estimator_kwargs.items()
                                         if k != "callback"}))
    return ds


def _jsonable(v):
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, int | float | str | bool) or v is None:
        return v
    return repr(v)


def run_key(**settings) -> str:
    """Stable short hash of a run's settings (the tail of its file name, see :func:`run_name`)."""
    blob = json.dumps({k: _jsonable(v) for k, v in sorted(settings.items())}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def run_name(kind: str, **settings) -> str:
    """File stem of a run: its main settings in words, then a short key of all its settings.

    ``equivariance_translated_soft_1000img_12ep_seed0_<key6>``; the key only keeps runs apart
    that differ in a secondary setting (learning rate, widths, ...).
    """
    rs = settings.get("random_state", settings.get("seed", 0))
    parts = [kind]
    if kind == "equivariance":
        parts += [str(settings.get("task", "translated")), str(settings.get("model", "soft"))]
    else:
        parts += ["rotated", "lila" if settings.get("learn_invariance", True) else "plain"]
    if "n_train" in settings:
        parts.append(f"{settings['n_train']}img")
    if "n_epochs" in settings:
        parts.append(f"{settings['n_epochs']}ep")
    parts.append(f"seed{rs}")
    key = run_key(kind=kind, format_version=RUN_FORMAT_VERSION, **settings)
    return "_".join(parts) + f"_{key[:6]}"


def run_path(kind: str, directory: str | os.PathLike | None = None, **settings) -> Path:
    """Where :func:`cached_run` keeps the run of ``kind`` with ``settings`` (default directory:
    ``equivariance/`` in the data directory; ``callback`` and ``progress`` are not settings)."""
    if kind not in ("equivariance", "invariance"):
        raise ValueError(f"kind must be 'equivariance' or 'invariance', got {kind!r}")
    directory = Path(directory) if directory is not None else RUN_DIR
    key_settings = {k: v for k, v in settings.items() if k not in ("callback", "progress")}
    return directory / f"{run_name(kind, **key_settings)}.nc"


def run_settings(ds: xr.Dataset) -> dict:
    """The settings a run Dataset was made with: task, model, n_train, n_test, canvas,
    random_state and the estimator keywords (``n_epochs``, ``lr``, ...) from its attrs."""
    out = {k: ds.attrs[k] for k in ("task", "model", "n_train", "n_test", "canvas") if k in ds.attrs}
    for k in ("n_train", "n_test", "canvas"):
        if k in out:
            out[k] = int(out[k])
    if "seed" in ds.attrs:
        out["random_state"] = int(ds.attrs["seed"])
    out.update(json.loads(ds.attrs.get("settings", "{}")))
    return out


def run_label(ds: xr.Dataset, accuracy: bool = True) -> str:
    """One line naming a run by its settings and result, for people (no hashes)."""
    s = run_settings(ds)
    what = (f"{s.get('model', 'lila')} on rotated digits" if s.get("task") == "rotated"
            else f"{s.get('model', '?')} on {s.get('task', '?')}")
    text = (f"{what}, {s.get('n_train', '?')} images, {s.get('n_epochs', '?')} epochs, "
            f"seed {s.get('random_state', '?')}")
    acc = ds.attrs.get("test_accuracy")
    return text + (f" (test accuracy {float(acc):.2f})" if accuracy and acc is not None else "")


def save_run(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to netCDF atomically (temporary sibling, then ``os.replace``)."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"save_run needs an xarray.Dataset, got {type(ds).__name__}")
    path = Path(path)
    out = ds.copy()
    for name, var in out.variables.items():  # netCDF3 has no bool
        if var.dtype == bool:
            out[name] = var.astype("int8")
    with atomic_file(path) as tmp:
        out.to_netcdf(tmp, engine="scipy")
    return path


def load_run(path: str | os.PathLike) -> xr.Dataset:
    """Load a run saved by :func:`save_run` into memory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved run at {path}")
    with xr.open_dataset(path, engine="scipy") as ds:
        ds = ds.load()
    if "marglik_step" in ds:
        ds["marglik_step"] = ds["marglik_step"].astype(bool)
    # netCDF3 (the scipy engine) stores int64 as int32; restore int64 so a loaded run is the
    # same object as a fresh one (holoviews' bar plots fail on int32 category coordinates)
    narrow = {k: v.astype("int64") for k, v in ds.variables.items() if v.dtype.kind == "i" and v.dtype.itemsize < 8}
    return ds.assign_coords({k: v for k, v in narrow.items() if k in ds.coords}).assign(
        {k: v for k, v in narrow.items() if k not in ds.coords}
    )


def list_runs(directory: str | os.PathLike = RUN_DIR) -> list[Path]:
    """Saved runs under ``directory``, newest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(d.glob("*.nc"), key=lambda p: p.stat().st_mtime, reverse=True)


__all__ = ["MODELS", "TASKS", "RUN_DIR", "RUN_FORMAT_VERSION", "run_equivariance", "run_invariance", "run_key", "run_name", "run_path",
           "run_settings", "run_label", "cached_run", "save_run", "load_run", "list_runs"]


def cached_run(kind: str, directory: str | os.PathLike | None = None, **settings) -> xr.Dataset:
    """Load the run of ``kind`` ("equivariance" | "invariance") with ``settings`` from disk, or
    train it and save it atomically under ``directory`` (default ``equivariance/`` in the data
    directory). ``settings`` are :func:`run_equivariance` / :func:`run_invariance` arguments
    (``callback`` and ``progress`` are not part of the key; ``seed`` is the deprecated name of
    ``random_state``)."""
    if kind not in ("equivariance", "invariance"):
        raise ValueError(f"kind must be 'equivariance' or 'invariance', got {kind!r}")
    if "seed" in settings:
        if "random_state" in settings:
            raise TypeError("pass 'random_state' only (got both 'seed' and 'random_state')")
        warn_renamed("argument 'seed' of cached_run", "'random_state'")
        settings["random_state"] = settings.pop("seed")
    path = run_path(kind, directory, **settings)
    if path.is_file():
        return load_run(path)
    run = run_equivariance if kind == "equivariance" else run_invariance
    ds = run(**settings)
    ds.attrs["kind"] = kind
    ds.attrs["format_version"] = RUN_FORMAT_VERSION
    save_run(ds, path)
    return ds
