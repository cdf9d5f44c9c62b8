"""Benchmark: score every test window of every trace baseline, vectorised vs a per-window loop.

On a synthetic recording with the release's 7879 frames and 20 000 neurons (preset "large",
traces only, generated and cached under data/ on first use), for C = 4 and C = 256, same run:

1. fit mean / stimulus / linear / TSMixer (TSMixer on a CPU budget: random neuron subsets per
   step, early stopping on val, and at C = 256 a C -> 32 -> C time-mixing bottleneck);
2. time :func:`score_forecaster` on all 1557 test windows, traces in memory (fused compiled
   predict + score, see ``workbench.forecast.kernels``), wall and CPU time, and its peak memory:
   the growth of the process' peak resident set (VmHWM, reset through /proc/self/clear_refs
   just before scoring) over its resident set at that moment - everything numpy, numba and
   torch allocate while scoring, the already loaded traces excluded;
3. time :func:`evaluate_loop` - for each window: slice its frames, ``predict`` it, per-lead
   mean |error| and squared error with whole-array numpy in float32 - on ``--loop-windows``
   evenly spread test windows, extrapolated linearly to all windows; their errors are checked
   against the vectorised ones;
4. once, the vectorised scoring streamed from the lazy zarr store (one read per time block);
5. MAE by lead (mean over the 8 training conditions, conditions weighted equally) per baseline,
   at C = 4 and C = 256, with block-bootstrap intervals, and the held-out condition apart.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_forecast_baselines.py      # ~5 min CPU, 1 thread
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_forecast_baselines.py --preset tiny   # smoke run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_forecast_baselines.py --contexts 4 --methods mean linear
        --kernel-threads 2                # only what changed; mean / linear kernels on 2 threads
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from workbench.forecast import kernels, load_or_generate, protocol
from workbench.forecast.baselines import (
    LinearBaseline,
    MeanBaseline,
    StimulusBaseline,
    TSMixerBaseline,
)
from workbench.forecast.evaluate import evaluate_loop, results_from_errors, score_forecaster


def make(method, c, args):
    if method == "mean":
        return MeanBaseline(c)
    if method == "stimulus":
        return StimulusBaseline(c)
    if method == "linear":
        return LinearBaseline(c)
    return TSMixerBaseline(c, n_blocks=1, ff_dim=args.ff_dim, batch_size=16, max_epochs=args.tsmixer_epochs,
                           steps_per_epoch=args.tsmixer_steps, max_val_windows=args.val_windows, patience=2,
                           max_train_neurons=args.train_neurons, time_dim=args.time_dim if c > args.time_dim else None)


def _status_kb(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def measure(fn, *args, **kwargs):
    """``(result, wall_s, cpu_s, peak_extra_MB)``: peak RSS growth while ``fn`` runs (VmHWM reset)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")                                    # reset VmHWM to the current RSS
    rss0 = _status_kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, wall, cpu, max(0.0, (_status_kb("VmHWM") - rss0) / 1024)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="large")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=None, help="data folder (default: workbench's data/)")
    ap.add_argument("--contexts", type=int, nargs="+", default=[4, 256])
    ap.add_argument("--methods", nargs="+", default=["mean", "stimulus", "linear", "tsmixer"])
    ap.add_argument("--loop-windows", type=int, default=40)
    ap.add_argument("--tsmixer-epochs", type=int, default=4)
    ap.add_argument("--tsmixer-steps", type=int, default=10)
    ap.add_argument("--train-neurons", type=int, default=2048, help="TSMixer: neurons drawn per training step")
    ap.add_argument("--time-dim", type=int, default=32, help="TSMixer: time-mixing bottleneck when C > this")
    ap.add_argument("--val-windows", type=int, default=16)
    ap.add_argument("--ff-dim", type=int, default=16)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--kernel-threads", type=int, default=1,
                    help="threads of the mean / short-context linear kernels (neuron chunks in parallel; "
                         "ratios then differ in wall and CPU time)")
    args = ap.parse_args(argv)
    kernels.set_num_threads(args.kernel_threads)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    t0 = time.perf_counter()
    kw = {} if args.root is None else {"root": args.root}
    lazy = load_or_generate(args.preset, seed=args.seed, progress=True, **kw)
    mem = lazy.load()
    n_t, n_n = lazy.sizes["time"], lazy.sizes["neuron"]
    print(f"data: preset {args.preset!r} seed {args.seed}: {n_t} frames x {n_n} neurons, traces "
          f"{mem['traces'].nbytes / 1e6:.0f} MB ({time.perf_counter() - t0:.1f} s to open and load); "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, kernel threads {args.kernel_threads}")
    t0 = time.perf_counter()
    kernels.warm_up()
    print(f"scoring kernels compiled / loaded from cache in {time.perf_counter() - t0:.1f} s (not in the timings)")

    rows, scored = [], []
    for c in args.contexts:
        w_all = protocol.windows(mem, "test", context=c)
        n_win = w_all.sizes["window"]
        pick = np.unique(np.linspace(0, n_win - 1, min(args.loop_windows, n_win)).astype(int))
        w_sub = w_all.isel(window=pick)
        for m in args.methods:
            tf = time.perf_counter()
            f = make(m, c, args).fit(mem)
            fit_s = time.perf_counter() - tf
            (errors, w), vec_s, vec_cpu, peak = measure(score_forecaster, f, mem, windows=w_all)
            scored.append((m, c, errors, w, vec_s))
            loop, loop_s, loop_cpu, loop_peak = measure(
                evaluate_loop, f, mem, windows=w_sub, dtype=np.float32)
            diff = float(np.nanmax(np.abs(errors["abs_err"].values[pick] - loop["abs_err"].values)))
            rel = diff / float(np.nanmax(loop["abs_err"].values))
            scale = n_win / pick.size
            rows.append(dict(method=m, C=c, fit_s=fit_s, vectorised_s=vec_s, loop_s=loop_s * scale,
                             ratio=loop_s * scale / vec_s, vectorised_cpu_s=vec_cpu, loop_cpu_s=loop_cpu * scale,
                             ratio_cpu=loop_cpu * scale / vec_cpu, peak_MB=peak, loop_peak_MB=loop_peak,
                             max_rel_diff=rel))
            print(f"{m:9s} C={c:3d}  fit {fit_s:6.1f} s | vectorised {vec_s:7.2f} s (cpu {vec_cpu:6.2f}, "
                  f"peak +{peak:5.0f} MB) | loop {loop_s * scale:7.1f} s (cpu {loop_cpu * scale:6.1f}, "
                  f"{pick.size} windows x{scale:.1f}) -> x{loop_s * scale / vec_s:6.1f} wall, "
                  f"x{loop_cpu * scale / vec_cpu:6.1f} cpu | max rel diff {rel:.1e}", flush=True)

    c0 = args.contexts[0]
    f = MeanBaseline(c0).fit(mem)
    _, lazy_s, lazy_cpu, lazy_peak = measure(score_forecaster, f, lazy)
    print(f"\nstreamed from the lazy zarr store (mean, C={c0}): {lazy_s:.2f} s wall, {lazy_cpu:.2f} s cpu, "
          f"peak +{lazy_peak:.0f} MB")

    table = pd.DataFrame(rows)
    tot = table[["vectorised_s", "loop_s", "vectorised_cpu_s", "loop_cpu_s"]].sum()
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print(f"\nscoring all test windows ({protocol.windows(mem, 'test', context=4).sizes['window']}) of "
          f"{n_t} frames x {n_n} neurons; loop times extrapolated from {args.loop_windows} windows; "
          "peak_MB = peak RSS growth while scoring")
    print(table.round({"fit_s": 1, "vectorised_s": 2, "loop_s": 1, "ratio": 1, "vectorised_cpu_s": 2,
                       "loop_cpu_s": 1, "ratio_cpu": 1, "peak_MB": 0, "loop_peak_MB": 0}).to_string(index=False))
    print(f"all methods and contexts: vectorised {tot['vectorised_s']:.1f} s, loop {tot['loop_s']:.1f} s -> "
          f"x{tot['loop_s'] / tot['vectorised_s']:.1f} wall (x{tot['loop_cpu_s'] / tot['vectorised_cpu_s']:.1f} cpu)")

    res = results_from_errors(scored, mem, n_boot=args.n_boot)
    leads = [ld for ld in (1, 2, 4, 8, 16, 32) if ld in res["lead"].values]
    for c in args.contexts:
        r = res.sel({"context": c})
        print(f"\nMAE by lead, C = {c} (mean over the training conditions; xarray mae_train_conditions):")
        print(r["mae_train_conditions"].sel(lead=leads).to_pandas().round(4).to_string())
        lo = r["mae_train_conditions_lower"].sel(lead=leads).to_pandas()
        hi = r["mae_train_conditions_upper"].sel(lead=leads).to_pandas()
        print("95% block-bootstrap half-width (max over leads): "
              + ", ".join(f"{m} {float(((hi - lo) / 2).loc[m].max()):.4f}" for m in lo.index))
        held = r["mae"].isel(condition=np.flatnonzero(r["heldout"].values)).mean("condition")
        print("held-out condition (taxis):")
        print(held.sel(lead=leads).to_pandas().round(4).to_string())


if __name__ == "__main__":
    main()
