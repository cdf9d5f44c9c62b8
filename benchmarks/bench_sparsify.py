"""SpaM benchmark: sparsity curves on both tasks, the OPD claim, structured-pruning exactness, timing.

    .venv/bin/python benchmarks/bench_sparsify.py [--seeds 3] [--tasks breast_cancer digits]
        [--device cpu|cuda]

1. For each task, one curve over priors (MAP weight decay, learned diagonal, learned unitwise) x
   criteria (OPD, OBD, magnitude, SNIP, GraSP, random) x 10 sparsities (0-99 %) x seeds; prints
   mean test accuracy (and NLL at the claim levels) and checks, at 80/90/95 %, that the SpaM prior
   + OPD is >= magnitude and >= SNIP - on the same SpaM-trained network and on the MAP network.
2. Structured pruning: the physically shrunk network vs the masked one - max |logit difference|,
   accuracy, measured parameter count / FLOPs against the masked network's non-zeros.
3. Timing: wall time of a whole curve per (prior, seed) (all criteria, 10 levels) as a ratio to
   training one MAP network, measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from workbench._torch_utils import resolve_device
from workbench.sparsify import (
    DEFAULT_SPARSITIES,
    SpaM,
    count_flops,
    count_parameters,
    load_task,
    make_model,
    sparsity_curve,
)
from workbench.sparsify.curve import TASK_DEFAULTS

CRITERIA = ["opd", "obd", "magnitude", "snip", "grasp", "random"]
PRIORS = ["map", "diagonal", "unitwise"]
LEVELS = [0.8, 0.9, 0.95]
pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 20)


def claim_table(ds):
    acc = ds.accuracy.mean("seed")
    rows = []
    for prior in [p for p in ds.prior.values if p != "map"]:
        for s in LEVELS:
            opd = float(acc.sel(prior=prior, criterion="opd", sparsity=s))
            row = {"prior": prior, "sparsity": s, "opd": opd}
            for ref_prior in (prior, "map"):
                for c in ("magnitude", "snip"):
                    v = float(acc.sel(prior=ref_prior, criterion=c, sparsity=s))
                    tag = f"{c}@{'same' if ref_prior == prior else 'map'}"
                    row[tag] = v
                    row[f"ok:{tag}"] = opd >= v
            rows.append(row)
    return pd.DataFrame(rows)


def structured_check(task, seed=0, prior="diagonal", device=None, **train_kwargs):
    data = load_task(task, random_state=seed)
    kw = dict(TASK_DEFAULTS[task]) | train_kwargs  # the curve's training settings
    est = SpaM(make_model(task, random_state=seed), prior=prior, random_state=seed,
               device=device, **kw).fit(data.X_train, data.y_train)
    scores = est.scores("opd")
    dev = est.device_
    dense_p = count_parameters(est.model_, sparse=False)
    dense_f = count_flops(est.model_, data.X_train[:1].to(dev), sparse=False)
    rows = []
    for s in (0.2, 0.5, 0.8, 0.9):
        pn = est.prune(s, "opd", structured=True, scores=scores)
        m64, s64 = pn.masked_model.double(), pn.model.double()
        X, y = data.X_test.double().to(dev), data.y_test.to(dev)
        with torch.no_grad():
            diff = float((m64(X) - s64(X)).abs().max())
            acc_masked = pn.masked_model.double().eval()(X).argmax(1).eq(y).double().mean()
            acc_shrunk = s64.eval()(X).argmax(1).eq(y).double().mean()
        masked_nnz = count_parameters(pn.masked_model, sparse=True)
        masked_f = count_flops(pn.masked_model, data.X_train[:1].double().to(dev), sparse=True)
        rows.append(dict(unit_sparsity=s, n_params=pn.n_params, masked_nonzeros=masked_nnz,
                         param_sparsity=1 - pn.n_params / dense_p, flops=pn.flops,
                         masked_flops=masked_f, flop_reduction=1 - pn.flops / dense_f,
                         acc_shrunk=float(acc_shrunk), acc_masked=float(acc_masked),
                         max_abs_logit_diff_f64=diff))
    return pd.DataFrame(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tasks", nargs="+", default=["breast_cancer", "digits"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--structured-only", action="store_true")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: CUDA when available)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}, torch threads: {args.threads}; machine shared with other jobs "
          "(timings are loaded)")
    for task in args.tasks:
        if args.structured_only:
            print(f"\n--- {task}: structured pruning (OPD, diagonal prior, seed 0) ---")
            print(structured_check(task, device=device).to_string(index=False))
            continue
        print(f"\n=== {task}: {args.seeds} seeds, priors {PRIORS}, criteria {CRITERIA} ===")
        t0 = time.perf_counter()
        ds = sparsity_curve(task, priors=PRIORS, criteria=CRITERIA,
                            sparsities=DEFAULT_SPARSITIES, seeds=range(args.seeds),
                            progress=False, n_threads=args.threads, device=device)
        wall = time.perf_counter() - t0
        acc = ds.accuracy.mean("seed").to_dataframe().unstack("sparsity")["accuracy"]
        print("\nmean test accuracy (rows prior/criterion, columns sparsity):")
        print(acc.round(3).to_string())
        print("\nstd over seeds of the accuracy:")
        print(ds.accuracy.std("seed").to_dataframe().unstack("sparsity")["accuracy"]
              .round(3).to_string())
        print("\nmean test NLL at the claim levels:")
        print(ds.nll.sel(sparsity=LEVELS).mean("seed").to_dataframe()
              .unstack("sparsity")["nll"].round(3).to_string())
        ct = claim_table(ds)
        print("\nclaim: SpaM prior + OPD >= magnitude and >= SNIP (same network / MAP network):")
        print(ct.round(3).to_string(index=False))
        oks = ct[[c for c in ct if c.startswith("ok:")]].to_numpy()
        print(f"claim holds in {int(oks.sum())}/{oks.size} comparisons")
        # timing: one curve = training + all criteria x 10 levels, per (prior, seed)
        n_pts = len(CRITERIA) * len(DEFAULT_SPARSITIES)
        per_curve = wall / (len(PRIORS) * args.seeds)
        map_train = float(ds.train_time.sel(prior="map").mean())
        print(f"\ntiming: whole run {wall:.1f} s; one curve (train + {len(CRITERIA)} criteria x "
              f"{len(DEFAULT_SPARSITIES)} levels = {n_pts} pruned nets) {per_curve:.1f} s on "
              f"average = {per_curve / map_train:.2f} x one MAP training ({map_train:.1f} s)")
        tt = ds.train_time.mean("seed").to_series()
        print(pd.DataFrame({"train time [s]": tt, "ratio to MAP": tt / map_train}).round(2)
              .to_string())
        print(f"\n--- {task}: structured pruning (OPD, diagonal prior, seed 0) ---")
        print(structured_check(task, device=device).to_string(index=False))


if __name__ == "__main__":
    main()
