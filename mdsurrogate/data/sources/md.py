"""Molecular-dynamics trajectories through MDAnalysis: one atom selection of one system → states and topology.

Anything MDAnalysis reads works (PSF/DCD, TPR/XTC/TRR, PDB, GRO, PRMTOP/NetCDF …). MDAnalysis is imported lazily
so that the core runs without it.

Conventions (the model sees exactly these, at ingest and at rollout):
    positions   Å. In a periodic box the selection's molecules are made whole and its frames unwrapped in time
                (:mod:`mdsurrogate.data.periodic`): a wrapped trajectory gives the same positions as its unwrapped
                version, and no atom jumps a box length between frames.
    time        ps between saved frames, from the trajectory's frame times; a file that does not state them
                (every time 0, as some Amber NetCDF files; PDB, XYZ, mdcrd) needs an explicit ``dt``
                (:func:`frame_spacing`). A LAMMPS DCD is read in LAMMPS ``units real`` (fs, Å).
    velocities  Å per *frame* of the dataset (``frame_dt`` ps), the papers' convention. By default the backward
                difference v(t) = x(t) − x(t−1) (causal: a state at t uses no later frame, so a rollout can start
                from the last frame of a trajectory; the EGHN paper's text, whereas its code used the forward
                difference). With ``velocities="trajectory"`` the trajectory's own velocities (Å/ps) are
                multiplied by ``frame_dt``, but only when they describe the motion over a frame
                (:func:`velocity_mismatch`): instantaneous thermal velocities saved every 100 ps say nothing
                about the displacement over a frame (× 100 ps they are hundreds of Å), so ``auto`` then takes
                the difference and ``trajectory`` is refused.
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

import contextlib
import gc
import hashlib
import math
import os
import sys
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


@contextlib.contextmanager
def _quiet_reader_cleanup():
    """Silence what MDAnalysis readers print when they are collected after a failed open (their ``__del__`` calls
    ``close()`` on attributes the failed ``__init__`` never set: "Exception ignored in …" and a traceback)."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = hook


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _trajectory_format(top, traj) -> dict:
    """Keyword arguments for ``Universe`` where MDAnalysis would guess a LAMMPS file's format wrong: a DCD beside a
    LAMMPS data file is a LAMMPS DCD (time steps in fs, ``units real``), not a CHARMM one (AKMA units); a
    ``.lammpstrj`` file is a LAMMPS dump."""
    from MDAnalysis.lib.util import guess_format

    name = str(traj).lower()
    for ext in (".bz2", ".gz"):
        name = name.removesuffix(ext)
    if name.endswith((".lammpstrj", ".lammpsdump")):
        return {"format": "LAMMPSDUMP"}
    if Path(name).name in ("history", "config"):  # DL_POLY's fixed file names have no extension
        return {"format": Path(name).name.upper()}
    try:
        lammps_data = guess_format(str(top)) == "DATA"
    except Exception:  # noqa: BLE001 - unknown extension: not a LAMMPS data file
        lammps_data = False
    return {"format": "LAMMPS"} if lammps_data and name.endswith(".dcd") else {}


