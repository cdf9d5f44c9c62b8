"""Posterior blocks, kept importable here: they live in :mod:`workbench.laplace.structures`
(one module per curvature structure; see that package's docstring for how to add one)."""

from __future__ import annotations

from .structures import STRUCTURES, Block, DiagBlock, FullBlock, KronBlock, Scale
from .structures.base import eigh_psd as _eigh

__all__ = ["Block", "DiagBlock", "FullBlock", "KronBlock", "Scale", "STRUCTURES", "_eigh"]
