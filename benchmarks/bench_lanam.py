"""LA-NAM benchmark: calibration and selection on synthetic data, 5-fold CV against EBM and pyGAM
(and a linear reference), and the cost of going from 10 to 100 features.

    .venv/bin/python benchmarks/bench_lanam.py            # everything (EBM with its default bags)
    .venv/bin/python benchmarks/bench_lanam.py --quick    # EBM with 4 outer bags
    .venv/bin/python benchmarks/bench_lanam.py --real --quick   # real tables (bench_lanam_real.py)
    options: --seeds 0 1 2  --threads 1  --skip synthetic cv timing  --datasets diabetes breast_cancer
             --device cpu|cuda (timing section; default CUDA when available)
             --models LA-NAM EBM pyGAM linear  --folds 3 4

Every number is measured in this run; ratios are against baselines measured in this same run.
"""

from __future__ import annotations

import argparse
import time
import warnings
from functools import partial

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from workbench._torch_utils import resolve_device
from workbench.datasets import load_breast_cancer, load_diabetes, make_additive
from workbench.nam import LaplaceAdditiveClassifier, LaplaceAdditiveRegressor
from workbench.nam.modules import AdditiveNet
from workbench.nam.posterior import compute_curvature, core_likelihood, data_term
from workbench.nam.training import micro_batch

# the estimator's defaults: the schedule adapts to N (workbench.nam.training.resolve_schedule):
# 150 epochs of ~3 batches (>= 128 rows) on the small tables, ~4000 steps of 512 with
# marglik-based stopping on the large ones. The schedule before #20.3 (200 epochs of ~8 batches,
# >= 64 rows, evidence every 10 epochs) is LANAM_FIXED, selectable with --lanam-schedule fixed.
LANAM = dict(random_state=0)
LANAM_FIXED = dict(n_epochs=200, n_hidden=64, lr=1e-2, batch_size=64, n_epochs_burnin=20, marglik_frequency=10,
                   random_state=0)


# ---------------------------------------------------------------------- synthetic
def _coverage(est, d, features=None, purified=False) -> float:
    """Fraction of grid points where the 95 % band covers the true centred shape."""
    sf = est.shape_functions()
    truth = d.truth.shape_functions(sf["x_value"], d.X, purified=purified)
    inside = (truth >= sf["lower"]) & (truth <= sf["upper"])
    return float(inside.sel(feature=features).mean() if features is not None else inside.mean())


