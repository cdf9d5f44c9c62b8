"""LA-NAM benchmark: calibration and selection on synthetic data, 5-fold CV against EBM and pyGAM,
and the cost of going from 10 to 100 features.

    .venv/bin/python benchmarks/bench_lanam.py            # everything (EBM with its default bags)
    .venv/bin/python benchmarks/bench_lanam.py --quick    # EBM with 4 outer bags
    options: --seeds 0 1 2  --threads 1  --skip synthetic cv timing

Every number is measured in this run; ratios are against baselines measured in this same run.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from workbench.datasets import load_breast_cancer, load_diabetes, make_additive
from workbench.nam import LaplaceAdditiveClassifier, LaplaceAdditiveRegressor
from workbench.nam.modules import AdditiveNet
from workbench.nam.posterior import log_likelihood_terms

LANAM = dict(n_epochs=200, n_hidden=64, lr=1e-2, batch_size=512, random_state=0)


# ---------------------------------------------------------------------- synthetic
def synthetic(seeds: list[int], threads: int) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        d = make_additive(1000, 4, 2, interaction=(0, 1), pair_correlation=0.6, seed=seed)
        t0 = time.perf_counter()
        est = LaplaceAdditiveRegressor(**LANAM, n_threads=threads).fit(d.X, d.y)
        fit_s = time.perf_counter() - t0
        sf = est.shape_functions()
        truth = d.truth.shape_functions(sf["x_value"], d.X)
        inside = (truth >= sf["lower"].values) & (truth <= sf["upper"].values)
        off_pair = [f for f in sf.feature.values if f not in d.truth.pair]
        imp = est.feature_importance_.to_series()
        real = [f for f in imp.index if f not in d.truth.null_features]
        rep = est.feature_selection_report().set_index("feature")
        table = est.rank_interactions().table
        pair_rank = _pair_rank(table, d.truth.pair)
        # control: the same design without the planted interaction term
        c = make_additive(1000, 4, 2, interaction=(0, 1), pair_correlation=0.6, interaction_strength=0.0, seed=seed)
        ctrl = LaplaceAdditiveRegressor(**LANAM, n_threads=threads).fit(c.X, c.y)
        ctrl_rank = _pair_rank(ctrl.rank_interactions().table, c.truth.pair)
        lml1 = est.log_marglik_
        est.fit_interactions(1)
        sf2 = est.shape_functions()
        inside2 = (d.truth.shape_functions(sf2["x_value"], d.X) >= sf2["lower"].values) & (
            d.truth.shape_functions(sf2["x_value"], d.X) <= sf2["upper"].values)
        rows.append({
            "seed": seed,
            "coverage95 (non-pair features)": float(inside.sel(feature=off_pair).mean()),
            "coverage95 (all, stage 1)": float(inside.mean()),
            "coverage95 (all, after stage 2)": float(inside2.mean()),
            "nulls below all real": bool(imp[d.truth.null_features].max() < imp[real].min()),
            "nulls switched off": bool(rep.loc[d.truth.null_features, "switched_off"].all()),
            "null precision growth (w2)": float(rep.loc[d.truth.null_features, "precision_growth"].mean()),
            "real precision growth (w2)": float(rep.loc[real, "precision_growth"].mean()),
            "planted pair rank": pair_rank,
            "pair rank w/o interaction (control)": ctrl_rank,
            "top MI / 2nd MI": float(table.mutual_information.iloc[0] / table.mutual_information.iloc[1]),
            "log marglik stage1 -> stage2": f"{lml1:.1f} -> {est.log_marglik_:.1f}",
            "fit s": fit_s,
        })
    return pd.DataFrame(rows)


def _pair_rank(table: pd.DataFrame, pair) -> int:
    hit = table.index[table.apply(lambda r: {r.feature_i, r.feature_j} == set(pair), axis=1)]
    return int(hit[0]) + 1


# ---------------------------------------------------------------------- CV against peers
def _peers(task: str, quick: bool):
    peers = {}
    try:
        from interpret.glassbox import ExplainableBoostingClassifier, ExplainableBoostingRegressor

        kw = dict(outer_bags=4 if quick else 14, random_state=0, n_jobs=2)
        peers["EBM"] = (lambda: ExplainableBoostingRegressor(**kw)) if task == "regression" else (
            lambda: ExplainableBoostingClassifier(**kw))
    except ImportError as err:
        print(f"  [skip] interpret EBM not importable: {err}")
    try:
        import pygam  # noqa: F401

        peers["pyGAM"] = lambda: _PyGAM(task)
    except ImportError as err:
        print(f"  [skip] pyGAM not importable: {err}")
    return peers


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

    def predict_proba(self, X):
        p = self.gam_.predict_proba(self._matrix(X))
        return np.column_stack([1 - p, p])


def cross_validate(quick: bool, threads: int) -> pd.DataFrame:
    rows = []
    for name, loader, task in [("diabetes", load_diabetes, "regression"), ("breast cancer", load_breast_cancer, "classification")]:
        X, y = loader()
        folds = (KFold(5, shuffle=True, random_state=0) if task == "regression"
                 else StratifiedKFold(5, shuffle=True, random_state=0)).split(X, y)
        folds = list(folds)
        models = {"LA-NAM": (lambda: LaplaceAdditiveRegressor(**LANAM, n_threads=threads)) if task == "regression"
                  else (lambda: LaplaceAdditiveClassifier(**LANAM, n_threads=threads))}
        models.update(_peers(task, quick))
        for mname, make in models.items():
            scores, nlls, times = [], [], []
            for tr, te in folds:
                t0 = time.perf_counter()
                m = make().fit(X.iloc[tr], y.iloc[tr])
                times.append(time.perf_counter() - t0)
                if task == "regression":
                    scores.append(np.sqrt(mean_squared_error(y.iloc[te], m.predict(X.iloc[te]))))
                    if mname == "LA-NAM":
                        nlls.append(-m.log_predictive_density(X.iloc[te], y.iloc[te]).mean())
                else:
                    p = m.predict_proba(X.iloc[te])[:, 1]
                    scores.append(roc_auc_score(y.iloc[te], p))
                    nlls.append(log_loss(y.iloc[te], np.clip(p, 1e-12, 1 - 1e-12)))
            se = np.std(scores, ddof=1) / np.sqrt(len(scores))
            rows.append({
                "data": name, "model": mname, "metric": "RMSE" if task == "regression" else "AUROC",
                "mean": np.mean(scores), "se": se,
                "NLL": np.mean(nlls) if nlls else np.nan,
                "NLL se": np.std(nlls, ddof=1) / np.sqrt(len(nlls)) if nlls else np.nan,
                "fit s": np.mean(times),
            })
            print(f"  {name:14s} {mname:7s} {rows[-1]['metric']} {rows[-1]['mean']:.4f} ± {se:.4f}  "
                  f"NLL {rows[-1]['NLL']:.4f}  fit {rows[-1]['fit s']:.1f}s", flush=True)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- cost vs features
def timing(threads: int) -> pd.DataFrame:
    torch.set_num_threads(threads)
    rows = []
    d10 = make_additive(10_000, 8, 2, interaction=None, seed=0)
    t0 = time.perf_counter()
    LaplaceAdditiveRegressor(n_epochs=50, n_epochs_burnin=10, marglik_frequency=10, n_threads=threads).fit(d10.X, d10.y)
    rows.append({"what": "whole fit, 10 000 x 10, 50 epochs (5 marglik steps)", "seconds": time.perf_counter() - t0})
    per_epoch = {}
    for F in (10, 100):
        d = make_additive(10_000, min(F, 8), F - min(F, 8), interaction=None, seed=0)
        x = torch.as_tensor(((d.X - d.X.mean()) / d.X.std()).to_numpy(), dtype=torch.float32)
        y = torch.as_tensor(((d.y - d.y.mean()) / d.y.std()).to_numpy(), dtype=torch.float32)
        c = torch.zeros(len(x), 0, dtype=torch.long)
        net = AdditiveNet(F, [], 1, 64, seed=0)
        opt = torch.optim.Adam(net.parameters(), 1e-3)

        def epoch(net, opt, x, y, c):
            for s in range(0, len(x), 512):
                loss = log_likelihood_terms(net(x[s : s + 512], c[s : s + 512]), y[s : s + 512], "regression")
                opt.zero_grad()
                loss.backward()
                opt.step()

        epoch(net, opt, x, y, c)  # warm-up
        t0 = time.perf_counter()
        for _ in range(3):
            epoch(net, opt, x, y, c)
        per_epoch[F] = (time.perf_counter() - t0) / 3
        t0 = time.perf_counter()
        LaplaceAdditiveRegressor(n_epochs=10, n_epochs_burnin=4, marglik_frequency=5, n_threads=threads).fit(d.X, d.y)
        rows.append({"what": f"whole fit, 10 000 x {F}, 10 epochs (2 marglik steps)", "seconds": time.perf_counter() - t0})
        rows.append({"what": f"one epoch forward/backward, 10 000 x {F} (batch 512)", "seconds": per_epoch[F]})
    out = pd.DataFrame(rows)
    fits = out[out.what.str.contains("10 epochs")].seconds.to_numpy()
    print(f"  ratio 100 vs 10 features: per-epoch fwd/bwd {per_epoch[100] / per_epoch[10]:.2f}x, "
          f"whole fit {fits[1] / fits[0]:.2f}x (10x the features)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="EBM with 4 outer bags instead of 14")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core box)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["synthetic", "cv", "timing"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 200, "display.max_columns", 30)
    print(f"LA-NAM settings: {LANAM}, torch threads {args.threads}; EBM outer_bags {4 if args.quick else 14}")
    if "synthetic" not in args.skip:
        print("== synthetic (1000 samples, 4 real + 2 null features, planted correlated pair x0*x1)")
        print(synthetic(args.seeds, args.threads).to_string(index=False))
    if "cv" not in args.skip:
        print("== 5-fold CV")
        print(cross_validate(args.quick, args.threads).to_string(index=False))
    if "timing" not in args.skip:
        print("== cost")
        print(timing(args.threads).to_string(index=False))


if __name__ == "__main__":
    main()
