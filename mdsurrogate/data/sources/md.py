"""Molecular-dynamics trajectories through MDAnalysis: one atom selection of one system → states and topology.

Anything MDAnalysis reads works (PSF/DCD, TPR/XTC/TRR, PDB, GRO, PRMTOP/NetCDF …). MDAnalysis is imported lazily
so that the core runs without it.

Conventions (the model sees exactly these, at ingest and at rollout):
    positions   Å.
    velocities  Å per *frame* of the dataset (``frame_dt`` ps), the papers' convention. By default the backward
                difference v(t) = x(t) − x(t−1) (causal: a state at t uses no later frame, so a rollout can start
                from the last frame of a trajectory; the EGHN paper's text, whereas its code used the forward
                difference). With ``velocities="trajectory"`` the trajectory's own velocities (Å/ps) are
                multiplied by ``frame_dt``. Instantaneous thermal velocities are nearly uncorrelated with the
                displacement over a frame of hundreds of ps: prefer the difference for coarse frames.
                :func:`state_velocities` (every frame, at ingest) and :func:`frame_state` (one frame of any
                Universe, e.g. where a rollout starts) apply this one definition (:func:`velocity`).
    node_props  ``element``: index into :data:`ELEMENTS` (one-hot feature); ``charge``: partial charge in e
                (0 where the topology has none), featurised as q / max|q| of the selection (a constant of the
                system, never a batch statistic).
    local edges bonds inside the selection, both directions, with ``length0``: the bond length (Å) at the first
                frame of the first trajectory. Two selected atoms joined through at most 3 unselected ones count
                as bonded (so a Cα selection gets its Cα(i)–Cα(i+1) chain). Bonds are guessed from covalent radii
                (with a warning) when the topology has none.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import UserError

ELEMENTS = ("H", "C", "N", "O", "S", "P", "other")  # one-hot vocabulary of the ``element`` node property


class MDInputError(UserError, ValueError):
    """A topology, trajectory or selection that cannot be used."""


def _mda():
    try:
        import MDAnalysis
    except ImportError:  # pragma: no cover - MDAnalysis is a dependency, but the GPU image lacks it
        raise MDInputError("reading MD trajectories needs MDAnalysis (pip install MDAnalysis)") from None
    return MDAnalysis


def open_universe(top: str | os.PathLike, trajs: Sequence[str | os.PathLike] = ()):
    """``MDAnalysis.Universe(top, *trajs)`` with one clear sentence for unreadable or inconsistent files.

    Each trajectory is opened on its own (never as one ChainReader) so that windows never straddle two files.
    Returns the list of universes, one per trajectory (or [Universe(top)] when no trajectory is given).
    """
    mda = _mda()
    for f in [top, *trajs]:
        if not Path(f).exists():
            raise MDInputError(f"{f} does not exist")
    out = []
    for traj in list(trajs) or [None]:
        args = [str(top)] + ([str(traj)] if traj is not None else [])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.append(mda.Universe(*args))
        except ValueError as exc:
            msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            if "atoms" in msg.lower() and traj is not None:
                raise MDInputError(f"{traj} does not match topology {top}: {msg}") from None
            raise MDInputError(f"MDAnalysis cannot read {' + '.join(map(str, args))}: {msg}") from None
        except (OSError, TypeError, EOFError, RuntimeError, KeyError, IndexError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise MDInputError(f"MDAnalysis cannot read {' + '.join(map(str, args))}: {msg}") from None
    return out


def select_atoms(universe, selection: str):
    """The AtomGroup of ``selection``; an empty or invalid selection is an MDInputError."""
    try:
        ag = universe.select_atoms(selection)
    except Exception as exc:  # noqa: BLE001 - MDAnalysis raises several types for a bad selection string
        raise MDInputError(f"invalid atom selection {selection!r}: {str(exc).splitlines()[0]}") from None
    if len(ag) == 0:
        raise MDInputError(f"the selection {selection!r} matches no atoms of the topology")
    return ag


def element_ids(ag) -> np.ndarray:
    """[N] int64 indices into :data:`ELEMENTS` (from the topology's elements, else guessed from names/masses)."""
    from ..atoms import guess_element

    elems = getattr(ag, "elements", None) if hasattr(ag.universe.atoms, "elements") else None
    names = ag.names
    masses = ag.masses if hasattr(ag.universe.atoms, "masses") else [None] * len(ag)
    out = np.empty(len(ag), np.int64)
    lookup = {e: k for k, e in enumerate(ELEMENTS)}
    for k in range(len(ag)):
        e = str(elems[k]).strip().capitalize() if elems is not None and str(elems[k]).strip() else ""
        if not e:
            e = guess_element(str(names[k]), None if masses[k] is None else float(masses[k]))
        out[k] = lookup.get(e, lookup["other"])
    return out


def partial_charges(ag) -> np.ndarray:
    """[N] float32 partial charges in e (zeros when the topology has none)."""
    if hasattr(ag.universe.atoms, "charges"):
        return np.asarray(ag.charges, np.float32)
    return np.zeros(len(ag), np.float32)


def selection_bonds(ag, *, guess: bool = True) -> tuple[np.ndarray, bool]:
    """([E, 2] undirected bonds (i < j) in selection-local indices, guessed?). Guesses from distances when the
    topology has no bonds (``guess=False`` returns an empty array instead)."""
    pairs = []
    has_bonds = hasattr(ag.universe.atoms, "bonds") and len(ag.universe.atoms.bonds) > 0
    if has_bonds:
        pairs = [tuple(p) for p in _bonds_through_unselected(ag)]
    guessed = False
    if not pairs and guess and len(ag) > 1:
        types = np.array([ELEMENTS[e] for e in element_ids(ag)], dtype=object)
        pairs = [tuple(p) for p in _guess_bonds(ag.positions, types)]
        guessed = True
    arr = np.array(sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b}), dtype=np.int64).reshape(-1, 2)
    return arr, guessed


