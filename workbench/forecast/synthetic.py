"""Synthetic ZAPBench-like recordings, deterministic from a seed.

Pipeline (all batched over neurons / voxels / frames):

1. a brain-shaped mask (three lobes, left-right symmetric) in an anisotropic (z, y, x) grid;
2. ellipsoidal nuclei of varied sizes at random, non-overlapping positions inside the mask
   (random sequential packing, no lattice), labels = index + 1;
3. stimulus features (time, 26): each of the nine conditions (release proportions) repeats a
   trial of pulses on its own features, in trials of the release's lengths (alternating 65/66,
   131/132, 262/263 frames; dots and position three trials of a third; open loop and dark none);
   ``trial_phase`` records the right-aligned phase and the ``trial_lengths`` attribute the trials;
4. latent dynamics: damped oscillators (complex AR(1), run with ``scipy.signal.lfilter``) driven by
   the stimulus plus noise, a slow spontaneous component;
5. rates = softplus(spatially smooth loadings @ latents) (neighbouring cells correlate);
6. calcium indicator: double-exponential kernel (lfilter) and saturation ``c / (c + K)``;
7. fluorescence per voxel: brightness * (1 + dF) * bleaching drift + neuropil (smooth maps x
   slow signals) + shot-like noise; dF/F against a sliding 8th percentile (radius scaled to the
   length), clipped to [-0.25, 1.5]; traces = segment mean of the dF/F volume.

Preset ``large`` has no volume: each neuron's fluorescence is simulated directly (noise reduced as
for the mean over its voxels) and its dF/F is the trace.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy.signal import lfilter

from workbench._deprecation import renamed_arguments

from . import protocol
from .dff import CLIP_RANGE, delta_f_over_f, radius_for_length

__all__ = ["SyntheticConfig", "PRESETS", "get_config", "simulate", "brain_mask", "in_brain",
           "place_nuclei", "paint_nuclei", "stimulus_features", "trial_lengths", "N_FEATURES"]

N_FEATURES = 26
FRAME_PERIOD_S = 0.9141
@dataclass(frozen=True)
class SyntheticConfig:
    """Size and physics of a synthetic recording (see :data:`PRESETS`)."""

    name: str = "custom"
    n_frames: int = 3600
    shape: tuple[int, int, int] = (5, 16, 24)          # (z, y, x) voxels
    voxel_size: tuple[float, float, float] = (8.0, 3.0, 3.0)   # µm (z, y, x)
    nucleus_radius: tuple[float, float, float] = (0.6, 1.2, 1.2)  # voxels (z, y, x)
    n_neurons: int | None = None      # None: the density of a lattice of spacing ceil(2 r) + 1
    traces_only: bool = False
    n_latent: int = 8
    loading_length_um: float = 30.0   # correlation length of the loadings
    latent_noise: float = 0.6
    stimulus_gain: float = 1.5
    calcium_rise_s: float = 0.4
    calcium_decay_s: float = 2.5
    saturation: float = 2.0
    noise: float = 0.04               # relative noise sd per voxel at unit brightness
    neuropil: float = 0.15
    bleach: float = 0.15              # fractional loss of brightness over the recording
    frame_period_s: float = FRAME_PERIOD_S
    extra: dict = field(default_factory=dict)

    def to_attrs(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return {f"synthetic_{k}": (list(v) if isinstance(v, tuple) else v)
                for k, v in d.items() if v is not None}


PRESETS: dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(name="tiny", n_frames=3600, shape=(4, 20, 28),
                            nucleus_radius=(0.5, 1.0, 1.0)),
    "small": SyntheticConfig(name="small", n_frames=4000, shape=(6, 32, 48),
                             voxel_size=(8.0, 3.0, 3.0), nucleus_radius=(0.5, 1.0, 1.0)),
    "large": SyntheticConfig(name="large", n_frames=7879, shape=(72, 1328, 2048),
                             voxel_size=(4.0, 0.406, 0.406), nucleus_radius=(0.75, 6.0, 6.0),
                             n_neurons=20_000, traces_only=True),
}


def get_config(preset, **overrides) -> SyntheticConfig:
    """A :class:`SyntheticConfig` from a preset name or config, with field overrides."""
    if isinstance(preset, SyntheticConfig):
        cfg = preset
    elif isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        cfg = PRESETS[preset]
    else:
        raise TypeError(f"preset must be a name or SyntheticConfig, got {type(preset).__name__}")
    bad = [k for k in overrides if k not in SyntheticConfig.__dataclass_fields__]
    if bad:
        raise ValueError(f"unknown config fields {bad}")
    if "shape" in overrides:
        overrides["shape"] = tuple(int(v) for v in overrides["shape"])
    cfg = replace(cfg, **overrides)
    min_frames = _min_frames()
    if cfg.n_frames < min_frames:
        raise ValueError(f"n_frames={cfg.n_frames} too short: every condition needs test windows "
                         f"(held-out: {protocol.MAX_CONTEXT} context frames + {protocol.HORIZON}-"
                         f"frame horizon), i.e. n_frames >= {min_frames}")
    return cfg


@functools.lru_cache
def _min_frames(min_windows: int = 8) -> int:
    """Fewest frames giving every condition >= ``min_windows`` test windows (release proportions)."""
    for n_frames in range(1000, 20000, 25):
        off = np.asarray(condition_offsets(n_frames))
        n = np.diff(off) - 2 * protocol.CONDITION_PADDING
        held = np.isin(np.asarray(protocol.CONDITION_NAMES), protocol.HELDOUT)
        count = np.where(held, n - protocol.MAX_CONTEXT, (n * protocol.TEST_FRACTION).astype(int))
        if (count - protocol.HORIZON + 1).min() >= min_windows:
            return n_frames
    raise RuntimeError("no feasible length")  # pragma: no cover


def condition_offsets(n_frames: int) -> list[int]:
    """The release's condition proportions scaled to ``n_frames``."""
    off = np.asarray(protocol.RELEASE_CONDITION_OFFSETS, dtype=float)
    return [int(v) for v in np.round(off / off[-1] * n_frames).astype(np.int64)]


