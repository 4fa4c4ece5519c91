"""Static per-system information, batched flat: node properties and static edge sets.

A trajectory's *topology* is everything that does not change along it: per-node properties (charges,
complex ids, element ids …) and static edge sets (``"local"``: bonds / bones / intra-complex pairs;
``"global"`` when the interaction graph is static, e.g. the skeleton's 2-hop graph) with per-edge properties.
Positions and velocities are the *state*; the featurizer combines both into a ``GraphBatch``.

Not to be confused with :class:`~mdsurrogate.data.atoms.AtomTopology`: that is the per-atom *identity* of one
system for files (atom names, residues, chains, element symbols, bonds as index pairs; NumPy strings, never
batched). A :class:`BatchTopology` carries only what the model computes with (numeric node properties and edge
sets as tensors, flat over a batch of graphs) and knows no names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .graph import ptr_to_batch


@dataclass
class EdgeSet:
    """Static edges of a batch: ``index`` [2, E] (receiver, sender) into the flat node arrays, ``props`` name → [E]."""

    index: Tensor
    props: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device) -> EdgeSet:
        return EdgeSet(self.index.to(device), {k: t.to(device) for k, t in self.props.items()})


@dataclass
class BatchTopology:
    """Static graph of a batch of systems, as the featurizer and the model see it (tensors, flat-batched; no atom
    names: for those see :class:`~mdsurrogate.data.atoms.AtomTopology`).

    Attributes:
        ptr: [B+1] node offsets; ``batch`` [ΣN] is derived.
        node_props: name → [ΣN] (or [ΣN, k]) per-node properties (e.g. ``charge`` in e, ``complex`` ids).
        edge_sets: name → EdgeSet (``"local"``, optionally ``"global"``).
    """

    ptr: Tensor
    node_props: dict[str, Tensor] = field(default_factory=dict)
    edge_sets: dict[str, EdgeSet] = field(default_factory=dict)
    batch: Tensor | None = None

    def __post_init__(self):
        if self.batch is None:
            self.batch = ptr_to_batch(self.ptr)

    @property
    def num_graphs(self) -> int:
        return self.ptr.numel() - 1

    def to(self, device) -> BatchTopology:
        return BatchTopology(
            self.ptr.to(device),
            {k: t.to(device) for k, t in self.node_props.items()},
            {k: e.to(device) for k, e in self.edge_sets.items()},
            self.batch.to(device),
        )

    def repeat(self, r: int) -> BatchTopology:
        """``r`` copies of the whole batch, one after the other: copy c's node i is node c·ΣN + i, its graph b is
        graph c·B + b (edges and properties repeated, node offsets added). Used to run ``r`` replicas of the same
        systems in one model call: x of the copies is ``x.repeat(r, 1)`` [r·ΣN, 3]."""
        r = int(r)
        if r < 1:
            raise ValueError(f"the number of copies must be ≥ 1, not {r}")
        n, b = int(self.ptr[-1]), self.num_graphs
        dev = self.ptr.device
        sizes = (self.ptr[1:] - self.ptr[:-1]).repeat(r)
        ptr = torch.zeros(sizes.numel() + 1, dtype=self.ptr.dtype, device=dev)
        torch.cumsum(sizes, 0, out=ptr[1:])
        copy = torch.arange(r, device=dev)

        def rows(t: Tensor) -> Tensor:
            return t.repeat(r, *([1] * (t.dim() - 1)))

        sets = {}
        for name, e in self.edge_sets.items():
            shift = (copy * n).repeat_interleave(e.index.shape[1]).to(e.index.dtype)
            sets[name] = EdgeSet(e.index.repeat(1, r) + shift, {k: rows(t) for k, t in e.props.items()})
        batch = self.batch.repeat(r) + (copy * b).repeat_interleave(n).to(self.batch.dtype)
        return BatchTopology(ptr, {k: rows(t) for k, t in self.node_props.items()}, sets, batch)

    def permuted(self, perm: Tensor) -> BatchTopology:
        """Relabel nodes: new node k is old node ``perm[k]`` (perm must keep every node in its own graph)."""
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=perm.device)
        props = {k: t[perm] for k, t in self.node_props.items()}
        sets = {k: EdgeSet(inv[e.index], dict(e.props)) for k, e in self.edge_sets.items()}
        return BatchTopology(self.ptr, props, sets, self.batch[perm])
