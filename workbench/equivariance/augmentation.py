"""Differentiable affine augmentation with learnable amplitudes, and the invariant model that
averages a network over it (LILA, Immer et al., NeurIPS 2022).

For every input the layer draws ``n_samples`` transformations with reparameterised uniform
parameters ``η_t = a_t · ε_t``, ``ε_t ~ U(-1, 1)``, one per transform ``t``:

``translate_x`` / ``translate_y``  shift by η in normalised image coordinates (1 = half the image);
``rotate``                         rotation by η radians;
``scale``                          zoom by the factor exp(η).

They are composed into one affine map ``[[s cos φ, -s sin φ, tx], [s sin φ, s cos φ, ty]]`` that
``F.affine_grid`` / ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``) apply.
Gradients reach the amplitudes ``a`` through the samples, so a marginal likelihood computed on
the averaged model ``f̄(x) = 1/S Σ_s f(T_{η_s} x)`` can learn them. Each amplitude lives in
``(0, max_t)`` via ``a_t = max_t · sigmoid(ρ_t)`` with the maxima :data:`MAX_AMPLITUDE`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TRANSFORMS = ("translate_x", "translate_y", "rotate", "scale")
MAX_AMPLITUDE = {"translate_x": 1.0, "translate_y": 1.0, "rotate": math.pi, "scale": math.log(2.0)}


def check_transforms(transforms) -> tuple[str, ...]:
    if isinstance(transforms, str):
        transforms = (transforms,)
    transforms = tuple(transforms)
    bad = [t for t in transforms if t not in TRANSFORMS]
    if bad or not transforms or len(set(transforms)) != len(transforms):
        raise ValueError(f"transforms must be a non-empty subset of {TRANSFORMS} without "
                         f"repeats, got {transforms!r}")
    return transforms


def affine_matrices(params: torch.Tensor, transforms) -> torch.Tensor:
    """(n, 2, 3) affine matrices from transform parameters ``params`` (n, len(transforms))."""
    transforms = check_transforms(transforms)
    if params.ndim != 2 or params.shape[1] != len(transforms):
        raise ValueError(f"params must be (n, {len(transforms)}), got {tuple(params.shape)}")
    zero = params.new_zeros(params.shape[0])
    get = {t: params[:, i] for i, t in enumerate(transforms)}
    tx, ty = get.get("translate_x", zero), get.get("translate_y", zero)
    phi, log_s = get.get("rotate", zero), get.get("scale", zero)
    s = torch.exp(log_s)
    c, si = s * torch.cos(phi), s * torch.sin(phi)
    return torch.stack([torch.stack([c, -si, tx], -1), torch.stack([si, c, ty], -1)], -2)


def apply_affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class AffineAugmentation(nn.Module):
    """Draws ``n_samples`` random affine transforms per image with learnable amplitudes.

    Parameters
    ----------
    transforms : subset of :data:`TRANSFORMS`.
    n_samples : transforms per image (S).
    init_amplitude : initial amplitude as a fraction of each transform's maximum, in (0, 1).
    """

    def __init__(self, transforms=TRANSFORMS, n_samples: int = 8, init_amplitude: float = 0.05):
        super().__init__()
        self.transforms = check_transforms(transforms)
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if not 0.0 < init_amplitude < 1.0:
            raise ValueError(f"init_amplitude is a fraction of the maximum in (0, 1), got "
                             f"{init_amplitude}")
        self.n_samples = int(n_samples)
        self.register_buffer("max_amplitude",
                             torch.tensor([MAX_AMPLITUDE[t] for t in self.transforms]))
        logit = math.log(init_amplitude / (1.0 - init_amplitude))
        self.raw_amplitude = nn.Parameter(torch.full((len(self.transforms),), logit))

    @property
    def amplitudes(self) -> torch.Tensor:
        """Current amplitudes a_t (in the transforms' natural units), differentiable."""
        return self.max_amplitude * torch.sigmoid(self.raw_amplitude)

    def set_amplitudes(self, values) -> None:
        """Set the amplitudes (natural units); each must lie strictly inside (0, max)."""
        v = torch.as_tensor(values, dtype=self.raw_amplitude.dtype,
                            device=self.raw_amplitude.device).reshape(-1)
        if v.numel() != len(self.transforms):
            raise ValueError(f"need {len(self.transforms)} amplitudes for {self.transforms}")
        frac = v / self.max_amplitude
        if (frac <= 0).any() or (frac >= 1).any():
            raise ValueError(f"amplitudes must lie in (0, {self.max_amplitude.tolist()})")
        with torch.no_grad():
            self.raw_amplitude.copy_(torch.log(frac / (1 - frac)))

    def forward(self, x: torch.Tensor, n_samples: int | None = None,
                eps: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, H, W) -> (N * S, C, H, W), sample-major within each image.

        ``eps`` (S, n_transforms) in [-1, 1] fixes the transforms (the same S for every image)
        instead of drawing them; S is then ``len(eps)``."""
        if x.ndim != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
        N = x.shape[0]
        if eps is not None:
            S = eps.shape[0]
            eps = eps.to(device=x.device, dtype=x.dtype).repeat(N, 1)
        else:
            S = self.n_samples if n_samples is None else int(n_samples)
            eps = torch.rand(N * S, len(self.transforms), dtype=x.dtype, device=x.device) * 2 - 1
        params = eps * self.amplitudes.to(x)
        theta = affine_matrices(params, self.transforms)
        return apply_affine(x.repeat_interleave(S, dim=0), theta)


class InvariantModel(nn.Module):
    """``f̄(x) = 1/S Σ_s net(T_s x)``; without augmentation just ``net(x)``.

    With ``sample_dim=True`` (default) ``net`` receives the transformed images as one tensor
    ``(N, S, C, H, W)`` and must map it to ``(N, S, K)`` (an MLP starting with
    ``nn.Flatten(start_dim=-3)`` does). Its linear layers then see S as a weight-sharing
    dimension, which lets the Laplace core's KFAC ``"reduce"`` flavour average the inputs over
    the samples before forming the Kronecker factors — the curvature of the *averaged* model, as
    in LILA. With ``sample_dim=False`` the samples are folded into the batch ``(N S, C, H, W)``.

    In eval mode the transforms are drawn afresh on every call unless :meth:`fix_eval_transforms`
    has fixed a set of them (``eval_eps``), which makes predictions deterministic.
    """

    def __init__(self, net: nn.Module, augmentation: AffineAugmentation | None = None,
                 sample_dim: bool = True):
        super().__init__()
        self.net = net
        self.augmentation = augmentation
        self.sample_dim = sample_dim
        self.n_samples_eval: int | None = None  # S used in eval mode (None: as in training)
        self.register_buffer("eval_eps", None)  # fixed (S, n_transforms) draws for eval mode

    def fix_eval_transforms(self, n_samples: int, random_state) -> None:
        """Fix the ``n_samples`` transforms used in eval mode (the same for every image), drawn
        from ``random_state`` on the CPU; ``n_samples=0`` goes back to fresh draws."""
        if self.augmentation is None:
            return
        if n_samples == 0:
            self.eval_eps = None
            return
        from workbench._torch_utils import seed_from

        gen = torch.Generator().manual_seed(seed_from(random_state))
        ref = self.augmentation.raw_amplitude
        eps = torch.rand(int(n_samples), len(self.augmentation.transforms), generator=gen,
                         dtype=torch.float64) * 2 - 1
        self.eval_eps = eps.to(device=ref.device, dtype=ref.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.augmentation is None:
            return self.net(x)
        S = self.augmentation.n_samples
        eps = None
        if not self.training and self.eval_eps is not None:
            eps = self.eval_eps
            S = eps.shape[0]
        elif not self.training and self.n_samples_eval is not None:
            S = self.n_samples_eval
        xs = self.augmentation(x, S, eps)
        if self.sample_dim:
            out = self.net(xs.reshape(x.shape[0], S, *x.shape[1:]))
        else:
            out = self.net(xs).reshape(x.shape[0], S, -1)
        return out.mean(1)