_LOBES = [(-0.55, 0.40, 0.55, 0.95), (0.0, 0.45, 0.80, 1.0), (0.55, 0.50, 0.65, 0.9)]


def in_brain(points, shape) -> np.ndarray:
    """Whether voxel-index points (P, 3) lie in the brain: three lobes along x (fore-, mid-,
    hindbrain) per hemisphere (symmetric in y), in coordinates normalised to [-1, 1] per axis."""
    u = (np.asarray(points, dtype=float) + 0.5) / np.asarray(shape, dtype=float) * 2.0 - 1.0
    zz, yy, xx = u[..., 0], u[..., 1], u[..., 2]
    inside = np.zeros(u.shape[:-1], dtype=bool)
    for cx, rx, ry, rz in _LOBES:          # three lobes x two hemispheres
        for cy in (-0.35, 0.35):
            inside |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 + (zz / rz) ** 2 <= 1.0
    return inside


def brain_mask(shape, voxel_size=None) -> np.ndarray:
    """Boolean (z, y, x) brain mask on the voxel grid (see :func:`in_brain`)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return in_brain(grid, shape)


def _lattice_count(shape, radius) -> int:
    """Nuclei of a recording without an explicit count: as many as a lattice of spacing
    ``ceil(2 radius) + 1`` puts inside the brain (the density the presets were sized for)."""
    spacing = np.ceil(2 * np.asarray(radius, dtype=float)).astype(int) + 1
    grids = [np.arange(s // 2, n, s) for s, n in zip(spacing, shape)]
    lattice = np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, 3)
    return int(in_brain(lattice, shape).sum())


def place_nuclei(shape, radius, rng: np.random.Generator, n_neurons=None, size_sd: float = 0.15):
    """Nucleus centres (N, 3) in voxel units and per-nucleus radii (N, 3), at random positions.

    Random sequential packing: candidate centres are drawn uniformly inside the brain (only the
    candidates are tested against its shape, so the release-sized grid needs no mask), each with
    a size factor ``exp(N(0, size_sd))`` clipped to [0.7, 1.4] of ``radius``; a candidate is kept
    when its ellipsoid does not overlap a kept one (distance in units of the radii larger than the
    sum of the size factors) and its centre voxel is free. No lattice: the volume shows no
    checkerboard. ``n_neurons=None`` keeps the lattice density of earlier versions.
    """
    from scipy.spatial import cKDTree

    r = np.asarray(radius, dtype=float)
    shape_a = np.asarray(shape)
    target = _lattice_count(shape, r) if n_neurons is None else int(n_neurons)
    if target < 1:
        return np.zeros((0, 3)), np.zeros((0, 3))
    frac = max(1e-3, float(in_brain(rng.uniform(0, 1, (4096, 3)) * (shape_a - 1), shape).mean()))
    n_cand = int(4 * target / frac) + 64
    cand = rng.uniform(0, 1, (n_cand, 3)) * (shape_a - 1)
    cand = cand[in_brain(np.round(cand), shape)]            # the centre voxel lies in the brain
    size = np.clip(np.exp(rng.normal(0.0, size_sd, cand.shape[0])), 0.7, 1.4)
    u = cand / np.maximum(r, 1e-6)                        # ellipsoids -> spheres of radius `size`
    tree = cKDTree(u)
    pairs = tree.query_pairs(2 * 1.4 + 0.25, output_type="ndarray")
    d = np.linalg.norm(u[pairs[:, 0]] - u[pairs[:, 1]], axis=1)
    clash = pairs[d < size[pairs[:, 0]] + size[pairs[:, 1]] + 0.25]
    nbrs = [[] for _ in range(cand.shape[0])]
    for i, j in clash:                                    # adjacency lists of overlapping candidates
        nbrs[i].append(j)
        nbrs[j].append(i)
    kept = np.zeros(cand.shape[0], bool)
    voxels = set()
    out = []
    for i in range(cand.shape[0]):                        # greedy packing in random (draw) order
        v = tuple(np.round(cand[i]).astype(int))
        if v in voxels or any(kept[j] for j in nbrs[i]):
            continue
        kept[i] = True
        voxels.add(v)
        out.append(i)
        if len(out) == target:
            break
    if len(out) < target:
        raise ValueError(f"only {len(out)} of n_neurons={target} nuclei of radius {tuple(r)} fit in the "
                         f"brain of grid shape {tuple(shape)}")
    idx = np.asarray(out)
    return cand[idx], size[idx, None] * r[None, :]


def paint_nuclei(shape, centres: np.ndarray, radius) -> np.ndarray:
    """int32 (z, y, x) labels: voxel inside ellipsoid n -> n + 1 (loop over the stencil only).

    ``radius``: (3,) for all nuclei or (N, 3) per nucleus. Every nucleus keeps its centre voxel.
    """
    centres = np.asarray(centres, dtype=float)
    r = np.broadcast_to(np.asarray(radius, dtype=float), centres.shape)
    span = np.ceil(r.max(0) if r.size else np.zeros(3)).astype(int) + 1
    seg = np.zeros(shape, dtype=np.int32)
    base = np.round(centres).astype(int)
    rng_axes = [np.arange(-s, s + 1) for s in span]
    for dz in rng_axes[0]:
        for dy in rng_axes[1]:
            for dx in rng_axes[2]:
                vox = base + np.array([dz, dy, dx])
                d2 = (((vox - centres) / np.maximum(r, 1e-6)) ** 2).sum(1)
                ok = (d2 <= 1.0) & np.all((vox >= 0) & (vox < np.array(shape)), axis=1)
                seg[tuple(vox[ok].T)] = np.nonzero(ok)[0].astype(np.int32) + 1
    # centre voxel always belongs to its nucleus
    inside = np.all((base >= 0) & (base < np.array(shape)), axis=1)
    seg[tuple(base[inside].T)] = np.nonzero(inside)[0].astype(np.int32) + 1
    return seg


def trial_lengths(n_frames: int) -> list[tuple[int, ...]]:
    """Trial lengths of each condition of a recording of ``n_frames`` frames, like the release's.

    At the release's length these are :data:`workbench.forecast.protocol.RELEASE_TRIAL_LENGTHS`.
    Shorter recordings keep the real lengths (alternating 65/66, 131/132, 262/263 frames) laid
    back from each condition's end, the first trial cut to fit; conditions of three equal trials
    (dots, position) stay three trials of a third of the condition.
    """
    offsets = condition_offsets(n_frames)
    rel_n = np.diff(protocol.RELEASE_CONDITION_OFFSETS)
    out = []
    for i, row in enumerate(protocol.RELEASE_TRIAL_LENGTHS):     # nine conditions
        n = offsets[i + 1] - offsets[i]
        if not row or n == rel_n[i]:
            out.append(tuple(row) if n == rel_n[i] else ())
            continue
        if len(set(row)) == 1 and row[0] * len(row) == rel_n[i]:  # n / k trials
            k = len(row)
            out.append(tuple(n // k + (j < n % k) for j in range(k)))
            continue
        full = row[1:] if row[0] < min(row[1:]) else row          # the release's first trial is cut
        lengths, total, j = [], 0, len(full) - 1
        while total < n:                                          # from the end, cycling
            lengths.append(full[j % len(full)])
            total += lengths[-1]
            j -= 1
        lengths[-1] -= total - n
        out.append(tuple(v for v in reversed(lengths) if v > 0))
    return out


def stimulus_features(n_frames: int, rng: np.random.Generator):
    """(time, 26) stimulus features, per-frame trial phase (-1 where there is no trial) and the
    trial lengths of each condition.

    Each trial of a condition shows the same pulses (three per condition, their own features,
    onsets, durations and amplitudes) at the same phase. Phases are counted right-aligned, as
    ZAPBench aligns trials of unequal length: the last frame of every trial has phase
    ``max length - 1``, a short (cut or 65- instead of 66-frame) trial starts later.
    """
    offsets = condition_offsets(n_frames)
    lengths = trial_lengths(n_frames)
    all_phase = protocol.trial_phases(offsets, lengths)
    stim = np.zeros((n_frames, N_FEATURES), dtype=np.float32)
    phase = np.full(n_frames, -1, dtype=np.int64)
    feat = 0
    for i in range(len(protocol.CONDITION_NAMES)):        # nine conditions
        lo, hi = offsets[i], offsets[i + 1]
        row = lengths[i]
        stim[lo:hi, 24] = float(bool(row))                # "visual stimulation on"
        if not row:
            continue
        n_max = max(row)
        ph = all_phase[lo:hi]                             # right-aligned phase
        phase[lo:hi] = ph
        onsets = np.sort(rng.integers(0, max(1, n_max - 8), 3))
        durations = rng.integers(4, max(6, n_max // 4), 3)
        amps = rng.uniform(0.5, 1.0, 3)
        for k in range(3):
            f = (feat + k) % 24
            on = (ph >= onsets[k]) & (ph < onsets[k] + durations[k])
            stim[lo:hi, f] += (amps[k] * on).astype(np.float32)
        feat += 3
    # feature 25 stays 0 (reserved, like unused columns of the release's feature table)
    return stim, phase, lengths


def _smooth_field(pos_um: np.ndarray, n_fields: int, length: float, extent: np.ndarray,
                  rng: np.random.Generator, n_bumps: int = 48) -> np.ndarray:
    """(P, n_fields) spatially smooth random fields: sums of Gaussian bumps at random centres."""
    centres = rng.uniform(0, 1, (n_bumps, 3)) * extent
    weights = rng.normal(size=(n_bumps, n_fields))
    out = np.zeros((pos_um.shape[0], n_fields))
    for p0 in range(0, pos_um.shape[0], 65536):          # memory blocks over points
        p = pos_um[p0:p0 + 65536]
        d2 = ((p[:, None, :] - centres[None]) ** 2).sum(-1)
        out[p0:p0 + 65536] = np.exp(-d2 / (2 * length ** 2)) @ weights
    return out / max(1e-9, out.std())


def _latents(cfg: SyntheticConfig, stim: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(time, 2K) real latent trajectories from driven damped oscillators (lfilter, no loop)."""
    k = cfg.n_latent
    rho = rng.uniform(0.80, 0.97, k)
    rho[0] = 0.995                                        # slow spontaneous mode
    omega = rng.uniform(0.02, 0.5, k)
    lam = rho * np.exp(1j * omega)
    drive_w = rng.normal(size=(N_FEATURES, k)) * cfg.stimulus_gain / np.sqrt(3)
    drive_w[:, 0] = 0.0
    noise = (rng.normal(size=(cfg.n_frames, k)) + 1j * rng.normal(size=(cfg.n_frames, k)))
    u = stim.astype(np.float64) @ drive_w + cfg.latent_noise * noise
    z = np.empty_like(u)
    for j in range(k):                                    # loop over latents (K ~ 8), lfilter over time
        z[:, j] = lfilter([1.0], [1.0, -lam[j]], u[:, j])
    x = np.concatenate([z.real, z.imag], axis=1)
    return (x - x.mean(0)) / (x.std(0) + 1e-9)


