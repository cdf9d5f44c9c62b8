"""Benchmark: score every test window of every trace baseline, vectorised vs a per-window loop.

On a synthetic recording with the release's 7879 frames and 20 000 neurons (preset "large",
traces only, cached under data/ after the first run), for C = 4 and C = 256:

1. fit mean / stimulus / linear / TSMixer (TSMixer kept small: a CPU budget, not a tuned model);
2. time :func:`score_forecaster` (streamed over time blocks of the lazy zarr store, batched
   windows) on all 1557 test windows;
3. time :func:`evaluate_loop` - one ``predict`` + float64 scoring per window - on
   ``--loop-windows`` evenly spread test windows, (a) reading each window from the lazy store as
   a straightforward script would and (b) from traces already in memory; both are extrapolated
   linearly to all windows; the errors of those windows are checked against the vectorised ones;
4. peak memory of the vectorised scoring (tracemalloc, one pass at C = 256 for the linear model)
   and the process' peak RSS;
5. MAE by lead (conditions averaged, held-out apart) for every baseline and context.

    .venv/bin/python benchmarks/bench_forecast_baselines.py            # full (~30-40 min on 2 busy cores)
    .venv/bin/python benchmarks/bench_forecast_baselines.py --preset tiny --loop-windows 40   # smoke run
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from workbench.forecast import load_or_generate, protocol
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
    return TSMixerBaseline(c, ff_dim=args.ff_dim, n_blocks=1, batch_size=8, max_epochs=args.tsmixer_epochs,
                           steps_per_epoch=args.tsmixer_steps, max_val_windows=32, patience=2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="large")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default="data")
    ap.add_argument("--contexts", type=int, nargs="+", default=[4, 256])
    ap.add_argument("--methods", nargs="+", default=["mean", "stimulus", "linear", "tsmixer"])
    ap.add_argument("--loop-windows", type=int, default=60)
    ap.add_argument("--tsmixer-contexts", type=int, nargs="+", default=[4],
                    help="contexts for TSMixer: at C=256 with 20 000 neurons scoring alone needs ~4 TFLOP "
                         "(time mixing is C x C per neuron), i.e. tens of minutes on 2 busy cores")
    ap.add_argument("--tsmixer-epochs", type=int, default=2)
    ap.add_argument("--tsmixer-steps", type=int, default=15)
    ap.add_argument("--ff-dim", type=int, default=16)
    ap.add_argument("--n-boot", type=int, default=200)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    lazy = load_or_generate(args.preset, seed=args.seed, root=args.root, progress=True)
    print(f"data: {args.preset} seed {args.seed}: {lazy.sizes['time']} frames x {lazy.sizes['neuron']} neurons "
          f"({time.perf_counter() - t0:.1f} s to open/generate)")
    mem = lazy[["traces", "stimulus"]].load()
    print(f"traces in memory: {mem['traces'].nbytes / 1e6:.0f} MB")

    rows, scored, fitted = [], [], {}
    for c in args.contexts:
        w_all = protocol.windows(lazy, "test", context=c)
        pick = np.unique(np.linspace(0, w_all.sizes["window"] - 1, args.loop_windows).astype(int))
        w_sub = w_all.isel(window=pick)
        for m in args.methods:
            if m == "tsmixer" and c not in args.tsmixer_contexts:
                continue
            tf = time.perf_counter()
            f = make(m, c, args).fit(mem)
            fit_s = time.perf_counter() - tf
            fitted[(m, c)] = f
            tv = time.perf_counter()
            errors, w = score_forecaster(f, lazy)
            vec_s = time.perf_counter() - tv
            scored.append((m, c, errors, w, vec_s))
            tl = time.perf_counter()
            loop_lazy = evaluate_loop(f, lazy, windows=w_sub)
            lazy_s = (time.perf_counter() - tl) / pick.size * w_all.sizes["window"]
            tm = time.perf_counter()
            loop_mem = evaluate_loop(f, mem, windows=w_sub)
            mem_s = (time.perf_counter() - tm) / pick.size * w_all.sizes["window"]
            diff = float(np.nanmax(np.abs(errors["abs_err"].values[pick] - loop_lazy["abs_err"].values)))
            diff = max(diff, float(np.nanmax(np.abs(loop_mem["abs_err"].values - loop_lazy["abs_err"].values))))
            rows.append((m, c, fit_s, vec_s, lazy_s, mem_s, diff))
            print(f"{m:9s} C={c:3d}  fit {fit_s:7.1f} s | vectorised {vec_s:7.2f} s | loop (lazy store) "
                  f"{lazy_s:8.1f} s -> x{lazy_s / vec_s:6.1f} | loop (in memory) {mem_s:7.1f} s -> "
                  f"x{mem_s / vec_s:5.1f} | max |diff| {diff:.1e}", flush=True)

    # peak memory of the vectorised scoring: one traced pass (linear, largest context, refit-free)
    c = max(args.contexts)
    f = fitted.get(("linear", c)) or LinearBaseline(c).fit(mem)
    tracemalloc.start()
    score_forecaster(f, lazy)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak traced memory of vectorised scoring (linear, C={c}): {peak / 1e6:.0f} MB; "
          f"process peak RSS {rss:.0f} MB (traces alone: {mem['traces'].nbytes / 1e6:.0f} MB)")

    n_win = protocol.windows(lazy, "test", context=4).sizes["window"]
    print(f"\nscoring all {n_win} test windows (times measured on a shared, loaded 2-core machine; loop times "
          f"extrapolated from {args.loop_windows} windows)")
    print(f"{'method':9s} {'C':>4s} {'vectorised s':>13s} {'loop(lazy) s':>13s} {'ratio':>7s} "
          f"{'loop(mem) s':>12s} {'ratio':>7s}")
    for m, c, _fit_s, vec_s, lazy_s, mem_s, _ in rows:
        print(f"{m:9s} {c:4d} {vec_s:13.2f} {lazy_s:13.1f} {lazy_s / vec_s:7.1f} {mem_s:12.1f} {mem_s / vec_s:7.1f}")
    tot_v = sum(r[3] for r in rows)
    tot_l = sum(r[4] for r in rows)
    tot_m = sum(r[5] for r in rows)
    print(f"{'all':9s} {'':4s} {tot_v:13.2f} {tot_l:13.1f} {tot_l / tot_v:7.1f} {tot_m:12.1f} {tot_m / tot_v:7.1f}")

    res = results_from_errors(scored, lazy, n_boot=args.n_boot)
    leads = [1, 2, 4, 8, 16, 32]
    print("\nMAE by lead (mean over the 8 training conditions; 95% block-bootstrap interval at lead 1), "
          "and the held-out condition (taxis) averaged over leads")
    print(f"{'method':9s} {'C':>4s} " + " ".join(f"{'lead ' + str(ld):>8s}" for ld in leads)
          + f" {'lead1 CI':>17s} {'held-out':>9s}")
    for m in args.methods:
        for c in args.contexts:
            if (m, c) not in fitted:
                continue
            r = res.sel({"method": m, "context": c})
            tc = r["mae_train_conditions"]
            held = float(r["mae"].isel(condition=np.flatnonzero(r["heldout"].values)).mean())
            print(f"{m:9s} {c:4d} " + " ".join(f"{float(tc.sel(lead=ld)):8.4f}" for ld in leads)
                  + f"  [{float(r['mae_train_conditions_lower'].sel(lead=1)):.4f}, "
                    f"{float(r['mae_train_conditions_upper'].sel(lead=1)):.4f}] {held:9.4f}")


if __name__ == "__main__":
    main()