def synthetic(seeds: list[int], threads: int) -> pd.DataFrame:
    """Stage 1 (additive) and stage 2 (+ the top-ranked pair, purified read-outs) on the generator.

    Coverage is against the generator's own centred shapes. A purely additive model cannot
    estimate the planted pair's shapes (its shapes absorb the additive part of ``x0 * x1`` under
    correlated inputs), so stage 1 is also reported on the features outside the pair; stage 2
    reports the functional-ANOVA main effects (:mod:`workbench.nam.purification`) against the
    true ones under the same decomposition (``purified=True``: the generator's shapes plus
    ``gamma x_a mean(x_b)``, a term of size ~0.03 from the empirical mean of the partner).
    """
    rows = []
    for seed in seeds:
        d = make_additive(1000, 4, 2, interaction=(0, 1), pair_correlation=0.6, random_state=seed)
        t0 = time.perf_counter()
        est = LaplaceAdditiveRegressor(**LANAM, n_threads=threads).fit(d.X, d.y)
        fit_s = time.perf_counter() - t0
        off_pair = [f for f in d.X.columns if f not in d.truth.pair]
        imp = est.feature_importance_.to_series()
        real = [f for f in imp.index if f not in d.truth.null_features]
        rep = est.feature_selection_report().set_index("feature")
        table = est.rank_interactions().table
        # control: the same design (same correlated pair) without the planted interaction term
        c = make_additive(1000, 4, 2, interaction=(0, 1), pair_correlation=0.6, interaction_strength=0.0, random_state=seed)
        ctrl = LaplaceAdditiveRegressor(**LANAM, n_threads=threads).fit(c.X, c.y)
        ctable = ctrl.rank_interactions().table
        row = {
            "seed": seed,
            "cov stage1 all": _coverage(est, d),
            "cov stage1 non-pair": _coverage(est, d, off_pair),
            "sigma stage1": est.sigma_,
        }
        lml1 = est.log_marglik_
        est.fit_interactions(1)
        row.update({
            "cov stage2 all": _coverage(est, d, purified=True),
            "cov stage2 non-pair": _coverage(est, d, off_pair, purified=True),
            "sigma stage2 (true 0.3)": est.sigma_,
            "stage2 pair": "*".join(est.interaction_pairs_[0]),
            "log marglik 1->2": f"{lml1:.0f}->{est.log_marglik_:.0f}",
            "nulls below all real": bool(imp[d.truth.null_features].max() < imp[real].min()),
            "nulls switched off": bool(rep.loc[d.truth.null_features, "switched_off"].all()),
            "pair rank": _pair_rank(table, d.truth.pair),
            "pair MI / next": float(_pair_score(table, d.truth.pair) / _best_other(table, d.truth.pair)),
            "ctrl pair rank": f"{_pair_rank(ctable, c.truth.pair)}/{len(ctable)}",
            "ctrl pair MI / median": float(_pair_score(ctable, c.truth.pair) / ctable.mutual_information.median()),
            "ctrl posterior-MI rank": _pair_rank(ctable, c.truth.pair, "posterior_mutual_information"),
            "fit s": fit_s,
        })
        rows.append(row)
        print(pd.DataFrame([row]).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


def _is_pair(table: pd.DataFrame, pair) -> np.ndarray:
    return np.array([{a, b} == set(pair) for a, b in zip(table.feature_i, table.feature_j)])


def _pair_score(table: pd.DataFrame, pair) -> float:
    return float(table.mutual_information[_is_pair(table, pair)].iloc[0])


def _best_other(table: pd.DataFrame, pair) -> float:
    return float(table.mutual_information[~_is_pair(table, pair)].max())


def _pair_rank(table: pd.DataFrame, pair, by: str = "mutual_information") -> int:
    """1-based rank of ``pair`` when the table is sorted by ``by`` (descending)."""
    score = table[by][_is_pair(table, pair)].iloc[0]
    return int((table[by] > score).sum()) + 1


# ---------------------------------------------------------------------- CV against peers
def _peers(task: str, quick: bool, threads: int):
    peers = {}
    try:
        from interpret.glassbox import ExplainableBoostingClassifier, ExplainableBoostingRegressor

        kw = dict(outer_bags=4 if quick else 14, random_state=0, n_jobs=threads)
        peers["EBM"] = (lambda: ExplainableBoostingRegressor(**kw)) if task == "regression" else (
            lambda: ExplainableBoostingClassifier(**kw))
    except ImportError as err:
        print(f"  [skip] interpret EBM not importable: {err}")
    try:
        import pygam  # noqa: F401

        peers["pyGAM"] = lambda: _PyGAM(task)
    except ImportError as err:
        print(f"  [skip] pyGAM not importable: {err}")
    peers["linear"] = lambda: _Linear(task)
    return peers


class _Linear:
    """Linear reference in the same folds: scikit-learn's BayesianRidge (evidence-tuned ridge with
    a Gaussian predictive) for regression, LogisticRegressionCV (L2, C by inner CV on log loss)
    for classification; standardised numerics, one-hot categoricals. It tells how much of a data
    set an additive model can add beyond a linear one."""

    def __init__(self, task):
        self.task = task

    def _matrix(self, X):
        cols = [pd.get_dummies(X[c], prefix=c, drop_first=True, dtype=float) if isinstance(X[c].dtype, pd.CategoricalDtype)
                else X[[c]].astype(float) for c in X]
        return pd.concat(cols, axis=1).to_numpy()

    def fit(self, X, y):
        from sklearn.linear_model import BayesianRidge, LogisticRegressionCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = BayesianRidge() if self.task == "regression" else LogisticRegressionCV(
            Cs=20, max_iter=5000, scoring="neg_log_loss")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model_ = make_pipeline(StandardScaler(), model).fit(self._matrix(X), np.asarray(y))
        return self

    def predict(self, X, return_std: bool = False):
        if return_std:
            return self.model_.predict(self._matrix(X), return_std=True)
        return self.model_.predict(self._matrix(X))

    def predict_proba(self, X):
        return self.model_.predict_proba(self._matrix(X))


class _PyGAM:
    """pyGAM LinearGAM / LogisticGAM: a spline per numeric column, a factor term per categorical,
    lambda by pyGAM's grid search."""

    def __init__(self, task):
        self.task = task

    def _matrix(self, X):
        return np.column_stack([X[c].cat.codes if isinstance(X[c].dtype, pd.CategoricalDtype) else X[c] for c in X])

    def fit(self, X, y):
        from pygam import LinearGAM, LogisticGAM, f, s

        terms = None
        for i, c in enumerate(X.columns):
            t = f(i) if isinstance(X[c].dtype, pd.CategoricalDtype) else s(i)
            terms = t if terms is None else terms + t
        gam = LinearGAM(terms) if self.task == "regression" else LogisticGAM(terms)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.gam_ = gam.gridsearch(self._matrix(X), np.asarray(y), progress=False)
        return self

    def predict(self, X):
        return self.gam_.predict(self._matrix(X))

    def prediction_interval(self, X, width: float = 0.95):
        return self.gam_.prediction_intervals(self._matrix(X), width=width)

    def predict_proba(self, X):
        p = self.gam_.predict_proba(self._matrix(X))
        return np.column_stack([1 - p, p])


DATASETS = {"diabetes": (load_diabetes, "regression"), "breast_cancer": (load_breast_cancer, "classification")}


def _gaussian_nll(y, mu, std) -> np.ndarray:
    return 0.5 * np.log(2 * np.pi * std**2) + 0.5 * ((np.asarray(y) - mu) / std) ** 2


def _regression_nll(name: str, m, X_tr, y_tr, X_te, y_te, pred_type: str = "glm") -> float:
    """Mean predictive NLL on the test fold. LA-NAM: its predictive with noise (``pred_type``
    "glm" or "map"); pyGAM: a Gaussian whose std is read from its own 95 % prediction interval
    (coefficient uncertainty + noise scale); linear (BayesianRidge): its Gaussian predictive; EBM
    (no predictive distribution): a Gaussian with the training RMSE as std."""
    if name == "LA-NAM":
        return float(-m.log_predictive_density(X_te, y_te, pred_type=pred_type).mean())
    if name == "linear":
        mu, std = m.predict(X_te, return_std=True)
        return float(_gaussian_nll(y_te, mu, std).mean())
    mu = m.predict(X_te)
    if name == "pyGAM":
        lo, hi = m.prediction_interval(X_te).T
        std = (hi - lo) / (2 * 1.959964)
    else:
        std = np.full(len(mu), np.sqrt(np.mean((np.asarray(y_tr) - m.predict(X_tr)) ** 2)))
    return float(_gaussian_nll(y_te, mu, std).mean())


def _evaluate(task: str, mname: str, m, X, y, tr, te, pred_type: str = "glm") -> tuple[float, float]:
    """(RMSE or AUROC, mean test NLL) of a fitted model on fold ``te``."""
    if task == "regression":
        kw = {"pred_type": pred_type} if mname == "LA-NAM" else {}
        score = np.sqrt(mean_squared_error(y.iloc[te], m.predict(X.iloc[te], **kw)))
        return score, _regression_nll(mname, m, X.iloc[tr], y.iloc[tr], X.iloc[te], y.iloc[te], pred_type)
    p = (m.predict_proba(X.iloc[te], pred_type=pred_type) if mname == "LA-NAM" else m.predict_proba(X.iloc[te]))[:, 1]
    return roc_auc_score(y.iloc[te], p), log_loss(y.iloc[te], np.clip(p, 1e-12, 1 - 1e-12))


def cross_validate(quick: bool, threads: int, datasets: list[str], only: list[str] | None = None,
                   fold_ids: list[int] | None = None) -> pd.DataFrame:
    """5-fold CV. LA-NAM is scored with its GLM predictive and, from the same fit, as the plug-in
    MAP network ("LA-NAM (MAP)": what the posterior averaging adds or costs)."""
    per_fold = []
    for name in datasets:
        loader, task = DATASETS[name]
        X, y = loader()
        folds = (KFold(5, shuffle=True, random_state=0) if task == "regression"
                 else StratifiedKFold(5, shuffle=True, random_state=0)).split(X, y)
        folds = list(folds)
        models = {"LA-NAM": (lambda: LaplaceAdditiveRegressor(**LANAM, n_threads=threads)) if task == "regression"
                  else (lambda: LaplaceAdditiveClassifier(**LANAM, n_threads=threads))}
        models.update(_peers(task, quick, threads))
        models = {k: v for k, v in models.items() if not only or k in only}
        for mname, make in models.items():
            for k, (tr, te) in enumerate(folds):
                if fold_ids is not None and k not in fold_ids:
                    continue
                t0 = time.perf_counter()
                m = make().fit(X.iloc[tr], y.iloc[tr])
                fit_s = time.perf_counter() - t0
                variants = [(mname, "glm")] + ([("LA-NAM (MAP)", "map")] if mname == "LA-NAM" else [])
                for label, pred_type in variants:
                    score, nll = _evaluate(task, mname, m, X, y, tr, te, pred_type)
                    per_fold.append({"data": name, "model": label, "fold": k, "score": score, "NLL": nll,
                                     "fit s": fit_s, "metric": "RMSE" if task == "regression" else "AUROC"})
                    print(f"    {name} {label} fold {k}: {score:.4f} NLL {nll:.4f} ({fit_s:.0f}s)", flush=True)
    per_fold = pd.DataFrame(per_fold)
    if per_fold.empty:
        return per_fold

    def se(v):
        return v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")

    summary = per_fold.groupby(["data", "model", "metric"], sort=False).agg(
        mean=("score", "mean"), se=("score", se), NLL=("NLL", "mean"), **{"NLL se": ("NLL", se)},
        **{"fit s": ("fit s", "mean")}, folds=("fold", "size")).reset_index()
    paired = paired_differences(per_fold)
    if len(paired):
        print("  paired differences over the same folds, LA-NAM minus peer (RMSE/NLL: < 0 is LA-NAM better; "
              "AUROC: > 0 is LA-NAM better):")
        print(paired.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return summary


def paired_differences(per_fold: pd.DataFrame, ref: str = "LA-NAM") -> pd.DataFrame:
    """Per data set and peer: mean and standard error over folds of ``ref - peer`` for the score
    and the NLL, on the folds both ran. The folds are shared, so the paired SE removes the
    fold-to-fold spread that the separate SEs of each model include."""
    out = []
    if per_fold.empty:
        return pd.DataFrame(out)
    for (data, model), g in per_fold.groupby(["data", "model"], sort=False):
        if model == ref:
            continue
        base = per_fold[(per_fold.data == data) & (per_fold.model == ref)].set_index("fold")
        g = g.set_index("fold")
        common = base.index.intersection(g.index)
        if len(common) < 2:
            continue
        row = {"data": data, "peer": model, "folds": len(common)}
        for col in ("score", "NLL"):
            d = base.loc[common, col] - g.loc[common, col]
            row[f"{col} diff"] = d.mean()
            row[f"{col} diff se"] = d.std(ddof=1) / np.sqrt(len(d))
        out.append(row)
    return pd.DataFrame(out)


# ---------------------------------------------------------------------- cost vs features
class _LoopNAM(torch.nn.Module):
    """The shape a NAM takes without vectorisation: one nn.Sequential per feature, a Python loop
    over features in every forward (the baseline the issue rules out; timed for the ratio)."""

    def __init__(self, n_features: int, n_hidden: int = 64):
        super().__init__()
        self.nets = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(1, n_hidden), torch.nn.GELU(), torch.nn.Linear(n_hidden, 1))
            for _ in range(n_features)
        )

    def forward(self, x, c=None):
        return sum(net(x[:, i : i + 1]) for i, net in enumerate(self.nets))


