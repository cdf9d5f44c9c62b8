"""LA-NAM on real tables (issue #20.4 / #20.5), run by ``bench_lanam.py --real``.

Every table of :data:`workbench.datasets.REAL_TABLES` that loads here (they ship inside
scikit-learn, statsmodels and palmerpenguins: nothing is downloaded) gets two permuted copies of
real columns appended (``perm_<column>``: null features by construction), then LA-NAM, EBM,
pyGAM and a linear model are fitted on the same folds. Reported per table and model: RMSE or
AUROC, mean test NLL, 95 % predictive-interval coverage (regression), fit time; paired fold
differences LA-NAM minus each peer; and whether LA-NAM switched the permuted columns off or
ranked them below every original column. Missing values: LA-NAM and EBM take them natively;
pyGAM and the linear model get numeric NaNs mean-imputed (training mean) and categorical NaNs
as their own level (the ``given`` column says so).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_lanam.py --real --quick
    options: --tables penguins fair  --nfolds 5  --models LA-NAM EBM pyGAM linear
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from workbench.datasets import REAL_TABLES, available_tables
from workbench.nam import LaplaceAdditiveClassifier, LaplaceAdditiveRegressor

Z95 = float(norm.ppf(0.975))


def with_permuted_columns(X: pd.DataFrame, n: int = 2, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """X plus ``n`` permuted copies of real columns (the first ``n`` of a seeded shuffle)."""
    rng = np.random.default_rng(seed)
    cols = list(rng.permutation(X.columns))[:n]
    out = X.copy()
    names = []
    for c in cols:
        name = f"perm_{c}"
        out[name] = X[c].to_numpy()[rng.permutation(len(X))]
        if isinstance(X[c].dtype, pd.CategoricalDtype):
            out[name] = pd.Categorical(out[name], categories=X[c].cat.categories)
        names.append(name)
    return out, names


class _Imputed:
    """What a peer that cannot take NaN is given: numeric NaN -> training mean, categorical NaN
    -> its own level "(missing)" (always added, so fit and test folds code categories alike)."""

    def _prepare(self, X: pd.DataFrame, fit: bool) -> pd.DataFrame:
        X = X.copy()
        if fit:
            self.means_ = {c: float(X[c].mean()) for c in X if not isinstance(X[c].dtype, pd.CategoricalDtype)}
        for c in X:
            if isinstance(X[c].dtype, pd.CategoricalDtype):
                if "(missing)" not in X[c].cat.categories:
                    X[c] = X[c].cat.add_categories("(missing)")
                X[c] = X[c].fillna("(missing)")
            else:
                X[c] = X[c].astype(float).fillna(self.means_[c])
        return X

    def fit(self, X, y):
        return super().fit(self._prepare(X, True), y)

    def predict(self, X, **kw):
        return super().predict(self._prepare(X, False), **kw)

    def predict_proba(self, X):
        return super().predict_proba(self._prepare(X, False))


def _peer_factories(task: str, quick: bool, threads: int) -> dict:
    """The 5-fold CV's peers (``bench_lanam._peers``: EBM and pyGAM when importable, linear), with
    mean / "(missing)" imputation in front of the two that cannot take NaN."""
    from bench_lanam import _Linear, _peers, _PyGAM

    class PyGAM(_Imputed, _PyGAM):
        def prediction_interval(self, X, width=0.95):
            return super().prediction_interval(self._prepare(X, False), width)

    class Linear(_Imputed, _Linear):
        pass

    native = _peers(task, quick, threads)
    imputed = {"pyGAM": lambda: PyGAM(task), "linear": lambda: Linear(task)}
    peers = {name: make for name, make in imputed.items() if name in native}
    if "EBM" in native:  # EBM takes NaN natively
        peers["EBM"] = native["EBM"]
    return peers


def _scores(task, name, m, X_tr, y_tr, X_te, y_te) -> dict:
    """Score, NLL and (regression) 95 % coverage of a fitted model on a test fold."""
    if task == "classification":
        p = m.predict_proba(X_te)[:, 1]
        return {"score": roc_auc_score(y_te, p), "NLL": log_loss(y_te, np.clip(p, 1e-12, 1 - 1e-12)),
                "coverage": np.nan}
    if name == "LA-NAM" or name == "linear":
        mu, std = m.predict(X_te, return_std=True)
    elif name == "pyGAM":
        mu = m.predict(X_te)
        lo, hi = m.prediction_interval(X_te).T
        std = (hi - lo) / (2 * Z95)
    else:  # EBM: no predictive distribution; a Gaussian with the training RMSE
        mu = m.predict(X_te)
        std = np.full(len(mu), np.sqrt(np.mean((np.asarray(y_tr) - m.predict(X_tr)) ** 2)))
    y = np.asarray(y_te, float)
    nll = 0.5 * np.log(2 * np.pi * std**2) + 0.5 * ((y - mu) / std) ** 2
    return {"score": float(np.sqrt(np.mean((y - mu) ** 2))), "NLL": float(nll.mean()),
            "coverage": float(np.mean(np.abs(y - mu) <= Z95 * std))}


def _selection(est, nulls: list[str]) -> dict:
    rep = est.feature_selection_report().set_index("feature")
    real = rep.drop(index=nulls)
    off = bool(rep.loc[nulls, "switched_off"].all())
    below = bool(rep.loc[nulls, "importance"].max() < real["importance"].min())
    worst_null = int(rep.index.get_indexer(nulls).min()) + 1  # rank of the best-ranked null (1 = top)
    return {"nulls off": off, "nulls below all": below, "nulls ok": off or below,
            "best null rank": f"{worst_null}/{len(rep)}"}


def run_real(tables: list[str] | None = None, models: list[str] | None = None, n_folds: int = 5,
             quick: bool = True, threads: int = 1, lanam: dict | None = None, verbose: bool = True):
    """The real-table benchmark; returns (per-fold DataFrame, summary, paired differences, selection)."""
    tables = tables or available_tables()
    rows, sel = [], []
    for tname in tables:
        X, y, task = REAL_TABLES[tname].load()
        X, nulls = with_permuted_columns(X)
        splitter = (KFold if task == "regression" else StratifiedKFold)(n_folds, shuffle=True, random_state=0)
        cls = LaplaceAdditiveRegressor if task == "regression" else LaplaceAdditiveClassifier
        makers = {"LA-NAM": lambda cls=cls: cls(**{"random_state": 0, "n_threads": threads, **(lanam or {})})}
        makers.update(_peer_factories(task, quick, threads))
        makers = {k: v for k, v in makers.items() if not models or k in models}
        has_nan = bool(X.isna().any().any())
        for k, (tr, te) in enumerate(splitter.split(X, y)):
            for mname, make in makers.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # EBM's "missing values detected" on every fit
                    t0 = time.perf_counter()
                    m = make().fit(X.iloc[tr], y.iloc[tr])
                    fit_s = time.perf_counter() - t0
                    r = _scores(task, mname, m, X.iloc[tr], y.iloc[tr], X.iloc[te], y.iloc[te])
                given = "native NaN" if mname in ("LA-NAM", "EBM") else "mean-imputed"
                rows.append({"data": tname, "model": mname, "fold": k, **r, "fit s": fit_s,
                             "metric": "RMSE" if task == "regression" else "AUROC",
                             "given": given if has_nan else "complete"})
                if mname == "LA-NAM":
                    sel.append({"data": tname, "fold": k, **_selection(m, nulls)})
                if verbose:
                    print(f"    {tname} {mname} fold {k}: {r['score']:.4f} NLL {r['NLL']:.4f} "
                          f"cov {r['coverage']:.3f} ({fit_s:.1f}s)", flush=True)
    per_fold = pd.DataFrame(rows)
    return per_fold, summarise(per_fold), paired(per_fold), pd.DataFrame(sel)


def summarise(per_fold: pd.DataFrame) -> pd.DataFrame:
    def se(v):
        return v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")

    return per_fold.groupby(["data", "model", "metric", "given"], sort=False).agg(
        mean=("score", "mean"), se=("score", se), NLL=("NLL", "mean"), **{"NLL se": ("NLL", se)},
        coverage=("coverage", "mean"), **{"fit s": ("fit s", "mean")}, folds=("fold", "size")).reset_index()


def paired(per_fold: pd.DataFrame, ref: str = "LA-NAM") -> pd.DataFrame:
    """LA-NAM minus each peer over the same folds (mean, paired SE) for the score and the NLL,
    and the NLL goal: LA-NAM's NLL no worse than the best peer's by more than one paired SE."""
    out = []
    for data, g in per_fold.groupby("data", sort=False):
        base = g[g.model == ref].set_index("fold")
        peers = [m for m in g.model.unique() if m != ref]
        if base.empty or not peers:
            continue
        best = min(peers, key=lambda m: g[g.model == m]["NLL"].mean())
        for peer in peers:
            other = g[g.model == peer].set_index("fold")
            common = base.index.intersection(other.index)
            row = {"data": data, "peer": peer, "folds": len(common)}
            for col in ("score", "NLL"):
                d = base.loc[common, col] - other.loc[common, col]
                row[f"{col} diff"] = d.mean()
                row[f"{col} diff se"] = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            row["best peer (NLL)"] = peer == best
            if peer == best:
                row["NLL goal met"] = bool(row["NLL diff"] <= row["NLL diff se"])
            out.append(row)
    return pd.DataFrame(out)


def report(per_fold, summary, diffs, selection) -> None:
    fmt = {"float_format": lambda v: f"{v:.4f}"}
    print("== real tables: per table and model (mean over folds)")
    print(summary.to_string(index=False, **fmt))
    print("== paired differences, LA-NAM minus peer (RMSE / NLL < 0: LA-NAM better; AUROC > 0: LA-NAM better)")
    print(diffs.to_string(index=False, **fmt))
    if len(selection):
        agg = selection.groupby("data", sort=False).agg(
            folds=("fold", "size"), nulls_off=("nulls off", "mean"), nulls_below_all=("nulls below all", "mean"),
            nulls_ok=("nulls ok", "mean"), best_null_rank=("best null rank", lambda v: ", ".join(v)))
        print("== permuted columns (2 per table): fraction of folds switched off / below every original")
        print(agg.to_string(**fmt))
        ok = int((agg.nulls_ok == 1.0).sum())
        print(f"  tables with the nulls switched off or below every original in every fold: {ok}/{len(agg)}")
    if "coverage" in summary:
        cov = summary[(summary.model == "LA-NAM") & summary.coverage.notna()]
        print(f"  LA-NAM 95 % coverage per regression table: {dict(zip(cov.data, cov.coverage.round(3)))}")
