"""Laplace core benchmark: curvature fit and GLM predictive against one training epoch.

MLP 784-256-256-10 (float32), 1000 synthetic samples, batch 100. Prints, from one run:
  * KFAC and exact-diagonal GGN fit time divided by the time of one training epoch (target <= 3x;
    each fit is timed right after an epoch and the median of the pair ratios is reported),
  * GLM predictive time for 100 inputs with KFAC and diagonal posteriors (target < 1 s),
  * 100 marglik hyper-steps of a full last-layer Laplace (2570 parameters; target < 1 s),
  * the one-off eigendecomposition that makes those steps cheap,
  * the structures laplace-torch users know from there: low-rank (Lanczos), the GP view over
    context points and a 1000-weight subnetwork (fit, 100 hyper-steps, GLM predictive).
Usage: python benchmarks/bench_laplace.py [--threads N] [--device cpu|cuda] [--repeats R] [--clock wall|cpu] [--core]
(``--clock cpu`` times with the process CPU clock: on a shared, loaded machine with one thread it is
far less noisy than wall time; CUDA work is not CPU time, so use wall time on a GPU.)
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace

CLOCK = time.perf_counter


def timed(fn, repeats, sync):
    best = float("inf")
    out = None
    for _ in range(repeats):
        sync()
        t = CLOCK()
        out = fn()
        sync()
        best = min(best, CLOCK() - t)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--core", action="store_true",
                    help="only the core rows (KFAC/diag/full last-layer), which older trees also have: "
                         "for before/after runs with PYTHONPATH pointing at another checkout")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    X = torch.randn(1000, 784, device=dev)
    y = torch.randint(0, 10, (1000,), device=dev)
    dl = DataLoader(TensorDataset(X, y), batch_size=100)
    model = nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    ).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch():
        for xb, yb in dl:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()

    epoch()  # warm-up
    t_epoch, _ = timed(epoch, args.repeats, sync)
    print(
        f"device={dev}, threads={torch.get_num_threads()}, clock={args.clock}, "
        f"P={sum(p.numel() for p in model.parameters())}"
    )
    print(f"one training epoch (1000 samples, batch 100): {t_epoch:.3f} s")
    rows = []
    las = {}
    for hs in ["kron", "diag"]:
        # epoch and fit timed back to back, repeat by repeat: the ratio of each pair is robust to
        # the machine's load drifting during the run; we report the median pair ratio
        pairs = []
        for _ in range(args.repeats):
            te, _ = timed(epoch, 1, sync)
            t, la = timed(
                lambda hs=hs: Laplace(model, "classification", hessian_structure=hs).fit(dl),
                1,
                sync,
            )
            pairs.append((t, t / te))
        las[hs] = la
        pairs.sort(key=lambda p: p[1])
        t, ratio = pairs[len(pairs) // 2]
        rows.append((f"{hs} fit (median of {args.repeats} epoch/fit pairs)", t, ratio))
    Xs = X[:100]
    for hs in ["kron", "diag"]:
        t, _ = timed(lambda hs=hs: las[hs](Xs, link_approx="probit"), args.repeats, sync)
        rows.append((f"GLM predictive, 100 inputs ({hs})", t, t / t_epoch))
    t_fit, la = timed(
        lambda: Laplace(
            model, "classification", subset_of_weights="last_layer", hessian_structure="full"
        ).fit(dl),
        1,
        sync,
    )
    rows.append(("full last-layer fit", t_fit, t_fit / t_epoch))
    t_eig, _ = timed(lambda: (la.blocks_[0]._cache.clear(), la.log_marginal_likelihood()), 1, sync)
    rows.append(("  first marglik (eigenvalues of the 2570x2570 GGN)", t_eig, t_eig / t_epoch))
    t_hyp, _ = timed(lambda: la.optimize_prior_precision(n_steps=100, lr=0.1), args.repeats, sync)
    rows.append(("100 marglik hyper-steps (full last layer)", t_hyp, t_hyp / t_epoch))
    la_lw = Laplace(
        model,
        "classification",
        subset_of_weights="last_layer",
        hessian_structure="full",
        prior_structure="layerwise",
    ).fit(dl)
    la_lw.log_marginal_likelihood()
    t_lw, _ = timed(lambda: la_lw.optimize_prior_precision(n_steps=100, lr=0.1), args.repeats, sync)
    rows.append(("100 hyper-steps, full last layer, layerwise prior", t_lw, t_lw / t_epoch))
    la_k = las["kron"]
    la_k.log_marginal_likelihood()
    t_k, _ = timed(lambda: la_k.optimize_prior_precision(n_steps=100, lr=0.1), args.repeats, sync)
    rows.append(("100 hyper-steps, KFAC all weights, scalar prior", t_k, t_k / t_epoch))
    if not args.core:
        rows += new_structures(model, dl, Xs, t_epoch, args.repeats, sync)
    print(f"{'what':55s} {'seconds':>9s} {'/ epoch':>9s}")
    for name, t, r in rows:
        print(f"{name:55s} {t:9.3f} {r:9.2f}")


def new_structures(model, dl, Xs, t_epoch, repeats, sync):
    """Low-rank, GP view and subnetwork on the same MLP: fit, 100 marglik hyper-steps and the GLM
    predictive for 100 inputs, each as a ratio to one training epoch (laplace-torch's structures)."""
    from workbench.laplace.subnetwork import select_subnetwork

    rows = []
    idx = select_subnetwork(model, 1000, "largest_variance", dl, "classification")
    configs = [
        (
            "low-rank, rank 20 (Lanczos, 50 steps)",
            dict(hessian_structure="lowrank", structure_options={"rank": 20, "n_iter": 50}),
        ),
        (
            "GP view, 30 context points",
            dict(hessian_structure="gp", structure_options={"n_context": 30}),
        ),
        (
            "subnetwork, 1000 largest-variance weights, full",
            dict(subset_of_weights="subnetwork", subnetwork_indices=idx, hessian_structure="full"),
        ),
    ]
    for name, kw in configs:
        t_fit, la = timed(lambda kw=kw: Laplace(model, "classification", **kw).fit(dl), 1, sync)
        rows.append((f"{name}: fit", t_fit, t_fit / t_epoch))
        la.log_marginal_likelihood()
        t_h, _ = timed(lambda la=la: la.optimize_prior_precision(n_steps=100, lr=0.1), 1, sync)
        rows.append(("  100 marglik hyper-steps", t_h, t_h / t_epoch))
        t_p, _ = timed(lambda la=la: la(Xs, link_approx="probit"), repeats, sync)
        rows.append(("  GLM predictive, 100 inputs", t_p, t_p / t_epoch))
    return rows


if __name__ == "__main__":
    main()
