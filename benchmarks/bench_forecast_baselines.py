"""Benchmark: scoring overhead over prediction, and MAE by lead, for every trace baseline.

On a synthetic recording with the release's 7879 frames and condition offsets (preset "large",
traces only, ``--neurons`` neurons, generated in memory), for C = 4 and C = 256, same run:

1. fit mean, stimulus, linear, TSMixer, time-mix and TiDE in ZAPBench's mode (``--mode``) with a
   CPU budget for the trained ones (``--max-steps`` AdamW steps, checks every ``--check-every``);
2. time *prediction alone* over all 1557 test windows: the same time blocks and window batches
   as scoring, calling ``predict_tensor`` / ``predict`` and discarding the forecasts;
3. time :func:`score_forecaster` (prediction + scoring) on the same windows; the overhead of
   scoring is ``(score - predict) / predict``, in CPU time and in wall time (goal: <= 50 %);
4. MAE by lead (mean over the 8 training conditions) per baseline at each context, with
   block-bootstrap intervals, and the held-out condition apart.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_forecast_baselines.py --max-steps 200 --repeats 1
        # ~25 min of CPU (TiDE's training most of it); on a loaded 2-core machine about an hour
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_forecast_baselines.py --neurons 256 --max-steps 20  # smoke
    .venv/bin/python benchmarks/bench_forecast_baselines.py --device cuda --neurons 71721 --max-steps 2000     # GPU
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from workbench.forecast import make_dataset, protocol
from workbench.forecast.baselines import zapbench_models
from workbench.forecast.evaluate import (
    _block_plan,
    _device_of,
    _predict_tensor,
    results_from_errors,
    score_forecaster,
)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def predict_only(f, ds, windows, batch_size=None, block_frames=1024, memory_budget=1e7):
    """Run the forecasts of ``score_forecaster``'s blocks and batches, without scoring them."""
    import torch

    c, h, n = int(f.context), int(f.horizon), ds.sizes["neuron"]
    starts = np.sort(windows["start"].values)
    per = batch_size or max(1, int(memory_budget // (h * n * 4)))
    keep = sorted(set(f.requires) | {"traces"})
    dev = _device_of(f)
    for i0, i1, lo, hi in _block_plan(starts, c + h, max(block_frames, c + h + 1)):
        block = ds[keep].isel(time=slice(lo, hi)).load()
        torch.as_tensor(np.ascontiguousarray(block["traces"].values)).to(dev)   # as scoring does
        for b0 in range(i0, i1, per):
            _predict_tensor(f, block, starts[b0:min(i1, b0 + per)] - lo, dev)
    _sync(dev)


def timed(fn, *args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--neurons", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--contexts", type=int, nargs="+", default=[4, 256])
    ap.add_argument("--models", nargs="+", default=["mean", "stimulus", "linear", "tsmixer", "time-mix", "tide"])
    ap.add_argument("--mode", default="zapbench", choices=["zapbench", "workbench"])
    ap.add_argument("--max-steps", type=int, default=300, help="AdamW steps of the trained models (CPU budget)")
    ap.add_argument("--check-every", type=int, default=100)
    ap.add_argument("--val-windows", type=int, default=64)
    ap.add_argument("--device", default=None, help="torch device of the trained models (default: CUDA if any)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2, help="timing repeats (the minimum is kept)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = make_dataset("large", random_state=args.seed, n_neurons=args.neurons)
    print(f"data: {ds.sizes['time']} frames x {ds.sizes['neuron']} neurons ({time.perf_counter() - t0:.1f} s "
          f"to generate); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch threads "
          f"{args.threads}, load average {os.getloadavg()[0]:.1f}")
    rows, scored = [], []
    for c in args.contexts:
        w = protocol.windows(ds, "test", context=c)
        models = zapbench_models(c, args.models, mode=args.mode, device=args.device, n_threads=args.threads,
                                 max_steps=args.max_steps, check_every=args.check_every, patience=1000,
                                 max_val_windows=args.val_windows)
        for name, f in models.items():
            _, fit_s, _ = timed(f.fit, ds)
            pred_s = pred_cpu = score_s = score_cpu = np.inf
            for _ in range(args.repeats):
                _, a, b = timed(predict_only, f, ds, w)
                pred_s, pred_cpu = min(pred_s, a), min(pred_cpu, b)
                (errors, ww), a, b = timed(score_forecaster, f, ds, windows=w)
                score_s, score_cpu = min(score_s, a), min(score_cpu, b)
            scored.append((name, c, errors, ww, score_s))
            rows.append(dict(model=name, C=c, fit_s=fit_s, predict_s=pred_s, score_s=score_s,
                             overhead_wall=(score_s - pred_s) / pred_s, predict_cpu_s=pred_cpu,
                             score_cpu_s=score_cpu, overhead_cpu=(score_cpu - pred_cpu) / pred_cpu))
            r = rows[-1]
            print(f"{name:9s} C={c:3d}  fit {fit_s:6.1f} s | predict {pred_s:7.2f} s (cpu {pred_cpu:6.2f}) | "
                  f"predict+score {score_s:7.2f} s (cpu {score_cpu:6.2f}) | scoring overhead "
                  f"{100 * r['overhead_wall']:6.0f} % wall, {100 * r['overhead_cpu']:6.0f} % cpu", flush=True)
    pd.set_option("display.width", 200)
    table = pd.DataFrame(rows)
    print(f"\nall {protocol.windows(ds, 'test', context=4).sizes['window']} test windows; overhead = "
          "(predict+score - predict) / predict, minimum of the repeats")
    print(table.round(3).to_string(index=False))
    res = results_from_errors(scored, ds, n_boot=args.n_boot)
    leads = [1, 2, 4, 8, 16, 32]
    for c in args.contexts:
        r = res.sel(context=c)
        print(f"\nMAE by lead, C = {c} (mean over the training conditions; missing rule "
              f"{res.attrs['missing_rule']}):")
        print(r["mae_train_conditions"].sel(lead=leads).to_pandas().round(4).to_string())
        half = (r["mae_train_conditions_upper"] - r["mae_train_conditions_lower"]) / 2
        print("95% block-bootstrap half-width (max over leads): "
              + ", ".join(f"{m} {float(half.sel(model=m).max()):.4f}" for m in r["model"].values))
        held = r["mae"].isel(condition=np.flatnonzero(r["heldout"].values)).mean("condition")
        print("held-out condition (taxis):")
        print(held.sel(lead=leads).to_pandas().round(4).to_string())


if __name__ == "__main__":
    main()