def _bonds_through_unselected(ag, max_hops: int = 3) -> np.ndarray:
    """[E, 2] selection-local pairs bonded in the topology directly or through a path of at most ``max_hops``
    unselected atoms: the bonds of an all-atom or backbone selection, and the virtual Cα(i)–Cα(i+1) bonds of a
    coarse-grained Cα selection (through C(i) and N(i+1))."""
    from scipy import sparse

    n = len(ag.universe.atoms)
    b = ag.universe.atoms.bonds.indices
    adj = sparse.coo_matrix((np.ones(2 * len(b)), (np.r_[b[:, 0], b[:, 1]], np.r_[b[:, 1], b[:, 0]])),
                            shape=(n, n)).tocsr()
    sel = np.asarray(ag.indices)
    unsel = np.setdiff1d(np.arange(n), sel)
    direct = adj[sel][:, sel]
    to_u = adj[sel][:, unsel]  # selected → unselected
    uu = adj[unsel][:, unsel]
    reach, total = to_u, direct.copy()
    for _ in range(max_hops):
        total = total + reach @ to_u.T  # selected → (unselected)^k → selected
        reach = reach @ uu
    total = total.tocoo()
    keep = total.row < total.col
    return np.stack([total.row[keep], total.col[keep]], axis=1).astype(np.int64)


COVALENT_RADIUS = {"H": 0.31, "C": 0.76, "N": 0.71, "O": 0.66, "S": 1.05, "P": 1.07}


def _guess_bonds(pos: np.ndarray, elements: np.ndarray, tolerance: float = 0.45) -> np.ndarray:
    """[E, 2] pairs closer than the sum of covalent radii + ``tolerance`` Å (cell-list search, O(N))."""
    import torch

    from ..neighbors import radius_graph

    radii = np.array([COVALENT_RADIUS.get(str(e), 0.76) for e in elements])
    cutoff = 2 * radii.max() + tolerance
    x = torch.from_numpy(np.asarray(pos, np.float64))
    i, j = radius_graph(x, cutoff, torch.zeros(len(pos), dtype=torch.long)).numpy()
    d = np.linalg.norm(pos[i] - pos[j], axis=1)
    keep = (i < j) & (d < radii[i] + radii[j] + tolerance) & (d > 0.4)
    return np.stack([i[keep], j[keep]], axis=1)


def atom_signature(ag) -> str:
    """A short hash of the selection's atom names and residue names, in order: a model trained on one selection
    can only be applied to the same atoms."""
    h = hashlib.sha256()
    for name, res in zip(ag.names, ag.resnames, strict=True):
        h.update(f"{name}:{res};".encode())
    return h.hexdigest()[:16]