def open_universe(top: str | os.PathLike, trajs: Sequence[str | os.PathLike] = ()):
    """``MDAnalysis.Universe(top, *trajs)`` with one clear sentence for unreadable or inconsistent files.

    Each trajectory is opened on its own (never as one ChainReader) so that windows never straddle two files.
    A DCD with a LAMMPS data file as topology is read as a LAMMPS DCD (``units real``: time steps in fs), not
    as a CHARMM one (AKMA time units); ``.lammpstrj`` files as LAMMPS dumps; DL_POLY's ``HISTORY`` and
    ``CONFIG`` by their names. Returns the list of universes, one per
    trajectory (or [Universe(top)]
    when no trajectory is given).
    """
    mda = _mda()
    for f in [top, *trajs]:
        if not Path(f).exists():
            raise MDInputError(f"{f} does not exist")
        if Path(f).is_dir():
            raise MDInputError(f"{f} is a folder, not a topology or trajectory file")
    out = []
    for traj in list(trajs) or [None]:
        args = [str(top)] + ([str(traj)] if traj is not None else [])
        kwargs = _trajectory_format(top, traj) if traj is not None else {}
        if Path(top).name.upper() in ("HISTORY", "CONFIG"):
            kwargs["topology_format"] = Path(top).name.upper()
        error = None
        with _quiet_reader_cleanup():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    universe = mda.Universe(*args, **kwargs)
                    n_frames = len(universe.trajectory)
            except (MemoryError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - MDAnalysis raises anything for a damaged file
                msg = _first_line(exc)
                if isinstance(exc, ValueError) and "atoms" in msg.lower() and traj is not None:
                    error = f"{traj} does not match topology {top}: {msg}"
                else:
                    error = f"MDAnalysis cannot read {' + '.join(map(str, args))}: {msg}"
        if error is not None:
            raise MDInputError(error)
        if n_frames < 1:
            raise MDInputError(f"{traj if traj is not None else top} holds no frames")
        out.append(universe)
    return out


def select_atoms(universe, selection: str):
    """The AtomGroup of ``selection``; an empty or invalid selection is an MDInputError."""
    if not isinstance(selection, str) or not selection.strip():
        raise MDInputError("the atom selection is empty; give an MDAnalysis selection such as 'backbone' or 'all'")
    try:
        ag = universe.select_atoms(selection)
    except Exception as exc:  # noqa: BLE001 - MDAnalysis raises several types for a bad selection string
        msg = _first_line(exc)
        lacking = [a for a in ("names", "resnames", "types") if not hasattr(universe.atoms, a)]
        if lacking and ("no attribute" in msg or "does not contain" in msg):
            raise MDInputError(f"the selection {selection!r} needs atom information this topology does not have (no "
                               f"{' or '.join(lacking)}); select by what it has, e.g. 'all', 'type 1 2', "
                               "'index 0:99', 'resid 1' or 'prop mass > 2'") from None
        raise MDInputError(f"invalid atom selection {selection!r}: {msg}") from None
    if len(ag) == 0:
        raise MDInputError(f"the selection {selection!r} matches no atoms of the topology")
    return ag


def _labels(ag, attribute: str, fallback: str) -> np.ndarray:
    """Per-atom strings of ``attribute`` (e.g. ``names``), of ``fallback`` (e.g. ``types``) when the topology
    lacks it (a LAMMPS data file has types and masses but no names), else empty strings."""
    for attr in (attribute, fallback):
        if hasattr(ag.universe.atoms, attr):
            return np.asarray(getattr(ag, attr)).astype(str)
    return np.full(len(ag), "", dtype=object)


def atom_names(ag) -> np.ndarray:
    """[N] atom names, or the atom types where the topology has no names."""
    return _labels(ag, "names", "types")


def residue_names(ag) -> np.ndarray:
    """[N] residue names, or the residue ids (as strings) where the topology has no residue names."""
    return _labels(ag, "resnames", "resids")


def element_ids(ag) -> np.ndarray:
    """[N] int64 indices into :data:`ELEMENTS` (from the topology's elements, else guessed from names/masses)."""
    from ..atoms import guess_element

    elems = getattr(ag, "elements", None) if hasattr(ag.universe.atoms, "elements") else None
    names = atom_names(ag)
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
        pairs = [tuple(p) for p in _guess_bonds(ag.positions, types, frame_box(ag.universe))]
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


def _guess_bonds(pos: np.ndarray, elements: np.ndarray, box: np.ndarray | None = None,
                 tolerance: float = 0.45) -> np.ndarray:
    """[E, 2] pairs closer than the sum of covalent radii + ``tolerance`` Å (cell-list search, O(N)); with a
    periodic ``box`` ([3, 3] rows, Å) distances are taken to the nearest image, so bonds across a face count."""
    import torch

    radii = np.array([COVALENT_RADIUS.get(str(e), 0.76) for e in elements])
    cutoff = 2 * radii.max() + tolerance
    x = torch.from_numpy(np.asarray(pos, np.float64))
    batch = torch.zeros(len(pos), dtype=torch.long)
    if box is None:
        from ..neighbors import radius_graph

        i, j = radius_graph(x, cutoff, batch).numpy()
        d = np.linalg.norm(pos[i] - pos[j], axis=1)
    else:
        from ..neighbors import neighbor_list

        cell = torch.from_numpy(np.asarray(box, np.float64))[None]
        ei, shift = neighbor_list(x, cutoff, batch, cell, torch.ones(1, 3, dtype=torch.bool))
        i, j = ei.numpy()
        d = np.linalg.norm(np.asarray(pos, np.float64)[i] - np.asarray(pos, np.float64)[j] - shift.numpy() @ box,
                           axis=1)
    keep = (i < j) & (d < radii[i] + radii[j] + tolerance) & (d > 0.4)
    return np.stack([i[keep], j[keep]], axis=1)


def atom_signature(ag) -> str:
    """A short hash of the selection's atom names and residue names, in order: a model trained on one selection
    can only be applied to the same atoms."""
    h = hashlib.sha256()
    for name, res in zip(atom_names(ag), residue_names(ag), strict=True):
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

        if len(ag) < 2:
            raise MDInputError(f"the selection {selection!r} has {len(ag)} atom; a model of the motion needs at "
                               "least 2 (it sees only positions relative to each other)")
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


@dataclass
class Frames:
    """Every frame of one selection, read: positions [F, N, 3] float32 Å (whole and unwrapped in time when the
    frames have a periodic box), velocities [F, N, 3] float32 Å/ps or None, times [F] float64 ps (as the file
    states them), periodic: whether the frames have a periodic box, box0: the first frame's
    ``[a, b, c, α, β, γ]`` (Å, degrees) or None, notes: what the user should know (frames left out)."""

    positions: np.ndarray
    velocities: np.ndarray | None
    times: np.ndarray
    periodic: bool
    box0: list[float] | None
    notes: list[str]


def _check_finite(array: np.ndarray, what: str, advice: str) -> None:
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array).all(-1)).sum())
        raise MDInputError(f"{what} has non-finite values (NaN or inf) for {bad} atom(s); {advice}")


