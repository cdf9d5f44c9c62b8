"""Video forecaster vs the trace baselines on the synthetic benchmark (ZAPBench protocol, C = 4).

Trains the part-1 trace baselines (mean of the last C frames, stimulus-evoked, linear, TSMixer)
and the lead-conditioned 3-D UNet on the training split of a synthetic recording, scores all of
them with part 1's ``evaluate`` (segment-mean traces, MAE per lead over the test windows, averaged
over the training conditions, the held-out condition apart) and prints

- the MAE-by-lead table for every method and the ratio video / best trace baseline per lead,
- whether the video model beats every trace baseline at leads 1-4 (the quality bar),
- training time of each method as a ratio to TSMixer's, measured in the same run,
- calibration of the last-layer Laplace (coverage of central intervals) on test windows,
- with ``--sweep``: the spatial/temporal context sweep (MAE, FLOPs, activation memory).

Usage: ``python benchmarks/bench_video.py [--preset tiny] [--steps 400] [--sweep] [--device cuda]``
(about 10 minutes on 2 busy CPU cores for the tiny preset).

``--size s2`` measures throughput instead, at release-like scale (z 72 x y 332 x x 512): steps/s,
peak GPU memory and validation MAE per ``--precision`` (float32 vs bf16), and samples/s of the
streaming data pipeline alone (``benchmarks/bench_video_throughput.py``), e.g.
``python benchmarks/bench_video.py --size s2 --device cuda --steps 50 --batch-size 4``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from workbench.forecast import make_dataset
from workbench.forecast.baselines import BASELINES
from workbench.forecast.evaluate import evaluate
from workbench.forecast.video import VideoForecaster
from workbench.forecast.video.uncertainty import LastLayerLaplace

try:                                       # run as a script (benchmarks/ on sys.path) or a module
    from bench_video_throughput import add_arguments
    from bench_video_throughput import run as run_throughput
except ImportError:
    from benchmarks.bench_video_throughput import add_arguments
    from benchmarks.bench_video_throughput import run as run_throughput

LEADS = [1, 2, 3, 4, 8, 16, 32]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--context", type=int, default=4)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy CPU)")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--device", default=None, help="cpu | cuda | cuda:1 (default: CUDA when available)")
    ap.add_argument("--size", default="preset", choices=("preset", "s2"),
                    help="'preset': the accuracy benchmark on --preset; 's2': release-scale throughput")
    add_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.size == "s2":
        return run_throughput(args)
    ds = make_dataset(args.preset, random_state=args.seed)
    print(f"synthetic '{args.preset}' recording: volume {dict(ds['volume'].sizes)}, "
          f"{ds.sizes['neuron']} neurons; context C = {args.context}")
    fitted, fit_s = {}, {}
    for name in ("mean", "stimulus", "linear", "tsmixer"):           # TiDE / time-mix: bench_forecast_baselines
        cls = BASELINES[name]
        t0 = time.perf_counter()
        dev = {"device": args.device} if "device" in cls().get_params() else {}
        fitted[name] = cls(context=args.context, **dev).fit(ds)
        fit_s[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    video = VideoForecaster(context=args.context, stimulus=True, n_steps=args.steps,
                            batch_size=args.batch_size, n_threads=args.threads, progress=True,
                            device=args.device).fit(ds)
    fit_s["video"] = time.perf_counter() - t0
    fitted["video"] = video
    res = evaluate(fitted, ds, split="test", n_boot=args.n_boot)
    mae = res["mae_train_conditions"].isel(context=0)
    held = res["mae"].isel(context=0).sel(condition=[c for c, h in zip(res["condition"].values,
                                                                         res["heldout"].values) if h])
    print("\nMAE by lead (test windows, mean over the training conditions):")
    header = "method      " + "".join(f"{f'lead {k}':>10}" for k in LEADS) + f"{'held-out@1':>12}"
    print(header)
    for m in mae["model"].values:
        row = mae.sel(model=m)
        hv_ = float(held.sel(model=m).isel(condition=0).sel(lead=1)) if held.sizes["condition"] else np.nan
        print(f"{m:<12}" + "".join(f"{float(row.sel(lead=k)):10.4f}" for k in LEADS) + f"{hv_:12.4f}")
    base = mae.sel(model=[m for m in mae["model"].values if m != "video"])
    best = base.min("model")
    ratio = mae.sel(model="video") / best
    print("video / best trace baseline" + "".join(f"{float(ratio.sel(lead=k)):10.3f}" for k in LEADS))
    beats = bool((mae.sel(model="video").sel(lead=[1, 2, 3, 4]) < base.sel(lead=[1, 2, 3, 4])).all())
    print(f"\nvideo beats every trace baseline at leads 1-4: {'YES' if beats else 'NO'}")
    print("\ntraining time relative to TSMixer (same run): "
          + ", ".join(f"{k} {v / fit_s['tsmixer']:.2f}x" for k, v in fit_s.items())
          + f"  (TSMixer {fit_s['tsmixer']:.1f} s)")
    t0 = time.perf_counter()
    lla = LastLayerLaplace(video, device=args.device).fit(ds)
    cal = lla.calibration(ds, "test", levels=(0.5, 0.8, 0.9, 0.95), max_windows=48)
    print(f"\nlast-layer Laplace (prior precision {float(lla.la_.prior_precision.reshape(-1)[0]):.3g}, "
          f"{time.perf_counter() - t0:.1f} s): coverage of central intervals on 48 test windows")
    print("level  " + "".join(f"{f'voxel@{k}':>10}{f'neuron@{k}':>11}" for k in (1, 4, 16)))
    for lv in cal["level"].values:
        c = cal.sel(level=lv)
        print(f"{lv:5.2f}  " + "".join(f"{float(c['coverage_voxel'].sel(lead=k)):10.3f}"
                                       f"{float(c['coverage_neuron'].sel(lead=k)):11.3f}" for k in (1, 4, 16)))
    if args.sweep:
        from workbench.forecast.video.sweep import context_sweep
        sw = context_sweep(ds, downsample=(1, 2), contexts=(1, 4, 8), max_windows=64,
                           n_steps=max(50, args.steps // 2), batch_size=args.batch_size,
                           n_threads=args.threads, stimulus=True)
        print("\ncontext sweep (MAE at leads 1/4/16, forward MFLOPs, activation MB per sample):")
        for s in sw["downsample"].values:
            for c in sw["context"].values:
                d = sw.sel(downsample=s, context=c)
                print(f"downsample {s} context {c:2d}: MAE " +
                      " ".join(f"{float(d['mae'].sel(lead=k)):.4f}" for k in (1, 4, 16)) +
                      f"  {float(d['flops']) / 1e6:8.1f} MFLOP  {float(d['activation_bytes']) / 2**20:7.2f} MB")
    return res


if __name__ == "__main__":
    main()
