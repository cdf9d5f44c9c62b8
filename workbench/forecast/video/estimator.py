"""``VideoForecaster``: scikit-learn style estimator training the lead-conditioned 3-D UNet.

Training: every step draws a global batch of (training window, lead) pairs from a seeded sampler,
gathers the ``C`` context frames and the target frame, and minimises the MAE over voxels inside
segmented cells (mask = segmentation > 0). The optimiser is AdamW with linear warm-up and cosine
decay. Under ``torch.distributed`` (``torchrun`` or :func:`~.distributed.spawn`) the model is
wrapped in DDP and every rank trains on its slice of the same global batch. Checkpoints
(:meth:`VideoForecaster.save_checkpoint`, ``checkpoint_path``/``checkpoint_every``) hold model,
optimiser, schedule, step and RNG states, so ``fit(..., resume_from=path)`` continues bit for bit.

Input down-sampling (``input_downsample = s``) average-pools the frames by ``s`` in y and x; the
network runs at low resolution and its forecast is upsampled (trilinearly) back to the full grid,
where the loss is taken. This is the spatial side of the spatial/temporal context trade-off.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from ..._deprecation import renamed_arguments
from ..._torch_utils import resolve_device, seed_from, torch_threads
from ...exceptions import check_fitted
from ._params import validate_params
from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from .distributed import rank_world
from .frames import gather_video, take_frames, volume_shape
from .loader import StepSampler, frame_loader, lead_probabilities
from .model import UNet3D, plan_strides

__all__ = ["VideoForecaster", "torch_threads"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32,
           torch.float64: torch.float64}


#: old parameter names kept one release (``seed`` / ``num_threads`` before the conventions of #19.3)
_RENAMED = {"seed": "random_state", "num_threads": "n_threads"}


def _check_fitted(est, what="this method"):
    check_fitted(est, "model_", what)


def _nan_safe(x):
    """Missing voxels (NaN frames or voxels) enter the network as the normalised mean, 0."""
    return torch.where(torch.isnan(x), torch.zeros((), dtype=x.dtype, device=x.device), x)


class VideoForecaster(BaseEstimator):
    """Lead-conditioned 3-D UNet forecaster of whole-brain activity volumes.

    Parameters
    ----------
    context : context frames ``C`` (input channels).
    horizon : largest lead ``H``; leads 1..H are sampled uniformly in training.
    widths, blocks_per_level, attention, emb_dim : network shape (see :class:`.UNet3D`).
    n_levels_max : cap on the down-sampling steps (default: ``len(widths) - 1``).
    stimulus : condition on the stimulus features of the context frames and the target frame.
    input_downsample : average-pool factor in y and x applied to the input frames.
    lead_sampling : "uniform" draws leads 1..H uniformly (ZAPBench's choice); "inverse" with
        probability proportional to ``1 / l`` (short leads, where a video model can use fine
        spatial detail, get most updates: better on the synthetic data); "auto" (default) is
        "uniform" for data from the ZAPBench release (``ds.attrs["source"]``, ZAPBench mode) and
        "inverse" otherwise.
    batch_size : windows per step **per process**.
    n_steps, lr, weight_decay, warmup_steps, grad_clip : optimisation.
    random_state : seeds weights and the batch sampler (identical on all ranks; the global torch
        RNG is not touched). ``seed`` is its old name (deprecated).
    device : ``None`` = cuda if available else cpu; dtype: "float32" | "float64".
    checkpoint_path, checkpoint_every : write a resumable checkpoint every so many steps.
    progress : tqdm bar over steps (rank 0 only).
    n_threads : torch intra-op threads while fitting/predicting (``None``: leave as set). Small
        volumes on a busy CPU train far faster with 1 thread than with several. ``num_threads`` is
        its old name (deprecated).
    precision : "float32" (default) or "bf16": bfloat16 autocast of the network's forward pass
        (convolutions and attention run in bf16 on tensor cores) with float32 master weights,
        optimiser state and loss. Needs ``dtype="float32"``.
    channels_last : keep activations and weights in ``channels_last_3d`` (default; faster 3-D
        convolutions with cuDNN); False uses the contiguous layout.
    compile : ``torch.compile`` the network for training (first steps slower while it compiles).
    num_workers : 0 (default) reads each batch's frames in the training process; > 0 streams them
        with a ``DataLoader`` of that many workers (pinned memory on CUDA, ``prefetch_factor``
        batches ahead each), reading only the frames of each batch from a lazy (zarr / dask) volume:
        the whole volume is never loaded. The batches are the same either way.

    Missing data: NaN voxels or whole NaN frames of the volume are masked: they enter the network
    as the normalised mean (0), the normalisation statistics ignore them, and the loss is taken
    over observed target voxels only, so other windows and voxels are unaffected.
    """

    @renamed_arguments(**_RENAMED)
    def __init__(self, context: int = 4, horizon: int = 32, widths=(8, 16, 32), blocks_per_level: int = 1,
                 attention: bool = True, emb_dim: int = 32, stimulus: bool = False,
                 input_downsample: int = 1, lead_sampling: str = "auto", batch_size: int = 4, n_steps: int = 300, lr: float = 3e-3,
                 weight_decay: float = 1e-4, warmup_steps: int | None = None, grad_clip: float = 1.0,
                 random_state: int | None = 0, device=None, dtype="float32", checkpoint_path=None,
                 checkpoint_every: int = 0, progress: bool = False, n_threads: int | None = None,
                 precision: str = "float32", channels_last: bool = True, compile: bool = False,
                 num_workers: int = 0, prefetch_factor: int = 2):
        self.context = context
        self.horizon = horizon
        self.widths = widths
        self.blocks_per_level = blocks_per_level
        self.attention = attention
        self.emb_dim = emb_dim
        self.stimulus = stimulus
        self.input_downsample = input_downsample
        self.lead_sampling = lead_sampling
        self.batch_size = batch_size
        self.n_steps = n_steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.grad_clip = grad_clip
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.n_threads = n_threads
        self.precision = precision
        self.channels_last = channels_last
        self.compile = compile
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor

    # ------------------------------------------------------------------ set-up
    def _validate(self):
        validate_params(self, _DTYPES)

    def _torch_device(self):
        if self.device is not None:
            return resolve_device(self.device)
        if torch.cuda.is_available():
            rank_local = torch.cuda.current_device()
            return torch.device("cuda", rank_local)
        return torch.device("cpu")

    def _low_shape(self, shape):
        s = int(self.input_downsample)
        return (shape[0], math.ceil(shape[1] / s), math.ceil(shape[2] / s))

    def _build_model(self, seed: int = 0):
        widths = tuple(int(w) for w in self.widths)
        strides = plan_strides(self._low_shape(self.spatial_shape_), len(widths) - 1)
        n_stim = (int(self.context) + 1) * self.n_stimulus_features_ if self.stimulus else 0
        with torch.random.fork_rng(devices=[]):       # seeded weights, global RNG left as it was
            torch.manual_seed(int(seed))
            return UNet3D(int(self.context), widths, strides, int(self.blocks_per_level),
                          bool(self.attention), int(self.horizon), n_stim, int(self.emb_dim))

    @staticmethod
    def _mask_from(segmentation) -> np.ndarray:
        seg = np.asarray(segmentation)
        if seg.ndim != 3:
            raise ValueError(f"segmentation must be 3-d (z, y, x), got shape {seg.shape}")
        return seg > 0

    def _prepare_volume(self, volume, device, dtype):
        """Small volumes become one device tensor; large / lazy ones are read per batch."""
        nbytes = int(np.prod(volume.shape)) * 4
        if isinstance(volume, xr.DataArray):
            if volume.chunks is None or nbytes <= 2 * 2**30:
                return torch.as_tensor(np.asarray(volume.values), dtype=dtype, device=device)
            return volume
        if isinstance(volume, torch.Tensor):
            return volume.to(device=device, dtype=dtype)
        if isinstance(volume, np.ndarray) or nbytes <= 2 * 2**30:
            return torch.as_tensor(np.asarray(volume), dtype=dtype, device=device)
        return volume

    # ------------------------------------------------------------------ forward
    def _stim_batch(self, stimulus, starts, leads, device, dtype):
        if not self.stimulus:
            return None
        s = np.asarray(starts, np.int64)
        idx = np.concatenate([s[:, None] + np.arange(self.context)[None],
                              (s + self.context - 1 + np.asarray(leads, np.int64))[:, None]], 1)
        st = (stimulus[torch.as_tensor(idx, device=stimulus.device)] - self.stim_mean_) / self.stim_scale_
        return st.reshape(len(s), -1).to(device=device, dtype=dtype)

    def _lowres(self, x):
        s = int(self.input_downsample)
        if s == 1:
            return x
        b, c, z, y, xx = x.shape
        x = F.pad(x, (0, (-xx) % s, 0, (-y) % s, 0, 0), mode="replicate") if (y % s or xx % s) else x
        return F.avg_pool3d(x, (1, s, s))

    def _upsample(self, v, shape):
        """(B, k, z', y', x') -> (B, k, *shape): linear in ``v`` and preserving constants."""
        if tuple(v.shape[2:]) == tuple(shape):
            return v
        return F.interpolate(v, size=tuple(shape), mode="trilinear", align_corners=False)

    def _forward(self, model, ctx, lead, stim, return_features=False):
        """Forecast on the full grid: ``offset + scale * (up(base) + up(readout(phi)))``."""
        x = self._lowres(_nan_safe((ctx - self.offset_) / self.scale_)).contiguous(
            memory_format=self._memory_format())
        shape = ctx.shape[2:]
        base = self._upsample(x[:, -1:], shape)[:, 0]
        if return_features:
            net = getattr(model, "module", model)
            phi = self._upsample(net.features(x, lead, stim), shape)
            res = net.readout(phi)[:, 0]
            return (base + res) * self.scale_ + self.offset_, base, phi
        res = self._upsample(model(x, lead, stim)[:, None], shape)[:, 0]
        return (base + res) * self.scale_ + self.offset_

    @staticmethod
    def masked_mae(pred, target, mask):
        """Mean absolute error over observed voxels inside cells: per window, then over windows.

        Target voxels that are NaN (missing frames or voxels) do not count; a window without any
        observed voxel is left out of the mean over windows.
        """
        observed = mask & ~torch.isnan(target)
        m = observed.to(pred.dtype)
        err = torch.where(observed, (pred - target).abs(), torch.zeros((), dtype=pred.dtype, device=pred.device))
        count = m.sum(dim=(-3, -2, -1))
        per_window = err.sum(dim=(-3, -2, -1)) / count.clamp_min(1)
        n_valid = (count > 0).sum().clamp_min(1)
        return per_window.sum() / n_valid

    # ------------------------------------------------------------------ fit
    def fit(self, ds: xr.Dataset, resume_from=None, stop_at_step: int | None = None, callback=None):
        """Train on the training windows of a ``workbench.forecast`` Dataset.

        ``ds`` holds ``volume`` (time, z, y, x), ``segmentation`` (z, y, x) and, with
        ``stimulus=True``, ``stimulus`` (time, feature); its attrs carry the condition offsets.
        """
        from ..protocol import windows
        for name in ("volume", "segmentation") + (("stimulus",) if self.stimulus else ()):
            if name not in ds:
                raise ValueError(f"dataset lacks variable {name!r} (has {list(ds.data_vars)})")
        from ..baselines.base import resolve_mode
        starts = windows(ds, "train", context=int(self.context), horizon=int(self.horizon))["start"].values
        return self.fit_arrays(ds["volume"].transpose("time", "z", "y", "x"), ds["segmentation"].values,
                               starts, ds["stimulus"].values if self.stimulus else None,
                               resume_from=resume_from, stop_at_step=stop_at_step, callback=callback,
                               mode=resolve_mode("auto", ds))

    def fit_arrays(self, volume, segmentation, starts, stimulus=None, resume_from=None,
                   stop_at_step: int | None = None, callback=None, mode: str = "workbench"):
        """Train on raw arrays: volume (time, z, y, x), segmentation (z, y, x), window starts.

        ``callback(step, n_steps, loss)`` is called after every step (e.g. a dashboard's progress).
        ``mode`` ("workbench" | "zapbench") picks the ``lead_sampling="auto"`` choice.
        """
        if mode not in ("workbench", "zapbench"):
            raise ValueError(f"mode must be 'workbench' or 'zapbench', got {mode!r}")
        self._validate()
        self.lead_sampling_ = (self.lead_sampling if self.lead_sampling != "auto"
                               else "uniform" if mode == "zapbench" else "inverse")
        with torch_threads(self.n_threads):
            return self._fit_arrays(volume, segmentation, starts, stimulus, resume_from, stop_at_step,
                                    callback)

    def _fit_arrays(self, volume, segmentation, starts, stimulus, resume_from, stop_at_step, callback):
        t, z, y, x = volume_shape(volume)
        mask_np = self._mask_from(segmentation)
        if mask_np.shape != (z, y, x):
            raise ValueError(f"segmentation shape {mask_np.shape} != volume's spatial shape {(z, y, x)}")
        if not mask_np.any():
            raise ValueError("segmentation has no labelled voxels (all zero)")
        starts = np.asarray(starts, np.int64).reshape(-1)
        if starts.size == 0:
            raise ValueError("no training windows (starts is empty)")
        if starts.min() < 0 or starts.max() + self.context + self.horizon > t:
            raise ValueError(f"training windows reach outside the volume's {t} frames")
        if self.stimulus:
            if stimulus is None or np.ndim(stimulus) != 2 or np.shape(stimulus)[0] != t:
                raise ValueError(f"stimulus must be (time={t}, feature), got "
                                 f"{None if stimulus is None else np.shape(stimulus)}")
        device, dtype = self._torch_device(), _DTYPES[self.dtype]
        rank, world = rank_world()
        self.spatial_shape_ = (z, y, x)
        self.n_stimulus_features_ = int(np.shape(stimulus)[1]) if self.stimulus else 0
        self.train_starts_ = starts
        if int(self.num_workers) > 0:      # workers read on the CPU (forked: they must not touch CUDA)
            vol = volume.detach().cpu() if isinstance(volume, torch.Tensor) else volume
        else:
            vol = self._prepare_volume(volume, device, dtype)
        mask = torch.as_tensor(mask_np, device=device)
        # normalisation from up to 64 training frames spread over the training windows
        sample_t = np.unique(starts[np.linspace(0, starts.size - 1, min(64, starts.size)).astype(int)])
        frames = take_frames(vol, sample_t, device=device, dtype=torch.float64)
        inside = frames[:, mask]
        if torch.isinf(inside).any():
            raise ValueError("volume holds inf inside the segmentation; use NaN for missing voxels")
        inside = inside[~torch.isnan(inside)]         # missing voxels / frames do not count
        if inside.numel() < 2:
            raise ValueError("volume has no finite voxels inside the segmentation in the sampled "
                             "training frames (all missing?)")
        self.offset_ = float(inside.mean())
        self.scale_ = float(inside.std().clamp_min(1e-6))
        if self.stimulus:
            st_np = np.asarray(stimulus, np.float64)
            if not np.all(np.isfinite(st_np)):
                raise ValueError("stimulus holds NaN or inf; it must be finite")
            self.stim_mean_ = torch.as_tensor(st_np.mean(0), dtype=dtype, device=device)
            self.stim_scale_ = torch.as_tensor(st_np.std(0) + 1e-6, dtype=dtype, device=device)
            stim_t = torch.as_tensor(st_np, dtype=dtype, device=device)
        else:
            stim_t = None
        seed = seed_from(self.random_state)
        model, net, opt, sched = self._training_objects(seed, device, dtype, world)
        gen = torch.Generator().manual_seed(seed + 7919)
        step, losses = 0, []
        if resume_from is not None:
            step, losses = self._resume(resume_from, model, opt, sched, gen, device)
        stop = int(self.n_steps) if stop_at_step is None else min(int(stop_at_step), int(self.n_steps))
        sampler = StepSampler(gen, starts.size, lead_probabilities(self.horizon, self.lead_sampling_),
                              self.batch_size, step, stop, rank, world)
        self.model_ = model
        step, losses = self._train_loop(net, model, opt, sched, sampler, vol, starts, stim_t, mask,
                                        device, dtype, step, losses, callback, rank)
        model.eval()
        gen_next = torch.Generator()
        gen_next.set_state(sampler.state_before(step))
        self._opt, self._sched, self._gen, self.step_ = opt, sched, gen_next, step
        self.mask_ = mask_np
        self.history_ = xr.Dataset({"loss": ("step", np.asarray(losses, np.float64))},
                                   coords={"step": np.arange(1, len(losses) + 1)},
                                   attrs=dict(description="training loss (masked MAE) per step, this rank"))
        if self.checkpoint_path and (not self.checkpoint_every or step % int(self.checkpoint_every)):
            self._save(self.checkpoint_path, model, opt, sched, step, gen_next, losses)
        return self

    def _memory_format(self):
        return torch.channels_last_3d if self.channels_last else torch.contiguous_format

    def _training_objects(self, seed, device, dtype, world):
        """Model (float32/64 master weights), its DDP / compiled wrapper, optimiser, schedule."""
        model = self._build_model(seed).to(device=device, dtype=dtype, memory_format=self._memory_format())
        net = model
        if world > 1:
            import warnings

            from torch.nn.parallel import DistributedDataParallel as DDP
            # 1x1x1 conv weights in channels_last_3d have ambiguous strides; DDP warns, sums are exact
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        if self.compile:
            net = torch.compile(net)
        opt = torch.optim.AdamW(model.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        n_total = int(self.n_steps)
        warm = int(self.warmup_steps) if self.warmup_steps is not None else max(1, min(100, n_total // 10))

        def schedule(step):
            if step < warm:
                return (step + 1) / warm
            frac = (step - warm) / max(1, n_total - warm)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

        return model, net, opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    def _resume(self, path, model, opt, sched, gen, device):
        ck = load_checkpoint(path, map_location=device)
        if ck["extra"].get("params", {}).get("context", self.context) != self.context:
            raise ValueError(f"checkpoint {str(path)!r} was trained with another context")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ck["scheduler"] is not None:
            sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"], gen)
        return int(ck["step"]), list(ck["extra"].get("losses", []))

    def _batches(self, vol, starts, sampler, device, dtype):
        """``(step, i, lead, ctx, target)`` per step on ``device``: read here, or streamed by workers."""
        if int(self.num_workers) == 0:
            for step, i, lead in sampler:
                ctx, target = gather_video(vol, starts[i], lead, int(self.context), device, dtype)
                yield step, i, lead, ctx, target
            return
        loader = frame_loader(vol, starts, int(self.context), sampler, dtype, int(self.num_workers),
                              pin_memory=device.type == "cuda", prefetch_factor=int(self.prefetch_factor))
        for step, i, lead, ctx, target in loader:
            yield (step, i.numpy(), lead.numpy(), ctx.to(device, non_blocking=True),
                   target.to(device, non_blocking=True))

    def _autocast(self, device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              enabled=self.precision == "bf16")

    def _train_loop(self, net, model, opt, sched, sampler, vol, starts, stim_t, mask, device, dtype,
                    step, losses, callback, rank):
        bar = tqdm(total=len(sampler), disable=not (self.progress and rank == 0), desc="video forecaster")
        pending = []                       # losses stay on the device until read (no sync per step)

        def flush():
            losses.extend(torch.stack(pending).double().cpu().tolist() if pending else [])
            pending.clear()

        model.train()
        for _, i, lead, ctx, target in self._batches(vol, starts, sampler, device, dtype):
            stim = self._stim_batch(stim_t, starts[i], lead, device, dtype) if self.stimulus else None
            with self._autocast(device):
                pred = self._forward(net, ctx, torch.as_tensor(lead, device=device), stim)
            loss = self.masked_mae(pred.to(dtype), target, mask)       # float32 / float64 loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(self.grad_clip))
            opt.step()
            sched.step()
            step += 1
            pending.append(loss.detach())
            bar.update(1)
            if callback is not None or (self.progress and bar.n % 10 == 0):
                flush()
                if callback is not None:
                    callback(step, sampler.stop, losses[-1])
                if bar.n % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
            if self.checkpoint_path and self.checkpoint_every and step % int(self.checkpoint_every) == 0:
                flush()
                g = torch.Generator()
                g.set_state(sampler.state_before(step))
                self._save(self.checkpoint_path, model, opt, sched, step, g, losses)
        flush()
        bar.close()
        return step, losses

    def _save(self, path, model, opt, sched, step, gen, losses):
        if rank_world()[0] != 0:
            return None
        extra = dict(losses=list(losses), params=self.get_params(), offset=self.offset_, scale=self.scale_,
                     spatial_shape=self.spatial_shape_, n_stimulus_features=self.n_stimulus_features_)
        if self.stimulus:   # the input normalisation of the stimulus features, needed to predict
            extra.update(stim_mean=self.stim_mean_.detach().cpu().double().numpy().tolist(),
                         stim_scale=self.stim_scale_.detach().cpu().double().numpy().tolist())
        return save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, step=step,
                               generator=gen, extra=extra)

    def save_checkpoint(self, path) -> Path | None:
        """Write a resumable checkpoint of the current training state (rank 0 only; atomic)."""
        _check_fitted(self, "this method")
        return self._save(path, self.model_, self._opt, self._sched, self.step_, self._gen,
                          self.history_["loss"].values.tolist())

    @classmethod
    def from_checkpoint(cls, path, device=None) -> VideoForecaster:
        """An estimator ready to predict from a checkpoint (parameters, weights, normalisation)."""
        ck = load_checkpoint(path)
        ex = ck["extra"]
        params = {_RENAMED.get(k, k): v for k, v in ex["params"].items()}   # older checkpoints
        est = cls(**{**params, "device": device})
        est.spatial_shape_ = tuple(ex["spatial_shape"])
        est.n_stimulus_features_ = int(ex["n_stimulus_features"])
        est.offset_, est.scale_ = float(ex["offset"]), float(ex["scale"])
        dev, dtype = est._torch_device(), _DTYPES[est.dtype]
        if est.stimulus:
            if "stim_mean" not in ex or "stim_scale" not in ex:
                raise ValueError(f"checkpoint {str(path)!r} was trained with stimulus=True but holds no "
                                 "stimulus normalisation (stim_mean/stim_scale; written before they were "
                                 "saved); refit the forecaster")
            est.stim_mean_, est.stim_scale_ = (torch.as_tensor(np.asarray(ex[k], np.float64), dtype=dtype, device=dev)
                                               for k in ("stim_mean", "stim_scale"))
            if est.stim_mean_.numel() != est.n_stimulus_features_:
                raise ValueError(f"checkpoint {str(path)!r}: {est.stim_mean_.numel()} stimulus means for "
                                 f"{est.n_stimulus_features_} stimulus features")
        est.model_ = est._build_model(0).to(device=dev, dtype=dtype, memory_format=est._memory_format())
        est.model_.load_state_dict(ck["model"])
        est.model_.eval()
        est.step_ = int(ck["step"])
        est.history_ = xr.Dataset({"loss": ("step", np.asarray(ex.get("losses", []), np.float64))})
        return est

    # ------------------------------------------------------------------ Forecaster protocol
    name = "video"

    @property
    def requires(self) -> tuple[str, ...]:
        """Dataset variables :func:`workbench.forecast.evaluate.evaluate` must hand to ``predict``."""
        return ("volume", "segmentation") + (("stimulus",) if self.stimulus else ())

    def predict(self, ds: xr.Dataset, starts, batch_size: int = 16) -> np.ndarray:
        """Trace forecasts ``(len(starts), horizon, neuron)`` by segment means of the volume forecasts.

        ``starts`` are positional indices into ``ds.time`` of each window's first context frame
        (the part-1 Forecaster protocol, so ``evaluate`` scores this model beside the baselines).
        """
        from ..segments import segment_means
        _check_fitted(self, "predict")
        for v in self.requires:
            if v not in ds:
                raise ValueError(f"dataset lacks variable {v!r} needed by the video forecaster")
        vol = ds["volume"].transpose("time", "z", "y", "x")
        vol = vol.values if vol.chunks is None else vol
        pred = self.predict_arrays(vol, starts, None, ds["stimulus"].values if self.stimulus else None,
                                   batch_size)
        return segment_means(pred, ds["segmentation"].values, int(ds.sizes["neuron"]))

    # ------------------------------------------------------------------ predict
    def _model_device_dtype(self):
        p = next(self.model_.parameters())
        return p.device, p.dtype

    def predict_arrays(self, volume, starts, leads=None, stimulus=None, batch_size: int = 16,
                       return_features: bool = False):
        """Forecasts ``(W, L, z, y, x)`` for window ``starts`` and ``leads`` (default 1..H).

        With ``return_features`` also the full-grid read-out features ``phi`` (W, L, width, z, y, x)
        and the persistence base (W, L, z, y, x) used by the last-layer Laplace.
        """
        _check_fitted(self, "predict_arrays")
        with torch_threads(self.n_threads), torch.no_grad():
            return self._predict_arrays(volume, starts, leads, stimulus, batch_size, return_features)

    def _predict_arrays(self, volume, starts, leads, stimulus, batch_size, return_features):
        device, dtype = self._model_device_dtype()
        starts = np.asarray(starts, np.int64).reshape(-1)
        leads = np.arange(1, int(self.horizon) + 1) if leads is None else np.asarray(leads, np.int64).reshape(-1)
        if leads.size == 0 or leads.min() < 1:
            raise ValueError(f"leads must be >= 1, got {leads.tolist()}")
        if self.stimulus:
            if stimulus is None:
                raise ValueError("this forecaster was trained with stimulus=True; pass stimulus")
            stimulus = torch.as_tensor(np.asarray(stimulus), dtype=dtype, device=device)
        vol = volume
        if self.context > 0 and starts.size and starts.min() < 0:
            raise ValueError(f"window starts must be >= 0, got min {starts.min()}")
        s_all = np.repeat(starts, leads.size)
        l_all = np.tile(leads, starts.size)
        outs, phis, bases = [], [], []
        for lo in range(0, s_all.size, int(batch_size)):
            s, lead = s_all[lo:lo + batch_size], l_all[lo:lo + batch_size]
            ctx = take_frames(vol, s[:, None] + np.arange(int(self.context))[None], device, dtype)
            stim = self._stim_batch(stimulus, s, lead, device, dtype) if self.stimulus else None
            lt = torch.as_tensor(lead, device=device)
            if return_features:
                out, base, phi = self._forward(self.model_, ctx, lt, stim, return_features=True)
                phis.append(phi.cpu())
                bases.append(base.cpu())
            else:
                with self._autocast(device):          # bf16 models predict in bf16 too
                    out = self._forward(self.model_, ctx, lt, stim).to(dtype)
            outs.append(out.cpu())
        shape = (starts.size, leads.size)
        pred = torch.cat(outs).reshape(*shape, *outs[0].shape[1:]).numpy()
        if not return_features:
            return pred
        phi = torch.cat(phis)
        return pred, phi.reshape(*shape, *phi.shape[1:]), torch.cat(bases).reshape(*shape, *bases[0].shape[1:])

    def forecast(self, ds: xr.Dataset, split: str = "test", windows: xr.Dataset | None = None,
                 leads=None, batch_size: int = 16) -> xr.DataArray:
        """Forecast volumes as ``xr.DataArray`` (window, lead, z, y, x) for a split's windows."""
        from ..protocol import windows as make_windows
        _check_fitted(self, "this method")
        win = make_windows(ds, split, context=int(self.context), horizon=int(self.horizon)) \
            if windows is None else windows
        leads = np.arange(1, int(self.horizon) + 1) if leads is None else np.asarray(leads, np.int64)
        vol = ds["volume"].transpose("time", "z", "y", "x")
        pred = self.predict_arrays(vol.values if vol.chunks is None else vol, win["start"].values, leads,
                                   ds["stimulus"].values if self.stimulus else None, batch_size)
        coords = {"window": win["window"].values, "lead": leads,
                  "start": ("window", win["start"].values)}
        if "condition" in win.coords:
            coords["condition"] = ("window", win["condition"].values)
        for d in ("z", "y", "x"):
            if d in ds.coords:
                coords[d] = ds[d].values
        return xr.DataArray(pred, dims=("window", "lead", "z", "y", "x"), coords=coords, name="forecast",
                            attrs=dict(method="video", context=int(self.context)))
