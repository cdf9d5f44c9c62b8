"""Results in ZAPBench's layouts: export ours, load theirs, line the two up.

ZAPBench's evaluation (``zapbench/ts_forecasting/infer.py``) writes one JSON per condition,
``test_condition_<i>.json`` (``test_holdout_condition_<i>.json`` for the held-out one), whose keys
are ``infer_<set>_mae``, ``infer_<set>_mae_step/<lead>`` and the same for ``mse`` (the per-lead
vector flattened by ``connectomics.jax.metrics.make_dict_of_scalars``, leads from 1). The
published table (``dataframes/20250131/combined.json`` in the release bucket; read in
``colabs/metrics.ipynb``) has one record per method, context, condition and lead with columns
``method``, ``context``, ``condition`` (name), ``steps_ahead``, ``MAE``, ``MSE`` and the run id
``xid`` (three seeds per trained method). Method names follow ZAPBench's
(``zapbench/ts_forecasting/util.py``): mean, stimulus, linear, tsmixer, time-mix, tide.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .._atomic import atomic_file
from . import protocol

__all__ = ["to_zapbench_records", "write_zapbench_json", "load_zapbench_results", "reference_columns",
           "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("method", "context", "condition", "steps_ahead", "MAE")


def to_zapbench_records(results: xr.Dataset):
    """One row per (method, context, condition, lead) with ZAPBench's column names (a DataFrame)."""
    import pandas as pd

    if "model" not in results.dims or "context" not in results.dims:
        raise ValueError("results must have 'model' and 'context' dimensions (workbench.forecast.evaluate)")
    df = results[["mae", "mse", "n_windows"]].to_dataframe().reset_index()
    df = df.rename(columns={"model": "method", "lead": "steps_ahead", "mae": "MAE", "mse": "MSE"})
    df = df[np.isfinite(df["MAE"])]
    df["heldout"] = df["condition"].isin(list(results["condition"].values[results["heldout"].values]))
    df["missing_rule"] = str(results.attrs.get("missing_rule", ""))
    cols = ["method", "context", "condition", "steps_ahead", "MAE", "MSE", "n_windows", "heldout", "missing_rule"]
    return pd.DataFrame(df[cols]).reset_index(drop=True)


def write_zapbench_json(results: xr.Dataset, directory) -> list[Path]:
    """Per (model, context), one JSON per condition in ZAPBench's evaluation layout.

    Files ``<directory>/<model>/C<context>/test[_holdout]_condition_<i>.json``; each written
    atomically. Returns the paths written.
    """
    names = list(results.attrs.get("condition_names", None) or protocol.CONDITION_NAMES)
    out = []
    for m in results["model"].values:
        for c in results["context"].values:
            r = results.sel(model=m, context=c)
            for cond, held in zip(r["condition"].values, r["heldout"].values):
                mae = r["mae"].sel(condition=cond).values
                if not np.isfinite(mae).any():
                    continue
                mse = r["mse"].sel(condition=cond).values
                i = names.index(str(cond)) if str(cond) in names else list(r["condition"].values).index(cond)
                split = "test_holdout" if held else "test"
                key = f"infer_{split}_condition_{i}"
                doc = {f"{key}_mae": float(np.nanmean(mae)), f"{key}_mse": float(np.nanmean(mse))}
                for lead, a, b in zip(r["lead"].values, mae, mse):
                    doc[f"{key}_mae_step/{int(lead)}"] = float(a)
                    doc[f"{key}_mse_step/{int(lead)}"] = float(b)
                path = Path(directory) / str(m) / f"C{int(c)}" / f"{split}_condition_{i}.json"
                with atomic_file(path) as tmp:
                    tmp.write_text(json.dumps(doc, indent=1))
                out.append(path)
    return out


def _from_eval_dir(path: Path):
    """ZAPBench evaluation JSONs in one folder -> records (method/context from the folder names)."""
    import re

    import pandas as pd

    rows = []
    for f in sorted(path.rglob("*condition_*.json")):
        m = re.search(r"condition_(\d+)", f.name)
        doc = json.loads(f.read_text())
        rel = f.relative_to(path).parts
        method = rel[-3] if len(rel) >= 3 else path.name
        context = int(rel[-2][1:]) if len(rel) >= 2 and re.fullmatch(r"C\d+", rel[-2]) else -1
        for k, v in doc.items():
            if "step/" not in k:
                continue
            metric = "MAE" if "_mae_step/" in k else "MSE" if "_mse_step/" in k else None
            if metric is None:
                continue
            rows.append(dict(method=method, context=context, condition=protocol.CONDITION_NAMES[int(m.group(1))],
                             steps_ahead=int(k.rsplit("/", 1)[1]), metric=metric, value=float(v)))
    if not rows:
        raise ValueError(f"no ZAPBench evaluation JSONs (*condition_<i>.json) under {path}")
    df = pd.DataFrame(rows)
    return df.pivot_table(index=["method", "context", "condition", "steps_ahead"], columns="metric",
                          values="value").reset_index()


def load_zapbench_results(path):
    """ZAPBench's published results table from a local file (or a folder of evaluation JSONs).

    ``path``: ``combined.json`` as published (records, or pandas' column layout), a CSV with the
    same columns, or a folder of per-condition JSONs as :func:`write_zapbench_json` / ZAPBench's
    inference writes them. Returns a DataFrame with at least ``method``, ``context``,
    ``condition``, ``steps_ahead`` and ``MAE``. Nothing is downloaded.
    """
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        df = _from_eval_dir(p)
    elif not p.is_file():
        raise FileNotFoundError(f"no ZAPBench results file at {p}")
    elif p.suffix == ".csv":
        df = pd.read_csv(p)
    else:
        try:
            doc = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p} is not valid JSON: {e}") from e
        try:
            df = pd.DataFrame(doc)
        except ValueError as e:
            raise ValueError(f"{p}: cannot read a results table from its JSON ({e})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{p}: ZAPBench results table lacks columns {missing}; has {list(df.columns)}")
    df["context"] = df["context"].astype(int)
    df["steps_ahead"] = df["steps_ahead"].astype(int)
    return df


def reference_columns(table, reference, leads: Sequence[int] = (1, 4, 8, 16, 32)):
    """Add ZAPBench's MAE for the same (model, context) to a :func:`summarize` table.

    ZAPBench's numbers are averaged over runs (``xid``: seeds) per condition and lead, then over
    the training conditions (the held-out ``taxis`` left out), as ``mae_train_conditions`` is.
    Columns ``zapbench_mae_lead<k>`` and ``zapbench_mae_mean`` (NaN where ZAPBench has no match).
    """
    ref = load_zapbench_results(reference) if isinstance(reference, str | Path) else reference
    ref = ref[~ref["condition"].isin(list(protocol.HELDOUT))]
    per = ref.groupby(["method", "context", "condition", "steps_ahead"])["MAE"].mean()
    curve = per.groupby(["method", "context", "steps_ahead"]).mean()
    out = table.copy()
    for ld in leads:
        out[f"zapbench_mae_lead{ld}"] = [float(curve.get((m, int(c), int(ld)), np.nan))
                                         for m, c in zip(out["model"], out["context"])]
    means = curve.groupby(["method", "context"]).mean()
    out["zapbench_mae_mean"] = [float(means.get((m, int(c)), np.nan)) for m, c in zip(out["model"], out["context"])]
    return out
