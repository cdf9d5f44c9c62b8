"""Which parameters the Laplace covers, their place in the flat vector, and the modules they live in."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .batches import run_model

KFAC_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


@dataclass
class ParamSpec:
    names: list
    shapes: dict
    slices: dict
    P: int
    # module name -> (module, weight param name or None, bias param name or None)
    modules: dict = field(default_factory=dict)
    owner: dict = field(default_factory=dict)  # param name -> (module name, attribute)

    def numel(self, name):
        s = self.slices[name]
        return s.stop - s.start


def kfac_supported(module: nn.Module) -> bool:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module.groups == 1
    return isinstance(module, KFAC_MODULES)


def last_layer_names(model: nn.Module, x: torch.Tensor) -> list:
    """Names of the parameters of the last module (in execution order) that owns parameters."""
    order = []
    hooks = []
    for mname, mod in model.named_modules():
        if any(True for _ in mod.parameters(recurse=False)):
            hooks.append(mod.register_forward_hook(lambda m, i, o, n=mname: order.append(n)))
    try:
        with torch.no_grad():
            run_model(model, x, what="X (to find the last layer)")
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise ValueError("subset_of_weights='last_layer': the model has no module with parameters")
    last = order[-1]
    mod = model.get_submodule(last)
    return [
        f"{last}.{n}" if last else n
        for n, p in mod.named_parameters(recurse=False)
        if p.requires_grad
    ]


def build_spec(model: nn.Module, names=None) -> ParamSpec:
    named = dict(model.named_parameters())
    if names is None:
        names = [n for n, p in named.items() if p.requires_grad]
    else:
        if isinstance(names, str):
            raise TypeError("params must be a list of parameter names, got a string")
        unknown = [n for n in names if n not in named]
        if unknown:
            raise ValueError(
                f"params contains unknown parameter names {unknown}; the model has {list(named)[:20]}"
            )
        keep = set(names)
        names = [n for n in named if n in keep]  # model order
    if not names:
        raise ValueError("no parameters selected for the Laplace approximation")
    shapes, slices, off = {}, {}, 0
    for n in names:
        shapes[n] = tuple(named[n].shape)
        slices[n] = slice(off, off + named[n].numel())
        off += named[n].numel()
    spec = ParamSpec(list(names), shapes, slices, off)
    selected = set(names)
    for mname, mod in model.named_modules():
        for attr, _ in mod.named_parameters(recurse=False):
            full = f"{mname}.{attr}" if mname else attr
            if full in selected:
                spec.owner[full] = (mname, attr)
        if kfac_supported(mod):
            w = f"{mname}.weight" if mname else "weight"
            b = f"{mname}.bias" if mname else "bias"
            w = w if w in selected else None
            b = b if (b in selected and not isinstance(mod, nn.Embedding)) else None
            if w or b:
                spec.modules[mname] = (mod, w, b)
    return spec


def resolve_groups(spec: ParamSpec, param_groups, group_structure) -> dict:
    """{group: [parameter names]} of a Laplace: its ``param_groups`` over the parameters it covers
    (``spec``), with the uncovered rest as "other"; one group "all" without ``param_groups``."""
    if not param_groups:
        return {"all": list(spec.names)}
    sel = set(spec.names)
    seen, groups = {}, {}
    for g, names in param_groups.items():
        bad = [n for n in names if n not in sel]
        if bad:
            raise ValueError(
                f"param_groups[{g!r}] names parameters not covered by the Laplace: {bad}"
            )
        for n in names:
            if n in seen:
                raise ValueError(f"parameter {n!r} is in param groups {seen[n]!r} and {g!r}")
            seen[n] = g
        groups[g] = [n for n in spec.names if n in set(names)]
    other = [n for n in spec.names if n not in seen]
    if other:
        groups["other"] = other
    if group_structure:
        unknown = set(group_structure) - set(groups)
        if unknown:
            raise ValueError(
                f"group_structure names unknown groups {sorted(unknown)}; groups are {list(groups)}"
            )
    return groups
