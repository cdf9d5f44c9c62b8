"""Prior precision structures: how the hyperparameter vector maps onto per-parameter precisions.

* ``scalar``    one precision for everything;
* ``layerwise`` one per parameter tensor;
* ``group``     one per named parameter group;
* ``diagonal``  one per parameter;
* ``unitwise``  log-additive per output unit × input unit: δ_ij = a_i · b_j (log δ_ij = log a_i +
  log b_j); for convolutions per output / input channel; a layer's bias is the weight of a constant
  input unit, so it gets one extra input factor c (δ_i^bias = a_i · c). Lone 1-D tensors get one
  precision per element.

Every structure except ``diagonal`` is Kronecker-structured on a layer block [W | b], which lets
KFAC use an exact log-determinant (see ``posteriors.KronBlock``).
"""

from __future__ import annotations

import torch
from torch import nn

from ._validation import PRIOR_STRUCTURES, check_choice


class BlockPrior:
    """Prior of one block: ``diag`` (d,) in block order (computed lazily: isotropic blocks never need
    it), ``iso`` the scalar when one hyperparameter covers the block, ``kron_ok`` whether the diag
    reshaped (out, in') is an outer product, ``pieces`` [(positions, precision)] when constant per tensor."""

    def __init__(self, diag=None, iso=None, kron_ok=False, pieces=None, diag_fn=None):
        self._diag, self._diag_fn = diag, diag_fn
        self.iso, self.kron_ok, self.pieces = iso, kron_ok, pieces

    @property
    def diag(self):
        if self._diag is None:
            self._diag = self._diag_fn()
        return self._diag


