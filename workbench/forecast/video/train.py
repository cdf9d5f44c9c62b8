"""Command-line training of the video forecaster; under ``torchrun`` it trains with DDP.

    python -m workbench.forecast.video.train --preset tiny --steps 400 --checkpoint runs/video.pt
    torchrun --nproc_per_node=2 -m workbench.forecast.video.train --preset tiny --steps 400 \\
        --checkpoint runs/video.pt                      # 2 processes (gloo on CPU, nccl on GPUs)
    python -m workbench.forecast.video.train ... --resume runs/video.pt   # continue bit for bit

``--batch-size`` is per process. Data: a synthetic preset, a workbench dataset zarr (``--data``)
or a ZAPBench release directory (``--release``).
"""

from __future__ import annotations

import argparse

import torch.distributed as dist

from .distributed import init_from_env
from .estimator import VideoForecaster

__all__ = ["main"]


def _dataset(args):
    from .. import make_dataset, open_dataset
    if args.release:
        from ..release import open_release
        return open_release(args.release, scale=args.scale)
    if args.data:
        return open_dataset(args.data)
    return make_dataset(args.preset, random_state=args.seed)


def main(argv=None) -> VideoForecaster:
    ap = argparse.ArgumentParser(prog="python -m workbench.forecast.video.train",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="workbench dataset zarr")
    ap.add_argument("--release", default=None, help="ZAPBench release directory")
    ap.add_argument("--scale", default="s0")
    ap.add_argument("--context", type=int, default=4)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--widths", default="8,16,32")
    ap.add_argument("--input-downsample", type=int, default=1)
    ap.add_argument("--no-stimulus", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--resume", default=None)
    args = ap.parse_args(argv)
    rank, world = init_from_env()
    try:
        ds = _dataset(args)
        est = VideoForecaster(context=args.context, n_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              widths=tuple(int(w) for w in args.widths.split(",")),
                              input_downsample=args.input_downsample, stimulus=not args.no_stimulus,
                              n_threads=args.threads, checkpoint_path=args.checkpoint,
                              checkpoint_every=args.checkpoint_every, progress=rank == 0)
        est.fit(ds, resume_from=args.resume)
        if rank == 0:
            loss = est.history_["loss"].values
            print(f"trained {est.step_} steps on {world} process(es); masked MAE over the last 20 steps "
                  f"{loss[-20:].mean():.4f} (first 20: {loss[:20].mean():.4f})"
                  + (f"; checkpoint {args.checkpoint}" if args.checkpoint else ""))
        return est
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
