"""Dihedral angles of atom quadruples, and the φ/ψ quadruples of any peptide backbone (NumPy, vectorised).

Conventions:
    angles   degrees in [−180°, 180°), IUPAC sign (Blondel & Karplus): for atoms a–b–c–d looking down b→c,
             positive when d is rotated clockwise from a. An αR residue has φ ≈ −65°, ψ ≈ −40°.
    φ(i)     C(i−1) – N(i) – CA(i) – C(i)
    ψ(i)     N(i) – CA(i) – C(i) – N(i+1)
Atom names are the PDB/Amber backbone names ``N``, ``CA``, ``C``; caps work as they are: an ACE cap has a ``C``
(its carbonyl carbon) that serves as C(i−1) of the first residue, an NME cap an ``N`` that serves as N(i+1) of
the last. Alanine dipeptide (ACE-ALA-NME) therefore has exactly one (φ, ψ) pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def wrap_degrees(angle: np.ndarray) -> np.ndarray:
    """Angles in degrees mapped onto [−180°, 180°)."""
    return np.mod(np.asarray(angle, dtype=np.float64) + 180.0, 360.0) - 180.0


def dihedral_angles(positions: np.ndarray, quadruples: np.ndarray) -> np.ndarray:
    """Dihedral angles of atom quadruples, for one frame or many.

    Args:
        positions: [F, N, 3] or [N, 3] coordinates (any length unit).
        quadruples: [D, 4] atom indices (a, b, c, d).
    Returns:
        [F, D] (or [D] for a single frame) angles in degrees in [−180°, 180°), IUPAC sign.
        A degenerate quadruple (collinear atoms) gives 0°.
    """
    x = np.asarray(positions, dtype=np.float64)
    quads = np.asarray(quadruples, dtype=np.int64).reshape(-1, 4)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"positions must have shape [F, N, 3] or [N, 3], got {np.shape(positions)}")
    if quads.size and (quads.min() < 0 or quads.max() >= x.shape[1]):
        raise ValueError(f"quadruple indices must lie in [0, {x.shape[1]})")
    p = x[:, quads]  # [F, D, 4, 3]
    b1 = p[:, :, 1] - p[:, :, 0]
    b2 = p[:, :, 2] - p[:, :, 1]
    b3 = p[:, :, 3] - p[:, :, 2]
    n1 = np.cross(b1, b2)
    n2 = np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.einsum("fdk,fdk->fd", b1, n2)
    xx = np.einsum("fdk,fdk->fd", n1, n2)
    angle = wrap_degrees(np.degrees(np.arctan2(y, xx)))
    return angle[0] if single else angle


def backbone_quadruples(names: Sequence[str], residue_index: Sequence[int], chain: Sequence | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The φ and ψ quadruples of every residue that has both.

    Residues are taken in order of their first atom; residue i has φ/ψ when it has atoms N, CA and C, the
    residue before it (same chain, consecutive in that order) has a C and the residue after it has an N.
    Chain breaks inside one chain id are not detected (no coordinates here): split chains by ``chain``.

    Args:
        names: [N] atom names.
        residue_index: [N] residue identifiers (any integers that differ between residues).
        chain: optional [N] chain/segment identifiers; residues of different chains are never neighbours.
    Returns:
        phi [R, 4], psi [R, 4] atom indices, and [R] the residue identifiers they belong to.
    """
    names = np.asarray(names).astype(str)
    res = np.asarray(residue_index)
    if names.shape != res.shape or names.ndim != 1:
        raise ValueError("names and residue_index must be 1-D arrays of the same length")
    chains = np.zeros(len(res), np.int64) if chain is None else np.unique(np.asarray(chain).astype(str),
                                                                          return_inverse=True)[1]
    # one key per (chain, residue); residues ordered by their first atom
    keys = np.stack([chains, np.unique(res, return_inverse=True)[1]], axis=1)
    _, first, row = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    row = row.ravel()
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    row = rank[row]  # residue rank of every atom, in order of appearance
    n_res = len(order)
    atom_of = {}
    for name in ("N", "CA", "C"):
        idx = np.full(n_res, -1, np.int64)
        hit = np.flatnonzero(names == name)
        idx[row[hit][::-1]] = hit[::-1]  # the first atom of that name in each residue
        atom_of[name] = idx
    res_chain = np.empty(n_res, np.int64)
    res_chain[row] = chains
    res_id = np.empty(n_res, dtype=res.dtype)
    res_id[row] = res
    i = np.arange(1, n_res - 1)
    ok = ((atom_of["N"][i] >= 0) & (atom_of["CA"][i] >= 0) & (atom_of["C"][i] >= 0)
          & (atom_of["C"][i - 1] >= 0) & (atom_of["N"][i + 1] >= 0)
          & (res_chain[i - 1] == res_chain[i]) & (res_chain[i + 1] == res_chain[i]))
    i = i[ok]
    phi = np.stack([atom_of["C"][i - 1], atom_of["N"][i], atom_of["CA"][i], atom_of["C"][i]], axis=1)
    psi = np.stack([atom_of["N"][i], atom_of["CA"][i], atom_of["C"][i], atom_of["N"][i + 1]], axis=1)
    return phi.reshape(-1, 4), psi.reshape(-1, 4), res_id[i]


def phi_psi(positions: np.ndarray, names: Sequence[str], residue_index: Sequence[int],
            chain: Sequence | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """φ and ψ of every residue that has both (see :func:`backbone_quadruples`).

    Args:
        positions: [F, N, 3] (or [N, 3]) coordinates; names, residue_index, chain: per-atom [N] arrays.
    Returns:
        phi [F, R], psi [F, R] in degrees in [−180°, 180°) ([R] for a single frame) and the [R] residue ids.
    Raises:
        ValueError when no residue has a complete backbone (then there is no Ramachandran plot).
    """
    phi_q, psi_q, residues = backbone_quadruples(names, residue_index, chain)
    if len(residues) == 0:
        raise ValueError("no residue has a complete backbone C(i−1), N, CA, C, N(i+1): no φ/ψ to compute")
    return dihedral_angles(positions, phi_q), dihedral_angles(positions, psi_q), residues
