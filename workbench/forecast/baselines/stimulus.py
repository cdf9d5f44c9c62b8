"""Stimulus-evoked response baseline: every target frame is predicted by the average response
to the same stimulus phase, whatever the context.

Mode ``"zapbench"`` (ZAPBench's stimulus baseline, ``zapbench/ts_forecasting/configs/stimulus.py``:
``naive.ReturnCovariates`` on the covariate series ``240930_stimulus_evoked_response``):

- with the release's precomputed ``stimulus_evoked_response`` array (time x neuron) in the
  Dataset, the forecast of frame ``t`` is that array at ``t``;
- otherwise it is computed like the release's array (``processing/alignment_and_normalization.gin``,
  ``AverageEvokedResponseFilter`` with ``pad_side='left'``): each condition is cut into trials of
  explicit lengths (:data:`ZAPBENCH_TRIAL_LENGTHS`, the gin file's ``condition_period_offsets``);
  trials are right-aligned (a short first trial is padded at its start), averaged over all but the
  last one or two (:data:`ZAPBENCH_TRIALS_KEPT`, the gin file's
  ``condition_baselines_exclusive_max``), and trial ``k`` of length ``n`` is predicted by the
  last ``n`` frames of that average. Conditions without trials (``open loop``, ``dark``) are
  predicted by their mean over all their frames. A Dataset whose ``trial_lengths`` attribute
  (one list per condition; the synthetic recordings carry it) gives other lengths uses those, and
  leaves out the trials that reach into the test split (:func:`kept_trials`, which reproduces
  ZAPBench's exclusions on the release) unless a ``trials_kept`` attribute says otherwise.

Mode ``"workbench"``: the average of the *training* frames of each condition by trial phase (the
``trial_phase`` coordinate), never reading validation or test frames (ZAPBench's average includes
validation frames, and for trial-less conditions test frames too); frames without a trial or
without training repeats get their condition's training mean, held-out conditions the mean over
all training frames. Better wherever a score must not see the frames it is scored on.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from .. import protocol
from .base import TraceForecaster

__all__ = ["StimulusBaseline", "ZAPBENCH_TRIAL_LENGTHS", "ZAPBENCH_TRIALS_KEPT", "evoked_response",
           "kept_trials"]

ZAPBENCH_TRIAL_LENGTHS = protocol.RELEASE_TRIAL_LENGTHS
ZAPBENCH_TRIALS_KEPT = protocol.RELEASE_TRIALS_KEPT


def kept_trials(offsets, lengths) -> list[int | None]:
    """Slice ends over each condition's trials that leave out trials reaching into the test split.

    A trial is averaged unless it reaches more than one frame into the condition's test split
    (ZAPBench's split fractions, held-out condition included). With the release's offsets and
    :data:`ZAPBENCH_TRIAL_LENGTHS` this gives exactly :data:`ZAPBENCH_TRIALS_KEPT`; it is the
    rule used for recordings that carry their own ``trial_lengths``.
    """
    kept = []
    for i, row in enumerate(lengths):
        if not row:
            kept.append(None)
            continue
        lo, hi = protocol.condition_bounds(offsets, i)
        n_train, n_val, _ = protocol._split_sizes(hi - lo)
        test_start = lo + n_train + n_val
        ends = int(offsets[i]) + np.cumsum(row)
        k = int(np.sum(ends <= test_start + 1))
        kept.append(None if k == len(row) else k - len(row))
    return kept


def _trial_table(ds: xr.Dataset):
    """Trial lengths and kept-trial slice ends for ``ds``'s conditions (attrs, else the release's)."""
    offsets = [int(v) for v in ds.attrs["condition_offsets"]]
    if "trial_lengths" in ds.attrs:
        lengths = [tuple(int(v) for v in row) for row in ds.attrs["trial_lengths"]]
    elif offsets == list(protocol.RELEASE_CONDITION_OFFSETS):
        lengths = list(ZAPBENCH_TRIAL_LENGTHS)
    else:
        raise ValueError("StimulusBaseline(mode='zapbench') needs the trial lengths of each condition: "
                         "the dataset has neither a 'stimulus_evoked_response' variable, nor a "
                         "'trial_lengths' attribute, nor the release's condition offsets")
    if len(lengths) != len(offsets) - 1:
        raise ValueError(f"trial_lengths has {len(lengths)} rows for {len(offsets) - 1} conditions")
    for i, row in enumerate(lengths):
        if row and (min(row) < 1 or sum(row) != offsets[i + 1] - offsets[i]):
            raise ValueError(f"trial lengths of condition {i} sum to {sum(row)}, the condition has "
                             f"{offsets[i + 1] - offsets[i]} frames")
    if "trials_kept" in ds.attrs:
        kept = [None if k is None or int(k) == 0 else int(k) for k in ds.attrs["trials_kept"]]
        if len(kept) != len(lengths):
            raise ValueError(f"trials_kept has {len(kept)} entries for {len(lengths)} conditions")
    else:
        kept = kept_trials(offsets, lengths)
    return offsets, lengths, kept


def evoked_response(traces, offsets, lengths, kept):
    """Templates and a frame -> template-row index reproducing ZAPBench's evoked response.

    Returns ``(templates (R, N) float64, row (T,) int64)`` with ``templates[row[t]]`` the
    forecast of frame ``t`` (see the module docstring). One template block per condition: the
    right-aligned trial average (its length is the longest trial), or one row (the condition mean).
    """
    x = np.asarray(traces, dtype=np.float64)
    blocks, row = [], np.zeros(x.shape[0], np.int64)
    base = 0
    for i in range(len(offsets) - 1):                  # loop over the 9 conditions
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        if not lengths[i]:
            with warnings.catch_warnings():          # an all-NaN (missing) neuron stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                blocks.append(np.nanmean(x[lo:hi], 0, keepdims=True))
            row[lo:hi] = base
            base += 1
            continue
        n_max = max(lengths[i])
        ends = lo + np.cumsum(lengths[i])
        starts = ends - np.asarray(lengths[i])
        use = list(range(len(lengths[i])))[:kept[i]]
        # right-aligned stack: template row j holds the frames n_max - j before each trial's end
        acc = np.zeros((n_max, x.shape[1]))
        cnt = np.zeros((n_max, x.shape[1]))
        for k in use:                                  # loop over a condition's trials (<= 10)
            n = ends[k] - starts[k]
            seg = x[starts[k]:ends[k]]
            ok = ~np.isnan(seg)                        # NaNs are left out, as ZAPBench's nanmean does
            acc[n_max - n:] += np.where(ok, seg, 0.0)
            cnt[n_max - n:] += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            blocks.append(acc / cnt)
        for k in range(len(lengths[i])):
            n = ends[k] - starts[k]
            row[starts[k]:ends[k]] = base + n_max - n + np.arange(n)
        base += n_max
    return np.concatenate(blocks), row


class StimulusBaseline(TraceForecaster):
    """Stimulus-evoked response (see the module docstring for both modes).

    The context is not used (``context`` only sets which windows are scored).
    """

    name = "stimulus"

    def __init__(self, context: int = 4, mode: str = "auto"):
        self.context = context
        self.mode = mode

    @property
    def requires(self):
        if getattr(self, "source_", None) == "release":
            return ("traces", "stimulus_evoked_response")
        return ("traces",)

    def _fit(self, ds: xr.Dataset):
        if self.mode_ == "zapbench":
            self._fit_zapbench(ds)
        else:
            self._fit_phase(ds)

    def _fit_zapbench(self, ds):
        if "stimulus_evoked_response" in ds:
            ser = ds["stimulus_evoked_response"]
            if ser.dims != ("time", "neuron") or ser.shape != ds["traces"].shape:
                raise ValueError(f"'stimulus_evoked_response' must be (time, neuron) like traces "
                                 f"{ds['traces'].shape}, got {ser.dims} {ser.shape}")
            self.source_ = "release"
            return
        offsets, lengths, kept = _trial_table(ds)
        templates, row = evoked_response(ds["traces"].values, offsets, lengths, kept)
        self.source_ = "trial_lengths"
        self.table_ = templates.astype(np.float32)
        self.frame_row_ = row

    def _fit_phase(self, ds):
        if "trial_phase" not in ds.coords:
            raise ValueError("StimulusBaseline(mode='workbench') needs a 'trial_phase' coordinate on time "
                             "(workbench.forecast.release.estimate_trial_phase derives it)")
        split = np.asarray(ds["split"].values).astype(str)
        held = set(ds.attrs.get("heldout_conditions", ()))
        names = list(ds.attrs["condition_names"])
        cidx = np.asarray(ds["condition_index"].values)
        is_held = np.isin(np.asarray(names, dtype=object)[cidx].astype(str), list(held))
        train = np.flatnonzero((split == "train") & ~is_held)
        if train.size == 0:
            raise ValueError("no training frames in the dataset ('split' == 'train')")
        phase = np.asarray(ds["trial_phase"].values)
        n_phase = int(max(0, phase.max()) + 1)
        x = np.asarray(ds["traces"].isel(time=train).values, dtype=np.float64)   # train frames only
        n_cond = len(names)
        key = cidx[train] * (n_phase + 1) + np.where((phase[train] >= 0), phase[train], n_phase)
        sums, counts = _nan_group_sums(key, n_cond * (n_phase + 1), x)
        csums, ccounts = _nan_group_sums(cidx[train], n_cond, x)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)          # a missing neuron stays NaN
            overall = np.nanmean(x, 0)
            cond_mean = np.where(ccounts > 0, csums / np.maximum(ccounts, 1), overall)
            table = np.where(counts > 0, sums / np.maximum(counts, 1),
                             np.repeat(cond_mean, n_phase + 1, axis=0))
        self.source_ = "train_phase_average"
        self.table_ = table.astype(np.float32)
        ph = np.where((phase >= 0) & (phase < n_phase), phase, n_phase)
        self.frame_row_ = cidx * (n_phase + 1) + ph
        self.train_frames_ = train

    def _frame_forecasts(self, ds, frames):
        """(len(frames), N) forecasts of positional frames ``frames`` of ``ds``."""
        if self.source_ == "release":
            return np.asarray(ds["stimulus_evoked_response"].isel(time=frames).values, np.float32)
        t = np.asarray(ds["time"].values)[frames]                       # absolute frame indices
        if t.max() >= self.frame_row_.size:
            raise ValueError(f"frame {t.max()} is past the {self.frame_row_.size} frames fitted")
        return self.table_[self.frame_row_[t]]

    def _predict_block(self, block, rel, ds, starts):
        """Each target frame looked up once; consecutive windows get a sliding view of them."""
        h = self.horizon
        t0 = int(starts.min()) + self.context
        t1 = int(starts.max()) + self.context + h
        if t1 > ds.sizes["time"]:
            raise ValueError("target frames reach past the end of the dataset")
        per_frame = self._frame_forecasts(ds, np.arange(t0, t1))          # (span, N)
        off = starts - int(starts.min())
        if starts.size > 1 and np.all(np.diff(starts) == 1):
            view = np.lib.stride_tricks.sliding_window_view(per_frame, h, axis=0)   # (span-h+1, N, h)
            return view[:starts.size].transpose(0, 2, 1)
        return per_frame[off[:, None] + np.arange(h)[None, :]]


def _nan_group_sums(key, n_groups, x):
    """Per-group sums of the rows of ``x`` and per-(group, neuron) counts, NaNs left out."""
    from scipy import sparse

    ind = sparse.csr_matrix((np.ones(key.size), (key, np.arange(key.size))), shape=(n_groups, key.size))
    ok = ~np.isnan(x)
    return np.asarray(ind @ np.where(ok, x, 0.0)), np.asarray(ind @ ok.astype(np.float64))
