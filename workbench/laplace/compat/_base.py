"""laplace-torch 0.3's parametric Laplace classes as a thin layer over :class:`workbench.laplace.Laplace`.

Every number comes from the native object ``self.native_`` (built at the first ``fit``); this
module only translates names, shapes, defaults and the prior-precision convention (a tensor whose
length — 1, number of parameter tensors, number of parameters — says its structure).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from ..laplace import Laplace as NativeLaplace
from ..params import KFAC_MODULES, last_layer_names

LIKELIHOODS = ("classification", "regression")
PRED_TYPES = ("glm", "nn")
LINK_APPROX = ("mc", "probit", "bridge", "bridge_norm")
TO_NATIVE_PRIOR = {"scalar": "scalar", "layerwise": "layerwise", "diag": "diagonal"}


class _Curvature:
    """Marker for laplace-torch's ``backend=`` classes: selects the native GGN or empirical Fisher."""

    curvature = "ggn"


def _backend(name, curvature):
    return type(
        name,
        (_Curvature,),
        {
            "curvature": curvature,
            "__doc__": f"``backend={name}``: "
            f"the native exact {curvature.upper()} (no third-party backend).",
        },
    )


GGN_BACKENDS = {
    n: _backend(n, "ggn") for n in ("CurvlinopsGGN", "AsdlGGN", "BackPackGGN", "AsdfghjklGGN")
}
EF_BACKENDS = {
    n: _backend(n, "ef") for n in ("CurvlinopsEF", "AsdlEF", "BackPackEF", "AsdfghjklEF")
}


def _curvature_of(backend):
    if backend is None:
        return "ggn"
    if isinstance(backend, type) and issubclass(backend, _Curvature):
        return backend.curvature
    name = getattr(backend, "__name__", str(backend))
    if name.endswith("EF"):
        return "ef"
    if name.endswith("GGN"):
        return "ggn"
    raise ValueError(f"backend={name!r}: only GGN and EF curvatures exist here (exact, built in)")


