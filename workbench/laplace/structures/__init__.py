"""Curvature structures of the Laplace core: one small class per ``hessian_structure``.

``Laplace`` owns a list of posterior blocks (``la.blocks_``), each an instance of a
:class:`~.base.Block` subclass registered here under its ``hessian_structure`` name. Nothing
outside a block's own class knows how its curvature is stored: fitting, the evidence, sampling,
the GLM predictive and ``state_dict`` all go through the interface below.

How to add a structure (e.g. ``"lowrank"``)
------------------------------------------
1. Subclass :class:`~.base.Block` in a new module, set ``kind = "lowrank"`` and implement

   * ``plan(spec, group, names, fallback)`` (class method): the blocks covering the parameter
     tensors ``names`` of one parameter group; set ``modules`` (supported layers whose inputs
     ``a`` and output gradients ``g`` you read) and/or ``generic`` (tensors whose per-sample
     Jacobian-transpose columns you read) so the data pass computes only what some block needs;
   * ``start(ctx)`` / ``accumulate(pieces)`` / ``finish()``: the data pass.
     ``ctx`` (:class:`~..fitting.FitContext`) has ``spec``, ``ref`` (device/dtype), ``kfac``,
     ``chunk_budget``, ``comps`` / ``K_out`` / ``sigma_fit`` (one curvature per output),
     ``create_graph``, and ``model``/``loader`` for structures that need more passes in
     ``finish`` (e.g. Lanczos on GGN-vector products). ``pieces``
     (:class:`~..fitting.BatchPieces`) gives ``ag(module name, module, with_weight, with_bias)``
     → ``(a (N, S, ia), g (C, N, S, ob))``, ``jac(names)`` → ``(C, N, d)`` columns ``Jᵀ L``,
     ``per_output(fn, *tensors)`` and the batch's ``X``, ``N`` and ``colk``;
   * ``_tensors()`` (what ``state()`` saves; ``load(state)`` restores it);
   * the posterior pieces ``logdet(s, prior)``, ``precision_diag``, ``cov_apply(s, prior, V)``,
     ``sample(s, prior, z)``, ``eff_dims(s, prior, sub)`` — ``s`` is the likelihood scale (a
     float/tensor, or a :class:`~.base.Scale` resolved by the ``@scaled`` decorator), ``prior`` a
     :class:`~..priors.BlockPrior` (``iso``, ``diag``, ``pieces``, ``kron_ok``);
   * the predictive pieces ``layer_terms`` / ``jacobian_terms`` (default: the torch.func route
     through ``cov_apply``, which is always correct).
2. ``register_structure(MyBlock)``. The name is then accepted by ``Laplace(hessian_structure=...)``
   and ``group_structure``, and ``state_dict`` round-trips it.

Every structure needs a float64 test against a dense reference (``tests/laplace/dense.py``).
"""

from __future__ import annotations

from .base import Block, Scale, eigh_psd, factored_variance, module_idx, scaled
from .diag import DiagBlock
from .factor import GPBlock, LowRankBlock
from .full import FullBlock
from .kron import KronBlock

#: hessian_structure name -> Block subclass
STRUCTURES: dict[str, type[Block]] = {}


def register_structure(cls: type[Block]) -> type[Block]:
    """Make ``cls`` available as ``hessian_structure=cls.kind`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Block)) or not cls.kind:
        raise TypeError("register_structure needs a Block subclass with a non-empty `kind`")
    STRUCTURES[cls.kind] = cls
    return cls


for _cls in (FullBlock, DiagBlock, KronBlock, LowRankBlock, GPBlock):
    register_structure(_cls)


def structure_names() -> tuple[str, ...]:
    return tuple(STRUCTURES)


def plan_blocks(spec, groups, structures, fallback):
    """Blocks covering every selected parameter exactly once: ``structures[group]`` per group."""
    blocks = []
    for gname, names in groups.items():
        blocks += STRUCTURES[structures[gname]].plan(spec, gname, list(names), fallback)
    return blocks


__all__ = [
    "Block",
    "Scale",
    "STRUCTURES",
    "register_structure",
    "structure_names",
    "plan_blocks",
    "FullBlock",
    "DiagBlock",
    "KronBlock",
    "LowRankBlock",
    "GPBlock",
    "eigh_psd",
    "factored_variance",
    "module_idx",
    "scaled",
]
