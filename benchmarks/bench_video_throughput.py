"""Video forecaster throughput at release-like scale (``bench_video.py --size s2``, #17.3).

A synthetic s2-sized recording (z 72 x y 332 x x 512, float32, as the release's s2 scale; smooth
activity and a label image with background) is trained for ``--steps`` steps after ``--warmup``
steps, once per ``--precision``, and reports for each run:

- training steps/s (steps after the warm-up, each step's loss read back, i.e. one GPU sync a step),
- peak GPU memory (``torch.cuda.max_memory_allocated``) on CUDA,
- masked validation MAE at leads 1 and 4 on windows never trained on (same steps for every run),
- samples/s of the data pipeline alone: the streaming ``DataLoader`` (``--workers``) reading each
  batch's frames from a zarr store of the same volume (no training).

``--scale-down k`` divides y and x by ``k`` for a CPU smoke run of the same code.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from workbench._torch_utils import resolve_device
from workbench.forecast.video import VideoForecaster
from workbench.forecast.video.loader import StepSampler, frame_loader, lead_probabilities

S2_SHAPE = (72, 332, 512)


def make_volume(frames: int, scale_down: int = 1, seed: int = 0):
    """(time, z, y, x) float32 volume of smooth travelling activity and a (z, y, x) label image."""
    z, y, x = S2_SHAPE[0], S2_SHAPE[1] // scale_down, S2_SHAPE[2] // scale_down
    rng = np.random.default_rng(seed)
    cy, cx = -(-y // 4), -(-x // 4)
    coarse = rng.standard_normal((frames + 8, z, cy, cx), dtype=np.float32)
    kernel = np.exp(-np.arange(8) / 3.0).astype(np.float32)
    smooth = sum(k * coarse[i:i + frames] for i, k in enumerate(kernel)) / kernel.sum()
    vol = np.repeat(np.repeat(smooth, 4, axis=2), 4, axis=3)[:, :, :y, :x]
    labels = rng.integers(0, 2000, (z, cy, cx)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.5] = 0                           # background
    seg = np.repeat(np.repeat(labels, 4, axis=1), 4, axis=2)[:, :y, :x]
    return np.ascontiguousarray(vol), seg


def _val_mae(est, vol, seg, starts, leads=(1, 4)):
    pred = est.predict_arrays(vol, starts, list(leads), batch_size=2)    # (W, L, z, y, x)
    m = seg > 0
    out = []
    for j, lead in enumerate(leads):
        target = vol[np.asarray(starts) + est.context - 1 + lead]
        out.append(float(np.abs(pred[:, j] - target)[:, m].mean()))
    return out


def _pipeline_samples_per_s(store_vol, starts, context, horizon, batch_size, workers, n_batches=20):
    sampler = StepSampler(torch.Generator().manual_seed(0), starts.size, lead_probabilities(horizon, "uniform"),
                          batch_size, 0, n_batches)
    loader = frame_loader(store_vol, starts, context, sampler, num_workers=workers,
                          pin_memory=torch.cuda.is_available(), prefetch_factor=4)
    it = iter(loader)
    next(it)                                                              # workers started
    t0 = time.perf_counter()
    n = sum(ctx.shape[0] for _, _, _, ctx, _ in it)
    return n / (time.perf_counter() - t0)


def run(args) -> list[dict]:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True          # fixed shapes: let cuDNN pick its 3-D conv kernels
    frames = int(args.frames)
    vol, seg = make_volume(frames, args.scale_down)
    context, horizon = int(args.context), int(args.horizon)
    starts = np.arange(0, frames - context - horizon)
    n_val = max(2, starts.size // 5)
    train, val = starts[:-n_val], starts[-n_val:][:4]
    print(f"s2-like volume {vol.shape} float32 ({vol.nbytes / 2**30:.2f} GiB), {int(seg.max())} labels; "
          f"device {device}; {len(train)} training windows, {len(val)} validation windows")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            import zarr  # noqa: F401 - a minimal GPU environment may lack it
        except ImportError:
            lazy, sps = None, float("nan")
            print("zarr is not installed: the streaming pipeline is not measured, training reads memory")
        else:
            path = Path(tmp) / "s2.zarr"
            xr.Dataset({"volume": (("time", "z", "y", "x"), vol)}).to_zarr(
                path, zarr_format=3, consolidated=False, encoding={"volume": {"chunks": (1, *vol.shape[1:])}})
            lazy = xr.open_zarr(path, zarr_format=3, consolidated=False)["volume"]
            sps = _pipeline_samples_per_s(lazy, train, context, horizon, args.batch_size, args.workers)
            print(f"data pipeline alone ({args.workers} workers, zarr store, batch {args.batch_size}): "
                  f"{sps:.1f} samples/s")
        if args.pipeline_only:
            return [dict(pipeline_samples_per_s=sps)]
        stream = bool(args.stream and lazy is not None)
        for precision in args.precision:
            est = VideoForecaster(context=context, horizon=horizon, batch_size=args.batch_size,
                                  n_steps=args.warmup + args.steps, input_downsample=args.input_downsample,
                                  lead_sampling="uniform", precision=precision, compile=args.compile,
                                  channels_last=not args.no_channels_last, device=device,
                                  num_workers=args.workers if stream else 0, n_threads=args.threads)
            marks = {}

            def cb(step, n, loss, marks=marks):
                if step in (args.warmup, n):
                    marks[step] = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            est.fit_arrays(lazy if stream else vol, seg, train, callback=cb)
            total = time.perf_counter() - t0
            sps_train = args.steps / (marks[args.warmup + args.steps] - marks[args.warmup])
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            mae = _val_mae(est, vol, seg, val)
            row = dict(precision=precision, steps_per_s=sps_train, peak_gib=peak, fit_s=total,
                       val_mae_lead1=mae[0], val_mae_lead4=mae[1], pipeline_samples_per_s=sps,
                       final_loss=float(est.history_["loss"].values[-5:].mean()))
            rows.append(row)
            print(f"{precision:>8}: {sps_train:7.2f} steps/s  peak {peak:6.2f} GiB  "
                  f"val MAE lead1 {mae[0]:.4f} lead4 {mae[1]:.4f}  (fit {total:.1f} s, "
                  f"batch {args.batch_size}, input_downsample {args.input_downsample}, "
                  f"{'streamed' if stream else 'in memory'})")
    if len(rows) > 1:
        base = rows[0]
        for r in rows[1:]:
            print(f"{r['precision']} / {base['precision']}: {r['steps_per_s'] / base['steps_per_s']:.2f}x steps/s, "
                  f"val MAE ratio lead1 {r['val_mae_lead1'] / base['val_mae_lead1']:.3f}")
    return rows


def add_arguments(ap):
    g = ap.add_argument_group("release-scale throughput (--size s2)")
    g.add_argument("--frames", type=int, default=40,
                   help="frames of the synthetic s2 volume (40 x 49 MB stays under the 2 GiB the "
                        "forecaster keeps on the GPU; more frames are read from host memory per batch)")
    g.add_argument("--horizon", type=int, default=8)
    g.add_argument("--warmup", type=int, default=3)
    g.add_argument("--precision", nargs="+", default=["float32", "bf16"], choices=("float32", "bf16"))
    g.add_argument("--compile", action="store_true")
    g.add_argument("--no-channels-last", action="store_true")
    g.add_argument("--input-downsample", type=int, default=2)
    g.add_argument("--workers", type=int, default=4, help="DataLoader workers (pipeline measurement, --stream)")
    g.add_argument("--stream", action="store_true", help="train from the zarr store through the DataLoader")
    g.add_argument("--scale-down", type=int, default=1, help="divide y and x by this (CPU smoke runs)")
    g.add_argument("--pipeline-only", action="store_true", help="measure the data pipeline, do not train")
