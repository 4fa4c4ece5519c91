"""φ/ψ of a trajectory file (MDAnalysis reads it, imported lazily; the maths is in dihedrals.py)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def phi_psi_from_files(top: str | os.PathLike, trajs: Sequence[str | os.PathLike], *, dt: float | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """φ, ψ [F, R] (degrees) of every residue with a complete backbone over all frames of ``trajs`` (in order),
    the [R] residue numbers (resids) and the frame spacing in ps (``dt`` for files that do not state it).
    Raises MDInputError for unreadable files and ValueError when no residue has φ and ψ."""
    from ..data.periodic import Unwrapper
    from ..data.sources.md import frame_spacing, open_universe, read_frames, selection_bonds
    from .dihedrals import backbone_quadruples, dihedral_angles

    universes = open_universe(top, list(trajs))
    atoms = universes[0].atoms
    chain = atoms.segids if hasattr(atoms, "segids") else None
    phi_q, psi_q, residues = backbone_quadruples(atoms.names, atoms.resindices, chain)
    if len(residues) == 0:
        raise ValueError(f"{os.path.basename(str(top))} has no residue with a complete backbone "
                         "C(i−1), N, CA, C, N(i+1): no φ/ψ to compute")
    need = np.unique(np.concatenate([phi_q.ravel(), psi_q.ravel()]))
    remap = np.searchsorted(need, np.stack([phi_q, psi_q]))
    phis, psis, spacing = [], [], []
    for u in universes:
        ag = u.atoms[need]
        bonds, _ = selection_bonds(ag)  # periodic frames: the backbone made whole before measuring angles
        frames = read_frames(u, ag, unwrap=Unwrapper(len(ag), bonds))
        phis.append(dihedral_angles(frames.positions, remap[0]))
        psis.append(dihedral_angles(frames.positions, remap[1]))
        spacing.append(frame_spacing(u, frames.times, dt=dt))
    resids = np.asarray(universes[0].residues.resids)[residues]
    return np.concatenate(phis), np.concatenate(psis), resids, float(np.median(spacing))