class ParametricLaplace:
    """Base of the weight-space classes; mirrors laplace-torch's ``ParametricLaplace``."""

    _key = None
    _structure = "full"
    _subset = "all"

    def __init__(
        self,
        model,
        likelihood,
        sigma_noise=1.0,
        prior_precision=1.0,
        prior_mean=0.0,
        temperature=1.0,
        enable_backprop=False,
        dict_key_x="input_ids",
        dict_key_y="labels",
        backend=None,
        backend_kwargs=None,
        asdl_fisher_kwargs=None,
        **extra,
    ):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"Invalid likelihood type {likelihood}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.likelihood = likelihood
        self.temperature = float(temperature)
        self.enable_backprop = bool(enable_backprop)
        if enable_backprop:
            warnings.warn(
                "enable_backprop=True is not supported: predictives are detached", stacklevel=3
            )
        self.dict_key_x, self.dict_key_y = dict_key_x, dict_key_y
        self.curvature = _curvature_of(backend)
        self.backend_kwargs = backend_kwargs
        self._extra = self._check_extra(extra)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.n_params = sum(p.numel() for p in self.params) if self._subset == "all" else None
        self.n_layers = len(self.params) if self._subset == "all" else None
        self.native_ = None
        self.n_outputs, self.n_data = 0, 0
        if sigma_noise != 1 and likelihood != "regression":
            raise ValueError("Sigma noise != 1 only available for regression.")
        self.sigma_noise = sigma_noise
        self.prior_precision = prior_precision
        self.prior_mean = prior_mean

    def _check_extra(self, extra):
        allowed = {"damping"} if self._structure == "kron" else set()
        if self._subset == "last_layer":
            allowed |= {"last_layer_name", "feature_reduction"}
        unknown = set(extra) - allowed
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {sorted(unknown)}"
            )
        if extra.get("damping"):
            raise ValueError("damping=True (KFAC damping by the prior) is not supported")
        if extra.get("feature_reduction") is not None:
            raise ValueError(
                "feature_reduction is not supported: the last layer must see 2-D features"
            )
        return extra

    # ---------------------------------------------------------------- hyperparameters
    @property
    def _device(self):
        return next(self.model.parameters()).device

    @property
    def _dtype(self):
        return next(self.model.parameters()).dtype

    @property
    def prior_precision(self):
        return self._prior_precision

    @prior_precision.setter
    def prior_precision(self, value):
        t = _as_1d("Prior precision", value, self._device, self._dtype)
        self._prior_precision = t
        if self.native_ is not None:
            self._push_prior()

    def _prior_structure(self, n):
        if n == 1:
            return "scalar"
        if self.n_params is not None and n == self.n_params:
            if self._structure == "kron":
                raise ValueError("Prior precision for Kron either scalar or per-layer.")
            return "diagonal"
        if self.n_layers is not None and n == self.n_layers:
            return "layerwise"
        if self.n_params is None:  # not fitted yet (last layer): checked at fit
            return None
        raise ValueError("Length of prior precision does not align with architecture.")

    def _push_prior(self, prec=None):
        prec = self._prior_precision if prec is None else prec
        structure = self._prior_structure(len(prec))
        self.native_.set_prior(prec.detach(), structure)

    @property
    def prior_precision_diag(self):
        if self.native_ is None:
            self._check_H_init()
        return self.native_.prior_precision_diag

    @property
    def prior_mean(self):
        return self._prior_mean

    @prior_mean.setter
    def prior_mean(self, value):
        if isinstance(value, torch.Tensor):
            if value.ndim > 1:
                raise ValueError("Prior mean has too many dimensions!")
            if (
                value.ndim == 1
                and self.n_params is not None
                and len(value) not in (1, self.n_params)
            ):
                raise ValueError("Invalid length of prior mean.")
            t = value.to(device=self._device, dtype=self._dtype).reshape(-1)
        elif isinstance(value, (int, float)):
            t = torch.as_tensor(value, device=self._device, dtype=self._dtype)
        else:
            raise ValueError("Invalid argument type of prior mean.")
        self._prior_mean = t
        if self.native_ is not None:
            self.native_.prior_mean = t.expand(self.n_params).clone()

    @property
    def sigma_noise(self):
        return self._sigma_noise

    @sigma_noise.setter
    def sigma_noise(self, value):
        if isinstance(value, torch.Tensor):
            if value.ndim > 1 or (value.ndim == 1 and len(value) > 1):
                raise ValueError("Only homoscedastic output noise supported.")
            value = value.reshape(())
        elif not isinstance(value, (int, float)):
            raise ValueError("Invalid type: sigma noise needs to be torch.Tensor or scalar.")
        self._sigma_noise = torch.as_tensor(value, device=self._device, dtype=self._dtype)
        if self.native_ is not None and self.likelihood == "regression":
            self.native_.sigma_noise = self._sigma_noise.detach()

    @property
    def _H_factor(self):
        return 1 / self.sigma_noise.square() / self.temperature

    # ---------------------------------------------------------------- fit
    def _native_kwargs(self, names):
        """Laplace-torch's KFAC keeps every parameter tensor in its own block (weights Kronecker,
        biases dense); the native core gets that as one parameter group per tensor."""
        kw = dict(
            hessian_structure=self._structure,
            curvature=self.curvature,
            temperature=self.temperature,
            sigma_noise=self._sigma_noise.detach() if self.likelihood == "regression" else 1.0,
            params=names,
        )
        if self._structure == "kron":
            weights = {
                f"{m}.weight" if m else "weight"
                for m, mod in self.model.named_modules()
                if isinstance(mod, KFAC_MODULES)
            }
            kw["param_groups"] = {n: [n] for n in names}
            kw["group_structure"] = {n: "kron" if n in weights else "full" for n in names}
        return kw

    def _selected_names(self, X0):
        named = [n for n, p in self.model.named_parameters() if p.requires_grad]
        if self._subset == "all":
            return named
        name = self._extra.get("last_layer_name")
        if name is not None:
            mod = self.model.get_submodule(name)
            return [
                f"{name}.{n}" for n, p in mod.named_parameters(recurse=False) if p.requires_grad
            ]
        return last_layer_names(self.model, X0)

    def _build(self, X0):
        return self._build_for(self._selected_names(X0))

    def _build_for(self, names):
        sizes = dict((n, p.numel()) for n, p in self.model.named_parameters())
        self.n_params = sum(sizes[n] for n in names)
        self.n_layers = len(names)
        mean = self._prior_mean.detach()
        return NativeLaplace(
            self.model,
            self.likelihood,
            prior_precision=self._prior_precision.detach(),
            prior_structure=self._prior_structure(len(self._prior_precision)),
            prior_mean=mean.reshape(()) if mean.numel() == 1 else mean,
            **self._native_kwargs(names),
        )

    def fit(self, train_loader, override=True, progress_bar=False):
        """Fit the curvature at the model's current parameters; ``override=False`` adds to the
        previous fit's curvature (continual learning)."""
        first = next(iter(train_loader))
        X0 = first[0].to(self._device)
        if self.native_ is None or override:
            self.native_ = self._build(X0)
        self.native_.fit(train_loader, progress=progress_bar, override=override)
        self.n_outputs = int(self.native_.output_shape_[-1])
        self.n_data = self.native_.n_data
        self.model.output_size = self.n_outputs
        return None

    def _adopt(self, native):
        """Wrap an already fitted native Laplace (e.g. from the native marglik_training)."""
        self.native_ = native
        self.n_params, self.n_layers = native.n_params, len(native.param_names)
        self._prior_precision = native.prior_precision.detach().clone()
        if self.likelihood == "regression":
            self._sigma_noise = native.sigma_noise.detach().reshape(())
        self.n_outputs, self.n_data = int(native.output_shape_[-1]), native.n_data
        return self

    def _check_H_init(self):
        try:
            _ = self.native_.mean
        except AttributeError:  # also the native NotFittedError
            raise AttributeError("Laplace not fitted. Run fit() first.") from None

    @property
    def mean(self):
        self._check_H_init()
        return self.native_.mean

    @property
    def H(self):
        """Curvature as laplace-torch stores it (unscaled by 1/σ²T): (P, P) full, (P,) diagonal."""
        self._check_H_init()
        scaled = (
            self.native_.posterior_precision_diagonal()
            if self._structure == "diag"
            else self.native_.posterior_precision()
        )
        prior = self.prior_precision_diag
        scaled = scaled - (prior if scaled.ndim == 1 else torch.diag(prior))
        return scaled / self._H_factor.detach()

    @property
    def loss(self):
        """Training loss at the MAP as laplace-torch accumulates it: ½ SSE (regression) or the
        summed cross-entropy (classification)."""
        ll = self._native_terms()["log_likelihood"].detach() * self.temperature
        if self.likelihood == "classification":
            return -ll
        sig2 = self.sigma_noise.detach() ** 2
        return -(ll + 0.5 * self.n_data * self.n_outputs * torch.log(2 * math.pi * sig2)) * sig2

    def state_dict(self):
        self._check_H_init()
        return {
            "native": self.native_.state_dict(),
            "prior_precision": self._prior_precision.detach(),
            "prior_mean": self._prior_mean.detach(),
            "cls_name": type(self).__name__,
            "likelihood": self.likelihood,
        }

    def load_state_dict(self, state_dict):
        if state_dict["cls_name"] != type(self).__name__:
            raise ValueError(
                "Loading a wrong Laplace type. Make sure `subset_of_weights` and"
                " `hessian_structure` are correct!"
            )
        if state_dict["likelihood"] != self.likelihood:
            raise ValueError("Different likelihoods detected!")
        names = state_dict["native"]["param_names"]
        self._prior_precision = state_dict["prior_precision"].to(self._device)
        self._prior_mean = state_dict["prior_mean"].to(self._device)
        self.native_ = self._build_for(names).load_state_dict(state_dict["native"])
        self._sigma_noise = self.native_.sigma_noise.reshape(())
        self.n_outputs, self.n_data = int(self.native_.output_shape_[-1]), self.native_.n_data
        return None

    # ---------------------------------------------------------------- evidence
    def _native_terms(self, prior_precision=None, sigma_noise=None):
        self._check_H_init()
        prec = self._prior_precision if prior_precision is None else prior_precision
        if self.likelihood == "regression":
            sigma = self._sigma_noise if sigma_noise is None else sigma_noise
        else:
            sigma = None
        return self.native_.evidence_terms(_expand_prior(self, prec), sigma)

    @property
    def log_likelihood(self):
        """laplace-torch's tempered log-likelihood: only the data-fit term is divided by T, the
        Gaussian normaliser is not (the native core divides both; identical at T = 1)."""
        ll = self._native_terms()["log_likelihood"]
        if self.likelihood != "regression" or self.temperature == 1:
            return ll
        c = 0.5 * self.n_data * self.n_outputs * torch.log(2 * math.pi * self.sigma_noise**2)
        return ll + c / self.temperature - c

    @property
    def scatter(self):
        return self._native_terms()["scatter"]

    @property
    def log_det_prior_precision(self):
        return self._native_terms()["log_det_prior_precision"]

    @property
    def log_det_posterior_precision(self):
        return self._native_terms()["log_det_posterior_precision"]

    @property
    def log_det_ratio(self):
        return self.log_det_posterior_precision - self.log_det_prior_precision

    def log_marginal_likelihood(self, prior_precision=None, sigma_noise=None):
        """Laplace evidence; like laplace-torch, passing a value also sets it on the object."""
        if prior_precision is not None:
            self.prior_precision = prior_precision
        if sigma_noise is not None:
            if self.likelihood != "regression":
                raise ValueError("Can only change sigma_noise for regression.")
            self.sigma_noise = sigma_noise
        return self.log_likelihood - 0.5 * (self.log_det_ratio + self.scatter)


def _as_1d(what, value, device, dtype):
    if isinstance(value, torch.Tensor):
        if value.ndim > 1:
            raise ValueError(f"{what} needs to be at most one-dimensional tensor.")
        return value.reshape(-1).to(device=device, dtype=dtype)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor([float(value)], device=device, dtype=dtype)
    raise ValueError(f"{what} either scalar or torch.Tensor up to 1-dim.")


def _expand_prior(la, prec):
    """A compat prior tensor in the native layout (which follows the tensor's length)."""
    structure = la._prior_structure(len(prec))
    if structure != la.native_.prior_structure:
        la.native_.set_prior(prec.detach(), structure)
    return prec