def _calcium(rates: np.ndarray, cfg: SyntheticConfig) -> np.ndarray:
    """Double-exponential indicator kernel then saturation; along time, batched over neurons."""
    a_d = np.exp(-cfg.frame_period_s / cfg.calcium_decay_s)
    a_r = np.exp(-cfg.frame_period_s / cfg.calcium_rise_s)
    c = lfilter([1.0 - a_d], [1.0, -a_d], rates, axis=0) - lfilter([1.0 - a_r], [1.0, -a_r], rates, axis=0)
    c = np.maximum(c, 0.0) / (1.0 - a_r + 1e-9)
    return c / (c + cfg.saturation)


@renamed_arguments(seed="random_state")
def simulate(cfg: SyntheticConfig, random_state: int = 0, neuron_block: int = 2048, progress: bool = False):
    """Simulate a recording; returns a dict of numpy arrays and metadata (see module docstring).

    ``random_state`` (an int; ``seed`` is its deprecated name) makes the recording reproducible.

    For ``traces_only`` configs, traces are produced in neuron blocks (``neuron_block``) and the
    dict holds ``traces_blocks``: a generator of ``(slice, block (time, B))`` for streaming.
    """
    seed = int(random_state)
    ss = np.random.SeedSequence([seed, 0x2A9])
    r_layout, r_stim, r_lat, r_load, r_obs = [np.random.default_rng(s) for s in ss.spawn(5)]
    vs = np.asarray(cfg.voxel_size, float)
    shape = tuple(int(v) for v in cfg.shape)
    extent = np.asarray(shape) * vs
    mask = None if cfg.traces_only else brain_mask(shape)
    centres, radii = place_nuclei(shape, cfg.nucleus_radius, r_layout, cfg.n_neurons)
    n = centres.shape[0]
    if n == 0:
        raise ValueError(f"no nuclei fit in shape {shape} with radius {cfg.nucleus_radius}")
    centroid_um = (centres + 0.5) * vs
    stim, phase, lengths = stimulus_features(cfg.n_frames, r_stim)
    lat = _latents(cfg, stim, r_lat)                                  # (T, 2K)
    load = _smooth_field(centroid_um, lat.shape[1], cfg.loading_length_um, extent, r_load)
    load = 0.8 * load + 0.35 * r_load.normal(size=load.shape)         # smooth + private part
    bias = r_load.normal(-1.0, 0.5, n)
    gain = r_load.uniform(0.5, 1.2, n)
    amp = r_load.uniform(0.8, 1.6, n)                                 # dF at saturation
    brightness = r_load.lognormal(0.0, 0.25, n) + 0.5
    np_maps_w = r_load.normal(size=3)
    np_signal = lfilter([0.05], [1.0, -0.95], lat[:, :3] @ np.diag(np_maps_w), axis=0)
    np_signal = 1.0 + cfg.neuropil * np_signal / (np.abs(np_signal).max() + 1e-9)   # (T, 3)
    bleach = 1.0 - cfg.bleach * np.arange(cfg.n_frames) / cfg.n_frames
    radius = radius_for_length(cfg.n_frames)

    def neuron_df(sl):
        drive = lat @ load[sl].T * gain[sl] + bias[sl]
        rates = np.logaddexp(0.0, 2.0 * drive) / 2.0
        return amp[sl] * _calcium(rates, cfg)                         # (T, B)

    meta = dict(cfg=cfg, seed=int(seed), mask=mask, centroid_um=centroid_um, stimulus=stim,
                trial_phase=phase, trial_lengths=[list(r) for r in lengths],
                offsets=condition_offsets(cfg.n_frames), n_neurons=n,
                dff_radius=radius)
    if cfg.traces_only:
        nvox = np.maximum(1.0, 4.0 / 3.0 * np.pi * np.prod(radii, axis=1))   # voxels per nucleus
        np_maps = _smooth_field(centroid_um, 3, 80.0, extent, r_obs) * 0.3 + 0.3

        def blocks():
            for b, p0 in enumerate(range(0, n, neuron_block)):
                sl = slice(p0, min(n, p0 + neuron_block))
                rng_b = np.random.default_rng(np.random.SeedSequence([int(seed), 0x2A9, 7, b]))
                f = brightness[sl] * (1.0 + neuron_df(sl)) * bleach[:, None]
                f += np_signal @ np.abs(np_maps[sl]).T
                f += cfg.noise / np.sqrt(nvox[sl]) * np.sqrt(np.maximum(f, 1e-3)) * rng_b.standard_normal(f.shape)
                yield sl, delta_f_over_f(f.astype(np.float32), radius=radius)
        meta["traces_blocks"] = blocks()
        return meta

    seg = paint_nuclei(shape, centres, radii)
    seg[~mask] = 0
    labels = seg.reshape(-1)
    vox_pos = (np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
               .reshape(-1, 3) + 0.5) * vs
    in_brain = mask.reshape(-1)
    np_maps = np.abs(_smooth_field(vox_pos, 3, 80.0, extent, r_obs)) * 0.3 + 0.3   # (V, 3)
    base = np.where(labels > 0, brightness[np.maximum(labels - 1, 0)], 0.35)
    base = (base * r_obs.uniform(0.9, 1.1, labels.size))[in_brain].astype(np.float32)
    df = neuron_df(slice(0, n))                                       # (T, N)
    df0 = np.concatenate([np.zeros((cfg.n_frames, 1)), df], axis=1).astype(np.float32)
    f = df0[:, labels[in_brain]]                                      # (T, V_brain), float32
    f += 1.0
    f *= base
    f *= bleach.astype(np.float32)[:, None]
    f += (np_signal @ np_maps[in_brain].T).astype(np.float32)
    noise = r_obs.standard_normal(f.shape, dtype=np.float32)
    noise *= np.sqrt(np.maximum(f, 1e-3))
    f += np.float32(cfg.noise) * noise
    del noise
    dff = np.zeros((cfg.n_frames, labels.size), np.float32)           # outside the brain: 0
    dff[:, in_brain] = delta_f_over_f(f, radius=radius)
    meta["segmentation"] = seg
    meta["volume"] = dff.reshape((cfg.n_frames,) + shape)
    meta["clip_range"] = CLIP_RANGE
    return meta