def read_frames(universe, ag, *, velocities: bool = False, unwrap=None, path=None) -> Frames:
    """All frames of the selection ``ag``, each copied (MDAnalysis reuses its Timestep).

    ``unwrap``: a :class:`~mdsurrogate.data.periodic.Unwrapper` for the selection (molecules made whole at the
    first frame and frames unwrapped in time wherever there is a periodic box); None keeps the stored images.
    Raises :class:`MDInputError` for a frame that cannot be read or holds NaN/inf coordinates (or velocities).
    """
    name = str(path) if path is not None else "the trajectory"
    n = len(universe.trajectory)
    pos = np.empty((n, len(ag), 3), np.float32)
    vel = np.empty((n, len(ag), 3), np.float32) if velocities else None
    times = np.empty(n, np.float64)
    periodic, box0 = False, None
    if unwrap is not None:
        unwrap.reset()
    cut = "cut the trajectory before that frame"
    k = -1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MDAnalysis' notes (e.g. "no dt information") are not for our users
            for k, ts in enumerate(universe.trajectory):
                x = ag.positions
                _check_finite(x, f"frame {k} of {name}", cut)
                box = frame_box(universe, ts)
                if k == 0 and box is not None:
                    box0 = [float(b) for b in ts.dimensions]
                periodic |= box is not None
                pos[k] = unwrap(x, box) if unwrap is not None else x
                if vel is not None:
                    vel[k] = ag.velocities
                    _check_finite(vel[k], f"the velocities of frame {k} of {name}", cut)
                times[k] = ts.time
    except MDInputError:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged frame: MDAnalysis raises anything
        raise MDInputError(f"frame {k + 1} of {name} cannot be read: {_first_line(exc)}") from None
    notes = []
    if k + 1 < n:  # the reader counted a frame it then could not read: a file cut short (or still being written)
        if k < 0:
            raise MDInputError(f"MDAnalysis cannot read any frame of {name}")
        notes.append(f"{name} ends inside frame {k + 1} of the {n} frames its reader counted (cut short, or "
                     f"still being written): the {k + 1} complete frames before it are used")
        pos, times = pos[:k + 1], times[:k + 1]
        vel = vel[:k + 1] if vel is not None else None
    return Frames(pos, vel, times, periodic, box0, notes)