@dataclass
class MDSystem:
    """One selection of one system: what the featurizer and the writers need, independent of the frame.

    Attributes:
        n_atoms: N.
        element: [N] int64 indices into ELEMENTS; charge: [N] float32 partial charges (e).
        bonds: [E, 2] undirected bonds (i < j), selection-local indices; bonds_guessed: whether they were guessed.
        selection: the MDAnalysis selection string; signature: :func:`atom_signature`.
        atoms: data.atoms.AtomTopology (names, residues, chains, elements, bonds) for the writers.
    """

    n_atoms: int
    element: np.ndarray
    charge: np.ndarray
    bonds: np.ndarray
    bonds_guessed: bool
    selection: str
    signature: str
    atoms: object

    @classmethod
    def from_atomgroup(cls, ag, selection: str) -> MDSystem:
        from ..atoms import AtomTopology

        bonds, guessed = selection_bonds(ag)
        atoms = AtomTopology.from_atomgroup(ag).with_bonds(bonds)
        return cls(len(ag), element_ids(ag), partial_charges(ag), bonds, guessed, selection, atom_signature(ag),
                   atoms)

    def directed_bonds(self) -> np.ndarray:
        """[2E, 2] both directions of every bond, sorted by receiver."""
        e = np.concatenate([self.bonds, self.bonds[:, ::-1]])
        return e[np.lexsort((e[:, 1], e[:, 0]))]

    def topology(self, positions0: np.ndarray):
        """data.topology.BatchTopology of this one system; ``length0`` of each bond from ``positions0`` [N, 3]."""
        import torch

        from ..topology import BatchTopology, EdgeSet

        e = self.directed_bonds()
        length0 = np.linalg.norm(positions0[e[:, 0]] - positions0[e[:, 1]], axis=1).astype(np.float32)
        local = EdgeSet(torch.from_numpy(e.T.copy()), {"length0": torch.from_numpy(length0)})
        props = {"element": torch.from_numpy(self.element), "charge": torch.from_numpy(self.charge)}
        return BatchTopology(torch.tensor([0, self.n_atoms]), props, {"local": local})


def read_frames(universe, ag, *, velocities: bool = False) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """All frames of the selection: positions [F, N, 3] float32 (Å), velocities [F, N, 3] (Å/ps) or None,
    times [F] (ps). Each frame is copied (MDAnalysis reuses its Timestep)."""
    n = len(universe.trajectory)
    pos = np.empty((n, len(ag), 3), np.float32)
    vel = np.empty((n, len(ag), 3), np.float32) if velocities else None
    times = np.empty(n, np.float64)
    for k, ts in enumerate(universe.trajectory):
        pos[k] = ag.positions
        if vel is not None:
            vel[k] = ag.velocities
        times[k] = ts.time
    return pos, vel, times


def frame_spacing(universe, times: np.ndarray | None = None) -> float:
    """Time between saved frames in ps (MDAnalysis's ``dt``; 1 ps when the file does not say)."""
    if times is not None and len(times) > 1 and np.all(np.diff(times) > 0):
        return float(np.median(np.diff(times)))
    try:
        return float(universe.trajectory.dt)
    except Exception:  # noqa: BLE001 - some readers cannot tell
        return 1.0


def has_velocities(universe) -> bool:
    try:
        return bool(universe.trajectory.ts.has_velocities)
    except Exception:  # noqa: BLE001
        return False


VELOCITY_KINDS = ("trajectory", "difference", "lag")  # how a dataset defines a state's velocity (``meta["md"]``)


def velocity(kind: str, x: np.ndarray, x_prev: np.ndarray | None, v_traj: np.ndarray | None, *, frame_dt: float,
             spacing: float, lag: int = 1, align: bool = False) -> np.ndarray:
    """The velocity of a state as an MD dataset defines it, in Å per dataset frame (float32).

    ``kind = "trajectory"``: ``v_traj`` (Å/ps, the trajectory's own velocities) × ``frame_dt``;
    ``kind = "difference"``: the backward difference (``x − x_prev``) × ``frame_dt / spacing``, i.e. the
    displacement over this trajectory's frame spacing (``spacing`` ps) rescaled to the dataset's (``frame_dt``
    ps); the factor is exactly 1 on the dataset's own trajectories;
    ``kind = "lag"``: the displacement over one model step, (``x − x_prev``) / ``lag`` × ``frame_dt / spacing``
    with ``x_prev`` the frame ``lag`` frames (one Δ) earlier: the state (x_t, v_t) then holds x_{t−Δ}, and a
    rollout's next velocity follows from its next positions. Shapes: ``[..., N, 3]`` (any leading axes).
    ``align``: superpose ``x_prev`` on ``x`` first (:mod:`mdsurrogate.data.align`), so the velocity holds no
    rigid-body translation or rotation (datasets made with ``align``).
    """
    if kind == "trajectory":
        return (v_traj * frame_dt).astype(np.float32)
    if kind in ("difference", "lag"):
        if align:
            from ..align import superpose

            x_prev = superpose(x_prev, x)
        dx = x - x_prev
        scale = (frame_dt / spacing) / (lag if kind == "lag" else 1)
        return (dx if scale == 1 else dx * scale).astype(np.float32, copy=False)
    raise MDInputError(f"velocities must be one of {', '.join(VELOCITY_KINDS)}, not {kind!r}")


