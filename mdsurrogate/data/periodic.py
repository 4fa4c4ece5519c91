"""Periodic boxes: molecules made whole and frames unwrapped in time, so that a trajectory saved wrapped into its
box becomes the continuous motion a propagator learns.

MD engines save positions wrapped into the periodic box (GROMACS, CHARMM, Amber, LAMMPS …): an atom that crosses a
face reappears on the opposite side, a box length away, and a molecule may be split across the box. Differences
of such frames are jumps of a box length, not motion. :class:`Unwrapper` removes both artefacts for one selection
of atoms, frame by frame, in this order:

1. **First frame — whole molecules** (:func:`make_whole`): along a spanning tree of the selection's bonds, every
   atom is placed at its parent's position plus the minimum image of the bond vector; then every fragment (a
   connected component of the bonds; an unbonded atom is its own fragment) is shifted by whole box vectors so that
   its centre of geometry lies in the primary cell (:func:`place_in_box`). The result does not depend on the
   images the file stored, so a wrapped trajectory and its unwrapped version give the same positions.
2. **Later frames — no jumps** (:func:`nojump`): every atom takes the image of its new position nearest to its
   previous unwrapped position, with the previous position in reduced (box) coordinates so that a changing box
   (NPT) is followed: the rule of MDAnalysis' ``NoJump`` transformation (Kulke & Vermaas 2022, eq. B6), except
   that the nearest image is searched among the 27 neighbouring cells instead of by rounding alone, which in a
   skewed box (GROMACS' rhombic dodecahedron) misses it for moves of a quarter box (a water molecule over 100 ps).
   Molecules whole in the first frame stay whole as long as no atom moves half a box between frames.

This runs on the selection only (never on the whole solvated system) and with any bonds (the topology's, the
virtual bonds through unselected atoms of a Cα selection, or bonds guessed from distances), which MDAnalysis'
``unwrap`` transformation, built on the topology's own fragments, cannot do.

Shapes and units: positions ``[N, 3]`` in Å; a box is a ``[3, 3]`` matrix whose rows are the box vectors a, b, c
in Å (MDAnalysis' ``triclinic_dimensions``), or None for no periodic box. Computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Unwrapper", "box_matrix", "fragments", "make_whole", "minimum_image", "nojump", "place_in_box", "wrap"]


def box_matrix(dimensions, *, symmetric: bool = False) -> np.ndarray | None:
    """``[3, 3]`` box vectors (rows, Å) from MDAnalysis-style ``dimensions`` ``[a, b, c, α, β, γ]`` (Å, degrees)
    or from a ``[3, 3]`` matrix; None when there is no usable periodic box (missing, zero, non-finite or flat).

    Lengths and angles fix a box up to a rotation; the orientation must be the one the coordinates were saved in.
    Default: a along x, b in the xy plane (GROMACS, Amber, LAMMPS, NAMD, PDB ``CRYST1``; MDAnalysis'
    ``triclinic_vectors``). ``symmetric=True``: the symmetric shape matrix CHARMM uses (the unique symmetric
    positive-definite matrix with these lengths and angles), for CHARMM DCD files that store one.
    """
    if dimensions is None:
        return None
    d = np.asarray(dimensions, dtype=np.float64)
    if d.shape == (3, 3):
        m = d
    elif d.shape == (6,):
        if not np.all(np.isfinite(d)) or np.any(d[:3] <= 0) or np.any(d[3:] <= 0) or np.any(d[3:] >= 180):
            return None
        a, b, c = d[:3]
        ga = np.radians(d[5])
        cos_al, cos_be, cos_ga = (0.0 if abs(x - 90.0) < 1e-9 else np.cos(np.radians(x)) for x in d[3:])
        sin_ga = np.sin(ga)
        cx = c * cos_be
        cy = c * (cos_al - cos_be * cos_ga) / sin_ga
        cz2 = c * c - cx * cx - cy * cy
        if cz2 <= 0:
            return None
        m = np.array([[a, 0.0, 0.0], [b * cos_ga, b * sin_ga, 0.0], [cx, cy, np.sqrt(cz2)]])
    else:
        return None
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-6:
        return None
    if symmetric:
        w, v = np.linalg.eigh(m @ m.T)  # the metric; its symmetric square root has the same lengths and angles
        m = (v * np.sqrt(w)) @ v.T
    return m


_SHIFTS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.float64)


def _min_width(box: np.ndarray) -> float:
    """The box's smallest width (distance between opposite faces), Å."""
    cross = np.cross(box[[1, 2, 0]], box[[2, 0, 1]])
    return float(abs(np.linalg.det(box)) / np.linalg.norm(cross, axis=1).max())


def _nearest_reduced(f: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[..., 3]`` reduced displacements moved by whole box vectors to the image of smallest length: rounding in
    reduced coordinates, then, for the vectors still longer than half the box's smallest width (only those can have
    a shorter image), the best of the 27 neighbouring images (rounding alone misses the nearest image of long
    vectors in skewed boxes, e.g. a rhombic dodecahedron)."""
    f = f - np.round(f)
    long = ((f @ box) ** 2).sum(-1) >= (0.5 * _min_width(box)) ** 2
    if long.any():
        cand = f[long][:, None, :] + _SHIFTS  # [M, 27, 3]
        best = np.argmin(((cand @ box) ** 2).sum(-1), axis=-1)
        f[long] = cand[np.arange(len(cand)), best]
    return f


def minimum_image(d: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[..., 3]`` displacement vectors (Å) reduced to their nearest periodic image (any triclinic box)."""
    return _nearest_reduced(np.asarray(d, np.float64) @ np.linalg.inv(box), box) @ box


