"""Naive baselines: mean of the context, and the stimulus-evoked response."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .base import TraceForecaster

__all__ = ["MeanBaseline", "StimulusBaseline"]


def _group_sums(key, n_groups, x):
    """Sum the rows of ``x`` by group ``key`` with one sparse indicator product."""
    from scipy import sparse

    ind = sparse.csr_matrix((np.ones(key.size), (key, np.arange(key.size))), shape=(n_groups, key.size))
    return np.asarray(ind @ x)


class MeanBaseline(TraceForecaster):
    """Predict the mean of the last ``context`` frames for every lead (``context=1``: last value)."""

    name = "mean"

    def __init__(self, context: int = 4):
        self.context = context

    def _predict_block(self, block, rel, ds, starts):
        """Context means from one cumulative sum over the block: O((span) N), not O(W C N).

        NaNs are summed as zeros and counted apart, so a NaN makes only the windows whose context
        holds it NaN (not every later window, as a plain cumulative sum would).
        """
        lo = int(rel.min())
        hi = int(rel.max()) + self.context
        if rel.size * self.context <= 2 * (hi - lo):          # few, non-overlapping windows: direct means
            return super()._predict_block(block, rel, ds, starts)
        x = block[lo:hi]
        nan = np.isnan(x)
        cs = np.zeros((hi - lo + 1, block.shape[1]))
        np.cumsum(np.where(nan, 0.0, x) if nan.any() else x, axis=0, dtype=np.float64, out=cs[1:])
        r = rel - lo
        m = (cs[r + self.context] - cs[r]) / self.context
        if nan.any():
            cn = np.zeros((hi - lo + 1, block.shape[1]), np.int64)
            np.cumsum(nan, axis=0, out=cn[1:])
            m[(cn[r + self.context] - cn[r]) > 0] = np.nan
        m = m.astype(np.float32)
        return np.broadcast_to(m[:, None, :], (rel.size, self.horizon, block.shape[1]))

    def block_errors(self, ds, starts):
        """Fused: running context sums and scoring in one compiled pass (see ``kernels``)."""
        from ..kernels import score_context_mean

        return score_context_mean(np.asarray(ds["traces"].values), starts, self.context, self.horizon)

    def _predict(self, ctx, ds, starts):
        m = ctx.mean(axis=1, dtype=np.float64).astype(np.float32)
        return np.broadcast_to(m[:, None, :], (ctx.shape[0], self.horizon, ctx.shape[2]))


class StimulusBaseline(TraceForecaster):
    """Stimulus-evoked response: the average over the *training* repeats of the same stimulus.

    Fitting averages the training frames (``split == "train"``, non-held-out conditions) of each
    condition by their trial phase (``trial_phase`` coordinate: the frame's position in its
    condition's repeated stimulus trial). A target frame is predicted by that average for its
    condition and phase; frames without a trial (e.g. ``dark``) or without training repeats get
    their condition's training mean, and conditions without training frames (held-out) the mean
    over all training frames. Val and test frames are never read. The context is not used
    (``context`` only sets which windows are scored).
    """

    name = "stimulus"

    def __init__(self, context: int = 4):
        self.context = context

    def _fit(self, ds: xr.Dataset):
        if "trial_phase" not in ds.coords:
            raise ValueError("StimulusBaseline needs a 'trial_phase' coordinate on time "
                             "(workbench.forecast.release.estimate_trial_phase derives it)")
        split = np.asarray(ds["split"].values).astype(str)
        held = set(ds.attrs.get("heldout_conditions", ()))
        cond_names = list(ds.attrs["condition_names"])
        cidx = np.asarray(ds["condition_index"].values)
        is_held = np.isin(np.asarray(cond_names, dtype=object)[cidx].astype(str), list(held))
        train = np.flatnonzero((split == "train") & ~is_held)
        if train.size == 0:
            raise ValueError("no training frames in the dataset ('split' == 'train')")
        phase = np.asarray(ds["trial_phase"].values)
        self.n_phase_ = int(max(0, phase.max()) + 1)
        n_cond = len(cond_names)
        x = np.asarray(ds["traces"].isel(time=train).values, dtype=np.float64)   # train frames only
        key = self._keys(cidx[train], phase[train])
        n_keys = n_cond * (self.n_phase_ + 1)
        counts = np.bincount(key, minlength=n_keys)
        sums = _group_sums(key, n_keys, x)                             # grouped sums, vectorised
        cond_key = cidx[train]
        cond_counts = np.bincount(cond_key, minlength=n_cond)
        cond_sums = _group_sums(cond_key, n_cond, x)
        overall = x.mean(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            cond_mean = np.where(cond_counts[:, None] > 0, cond_sums / np.maximum(cond_counts, 1)[:, None],
                                 overall)
            table = sums / np.maximum(counts, 1)[:, None]
        fallback = np.repeat(cond_mean, self.n_phase_ + 1, axis=0)
        self.table_ = np.where(counts[:, None] > 0, table, fallback).astype(np.float32)
        self.counts_ = counts.reshape(n_cond, self.n_phase_ + 1)
        self.train_frames_ = train

    def _keys(self, cidx, phase):
        phase = np.where((phase >= 0) & (phase < self.n_phase_), phase, self.n_phase_)
        return cidx * (self.n_phase_ + 1) + phase

    def _predict_block(self, block, rel, ds, starts):
        """Look up each target frame once (frames shared by overlapping windows), then view.

        Consecutive windows get a sliding-window view of the per-frame predictions (no
        (window, lead, neuron) gather); other start sets one fancy index.
        """
        h = self.horizon
        t0 = int(starts.min()) + self.context
        t1 = int(starts.max()) + self.context + h
        if t1 > ds.sizes["time"]:
            raise ValueError("target frames reach past the end of the dataset slice")
        frames = np.arange(t0, t1)
        cidx = np.asarray(ds["condition_index"].values)[frames]
        phase = np.asarray(ds["trial_phase"].values)[frames]
        per_frame = self.table_[self._keys(cidx, phase)]              # (span, N)
        off = starts - int(starts.min())
        if starts.size > 1 and np.all(np.diff(starts) == 1):
            view = np.lib.stride_tricks.sliding_window_view(per_frame, h, axis=0)   # (span-h+1, N, h)
            return view[:starts.size].transpose(0, 2, 1)
        return per_frame[off[:, None] + np.arange(h)[None, :]]

    def block_errors(self, ds, starts):
        """Each target frame is predicted and scored once; windows index the per-frame sums.

        A window's lead-h error is the error of its target frame, whatever the window, so the
        work is (target frames x neurons) instead of (windows x leads x neurons).
        """
        from ..kernels import frame_errors, windows_from_frames

        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        first = starts + self.context
        frames = np.unique(first[:, None] + np.arange(self.horizon)[None, :])
        if frames.size and frames[-1] >= ds.sizes["time"]:
            raise ValueError("target frames reach past the end of the dataset slice")
        cidx = np.asarray(ds["condition_index"].values)[frames]
        phase = np.asarray(ds["trial_phase"].values)[frames]
        keys = self._keys(cidx, phase)
        sums = frame_errors(self.table_, np.asarray(ds["traces"].values), frames, rows=keys)
        return windows_from_frames(sums, frames, first, self.horizon)

    def _predict(self, ctx, ds, starts):
        t = starts[:, None] + self.context + np.arange(self.horizon)[None, :]
        if t.max() >= ds.sizes["time"]:
            raise ValueError("target frames reach past the end of the dataset slice")
        cidx = np.asarray(ds["condition_index"].values)[t]
        phase = np.asarray(ds["trial_phase"].values)[t]
        return self.table_[self._keys(cidx, phase)]                   # (W, H, N)