class PriorLayout:
    def __init__(self, structure, spec, groups=None, model=None):
        self.structure = check_choice("prior_structure", structure, PRIOR_STRUCTURES)
        self.spec = spec
        self.groups = groups
        P = spec.P
        if structure == "scalar":
            self.labels = ["all"]
            self.index = torch.zeros(P, dtype=torch.long)
        elif structure == "layerwise":
            self.labels = list(spec.names)
            self.index = torch.cat(
                [
                    torch.full((spec.numel(n),), i, dtype=torch.long)
                    for i, n in enumerate(spec.names)
                ]
            )
        elif structure == "group":
            if not groups:
                raise ValueError(
                    "prior_structure='group' needs param_groups={'name': [param names]}"
                )
            self.labels = list(groups)
            g_of = {n: i for i, (g, ns) in enumerate(groups.items()) for n in ns}
            self.index = torch.cat(
                [torch.full((spec.numel(n),), g_of[n], dtype=torch.long) for n in spec.names]
            )
        elif structure == "diagonal":
            self.labels = [f"{n}[{i}]" for n in spec.names for i in range(spec.numel(n))]
            self.index = torch.arange(P)
        else:
            self._build_unitwise(model)
        self.n_hyper = len(self.labels)
        self._tensor_hyper = {}
        if structure in ("scalar", "layerwise", "group"):
            # one hyperparameter per tensor: its first index says which (no sort over P entries)
            for n in spec.names:
                s = spec.slices[n]
                self._tensor_hyper[n] = {int(self.index[s.start])} if s.stop > s.start else set()
        elif structure == "diagonal":
            for n in spec.names:
                s = spec.slices[n]
                self._tensor_hyper[n] = set(range(s.start, s.stop))

    # ------------------------------------------------------------------ unitwise layout
    def _build_unitwise(self, model):
        spec = self.spec
        self.labels, self._units = [], {}
        paired_bias = {}
        for _mname, (_mod, w, b) in spec.modules.items():
            if w is not None and b is not None:
                paired_bias[b] = w
        for n in spec.names:
            shape = spec.shapes[n]
            if n in paired_bias:
                continue
            mname, _ = spec.owner.get(n, ("", ""))
            mod = spec.modules.get(mname, (None,))[0]
            if len(shape) >= 2:
                out_ax, in_ax = (1, 0) if isinstance(mod, nn.Embedding) else (0, 1)
                a0 = len(self.labels)
                self.labels += [f"{n}:out{i}" for i in range(shape[out_ax])]
                b0 = len(self.labels)
                self.labels += [f"{n}:in{j}" for j in range(shape[in_ax])]
                entry = {
                    "kind": "matrix",
                    "a": (a0, b0),
                    "b": (b0, len(self.labels)),
                    "axes": (out_ax, in_ax),
                }
                bias = spec.modules.get(mname, (None, None, None))[2]
                if bias is not None and n == spec.modules[mname][1]:
                    entry["bias"] = bias
                    entry["c"] = len(self.labels)
                    self.labels.append(f"{bias}:in_bias")
                self._units[n] = entry
            else:
                k0 = len(self.labels)
                self.labels += [
                    f"{n}[{i}]" for i in range(max(1, len(torch.empty(shape).flatten())))
                ]
                self._units[n] = {"kind": "vector", "k": (k0, len(self.labels))}

    # ------------------------------------------------------------------ values
    def init(self, value, like: torch.Tensor) -> torch.Tensor:
        """Hyperparameter vector (n_hyper,) from a float or a tensor of the expected shape."""
        if isinstance(value, bool) or isinstance(value, (str, bytes, dict)):
            raise TypeError(f"prior_precision must be a number or a tensor, got {value!r}")
        try:
            t = (
                value
                if isinstance(value, torch.Tensor)
                else torch.as_tensor(value, dtype=like.dtype)
            )
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"prior_precision must be a number or a tensor, got {value!r}") from err
        t = t.to(dtype=like.dtype, device=like.device)
        if t.numel() == 1 and t.ndim <= 1:
            t = self.broadcast(t.reshape(())).clone()
        return self.check(t)

    def broadcast(self, v: torch.Tensor) -> torch.Tensor:
        """Hyperparameter vector giving every parameter the (differentiable) scalar precision v."""
        if self.structure != "unitwise":
            return v.expand(self.n_hyper)
        mask = torch.zeros(self.n_hyper, dtype=torch.bool, device=v.device)
        for entry in self._units.values():
            mask[slice(*(entry["a"] if entry["kind"] == "matrix" else entry["k"]))] = True
        return torch.where(mask, v, torch.ones_like(v))

    @property
    def expected_shape(self):
        return (self.n_hyper,)

    def describe(self):
        what = {
            "scalar": "one value",
            "layerwise": f"one per parameter tensor {self.spec.names}",
            "group": f"one per parameter group {self.labels}",
            "diagonal": "one per parameter",
            "unitwise": "per output unit then input unit of each weight tensor (+1 bias input unit)",
        }[self.structure]
        return f"prior_structure='{self.structure}' ({what})"

    def check(self, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0 and self.n_hyper == 1:
            t = t.reshape(1)
        if tuple(t.shape) != self.expected_shape:
            raise ValueError(
                f"prior_precision has shape {tuple(t.shape)}, expected () or {self.expected_shape} "
                f"for {self.describe()}"
            )
        if not torch.isfinite(t).all() or (t <= 0).any():
            raise ValueError("prior_precision must be finite and > 0")
        return t

    def to_diag(self, prec: torch.Tensor) -> torch.Tensor:
        """Per-parameter prior precision (P,), differentiable in ``prec``."""
        if self.structure != "unitwise":
            return prec[self.index.to(prec.device)]
        parts = []
        bias_of = {}
        for n in self.spec.names:
            e = self._units.get(n)
            if e is None:  # bias paired with a weight: filled from the weight's entry
                parts.append(None)
                continue
            if e["kind"] == "vector":
                parts.append(
                    prec[slice(*e["k"])].expand(self.spec.numel(n))
                    if e["k"][1] - e["k"][0] == 1
                    else prec[slice(*e["k"])]
                )
                continue
            shape = self.spec.shapes[n]
            out_ax, in_ax = e["axes"]
            a, b = prec[slice(*e["a"])], prec[slice(*e["b"])]
            view_a = [1] * len(shape)
            view_a[out_ax] = -1
            view_b = [1] * len(shape)
            view_b[in_ax] = -1
            parts.append((a.reshape(view_a) * b.reshape(view_b)).expand(shape).reshape(-1))
            if "bias" in e:
                bias_of[e["bias"]] = a * prec[e["c"]]
        out = [p if p is not None else bias_of[n] for p, n in zip(parts, self.spec.names)]
        return torch.cat([o.reshape(-1) for o in out])

    def hyper_sums(self, values: torch.Tensor):
        """Σ of ``values`` (P,) over the parameters of each hyperparameter (not for unitwise)."""
        idx = self.index.to(values.device)
        return values.new_zeros(self.n_hyper).index_add(0, idx, values)

    def block_prior(self, prec, diag_full, block) -> BlockPrior:
        """``diag_full``: (P,) per-parameter precisions or a callable returning them (lazy)."""
        if callable(diag_full):
            diag, diag_fn = None, (lambda: diag_full()[block.idx])
        else:
            diag, diag_fn = diag_full[block.idx], None
        iso = None
        if self.structure == "scalar":
            iso = prec.reshape(-1)[0]
        pieces = None
        if self.structure in ("layerwise", "group"):
            hs = set().union(*(self._tensor_hyper[n] for n in block.names))
            if len(hs) == 1:
                iso = prec[next(iter(hs))]
            else:
                pos = tensor_positions(block, self.spec)
                by_h = {}
                for n in block.names:
                    (h,) = self._tensor_hyper[n]
                    by_h.setdefault(h, []).append(pos[n])
                pieces = [(torch.cat(p), prec[h]) for h, p in by_h.items()]
        return BlockPrior(
            diag=diag, iso=iso, kron_ok=self.structure != "diagonal", pieces=pieces, diag_fn=diag_fn
        )


def tensor_positions(block, spec):
    """{param name: positions of its entries inside the block} (cached on the block)."""
    if "_pos" not in block._static:
        inv = torch.full((spec.P,), -1, dtype=torch.long, device=block.idx.device)
        inv[block.idx] = torch.arange(block.d, device=block.idx.device)
        block._static["_pos"] = {
            n: inv[spec.slices[n].start : spec.slices[n].stop] for n in block.names
        }
    return block._static["_pos"]