def wrap(x: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[N, 3]`` positions with every atom moved into the primary cell (reduced coordinates in [0, 1))."""
    f = x @ np.linalg.inv(box)
    return (f - np.floor(f)) @ box


def fragments(n_atoms: int, bonds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the bond graph and a spanning forest of it.

    Args:
        n_atoms: N; bonds: ``[E, 2]`` atom index pairs (either direction).

    Returns:
        (labels ``[N]`` int64: fragment id of every atom, parent ``[N]`` int64: the atom's parent in a
        breadth-first spanning tree of its fragment, itself for the fragment's root, its lowest-indexed atom).
    """
    from scipy import sparse
    from scipy.sparse import csgraph

    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    adj = sparse.coo_matrix((np.ones(len(bonds)), (bonds[:, 0], bonds[:, 1])), shape=(n_atoms, n_atoms)).tocsr()
    n_frag, labels = csgraph.connected_components(adj, directed=False)
    roots = np.full(n_frag, n_atoms, dtype=np.int64)
    np.minimum.at(roots, labels, np.arange(n_atoms))
    # one breadth-first search from a virtual atom N joined to every fragment's root gives every atom a parent
    rows = np.r_[bonds[:, 0], bonds[:, 1], np.full(n_frag, n_atoms)]
    cols = np.r_[bonds[:, 1], bonds[:, 0], roots]
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_atoms + 1, n_atoms + 1)).tocsr()
    _, pred = csgraph.breadth_first_order(graph, n_atoms, directed=True, return_predecessors=True)
    parent = pred[:n_atoms].astype(np.int64)
    parent[roots] = roots
    return labels.astype(np.int64), parent


def make_whole(x: np.ndarray, parent: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[N, 3]`` positions with every fragment whole: each root stays where it is and every other atom is placed at
    its parent's (new) position plus the minimum image of its bond. The sums along the tree are accumulated by
    pointer jumping (⌈log₂ depth⌉ vectorised passes), not atom by atom."""
    x = np.asarray(x, dtype=np.float64)
    is_root = parent == np.arange(len(parent))
    step = minimum_image(x - x[parent], box)
    step[is_root] = 0.0
    # invariant: total[i] = Σ step over the path from i (inclusive) up to up[i] (exclusive)
    total, up = step, parent.copy()
    while True:
        nxt = up[up]
        if np.array_equal(nxt, up):  # every pointer is at its root
            return x[up] + total
        total = total + total[up]
        up = nxt


def place_in_box(x: np.ndarray, labels: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[N, 3]`` positions with every fragment moved by whole box vectors so that its centre of geometry lies in
    the primary cell (reduced coordinates in [0, 1)); the fragments keep their shape."""
    x = np.asarray(x, dtype=np.float64)
    n_frag = int(labels.max()) + 1 if len(labels) else 0
    counts = np.bincount(labels, minlength=n_frag).astype(np.float64)
    centre = np.stack([np.bincount(labels, weights=x[:, k], minlength=n_frag) for k in range(3)], 1) / counts[:, None]
    shift = np.floor(centre @ np.linalg.inv(box)) @ box
    return x - shift[labels]


def nojump(x: np.ndarray, box: np.ndarray, previous_reduced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image of every atom of ``x`` ``[N, 3]`` nearest to its previous unwrapped position, given in reduced
    coordinates of the previous frame's box (``previous_reduced`` ``[N, 3]``). Returns (unwrapped positions
    ``[N, 3]`` Å, their reduced coordinates for the next call)."""
    f = np.asarray(x, dtype=np.float64) @ np.linalg.inv(box)
    f = previous_reduced + _nearest_reduced(f - previous_reduced, box)
    return f @ box, f


@dataclass
class Unwrapper:
    """Whole molecules and continuous motion for one selection, frame after frame (see the module docstring).

    Args:
        n_atoms: N of the selection; bonds: ``[E, 2]`` selection-local bonds (may be empty: every atom is then
            its own fragment and only the unwrapping in time applies).

    Call :meth:`__call__` with the frames in order (``x`` ``[N, 3]`` Å, ``box`` ``[3, 3]`` or None); the first
    call (and the first after :meth:`reset`) makes the fragments whole and places them in the box. Frames without
    a box are returned unchanged. Returns float64 ``[N, 3]``.
    """

    n_atoms: int
    bonds: np.ndarray

    def __post_init__(self):
        self.labels, self.parent = fragments(self.n_atoms, self.bonds)
        self._reduced = None

    def reset(self) -> None:
        self._reduced = None

    def __call__(self, x: np.ndarray, box: np.ndarray | None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if box is None:
            self._reduced = None
            return x
        if self._reduced is None:
            whole = place_in_box(make_whole(x, self.parent, box), self.labels, box)
            self._reduced = whole @ np.linalg.inv(box)
            return whole
        out, self._reduced = nojump(x, box, self._reduced)
        return out
