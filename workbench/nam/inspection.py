"""Read-outs of a fitted LA-NAM as xarray / pandas: shape functions with credible bands, feature
importance and the marglik feature-selection report, interaction ranking and 2-D interactions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import xarray as xr
from scipy.stats import norm

from workbench.exceptions import check_fitted
from workbench.nam.interactions import (
    core_weight_covariance,
    linear_laplace,
    mutual_information,
    residual_interaction_information,
)
from workbench.nam.purification import marginal_samples, pair_grand_mean, pair_marginal

LAYERS = ["w1", "b1", "w2", "b2", "table", "missing"]


def check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    return float(level)


class InteractionRanking(NamedTuple):
    matrix: xr.Dataset  # mutual_information, correlation over (feature_i, feature_j)
    table: pd.DataFrame  # pairs sorted by mutual information, best first


class InspectionMixin:
    # ------------------------------------------------------------------ helpers
    def _locate(self, feature: str) -> tuple[str, int]:
        pre = self.preprocessor_
        if feature in pre.numeric_:
            return "numeric", pre.numeric_.index(feature)
        if feature in pre.categorical_:
            return "categorical", pre.categorical_.index(feature)
        raise ValueError(f"unknown feature {feature!r}; fitted features: {pre.feature_names_}")

    @torch.no_grad()
    def _train_outputs(self) -> dict[str, torch.Tensor]:
        x_num, x_cat, _ = self._train
        rows = 4096  # chunks: the (rows, features, hidden) activations stay bounded on big tables
        parts = [self.model_.contributions(x_num[i : i + rows], x_cat[i : i + rows])
                 for i in range(0, len(x_num), rows)]
        return {g: torch.cat([p[g] for p in parts]).double() for g in parts[0]}

    def _feature_outputs(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each feature's whole contribution (N, F, K): a numeric feature's subnetwork plus its
        missing-value offset where it is missing (pairs excluded)."""
        cols = []
        for f in self.preprocessor_.feature_names_:
            g, s = self._locate(f)
            c = out[g][:, s]
            cols.append(c + out["missing"][:, s] if g == "numeric" else c)
        return torch.stack(cols, dim=1)

    def _filled_train(self) -> torch.Tensor:
        """The standardised numeric training inputs with missing values at the mean (0)."""
        return torch.nan_to_num(self._train[0], nan=0.0)

    def _importance(self) -> xr.DataArray:
        phi = self._feature_outputs(self._train_outputs())
        scale2 = self._output_scale() ** 2
        values = [float(v) * scale2 for v in phi.var(0, unbiased=False).sum(-1).cpu()]
        return xr.DataArray(
            np.array(values), dims="feature", coords={"feature": self.preprocessor_.feature_names_},
            name="importance", attrs={"description": "variance of the centred shape over the training data"},
        )

    # ------------------------------------------------------------------ shape functions
    def _grid(self, grid) -> dict[str, np.ndarray]:
        pre, X = self.preprocessor_, self._X_train
        feats = pre.feature_names_
        if grid is None or isinstance(grid, (int, np.integer)):
            n = 100 if grid is None else int(grid)
            if n < 2:
                raise ValueError(f"grid must have at least 2 points, got {n}")
            out = {}
            for f in feats:
                if f in pre.numeric_:
                    lo, hi = np.nanpercentile(X[f].to_numpy(float), [5, 95])
                    out[f] = np.linspace(lo, hi, n)
                else:
                    out[f] = np.asarray(pre.categories_[f], dtype=object)
            return out
        if isinstance(grid, bool):
            raise TypeError("grid must be None, an int, a dict or a DataArray; got a bool")
        if isinstance(grid, xr.DataArray):
            grid = {f: grid.sel(feature=f).values for f in grid["feature"].values.tolist()}
            grid = {f: v[~pd.isna(v)] if f in pre.numeric_ else v for f, v in grid.items()}
        if not isinstance(grid, Mapping):
            raise TypeError(f"grid must be None, an int, a dict or a DataArray; got {type(grid).__name__}")
        unknown = [f for f in grid if f not in feats]
        if unknown:
            raise ValueError(f"grid names unknown features {unknown}; fitted features: {feats}")
        if not grid:
            raise ValueError("grid is empty; name at least one feature")
        out = {}
        for f, v in grid.items():
            v = np.asarray(v, dtype=object if f not in pre.numeric_ else None)
            if v.ndim != 1 or len(v) == 0:
                raise ValueError(f"grid for {f!r} must be a non-empty 1-D sequence, got shape {v.shape}")
            if f in pre.numeric_:
                try:
                    v = v.astype(np.float64)
                except (TypeError, ValueError):
                    raise ValueError(f"grid for numeric feature {f!r} must be numeric") from None
                if not np.isfinite(v).all():
                    raise ValueError(f"grid for {f!r} has non-finite values (NaN / inf); the missing-value "
                                     "effect is reported as missing_mean / missing_std")
                pre.check_standard(f, v, what=f"grid for {f!r}")
            out[f] = v
        return out

    @torch.no_grad()
    def shape_functions(self, grid=None, level: float = 0.95) -> xr.Dataset:
        """Centred shape function of every feature with its credible band.

        ``mean`` is ``f_i(x) - mean_n f_i(x_n)`` (training-data mean), ``std`` the posterior std of
        that centred function under the subnetwork's own Laplace block, ``sqrt(J~ Sigma_i J~^T)``
        with ``J~ = J_i(x) - mean_n J_i(x_n)``; ``lower``/``upper`` the central ``level`` band.
        Units: target units (regression) or logits (classification). ``grid``: ``None`` (100
        points between the 5th and 95th percentile; every level for categoricals), an int (that
        many points), a dict ``{feature: values}`` or a DataArray ``(feature, x)`` in original units.
        ``missing_mean`` / ``missing_std`` / ``missing_lower`` / ``missing_upper`` (per feature) are the
        centred effect of a missing value with its band: for a numeric feature the shape at the
        training mean plus the learned missing-value offset, for a categorical one its ``missing``
        level; ``missing_fraction`` (coord) is the share of missing training values.
        Dims ``(feature, x)`` (plus ``class`` for multiclass); coords ``x_value`` / ``x_label``.
        """
        check_fitted(self, "model_", "shape_functions")
        check_level(level)
        model = self.model_
        grid = self._grid(grid)
        feats = list(grid)
        n_x = max(len(v) for v in grid.values())
        K = model.n_out
        mean = np.full((len(feats), n_x, K), np.nan)
        std = np.full((len(feats), n_x, K), np.nan)
        values = np.full((len(feats), n_x), np.nan)
        labels = np.full((len(feats), n_x), "", dtype=object)
        cache = self._centred_effects(*self._grid_inputs(grid, n_x))
        scale = self._output_scale()
        miss_mean, miss_std = np.full((len(feats), K), np.nan), np.full((len(feats), K), np.nan)
        for k, (f, v) in enumerate(grid.items()):
            g, s = self._locate(f)
            m = len(v)
            mean[k, :m] = cache[g][0][:m, s].cpu().numpy() * scale
            std[k, :m] = cache[g][1][:m, s].clamp_min(0).sqrt().cpu().numpy() * scale
            miss_mean[k] = cache[g][0][n_x, s].cpu().numpy() * scale
            miss_std[k] = cache[g][1][n_x, s].clamp_min(0).sqrt().cpu().numpy() * scale
            if g == "numeric":
                values[k, :m] = np.asarray(v, dtype=float)
                labels[k, :m] = [f"{x:.4g}" for x in values[k, :m]]
            else:
                values[k, :m] = np.arange(m)
                labels[k, :m] = [str(c) for c in v]
        z = float(norm.ppf(0.5 + level / 2))
        dims = ("feature", "x", "class")
        data = {"mean": mean, "std": std, "lower": mean - z * std, "upper": mean + z * std}
        miss = {"missing_mean": miss_mean, "missing_std": miss_std,
                "missing_lower": miss_mean - z * miss_std, "missing_upper": miss_mean + z * miss_std}
        coords = {
            "feature": feats,
            "x_value": (("feature", "x"), values),
            "x_label": (("feature", "x"), labels),
            "kind": ("feature", [self.preprocessor_.dtypes_[f] for f in feats]),
            "missing_fraction": ("feature", [self.preprocessor_.missing_fraction_[f] for f in feats]),
        }
        if K == 1:
            ds = xr.Dataset({**{k: (dims[:2], v[..., 0]) for k, v in data.items()},
                             **{k: ("feature", v[:, 0]) for k, v in miss.items()}}, coords=coords)
        else:
            coords["class"] = list(self.classes_)
            ds = xr.Dataset({**{k: (dims, v) for k, v in data.items()},
                             **{k: (("feature", "class"), v) for k, v in miss.items()}}, coords=coords)
        ds.attrs.update(level=level, centred="by the training-data mean of each shape",
                        missing="missing_*: the centred effect of a missing value (numeric: the shape at "
                                "the training mean plus the learned missing-value offset; categorical: "
                                "the missing level), with its band",
                        units="target units" if self.likelihood_ == "regression" else "logit")
        return ds

    def _grid_inputs(self, grid: dict, n_x: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs of a grid (n_x rows, shorter grids padded with their last value) plus one
        last row with every feature missing (the ``missing_*`` read-outs)."""
        pre = self.preprocessor_
        num_cols = np.zeros((n_x + 1, len(pre.numeric_)))
        num_cols[n_x] = np.nan
        cat_cols = np.zeros((n_x + 1, len(pre.categorical_)), dtype=np.int64)
        cat_cols[n_x] = [len(pre.categories_[c]) for c in pre.categorical_]  # the missing level
        for f, v in grid.items():
            g, s = self._locate(f)
            if g == "numeric":
                num_cols[:n_x, s] = pre.to_standard(f, np.pad(v, (0, n_x - len(v)), mode="edge"))
            else:
                lookup = {c: i for i, c in enumerate(pre.categories_[f])}
                bad = [c for c in v if c not in lookup]
                if bad:
                    raise ValueError(f"grid for {f!r} has unknown categories {bad[:5]}; levels: "
                                     f"{pre.categories_[f][:10]}")
                codes = np.array([lookup[c] for c in v], dtype=np.int64)
                cat_cols[:n_x, s] = np.pad(codes, (0, n_x - len(codes)), mode="edge")
        return (torch.as_tensor(num_cols, dtype=torch.float32).to(self.device_),
                torch.as_tensor(cat_cols).to(self.device_))

    @torch.no_grad()
    def _centred_effects(self, x_num, x_cat) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Centred effect and its posterior variance per subnetwork, group -> ((G, S, K), (G, S, K)):
        the numeric entries include the missing-value offsets (and the pairs' main-effect parts)."""
        model, post = self.model_, self.posterior_
        contrib = model.contributions(x_num, x_cat)
        jacs = model.jacobians(x_num, x_cat)
        cache = {}
        for g in ("numeric", "categorical", "missing"):
            if g in jacs:
                jc = jacs[g].double() - post.curv.mean_jac[g]
                cache[g] = (contrib[g].double() - post.curv.mean_out[g],
                            post.functional_variance(g, jc).diagonal(dim1=-2, dim2=-1))
        if "numeric" in cache:  # independent blocks: means and variances add
            miss = cache.pop("missing")
            cache["numeric"] = (cache["numeric"][0] + miss[0], cache["numeric"][1] + miss[1])
            if "pair" in model.groups:  # fold the pairs' main-effect parts in
                pm, pv = self._pair_main_effects(torch.nan_to_num(x_num, nan=0.0))
                cache["numeric"] = (cache["numeric"][0] + pm, cache["numeric"][1] + pv)
        return cache

    @torch.no_grad()
    def _pair_main_effects(self, x_num: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Main-effect parts ``h_a - h_0`` of the pair subnetworks (see :mod:`workbench.nam.purification`)
        at the numeric grid ``x_num`` (G, F_num): mean and variance (G, F_num, K), float64."""
        group, idx, post = self.model_.groups["pair"], self.model_.pair_index, self.posterior_
        samples = marginal_samples(self._filled_train())[:, idx]  # (M, Q, 2)
        h0, j0 = pair_grand_mean(group, samples)
        G, K = x_num.shape[0], self.model_.n_out
        mean = torch.zeros(G, x_num.shape[1], K, dtype=torch.float64, device=x_num.device)
        var = torch.zeros_like(mean)
        for side in (0, 1):
            out, jac = pair_marginal(group, x_num[:, idx[:, side]], samples[:, :, 1 - side], side)
            v = post.functional_variance("pair", jac - j0).diagonal(dim1=-2, dim2=-1)
            mean.index_add_(1, idx[:, side], out - h0)
            var.index_add_(1, idx[:, side], v)
        return mean, var

    def training_data(self) -> xr.Dataset:
        """The training inputs for rugs / histograms: ``value (sample, feature)`` in original units
        (category index for categoricals) and the ``target``."""
        check_fitted(self, "model_", "this method")
        pre, X = self.preprocessor_, self._X_train
        cols = []
        for f in pre.feature_names_:
            if f in pre.numeric_:
                cols.append(X[f].to_numpy(float))
            else:
                lookup = {c: i for i, c in enumerate(pre.categories_[f])}
                cols.append(X[f].astype(object).map(lookup).to_numpy(float))
        y = self._train[2].cpu().numpy().astype(float)
        if self.likelihood_ == "regression":
            y = y * self.y_scale_ + self.y_mean_
        return xr.Dataset(
            {"value": (("sample", "feature"), np.stack(cols, 1)), "target": ("sample", y)},
            coords={"feature": pre.feature_names_, "kind": ("feature", [pre.dtypes_[f] for f in pre.feature_names_])},
        )

    # ------------------------------------------------------------------ selection
    @property
    def prior_precision_(self) -> xr.DataArray:
        """Learned layerwise prior precisions (feature, layer); NaN where a layer does not exist."""
        check_fitted(self, "model_", "this method")
        feats = self.preprocessor_.feature_names_
        out = np.full((len(feats), len(LAYERS)), np.nan)
        for k, f in enumerate(feats):
            g, s = self._locate(f)
            parts = [g, "missing"] if g == "numeric" else [g]
            for part in parts:
                names = self.model_.groups[part].slot_names
                vals = self.log_prior_[part][s].exp().cpu().numpy()
                for name, v in zip(names, vals):
                    out[k, LAYERS.index(name)] = v
        return xr.DataArray(out, dims=("feature", "layer"), coords={"feature": feats, "layer": LAYERS},
                            name="prior_precision", attrs={"initial": self.prior_precision})

    def feature_selection_report(self, threshold: float | None = None) -> pd.DataFrame:
        """Which features the marglik switched off: importance, learned precisions, growth factor
        of the output-layer precision (``w2``, or ``table``) vs its initial value, and the
        ``switched_off`` flag (relative importance below ``threshold`` and that precision grew).
        The importance includes the missing-value effect; ``missing_fraction``, ``missing_effect``
        and ``missing_std`` (the centred effect of a missing value and its posterior std, as
        :meth:`shape_functions`; multiclass: the class where it is most significant) and
        ``missing_significant`` (its 95 % band excludes 0) report it per feature.
        Sorted by importance, most important first."""
        check_fitted(self, "model_", "feature_selection_report")
        thr = self.switch_off_threshold if threshold is None else threshold
        if isinstance(thr, bool) or not isinstance(thr, (int, float, np.floating)) or not 0 <= thr < 1:
            raise ValueError(f"threshold must be a number in [0, 1) or None, got {thr!r}")
        imp = self.feature_importance_.to_series()
        prec = self.prior_precision_.to_pandas()
        out_layer = prec["w2"].fillna(prec["table"])
        df = pd.DataFrame({
            "feature": imp.index, "kind": [self.preprocessor_.dtypes_[f] for f in imp.index],
            "importance": imp.values, "relative_importance": (imp / imp.sum()).values,
        })
        for layer in LAYERS:
            if prec[layer].notna().any():
                df[f"prior_precision_{layer}"] = prec[layer].values
        df["precision_growth"] = (out_layer / self.prior_precision).values
        df["switched_off"] = (df["relative_importance"] < thr) & (df["precision_growth"] > 1.0)
        sf = self.shape_functions(grid={f: self._grid(2)[f][:1] for f in imp.index})
        m, sd = sf["missing_mean"].values.reshape(len(imp), -1), sf["missing_std"].values.reshape(len(imp), -1)
        pick = np.argmax(np.abs(m) / np.maximum(sd, 1e-300), axis=1)
        df["missing_fraction"] = sf["missing_fraction"].values
        df["missing_effect"] = m[np.arange(len(imp)), pick]
        df["missing_std"] = sd[np.arange(len(imp)), pick]
        df["missing_significant"] = np.abs(df["missing_effect"]) > norm.ppf(0.975) * df["missing_std"]
        return df.sort_values("importance", ascending=False).reset_index(drop=True)

    # ------------------------------------------------------------------ interactions
    def rank_interactions(self) -> InteractionRanking:
        """Rank feature pairs by a residual-aware Gaussian mutual information (see
        :mod:`workbench.nam.interactions`): ``-1/2 log(1 - rho^2)`` with ``rho`` the multiple
        correlation between what the fitted additive model leaves unexplained (working residual)
        and the pair's non-additive product terms. Reported alongside: the paper's
        posterior-dependence score, the MI of the subnetwork weights under a full Laplace over the
        additive combination ``y ~ b + sum_j w_j f_j(x_j)`` (target-independent for Gaussian
        likelihoods, so it also ranks correlated non-interacting pairs high).

        Returns ``matrix`` (Dataset over ``(feature_i, feature_j)``: ``mutual_information``,
        ``residual_correlation``, ``posterior_mutual_information``, ``correlation`` (posterior))
        and ``table`` (every unordered pair, highest ``mutual_information`` first)."""
        check_fitted(self, "model_", "this method")
        out = self._train_outputs()
        feats = self.preprocessor_.feature_names_
        y = self._train[2].cpu()
        out = {g: v.cpu() for g, v in out.items()}
        phi = self._feature_outputs(out)  # (N, F, K)
        phi = phi - phi.mean(0)
        sigma = float(self.log_sigma_.exp()) if self.likelihood_ == "regression" else 1.0
        la = linear_laplace(phi, y, self.likelihood_, sigma=sigma)  # MAP weights + evidence-optimal prior
        cov = core_weight_covariance(phi, y, self.likelihood_, la, sigma=sigma)  # full Laplace (core)
        F = len(feats)
        post_mi, post_rho = mutual_information(cov[:F, :F])
        mi, res_rho = residual_interaction_information(
            self._interaction_basis(phi), torch.cat([torch.ones(len(phi), 1, dtype=phi.dtype), phi.flatten(1)], 1),
            *self._working_residual(sum(o.sum(1) for o in out.values()), y),
        )
        coords = {"feature_i": feats, "feature_j": feats}
        dims = ("feature_i", "feature_j")
        matrix = xr.Dataset(
            {"mutual_information": (dims, mi.numpy()), "residual_correlation": (dims, res_rho.numpy()),
             "posterior_mutual_information": (dims, post_mi.numpy()), "correlation": (dims, post_rho.numpy())},
            coords=coords,
            attrs={"prior_precision": float(la["prior_precision"]),
                   "score": "residual-aware Gaussian MI -1/2 log(1 - rho^2), see rank_interactions"},
        )
        iu, ju = np.triu_indices(F, k=1)
        table = pd.DataFrame({
            "feature_i": np.asarray(feats, dtype=object)[iu], "feature_j": np.asarray(feats, dtype=object)[ju],
            "mutual_information": mi.numpy()[iu, ju], "residual_correlation": res_rho.numpy()[iu, ju],
            "posterior_mutual_information": post_mi.numpy()[iu, ju], "correlation": post_rho.numpy()[iu, ju],
        }).sort_values("mutual_information", ascending=False, kind="stable").reset_index(drop=True)
        return InteractionRanking(matrix, table)

    def _interaction_basis(self, phi: torch.Tensor) -> torch.Tensor:
        """Per-feature basis for pairwise product terms, (N, F, 1 + K): the standardised input
        (numeric; the output again for categoricals) and the standardised centred subnetwork outputs."""
        x_num = self._filled_train().double().cpu()
        cols = []
        for k, f in enumerate(self.preprocessor_.feature_names_):
            g, s = self._locate(f)
            first = x_num[:, s : s + 1] if g == "numeric" else phi[:, k, :1]
            cols.append(torch.cat([first, phi[:, k]], dim=1))
        u = torch.stack(cols, dim=1)
        u = u - u.mean(0)
        return u / u.std(0).clamp_min(1e-12)

    def _working_residual(self, f: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Working residual and IRLS weight of the fitted model's outputs ``f`` (N, K)."""
        f = f.double()
        if self.likelihood_ == "regression":
            return y.double().reshape(f.shape) - f, torch.ones_like(f)
        if self.likelihood_ == "binary":
            p = torch.sigmoid(f)
            target = y.double().reshape(f.shape)
        else:
            p = torch.softmax(f, -1)
            target = torch.nn.functional.one_hot(y.long(), f.shape[1]).double()
        w = (p * (1 - p)).clamp_min(1e-10)
        return (target - p) / w, w

    @torch.no_grad()
    def interaction_functions(self, pair: tuple[str, str], n_points: int = 40, level: float = 0.95) -> xr.Dataset:
        """2-D shape of a fitted pairwise subnetwork, purified to its pure interaction
        ``h - h_a - h_b + h_0`` (its main-effect parts are reported in :meth:`shape_functions`;
        see :mod:`workbench.nam.purification`): ``mean`` and ``std`` (its own Laplace block) on a
        grid between the 5th and 95th percentile of each feature, dims ``(x_i, x_j)`` in original
        units."""
        check_fitted(self, "model_", "this method")
        pairs = [tuple(p) for p in getattr(self, "interaction_pairs_", [])]
        key = tuple(pair)
        if key not in pairs and key[::-1] not in pairs:
            raise ValueError(f"pair {key} has no fitted interaction subnetwork; fitted pairs: {pairs} "
                             "(call fit_interactions first)")
        flip = key not in pairs
        q = pairs.index(key[::-1] if flip else key)
        a, b = pairs[q]
        pre, X = self.preprocessor_, self._X_train
        grids = [np.linspace(*np.nanpercentile(X[f].to_numpy(float), [5, 95]), n_points) for f in (a, b)]
        ga, gb = np.meshgrid(grids[0], grids[1], indexing="ij")
        x_num = np.zeros((ga.size, len(pre.numeric_)))
        x_num[:, pre.numeric_.index(a)] = pre.to_standard(a, ga.ravel())
        x_num[:, pre.numeric_.index(b)] = pre.to_standard(b, gb.ravel())
        x_num = torch.as_tensor(x_num, dtype=torch.float32).to(self.device_)
        x_cat = torch.zeros((x_num.shape[0], len(pre.categorical_)), dtype=torch.long, device=self.device_)
        group = self.model_.groups["pair"]
        inp = self.model_.group_inputs(x_num, x_cat)["pair"]
        post = self.posterior_
        # purified (pure interaction): h - h_a(x_a) - h_b(x_b) + h_0, see workbench.nam.purification
        samples = marginal_samples(self._filled_train())[:, self.model_.pair_index]  # (M, Q, 2), all pairs batched
        h0, j0 = pair_grand_mean(group, samples)
        Q = samples.shape[1]
        grid_t = [torch.as_tensor(pre.to_standard(f, g), dtype=torch.float32).to(self.device_)[:, None].expand(-1, Q)
                  for f, g in zip((a, b), grids)]
        ma, ja = (t[:, q] for t in pair_marginal(group, grid_t[0], samples[:, :, 1], side=0))  # (n, K), (n, K, P)
        mb, jb = (t[:, q] for t in pair_marginal(group, grid_t[1], samples[:, :, 0], side=1))
        out = group(inp)[:, q].double().reshape(n_points, n_points, -1)
        mean = (out - ma[:, None] - mb[None, :] + h0[q]).reshape(n_points * n_points, -1)
        jfull = group.jacobian(inp)[:, q].double().reshape(n_points, n_points, *ja.shape[1:])
        jac = (jfull - ja[:, None] - jb[None, :] + j0[q]).reshape(n_points * n_points, 1, *ja.shape[1:])
        var = post.functional_variance("pair", jac, subnets=slice(q, q + 1))[:, 0].diagonal(dim1=-2, dim2=-1)
        scale = self._output_scale()
        K = self.model_.n_out
        m = (mean.cpu().numpy() * scale).reshape(n_points, n_points, K)
        s = (var.clamp_min(0).sqrt().cpu().numpy() * scale).reshape(n_points, n_points, K)
        if flip:
            m, s, grids, (a, b) = m.transpose(1, 0, 2), s.transpose(1, 0, 2), grids[::-1], (b, a)
        z = float(norm.ppf(0.5 + level / 2))
        dims = ("x_i", "x_j", "class")
        coords = {"x_i": grids[0], "x_j": grids[1]}
        data = {"mean": m, "std": s, "lower": m - z * s, "upper": m + z * s}
        if K == 1:
            ds = xr.Dataset({k: (dims[:2], v[..., 0]) for k, v in data.items()}, coords=coords)
        else:
            coords["class"] = list(self.classes_)
            ds = xr.Dataset({k: (dims, v) for k, v in data.items()}, coords=coords)
        ds["x_i"].attrs["long_name"], ds["x_j"].attrs["long_name"] = a, b
        ds.attrs.update(feature_i=a, feature_j=b, level=level)
        return ds
