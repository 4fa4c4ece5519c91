"""The stability guard: checks every new state of a rollout and names what went wrong when it stops one.

Checks, in order (each graph of a batch separately):

1. every coordinate and velocity is finite;
2. the radius of gyration stays below ``max_expansion`` × (its initial value + ``min_radius``);
3. (limits derived from the training data, stored in the checkpoint; see :mod:`mdsurrogate.training.limits`)
   the RMS displacement of one step, the RMS deviation of local-edge lengths (bonds, bones) from their
   reference lengths, and the radius of gyration.

``check`` returns None or one sentence naming the quantity, its value and the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.geometry import radius_of_gyration  # noqa: F401  (re-exported)
from ..data.topology import BatchTopology


def local_edge_lengths(x: Tensor, topo: BatchTopology) -> Tensor | None:
    """[E_l] lengths of the static local edges (bonds, bones), or None when the topology has none."""
    local = topo.edge_sets.get("local")
    if local is None or local.index.shape[1] == 0:
        return None
    i, j = local.index
    return (x[i] - x[j]).norm(dim=-1)


@dataclass
class GuardStart:
    """Per-rollout reference values: ``rg0`` [B] initial radius of gyration; ``bonds`` [2, E] and ``lengths`` [E]
    the local edges and their reference lengths (or None)."""

    rg0: Tensor
    bonds: Tensor | None = None
    lengths: Tensor | None = None


@dataclass
class StabilityGuard:
    """Stop a rollout when a state is non-finite or leaves the limits.

    Attributes:
        max_expansion, min_radius: the radius of gyration may not exceed max_expansion × (Rg₀ + min_radius).
        bond_rms: largest RMS deviation (length unit) of local-edge lengths from their reference lengths (the
            training data's mean lengths when given to ``start``, else the initial state's), or None.
        step_rms: largest RMS displacement of one step (length unit), or None.
        rg_bounds: (lowest, highest) allowed radius of gyration (length unit), or None.
    """

    max_expansion: float = 20.0
    min_radius: float = 1.0
    bond_rms: float | None = None
    step_rms: float | None = None
    rg_bounds: tuple[float, float] | None = None

    @classmethod
    def from_limits(cls, limits: dict | None) -> StabilityGuard:
        """A guard with the limits a checkpoint stores (missing keys keep the defaults)."""
        limits = dict(limits or {})
        if limits.get("rg_bounds") is not None:
            limits["rg_bounds"] = tuple(float(v) for v in limits["rg_bounds"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in limits.items() if k in known})

    def start(self, x0: Tensor, topo: BatchTopology, reference: tuple[Tensor, Tensor] | None = None) -> GuardStart:
        """The reference values of a rollout that starts at positions ``x0`` [ΣN, 3]; ``reference`` = (bonds
        [2, E], lengths [E]) overrides the start state's local-edge lengths."""
        bonds = lengths = None
        if self.bond_rms is not None:
            if reference is not None:
                bonds, lengths = reference
            else:
                local = topo.edge_sets.get("local")
                if local is not None and local.index.shape[1] > 0:
                    bonds = local.index
                    lengths = (x0[bonds[0]] - x0[bonds[1]]).norm(dim=-1)
        return GuardStart(radius_of_gyration(x0, topo), bonds, lengths)

    def check(self, start: GuardStart, x_prev: Tensor, x: Tensor, v: Tensor, topo: BatchTopology) -> str | None:
        """None when the new state (x, v) [ΣN, 3], reached from ``x_prev``, is acceptable; else the reason."""
        if not (torch.isfinite(x).all() and torch.isfinite(v).all()):
            return "the model produced non-finite coordinates (NaN or inf)"
        rg = radius_of_gyration(x, topo)
        limit = self.max_expansion * (start.rg0 + self.min_radius)
        if (rg > limit).any():
            return (f"the geometry blew up (radius of gyration {rg.max().item():.4g} exceeds "
                    f"{self.max_expansion:g} × its initial value)")
        if self.rg_bounds is not None:
            lo, hi = self.rg_bounds
            out = (rg < lo) | (rg > hi)
            if out.any():
                return (f"the radius of gyration {rg[out][0].item():.4g} left the limits {lo:.4g}–{hi:.4g} "
                        "derived from the training data")
        if self.step_rms is not None:
            step = ((x - x_prev) ** 2).sum(-1).mean().sqrt().item()
            if step > self.step_rms:
                return f"one step moved the atoms by {step:.3g} RMS, more than the limit {self.step_rms:.3g}"
        if self.bond_rms is not None and start.bonds is not None:
            i, j = start.bonds
            dev = ((x[i] - x[j]).norm(dim=-1) - start.lengths).pow(2).mean().sqrt().item()
            if dev > self.bond_rms:
                return (f"local-edge (bond) lengths deviate by {dev:.3g} RMS from their reference, more than the "
                        f"limit {self.bond_rms:.3g}")
        return None