def _epoch(net, opt, x, y, c, batch=512):
    """One MAP epoch as ``train_marglik`` runs it (AdditiveNet: gradients accumulated over
    cache-sized micro-batches, :func:`workbench.nam.training.micro_batch`)."""
    micro = micro_batch(net, batch) if isinstance(net, AdditiveNet) else batch
    for s in range(0, len(x), batch):
        opt.zero_grad()
        for m in range(s, min(s + batch, len(x)), micro):
            e = min(m + micro, s + batch, len(x))
            data_term(core_likelihood("regression"), net(x[m:e], c[m:e]), y[m:e]).backward()
        opt.step()


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn, repeats: int = 3, device: torch.device | None = None) -> float:
    fn()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)  # CUDA kernels run asynchronously: count them finished
    return (time.perf_counter() - t0) / repeats


def _fit_seconds(device, *args, **kw) -> float:
    _sync(device)
    t0 = time.perf_counter()
    LaplaceAdditiveRegressor(**kw, device=device).fit(*args)
    _sync(device)
    return time.perf_counter() - t0


def timing(threads: int, device=None, quick: bool = False) -> pd.DataFrame:
    """Whole fits (full and KFAC blocks) on n x 10, and 10 -> 100 features: a training epoch
    (vectorised vs a Python loop over per-feature MLPs), one curvature pass per structure, and a
    short whole fit per structure; per-feature-sample costs make the scaling explicit.

    ``device`` (None: CUDA when available) runs the estimators and the timed tensors there (#17.4:
    on a GPU the per-sample cost at 100 features should be at most 2x that at 10). ``quick``:
    n = 2 000 rows instead of 10 000 and 20-epoch whole fits instead of 50 (a loaded CPU box)."""
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    n, n_fit = (2_000, 20) if quick else (10_000, 50)
    print(f"  device {dev}, {n} samples" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    rows = []
    d10 = make_additive(n, 8, 2, interaction=None, random_state=0)
    # warm-up: the first torch.optim use in a process imports torch._dynamo (seconds, once)
    _fit_seconds(dev, d10.X[:200], d10.y[:200], n_epochs=2, n_epochs_burnin=1, n_threads=threads)
    for structure in ("full", "kron"):
        secs = _fit_seconds(dev, d10.X, d10.y, n_epochs=n_fit, n_epochs_burnin=10, marglik_frequency=10,
                            hessian_structure=structure, n_threads=threads)
        rows.append({"what": f"whole fit, {n} x 10, {n_fit} epochs ({n_fit // 10} marglik steps), {structure}",
                     "F": 10, "seconds": secs})
    for F in (10, 100):
        d = make_additive(n, min(F, 8), F - min(F, 8), interaction=None, random_state=0)
        x = torch.tensor(((d.X - d.X.mean()) / d.X.std()).to_numpy(), dtype=torch.float32, device=dev)
        y = torch.tensor(((d.y - d.y.mean()) / d.y.std()).to_numpy(), dtype=torch.float32, device=dev)
        c = torch.zeros(len(x), 0, dtype=torch.long, device=dev)
        net = AdditiveNet(F, [], 1, 64, seed=0).to(dev)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        rows.append({"what": "one epoch fwd/bwd, vectorised (batch 512)", "F": F,
                     "seconds": _seconds(partial(_epoch, net, opt, x, y, c), device=dev)})
        loop = _LoopNAM(F).to(dev)
        lopt = torch.optim.Adam(loop.parameters(), 1e-3)
        rows.append({"what": "one epoch fwd/bwd, Python loop over features", "F": F,
                     "seconds": _seconds(partial(_epoch, loop, lopt, x, y, c), repeats=1, device=dev)})
        for structure in ("full", "kron"):
            rows.append({"what": f"curvature pass (one marglik step), {structure}", "F": F,
                         "seconds": _seconds(partial(compute_curvature, net, x, c, y, "regression",
                                                     structure=structure), repeats=1, device=dev)})
            secs = _fit_seconds(dev, d.X, d.y, n_epochs=10, n_epochs_burnin=4, marglik_frequency=5,
                                hessian_structure=structure, n_threads=threads)
            rows.append({"what": f"whole fit, 10 epochs (2 marglik steps), {structure}", "F": F, "seconds": secs})
    out = pd.DataFrame(rows)
    out["device"] = str(dev)
    out["us per sample"] = out.seconds / n * 1e6
    out["us per feature-sample"] = out.seconds / (out.F * n) * 1e6
    wide = out[out.what.isin(out.what[out.F == 100])].pivot(index="what", columns="F", values="seconds")
    # same n at both widths: this is also the ratio of the per-sample costs (#17.4 goal on a GPU: <= 2)
    wide["ratio 100/10 (10x the features)"] = wide[100] / wide[10]
    print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    loop_vs_vec = out[(out.F == 100) & out.what.str.contains("epoch")].set_index("what").seconds
    print(f"  100 features: Python loop / vectorised epoch = {loop_vs_vec.iloc[1] / loop_vs_vec.iloc[0]:.1f}x")
    return out


def big_n(threads: int, n: int = 100_000, n_features: int = 20) -> pd.DataFrame:
    """The large-table goal (#20.3): fit time and peak RSS of a default fit on n x n_features
    (the generator's additive shapes, 4 of them null), and its held-out RMSE vs the noise."""
    import resource

    d = make_additive(n + 10_000, n_features - 4, 4, interaction=None, noise=0.5, random_state=0)
    X, y, Xt, yt = d.X.iloc[:n], d.y.iloc[:n], d.X.iloc[n:], d.y.iloc[n:]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    est = LaplaceAdditiveRegressor(random_state=0, n_threads=threads).fit(X, y)
    fit_s = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rmse = float(np.sqrt(np.mean((est.predict(Xt) - yt) ** 2)))
    row = {"rows": n, "features": n_features, "fit s": fit_s, "peak RSS MiB": rss, "RSS before fit MiB": rss0,
           "epochs run": len(est.history_["epoch"]), "schedule": str(est.schedule_), "held-out RMSE": rmse,
           "noise std": 0.5}
    return pd.DataFrame([row])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="EBM with 4 outer bags instead of 14; timing on 2 000 rows and 20-epoch whole fits")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="device of the timing section's estimators and tensors (default: CUDA when available)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core box)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["synthetic", "cv", "timing"])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS), help="CV data sets")
    ap.add_argument("--models", nargs="+", default=None, choices=["LA-NAM", "EBM", "pyGAM", "linear"],
                    help="CV models (default all)")
    ap.add_argument("--folds", type=int, nargs="+", default=None, choices=range(5),
                    help="run only these CV folds (e.g. to spread a slow peer over processes)")
    ap.add_argument("--lanam-schedule", choices=["auto", "fixed"], default="auto",
                    help="LA-NAM's adaptive default schedule, or the fixed one used before #20.3")
    ap.add_argument("--real", action="store_true", help="only the real-table benchmark (bench_lanam_real.py)")
    ap.add_argument("--big", action="store_true", help="only the 100 000 x 20 fit (time, peak RSS)")
    ap.add_argument("--tables", nargs="+", default=None, help="real tables (default: all that load here)")
    ap.add_argument("--nfolds", type=int, default=5, help="folds of the real-table benchmark")
    args = ap.parse_args()
    if args.lanam_schedule == "fixed":
        LANAM.clear()
        LANAM.update(LANAM_FIXED)
    if args.big:
        torch.set_num_threads(args.threads)
        print(big_n(args.threads).T.to_string())
        return
    if args.real:
        from bench_lanam_real import report, run_real

        torch.set_num_threads(args.threads)
        pd.set_option("display.width", 250, "display.max_columns", 30)
        print(f"LA-NAM settings: {LANAM}; EBM outer_bags {4 if args.quick else 14}; {args.nfolds} folds")
        report(*run_real(args.tables, args.models, args.nfolds, args.quick, args.threads, dict(LANAM)))
        return
    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 200, "display.max_columns", 30)
    print(f"LA-NAM settings: {LANAM}, torch threads {args.threads}; "
          f"EBM outer_bags {4 if args.quick else 14}")
    if "synthetic" not in args.skip:
        print("== synthetic (1000 samples, 4 real + 2 null features, planted pair 1.5*x0*x1, corr(x0, x1) 0.6)")
        print(synthetic(args.seeds, args.threads).to_string(index=False))
    if "cv" not in args.skip:
        print("== 5-fold CV")
        print(cross_validate(args.quick, args.threads, args.datasets, args.models, args.folds).to_string(index=False))
    if "timing" not in args.skip:
        print("== cost")
        print(timing(args.threads, args.device, args.quick).to_string(index=False))


if __name__ == "__main__":
    main()