def stated_spacing(universe) -> float | None:
    """The time between frames (ps) the trajectory file states, or None when it states none (MDAnalysis then
    assumes 1 ps: PDB, XYZ, Amber mdcrd …) or a non-positive one (Amber NetCDF files whose frames all carry
    time 0)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dt = float(universe.trajectory.dt)
        except Exception:  # noqa: BLE001 - some readers cannot tell
            return None
    if any("no dt information" in str(w.message) for w in caught):
        return None
    return dt if math.isfinite(dt) and dt > 0 else None


def frame_spacing(universe, times: np.ndarray | None = None, *, dt: float | None = None, path=None) -> float:
    """The time between saved frames in ps, by one rule:

    * an explicit ``dt`` (ps) wins (a file whose times are missing, zero or in unknown units);
    * else the file's frame times, which must increase evenly (within 1 %);
    * else :class:`MDInputError` asking for ``dt``: never 0, never a silent 1 ps.

    ``times``: the frames' times [F] (ps) when already read (else the reader's stated spacing is used).
    """
    name = str(path) if path is not None else "the trajectory"
    if dt is not None:
        if not (isinstance(dt, int | float) and math.isfinite(dt) and dt > 0):
            raise MDInputError(f"dt must be a positive number of ps between saved frames, got {dt}")
        return float(dt)
    ask = "pass `dt`, the time between its saved frames in ps"
    stated = stated_spacing(universe)
    if stated is None:
        same = times is not None and len(times) > 1 and np.ptp(times) == 0
        detail = f" (every frame is at {times[0]:g} ps)" if same else ""
        raise MDInputError(f"{name} does not state the time between its frames{detail}; {ask}")
    if times is not None and len(times) > 1:
        d = np.diff(times)
        if not np.all(d > 0):
            k = int(np.flatnonzero(d <= 0)[0])
            raise MDInputError(f"the frame times of {name} do not increase (frame {k}: {times[k]:g} ps, frame "
                               f"{k + 1}: {times[k + 1]:g} ps); {ask}")
        if d.max() > 1.01 * d.min():
            raise MDInputError(f"the frames of {name} are not evenly spaced in time ({d.min():g} to {d.max():g} ps "
                               "apart); ingest evenly saved frames, or pass `dt` to treat them as evenly spaced")
        return float(np.median(d))
    return stated


def has_velocities(universe) -> bool:
    try:
        return bool(universe.trajectory.ts.has_velocities)
    except Exception:  # noqa: BLE001
        return False


def symmetric_box(universe) -> bool:
    """Whether the trajectory stores its periodic box as CHARMM's symmetric shape matrix, whose orientation
    MDAnalysis' lengths and angles do not keep (a CHARMM DCD with a box matrix; MDAnalysis' DCD reader recognises
    it by the values, and so does this). Everything else (GROMACS, Amber, LAMMPS, NAMD, PDB) has a along x and b in
    the xy plane."""
    from MDAnalysis.coordinates.DCD import DCDReader

    reader = universe.trajectory
    if type(reader) is not DCDReader:  # the LAMMPS DCD reader is a subclass: LAMMPS boxes are lower triangular
        return False
    cached = getattr(reader, "_mdsurrogate_symmetric_box", None)
    if cached is None:
        from MDAnalysis.lib.formats.libdcd import DCDFile

        try:
            with DCDFile(reader.filename) as f:
                uc = np.take(np.asarray(f.read().unitcell, np.float64), [0, 2, 5, 4, 3, 1])
        except Exception:  # noqa: BLE001 - unreadable here means MDAnalysis could not read it either
            return False
        cosines = bool(np.all(np.abs(uc[3:]) <= 1.0))
        cached = not cosines and bool(np.any(uc < 0.0) or np.any(uc[3:] > 180.0))
        reader._mdsurrogate_symmetric_box = cached
    return cached


def frame_box(universe, ts=None) -> np.ndarray | None:
    """The periodic box of the current frame as [3, 3] vectors (rows, Å) in the orientation of the coordinates
    (:func:`symmetric_box`), or None when the frame has none."""
    from ..periodic import box_matrix

    ts = universe.trajectory.ts if ts is None else ts
    if ts.dimensions is None:
        return None
    return box_matrix(ts.dimensions, symmetric=symmetric_box(universe))


#: The largest :func:`velocity_mismatch` at which a trajectory's own velocities count as describing its motion.
VELOCITY_MISMATCH = 0.5


def velocity_mismatch(x: np.ndarray, v: np.ndarray, spacing: float) -> tuple[float, float, float]:
    """How far a trajectory's velocities are from describing its motion over a frame.

    Args:
        x: [F, N, 3] positions (Å, unwrapped), F ≥ 2; v: [F, N, 3] the trajectory's velocities (Å/ps);
        spacing: ps between frames.

    Returns:
        (mismatch, RMS of v·spacing, RMS displacement), the RMS values in Å per frame: ``mismatch`` is
        RMS(v·spacing − d) / RMS(d) over all frames and atoms, with d the central difference (x_{t+1} − x_{t−1}) / 2
        (second order; the forward difference when F = 2). About 0.01 for frames a few fs apart; ≳ 1 for thermal
        velocities saved every ps or more, which say nothing about the motion over a frame.
    """
    x = np.asarray(x, np.float64)
    v = np.asarray(v, np.float64) * spacing
    if len(x) >= 3:
        d, v = (x[2:] - x[:-2]) / 2, v[1:-1]
    else:
        d, v = x[1:] - x[:-1], v[:-1]
    rms = lambda a: float(np.sqrt((a * a).sum(-1).mean()))  # noqa: E731
    d_rms, v_rms, err = rms(d), rms(v), rms(v - d)
    mismatch = err / d_rms if d_rms > 0 else (0.0 if err == 0 else math.inf)
    return mismatch, v_rms, d_rms


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
    v[1:] = velocity("difference", pos[1:], pos[:-1], None, frame_dt=frame_dt, spacing=frame_dt, align=align)
    v[0] = v[1] if len(pos) > 1 else 0.0
    return v


@dataclass(frozen=True)
class FrameState:
    """One frame of a trajectory as an MD dataset's state.

    Attributes:
        frame: the frame index (non-negative); time: its time in ps.
        positions: [N, 3] float32 Å (whole and unwrapped in time in a periodic box, as at ingest);
            velocities: [N, 3] float32 Å per dataset frame (:func:`velocity`).
        spacing: this trajectory's frame spacing in ps (the difference velocity was rescaled from it to the
            dataset's ``frame_dt`` when they differ), or None where the file does not state it and no ``dt`` was
            given (only possible with ``velocities="trajectory"``, which does not need it).
    """

    frame: int
    time: float
    positions: np.ndarray
    velocities: np.ndarray
    spacing: float | None


def frame_state(universe, atoms, frame: int, *, velocities: str, frame_dt: float, lag: int = 1,
                bonds: np.ndarray | None = None, dt: float | None = None, reader=None,
                align: bool = False) -> FrameState:
    """The state of ``atoms`` at frame ``frame`` of ``universe``'s trajectory, with the velocity a dataset of frame
    spacing ``frame_dt`` ps defines (``velocities``: ``"trajectory"``, ``"difference"`` or ``"lag"``, the
    dataset's ``meta["md"]["velocities"]``): what ingest stores for that frame, here for any Universe.

    Args:
        universe: an MDAnalysis Universe; atoms: an AtomGroup of it (the model's selection).
        frame: frame index; negative counts from the end (-1: the last frame).
        velocities, frame_dt: how the dataset defines velocities, and its frame spacing in ps.
        lag: for ``velocities="lag"``, Δ in dataset frames (the displacement is taken over Δ·frame_dt ps, which
            must be a whole number of this trajectory's frames).
        bonds: [E, 2] selection-local bonds used to make molecules whole in a periodic box (default: the
            selection's bonds, :func:`selection_bonds`).
        dt: this trajectory's frame spacing in ps where its file does not state it (:func:`frame_spacing`).
        reader: a :class:`FrameReader` of ``atoms`` to read the positions with (e.g. to go on reading later
            frames in the same images); default: a new one with ``bonds``.
        align: the dataset removed rigid-body motion (``ingest md --align``): the earlier frame is superposed on
            this one before the difference.

    In a periodic box the frames are read in order from the first, made whole there and unwrapped in time
    (:class:`FrameReader`), exactly as at ingest: the state equals what ingest stores for that frame (one pass over
    the frames up to ``frame``; a trajectory without a box is read at ``frame`` directly).

    Raises :class:`MDInputError` when ``frame`` is out of range, when ``velocities="trajectory"`` and the
    trajectory has none, when ``velocities="difference"`` and ``frame`` is the first (it has no previous one),
    when the frame spacing is needed but unknown, or when a frame it uses holds NaN/inf.
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
    spacing = frame_spacing(universe, dt=dt) if dt is not None else stated_spacing(universe)
    if spacing is None and velocities != "trajectory":
        raise MDInputError("the trajectory does not state the time between its frames, which the velocity (a "
                           "displacement per frame) needs; pass `dt`, the time between its saved frames in ps")
    back = 0
    if velocities == "lag":
        back = lag * frame_dt / spacing
        if abs(back - round(back)) > 1e-3 * back or round(back) < 1:
            raise MDInputError(f"the model's step ({lag} × {frame_dt:g} ps) is not a whole number of this "
                               f"trajectory's frames ({spacing:g} ps apart)")
        back = round(back)
        if f < back:
            raise MDInputError(f"the velocity is the displacement over the previous {back} frames, so a state cannot "
                               f"start before frame {back}; choose a later frame")
    elif velocities == "trajectory":
        if not has_velocities(universe):
            raise MDInputError("the dataset uses the trajectory's own velocities, but this trajectory has none")
    elif f == 0:
        raise MDInputError("the velocity is the difference to the previous frame, so a state cannot start at frame 0; "
                           "choose a later frame")
    else:
        back = 1
    if reader is None:
        reader = FrameReader(universe, atoms, selection_bonds(atoms)[0] if bonds is None else bonds)
    x_prev = reader(f - back) if back else None
    x = reader(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        time = float(traj.ts.time)
        if dt is not None:
            time = float(traj[0].time) + f * float(dt)
            traj[f]
    v_traj = None
    if velocities == "trajectory":
        v_traj = atoms.velocities.astype(np.float32)
        _check_finite(v_traj, f"the velocities of frame {f}", "start from another frame")
    v = velocity(velocities, x, x_prev, v_traj, frame_dt=frame_dt, spacing=spacing or frame_dt, lag=back or 1,
                 align=align)
    return FrameState(f, time, x, np.ascontiguousarray(v, dtype=np.float32), spacing)


class FrameReader:
    """The positions of a selection at any frame as ingest stores them: in a periodic box the frames are read in
    order from the first, whose molecules are made whole, and unwrapped in time
    (:class:`~mdsurrogate.data.periodic.Unwrapper`); without a box a frame is read directly.

    Unwrapping in reduced coordinates depends on the images of the frames before (a molecule that drifted n boxes
    moves with n times the box change in NPT), so only reading from the first frame reproduces ingest exactly.
    Calls with increasing frames read each frame once; an earlier frame restarts from the first.

    Args:
        universe: an MDAnalysis Universe; atoms: an AtomGroup of it; bonds: [E, 2] selection-local bonds.
    """

    def __init__(self, universe, atoms, bonds: np.ndarray):
        from ..periodic import Unwrapper

        self.universe, self.atoms = universe, atoms
        traj = universe.trajectory
        current = traj.ts.frame
        self.periodic = frame_box(universe, traj[0]) is not None
        traj[current]
        self.unwrap = Unwrapper(len(atoms), bonds)
        self._cursor, self._x = -1, None

    def __call__(self, frame: int) -> np.ndarray:
        """[N, 3] float32 positions (Å) at ``frame`` (non-negative); leaves the trajectory there. Raises
        :class:`MDInputError` when that frame, or in a periodic box a frame before it, holds NaN/inf."""
        try:
            return self._read(frame)
        except (MDInputError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged frame: MDAnalysis raises anything
            raise MDInputError(f"frame {frame} of the trajectory cannot be read ({_first_line(exc)}); the file may "
                               "be cut short: start from an earlier frame") from None

    def _read(self, frame: int) -> np.ndarray:
        traj = self.universe.trajectory
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MDAnalysis' notes are not for our users
            if not self.periodic:
                ts = traj[frame]
                if ts.frame != frame:
                    raise MDInputError(f"frame {frame} of the trajectory cannot be read; the file may be cut short: "
                                       "start from an earlier frame")
                x = self.atoms.positions
                _check_finite(x, f"frame {frame}", "start from another frame")
                return x.astype(np.float32)
            if frame < self._cursor:
                self.unwrap.reset()
                self._cursor, self._x = -1, None
            for k in range(self._cursor + 1, frame + 1):
                ts = traj[k]
                if ts.frame != k:
                    raise MDInputError(f"frame {k} of the trajectory cannot be read; the file may be cut short: "
                                       "start from an earlier frame")
                x = self.atoms.positions
                advice = "start from another frame" if k == frame else \
                    f"a periodic trajectory is unwrapped from its first frame, so it cannot reach frame {frame}"
                _check_finite(x, f"frame {k}", advice)
                self._x = self.unwrap(x, frame_box(self.universe, ts))
                self._cursor = k
            if traj.ts.frame != frame:
                traj[frame]
        return self._x.astype(np.float32)


def reference_reader(reader: FrameReader):
    """A function ``frame → positions`` ([N, 3] float32 Å, or None where a frame holds NaN/inf) of ``reader``
    (the one :func:`frame_state` used): the true positions a rollout from that state is compared with, in the
    same images."""

    def read(frame: int) -> np.ndarray | None:
        try:
            return reader(frame)
        except MDInputError:
            return None

    return read
