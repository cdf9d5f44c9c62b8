"""Benchmark: learned layer-wise equivariance and learned invariance on the digits tasks.

For each task (translated, quadrant) and seed it trains the soft-equivariant network and the pure
CNN / pure FC baselines the same way (online KFAC marglik), and prints

* per-layer final equivariance scores (both measures) of the soft network, task (a) vs (b);
* test accuracy of soft / CNN / FC and the soft network's margin over the better baseline;
* for rotated digits: LILA's learned rotation amplitude against the true range, and its test
  accuracy against the same MLP without learned invariance (ratio in the same run);
* wall time of every run (threads per run set by ``--threads``).

Usage::

    .venv/bin/python benchmarks/bench_equivariance.py                 # default sizes
    .venv/bin/python benchmarks/bench_equivariance.py --quick         # small, for a busy machine
    .venv/bin/python benchmarks/bench_equivariance.py --workers 2 --out data/equivariance/bench
    .venv/bin/python benchmarks/bench_equivariance.py --quick --device cuda   # on a GPU

Runs are saved as netCDF under ``--out`` (default ``equivariance/bench`` in the data directory;
atomic writes) and reused when present; ``--device`` (default: the estimators' own, CUDA when
available) is part of a run's settings.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from workbench._paths import DATA_DIR


def _settings(quick: bool):
    # the soft net and both baselines share one training recipe: SGD + cosine decay, the prior
    # (= the weight decay) learned by the KFAC marglik every epoch from the second on
    common = dict(optimizer="sgd", lr=0.05, lr_min=0.0, n_epochs_burnin=1, marglik_frequency=1,
                  n_hypersteps=30, batch_size=50, prior_structure="layerwise")
    # LILA: 16 transform samples per image in training and in the marglik, 3 differentiable
    # marglik steps on the amplitudes every epoch after 2 burn-in epochs
    lila = dict(n_samples=16, n_samples_eval=16, n_epochs_burnin=2, marglik_frequency=1,
                n_hypersteps=3, batch_size=50, lr=3e-3, lr_hyp=0.2)
    # 60 epochs: the soft net's free pathways start at zero and SGD grows them only as fast as
    # the data ask, so after 30 epochs of cosine decay the quadrant task's position-dependent
    # pathways are still half built (train accuracy 0.99 and rising, marglik still improving);
    # LILA's averaged MLP still under-fits after 12 epochs (train accuracy 0.73). Test sets as
    # large as the 1797 digit images allow next to the training images (std of an accuracy
    # near 0.8 on 800 images: 1.4 points; on 300: 2.3)
    if quick:
        eq = dict(n_train=500, n_test=800, n_epochs=60, channels=[8, 8, 8, 8], **common)
        inv = dict(n_train=500, n_test=800, n_epochs=40, hidden=[128], **lila)
    else:
        eq = dict(n_train=1000, n_test=700, n_epochs=60, channels=[16, 16, 16, 16], **common)
        inv = dict(n_train=1000, n_test=700, n_epochs=40, hidden=[128, 128], **lila)
    return eq, inv


def _job(args):
    kind, settings, out, threads = args
    import torch

    from workbench.equivariance.runs import cached_run

    torch.set_num_threads(threads)
    t = time.perf_counter()
    ds = cached_run(kind, directory=out, **settings)
    return kind, settings, ds, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a busy machine")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--out", default=str(DATA_DIR / "equivariance" / "bench"))
    ap.add_argument("--device", default=None, help="cpu | cuda (default: CUDA when available)")
    ap.add_argument("--only", choices=["equivariance", "invariance"], default=None,
                    help="run only one of the two parts")
    args = ap.parse_args(argv)
    eq, inv = _settings(args.quick)
    if args.device is not None:
        eq, inv = dict(eq, device=args.device), dict(inv, device=args.device)
    out = Path(args.out)
    jobs = []
    for seed in range(args.seeds):
        for task in ("translated", "quadrant"):
            for model in ("soft", "cnn", "fc"):
                if args.only != "invariance":
                    jobs.append(("equivariance", dict(task=task, model=model,
                                                      random_state=seed, **eq)))
        if args.only != "equivariance":
            for learn in (True, False):
                jobs.append(("invariance", dict(learn_invariance=learn, random_state=seed,
                                                **inv)))
    t0 = time.perf_counter()
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        for kind, s, ds, wall in pool.map(_job, [(k, s, out, args.threads) for k, s in jobs]):
            fit = float(ds.attrs["fit_time"])
            tag = (f"{s['task']}/{s['model']}" if kind == "equivariance"
                   else ("lila" if s["learn_invariance"] else "plain"))
            print(f"  done {tag:18s} seed {s['random_state']}: test acc "
                  f"{ds.attrs['test_accuracy']:.3f}, "
                  f"fit {fit:6.1f} s (this call {wall:6.1f} s)", flush=True)
            results.append((kind, s, ds))
    print(f"\nall runs: {time.perf_counter() - t0:.0f} s wall, {args.workers} worker(s) x "
          f"{args.threads} thread(s)\n")
    report(results, args.seeds)


def report(results, n_seeds):
    eqr = [(s, ds) for k, s, ds in results if k == "equivariance"]
    if eqr:
        _report_equivariance(eqr)
    inv = [(s, ds) for k, s, ds in results if k == "invariance"]
    if inv:
        _report_invariance(inv)


def _report_equivariance(eqr):
    print("== learned equivariance: final score per layer (soft network, mean over seeds) ==")
    for measure in ("effective_dim", "output_rms"):
        for task in ("translated", "quadrant"):
            sc = np.stack([ds.equivariance.isel(epoch=-1).sel(measure=measure).values
                           for s, ds in eqr if s["task"] == task and s["model"] == "soft"])
            print(f"  {measure:13s} {task:10s}: " + "  ".join(
                f"L{i} {m:.2f}±{sd:.2f}" for i, (m, sd) in enumerate(zip(sc.mean(0), sc.std(0)))))
    print("\n== per seed: test (train) accuracy, soft net's scores per layer (effective_dim | "
          "output_rms), final log marglik ==")
    for task in ("translated", "quadrant"):
        for seed in sorted({s["random_state"] for s, _ in eqr if s["task"] == task}):
            runs = {s["model"]: ds for s, ds in eqr
                    if s["task"] == task and s["random_state"] == seed}
            accs = "  ".join(f"{m} {runs[m].attrs['test_accuracy']:.3f} "
                             f"({float(runs[m].train_accuracy.isel(epoch=-1)):.3f})"
                             for m in ("soft", "cnn", "fc") if m in runs)
            line = f"  {task:10s} seed {seed}: {accs}"
            if "soft" in runs:
                eq = runs["soft"].equivariance.isel(epoch=-1)
                sc = " ".join(f"{a:.2f}|{b:.2f}" for a, b in zip(
                    eq.sel(measure="effective_dim").values, eq.sel(measure="output_rms").values))
                line += f"  | scores {sc}"
            lml = "  ".join(f"{m} {float(runs[m].log_marglik.isel(epoch=-1)):.0f}"
                            for m in ("soft", "cnn", "fc") if m in runs)
            print(line + f"  | log marglik {lml}")
    print("\n== accuracy (mean ± std over seeds) and soft - max(cnn, fc) ==")
    for task in ("translated", "quadrant"):
        acc = {m: np.array([ds.attrs["test_accuracy"] for s, ds in eqr
                            if s["task"] == task and s["model"] == m])
               for m in ("soft", "cnn", "fc")}
        best = np.maximum(acc["cnn"], acc["fc"])
        line = "  ".join(f"{m} {a.mean():.3f}±{a.std():.3f}" for m, a in acc.items())
        margin = acc["soft"].mean() - max(acc["cnn"].mean(), acc["fc"].mean())
        print(f"  {task:10s}: {line}  | margin vs better baseline {100 * margin:+.1f} points "
              f"(per seed {np.round(100 * (acc['soft'] - best), 1).tolist()})")
        times = {m: np.mean([ds.attrs["fit_time"] for s, ds in eqr
                             if s["task"] == task and s["model"] == m]) for m in acc}
        print(f"  {'':10s}  fit time: " + ", ".join(f"{m} {t:.0f} s" for m, t in times.items())
              + f"; soft / cnn = {times['soft'] / times['cnn']:.2f}x")


def _report_invariance(inv):
    print("\n== learned invariance (LILA) on rotated digits ==")
    lila = [ds for s, ds in inv if s["learn_invariance"]]
    plain = [ds for s, ds in inv if not s["learn_invariance"]]
    true = float(lila[0].attrs["max_rotation"])
    rot = np.array([float(ds.amplitude.sel(transform="rotate").isel(epoch=-1)) for ds in lila])
    rot0 = np.array([float(ds.amplitude.sel(transform="rotate").isel(epoch=0)) for ds in lila])
    amps = {t: np.mean([float(ds.amplitude.sel(transform=t).isel(epoch=-1)) for ds in lila])
            for t in lila[0].transform.values}
    a_l = np.array([ds.attrs["test_accuracy"] for ds in lila])
    a_p = np.array([ds.attrs["test_accuracy"] for ds in plain])
    for s, ds in sorted(inv, key=lambda r: (r[0]["random_state"], not r[0]["learn_invariance"])):
        tag = "lila " if s["learn_invariance"] else "plain"
        print(f"  seed {s['random_state']} {tag}: test {ds.attrs['test_accuracy']:.3f} (train "
              f"{float(ds.train_accuracy.isel(epoch=-1)):.3f}), rotation amplitude "
              f"{float(ds.amplitude.sel(transform='rotate').isel(epoch=-1)):.3f} rad, "
              f"fit {float(ds.attrs['fit_time']):.0f} s")
    print(f"  rotation amplitude: first epoch {rot0.mean():.3f} -> final {rot.mean():.3f}"
          f"±{rot.std():.3f} rad (true range {true:.3f}; final/true = {rot.mean() / true:.2f})")
    print("  final amplitudes (mean): " + json.dumps({k: round(v, 3) for k, v in amps.items()}))
    print(f"  test accuracy: LILA {a_l.mean():.3f}±{a_l.std():.3f}, plain MLP "
          f"{a_p.mean():.3f}±{a_p.std():.3f}; ratio {a_l.mean() / a_p.mean():.2f}x")
    print(f"  fit time: LILA {np.mean([d.attrs['fit_time'] for d in lila]):.0f} s, plain "
          f"{np.mean([d.attrs['fit_time'] for d in plain]):.0f} s")


if __name__ == "__main__":
    main()
