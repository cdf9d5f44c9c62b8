"""``workbench forecast {generate, baselines, evaluate}``.

    workbench forecast generate  --preset small --seed 0 [--root data]
    workbench forecast baselines --preset small --context 4 256 --methods mean stimulus linear tsmixer --out results/forecast
    workbench forecast evaluate  --preset small --out results/forecast [--split test] [--n-boot 1000]

``baselines`` fits the estimators on the train split (val for early stopping) and pickles them to
``<out>/models/<method>-C<context>.pkl``; ``evaluate`` scores every pickled model on the split and
writes ``<out>/results.nc`` (xarray over method, context, condition, lead), ``<out>/results.csv``
(the same, long format) and ``<out>/summary.csv`` (one row per method and context). Data come from
``--data <store.zarr>``, ``--release <dir> [--scale s0]`` or ``--preset/--seed/--root`` (generated
on first use). All files are written atomically.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path

from workbench._atomic import atomic_file

METHODS = ("mean", "stimulus", "linear", "tsmixer", "time-mix", "tide")


def _data_args(p):
    g = p.add_argument_group("data")
    g.add_argument("--preset", default="small", help="synthetic preset (tiny, small, large)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--root", default="data", help="where synthetic stores are cached")
    g.add_argument("--data", default=None, help="an existing forecast zarr store")
    g.add_argument("--release", default=None, help="a local ZAPBench release directory")
    g.add_argument("--scale", default=None, help="release volume scale (s0, s1, s2); default traces only")
    g.add_argument("--verify", default="size", choices=("size", "checksum", "none"),
                   help="check --data against its manifest: chunk sizes (default), checksums, or not")


def _load(ns):
    from . import cached_dataset, open_dataset
    from .release import open_release

    if ns.data:
        return open_dataset(ns.data, verify=ns.verify)
    if ns.release:
        return open_release(ns.release, scale=ns.scale)
    return cached_dataset(ns.preset, random_state=ns.seed, root=ns.root, progress=True)


def _atomic_bytes(path: Path, write):
    with atomic_file(path) as tmp:
        write(str(tmp))


def make_estimator(method: str, context: int, max_epochs: int = 20, seed: int = 0):
    from .baselines import BASELINES

    if method not in BASELINES:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    cls = BASELINES[method]
    params = cls().get_params()
    extra = {k: v for k, v in dict(max_checks=max_epochs, random_state=seed, progress=True).items()
             if k in params}
    return cls(context, **extra)


def _load_model(path: Path):
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError,
            ValueError) as err:
        raise ValueError(f"fitted model {str(path)!r} cannot be read (truncated or corrupt; rerun "
                         f"`workbench forecast baselines`): {type(err).__name__}: {err}") from None


def cmd_generate(ns) -> int:
    from . import store_path
    from .dataset import cached_dataset

    ds = cached_dataset(ns.preset, random_state=ns.seed, root=ns.root, progress=True)
    path = store_path(ns.preset, ns.seed, ns.root)
    print(f"{path}: {ds.sizes['time']} frames, {ds.sizes['neuron']} neurons"
          + (f", volume {tuple(ds['volume'].shape[1:])}" if "volume" in ds else ", traces only"))
    return 0


def cmd_baselines(ns) -> int:
    ds = _load(ns)
    out = Path(ns.out) / "models"
    for c in ns.context:
        for m in ns.methods:
            est = make_estimator(m, c, ns.max_epochs, ns.seed).fit(ds)
            path = out / f"{m}-C{c}.pkl"

            def write(tmp, est=est):
                with open(tmp, "wb") as fh:
                    pickle.dump(est, fh)
            _atomic_bytes(path, write)
            print(f"fitted {m} C={c} -> {path}")
    return 0


def cmd_evaluate(ns) -> int:
    from .evaluate import evaluate
    from .metrics import summarize

    ds = _load(ns)
    models = sorted((Path(ns.out) / "models").glob("*.pkl"))
    if not models:
        print(f"no fitted models under {Path(ns.out) / 'models'}; run `workbench forecast baselines` first",
              file=sys.stderr)
        return 2
    forecasters = [_load_model(p) for p in models]
    res = evaluate(forecasters, ds, split=ns.split, n_boot=ns.n_boot, progress=True)
    out = Path(ns.out)
    nc = res.copy()
    _atomic_bytes(out / "results.nc", lambda tmp: nc.to_netcdf(tmp))
    long = res[["mae", "mse", "mae_lower", "mae_upper", "n_missing"]].to_dataframe().reset_index()
    _atomic_bytes(out / "results.csv", lambda tmp: long.to_csv(tmp, index=False))
    table = summarize(res)
    _atomic_bytes(out / "summary.csv", lambda tmp: table.to_csv(tmp, index=False))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {out / 'results.nc'}, {out / 'results.csv'}, {out / 'summary.csv'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench forecast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="generate (or reuse) a synthetic recording")
    g.add_argument("--preset", default="small")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--root", default="data")
    g.set_defaults(func=cmd_generate)
    b = sub.add_parser("baselines", help="fit baselines and pickle them")
    _data_args(b)
    b.add_argument("--context", type=int, nargs="+", default=[4])
    b.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    b.add_argument("--max-epochs", type=int, default=20,
                   help="trained models: at most this many validation checks (early stopping)")
    b.add_argument("--out", default="results/forecast")
    b.set_defaults(func=cmd_baselines)
    e = sub.add_parser("evaluate", help="score the fitted models, write results")
    _data_args(e)
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--n-boot", type=int, default=1000)
    e.add_argument("--out", default="results/forecast")
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv=None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return int(ns.func(ns) or 0)
    except (ValueError, TypeError, KeyError, OSError) as e:
        # the user's mistake or damaged files: one line naming it, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - e.g. a codec error from a damaged chunk of a release store
        if os.environ.get("WORKBENCH_TRACEBACK"):
            raise
        print(f"error: {type(e).__name__}: {e} (set WORKBENCH_TRACEBACK=1 for the traceback)",
              file=sys.stderr)
        return 1