def state_velocities(pos: np.ndarray, vel_traj: np.ndarray | None, frame_dt: float, *,
                     lag: int | None = None, align: bool = False) -> np.ndarray:
    """[F, N, 3] velocities of every frame of one trajectory (frames ``frame_dt`` ps apart) in Å per frame:
    :func:`velocity` with the trajectory's ``vel_traj`` (Å/ps) when given, else with ``lag`` the displacement over
    ``lag`` frames per frame (the first ``lag`` frames, which have none, get 0; samples never start there), else
    the backward difference (frame 0, which has none, gets the forward one; samples never start at frame 0)."""
    if vel_traj is not None:
        return velocity("trajectory", pos, None, vel_traj, frame_dt=frame_dt, spacing=frame_dt)
    if lag is not None:
        v = np.zeros_like(pos)
        v[lag:] = velocity("lag", pos[lag:], pos[:-lag], None, frame_dt=frame_dt, spacing=frame_dt, lag=lag,
                           align=align)
        return v
    v = np.empty_like(pos)
    v[1:] = velocity("difference", pos[1:], pos[:-1], None, frame_dt=frame_dt, spacing=frame_dt)
    v[0] = v[1] if len(pos) > 1 else 0.0
    return v


@dataclass(frozen=True)
class FrameState:
    """One frame of a trajectory as an MD dataset's state.

    Attributes:
        frame: the frame index (non-negative); time: its time in ps.
        positions: [N, 3] float32 Å; velocities: [N, 3] float32 Å per dataset frame (:func:`velocity`).
        spacing: this trajectory's frame spacing in ps (the difference velocity was rescaled from it to the
            dataset's ``frame_dt`` when they differ).
    """

    frame: int
    time: float
    positions: np.ndarray
    velocities: np.ndarray
    spacing: float


def frame_state(universe, atoms, frame: int, *, velocities: str, frame_dt: float, lag: int = 1,
                align: bool = False) -> FrameState:
    """The state of ``atoms`` at frame ``frame`` of ``universe``'s trajectory, with the velocity a dataset of frame
    spacing ``frame_dt`` ps defines (``velocities``: ``"trajectory"`` or ``"difference"``, the dataset's
    ``meta["md"]["velocities"]``): exactly what ingest stores for that frame, here for any Universe.

    Args:
        universe: an MDAnalysis Universe; atoms: an AtomGroup of it (the model's selection).
        frame: frame index; negative counts from the end (-1: the last frame).
        velocities, frame_dt: how the dataset defines velocities, and its frame spacing in ps.
        lag: for ``velocities="lag"``, Δ in dataset frames (the displacement is taken over Δ·frame_dt ps, which
            must be a whole number of this trajectory's frames).
        align: the dataset removed rigid-body motion (``ingest md --align``): the earlier frame is superposed on
            this one before the difference.

    Raises :class:`MDInputError` when ``frame`` is out of range, when ``velocities="trajectory"`` and the
    trajectory has none, or when ``velocities="difference"`` and ``frame`` is the first (it has no previous one).
    Leaves the trajectory at ``frame``.
    """
    if velocities not in VELOCITY_KINDS:
        raise MDInputError(f"velocities must be one of {', '.join(VELOCITY_KINDS)}, not {velocities!r}")
    if not (math.isfinite(frame_dt) and frame_dt > 0):
        raise MDInputError(f"frame_dt must be a positive number of ps, got {frame_dt}")
    traj = universe.trajectory
    n_frames = len(traj)
    if not -n_frames <= frame < n_frames:
        raise MDInputError(f"frame {frame} is out of range: the trajectory has {n_frames} frames")
    f = frame % n_frames
    spacing = frame_spacing(universe)
    x_prev = v_traj = None
    back = 1
    if velocities == "lag":
        back = lag * frame_dt / spacing
        if abs(back - round(back)) > 1e-3 * back or round(back) < 1:
            raise MDInputError(f"the model's step ({lag} × {frame_dt:g} ps) is not a whole number of this "
                               f"trajectory's frames ({spacing:g} ps apart)")
        back = round(back)
        if f < back:
            raise MDInputError(f"the velocity is the displacement over the previous {back} frames, so a state cannot "
                               f"start before frame {back}; choose a later frame")
    if velocities == "trajectory":
        if not has_velocities(universe):
            raise MDInputError("the dataset uses the trajectory's own velocities, but this trajectory has none")
    elif velocities == "lag":
        traj[f - back]
        x_prev = atoms.positions.astype(np.float32)
    elif f == 0:
        raise MDInputError("the velocity is the difference to the previous frame, so a state cannot start at frame 0; "
                           "choose a later frame")
    else:
        traj[f - 1]
        x_prev = atoms.positions.astype(np.float32)
    ts = traj[f]
    x = atoms.positions.astype(np.float32)
    if velocities == "trajectory":
        v_traj = atoms.velocities.astype(np.float32)
    v = velocity(velocities, x, x_prev, v_traj, frame_dt=frame_dt, spacing=spacing, lag=back, align=align)
    return FrameState(f, float(ts.time), x, np.ascontiguousarray(v, dtype=np.float32), spacing)
