"""Streaming, crash-safe trajectory writers for PDB, extended XYZ and DCD (pure Python/NumPy).

Rollouts stream frames: open a writer, append frames one at a time, close it::

    from mdsurrogate.data.atoms import AtomTopology
    from mdsurrogate.io.writers import open_writer

    top = AtomTopology.generic(n_particles, element="Ar")
    with open_writer("rollout.pdb", top, bfactors="cluster") as w:
        for t, x in rollout:                       # x: [N, 3] in Angstrom (or the dataset's unit)
            w.write(x, time_ps=t, cluster=ids)     # every frame is flushed to disk

Guarantees
----------
* **Atomic replacement.** Frames go to ``OUT.partial.EXT`` next to the target (see :func:`partial_path`);
  :meth:`close` finalises it and atomically renames it onto ``OUT.EXT``. A file already at the target
  is untouched until then. If the process dies, the partial file stays, under that clear name.
* **Valid after every frame.** Each :meth:`write` appends one complete frame and flushes it, so the
  partial file is readable (MDAnalysis, ASE, VMD, PyMOL) with every frame written so far. The DCD
  header (frame count, step counters, time step) is patched after every frame.
* **Closing after an error finalises.** Used as a context manager, the writer is closed (and the file
  renamed into place) even when the body raises, e.g. a NaN guard stopping a rollout. A writer closed
  with no frames written removes its partial file and leaves the target alone.
* **No garbage frames.** A frame that fails validation (wrong shape, non-finite coordinates, values that
  do not fit a PDB fixed column, non-uniform DCD times) raises ``ValueError`` before anything is
  written, so the file stays valid.

Units: positions in Angstrom (or the dataset's length unit; nothing is converted), velocities in
length/ps, times in ps. The DCD time step is stored in AKMA units (see :data:`AKMA_PS`).

Formats
-------
``.pdb``
    Multi-MODEL PDB, one ``MODEL``/``ENDMDL`` block per frame, fixed-column ``ATOM``/``HETATM`` records
    (serials in hybrid-36 above 99999, residue numbers wrapped modulo 10000 like other MD tools),
    occupancy and B-factor columns from per-atom arrays (e.g. hard cluster ids), element in columns
    77-78, segment ID in 73-76, a ``REMARK`` with the frame time inside each MODEL, ``CRYST1`` before
    each MODEL only if a box is given, optional ``CONECT`` records (written on close) for bonds.
``.xyz`` / ``.extxyz``
    Extended XYZ (``ase.io.read(path, index=":")``): ``Properties=species:S:1:pos:R:3[:vel:R:3]`` plus
    one column per topology label and per extra per-atom array, ``time=`` (ps) and ``frame=`` in the
    comment line, ``Lattice``/``pbc`` only if a box is given. Floats are written with enough digits to
    read back bit-exactly (9 significant digits for float32 input, shortest round-trip for float64).
``.dcd``
    CHARMM/NAMD DCD, little-endian, float32 coordinates, optional unit cell block per frame. Frame times
    must be uniform ``t_i = t_0 + i * dt``; ``ISTART``/``NSAVC``/``DELTA`` are chosen so that MDAnalysis
    reports ``u.trajectory.dt == dt`` and ``ts.time == t_i`` (its reader uses
    ``dt = DELTA * NSAVC`` and ``time = (frame + ISTART / NSAVC) * dt``), exact up to the float32
    precision of ``DELTA`` (relative ~1e-7). ``t_0 / dt`` must be a fraction with denominator <= 1e5
    and numerator < 2**31 (else a warning, and the nearest representable start is stored).
"""

from __future__ import annotations

import math
import os
import re
import struct
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..data.atoms import AtomTopology

__all__ = [
    "AKMA_PS",
    "DCDWriter",
    "ExtXYZWriter",
    "PDBWriter",
    "TrajectoryWriter",
    "open_writer",
    "partial_path",
]

#: One AKMA time unit (CHARMM's internal time unit, 4.888821e-14 s) in picoseconds.
AKMA_PS = 0.04888821

_INT32_MAX = 2**31 - 1
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@runtime_checkable
class TrajectoryWriter(Protocol):
    """What every writer returned by :func:`open_writer` provides."""

    def write(
        self,
        positions: np.ndarray,
        *,
        time_ps: float | None = None,
        velocities: np.ndarray | None = None,
        **per_atom: Any,
    ) -> None:
        """Append one frame (``positions`` is ``[N, 3]``) and flush it to disk."""
        ...

    def close(self) -> None:
        """Finalise the file and atomically move it onto the target path (idempotent)."""
        ...


# ---------------------------------------------------------------------------------------------- helpers
def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where a writer for ``path`` streams its frames until close: ``dir/OUT.partial.EXT``."""
    path = Path(path)
    if path.suffix:
        return path.with_name(f"{path.stem}.partial{path.suffix}")
    return path.with_name(f"{path.name}.partial")


def _to_numpy(x: Any) -> np.ndarray:
    """Array from NumPy input or a (possibly GPU, possibly grad-tracking) tensor, without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_topology(topology: Any) -> AtomTopology:
    if isinstance(topology, int | np.integer):
        return AtomTopology.generic(int(topology))
    if not isinstance(topology, AtomTopology):
        raise TypeError(f"topology must be an AtomTopology or an int, got {type(topology).__name__}")
    return topology


def _cos_deg(angle: float) -> float:
    """cos of an angle in degrees, exactly 0 for 90 degrees."""
    return 0.0 if abs(angle - 90.0) < 1e-12 else math.cos(math.radians(angle))


def _box_params_and_matrix(box: Any) -> tuple[np.ndarray, np.ndarray]:
    """Normalise a box to ``(a, b, c, alpha, beta, gamma)`` and to a 3x3 matrix of row vectors.

    Accepts ``[3]`` (orthorhombic edge lengths), ``[6]`` (MDAnalysis ``dimensions``: lengths, angles in
    degrees) or ``[3, 3]`` (cell vectors as rows).
    """
    arr = _to_numpy(box).astype(np.float64)
    if arr.shape == (3,):
        params = np.concatenate([arr, [90.0, 90.0, 90.0]])
        matrix = np.diag(arr)
    elif arr.shape == (6,):
        params = arr.copy()
        a, b, c = arr[:3]
        cos_a, cos_b, cos_g = (_cos_deg(v) for v in arr[3:])
        sin_g = math.sqrt(max(1.0 - cos_g * cos_g, 0.0))
        cx = c * cos_b
        cy = c * (cos_a - cos_b * cos_g) / sin_g
        cz = math.sqrt(max(c * c - cx * cx - cy * cy, 0.0))
        matrix = np.array([[a, 0.0, 0.0], [b * cos_g, b * sin_g, 0.0], [cx, cy, cz]])
    elif arr.shape == (3, 3):
        matrix = arr.copy()
        lengths = np.linalg.norm(arr, axis=1)
        if np.any(lengths <= 0):
            raise ValueError("box vectors must be non-zero")

        def angle(u: np.ndarray, v: np.ndarray) -> float:
            cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
            return math.degrees(math.acos(min(1.0, max(-1.0, cos))))

        params = np.array([*lengths, angle(arr[1], arr[2]), angle(arr[0], arr[2]), angle(arr[0], arr[1])])
    else:
        raise ValueError(f"box must have shape [3], [6] or [3, 3], got {arr.shape}")
    if not np.all(np.isfinite(params)) or np.any(params[:3] <= 0):
        raise ValueError(f"invalid box {arr.tolist()}")
    return params, matrix


_HY36_UPPER = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HY36_LOWER = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(value: int, digits: str, width: int) -> str:
    out = []
    for _ in range(width):
        value, rem = divmod(value, 36)
        out.append(digits[rem])
    return "".join(reversed(out))


def _hy36_encode(width: int, value: int) -> str:
    """Hybrid-36 encoding of a non-negative integer (decimal while it fits ``width`` digits)."""
    if value < 10**width:
        return f"{value:>{width}d}"
    value -= 10**width
    block = 26 * 36 ** (width - 1)
    if value < block:
        return _base36(value + 10 * 36 ** (width - 1), _HY36_UPPER, width)
    value -= block
    if value < block:
        return _base36(value + 10 * 36 ** (width - 1), _HY36_LOWER, width)
    raise ValueError(f"{value} too large for a hybrid-36 field of width {width}")


# ------------------------------------------------------------------------------------------ base writer
class _StreamingWriter:
    """Common machinery: partial file, atomic rename, frame bookkeeping, context manager."""

    format: str = ""
    _binary: bool = False
    #: whether a box, once present (or absent) on the first frame, must stay so (PDB, DCD)
    _box_presence_fixed: bool = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        topology: AtomTopology,
        *,
        box: Any = None,
        dt_ps: float | None = None,
        overwrite: bool = True,
    ) -> None:
        topology = _as_topology(topology)
        self.topology = topology
        self.n_atoms = topology.n_atoms
        self.path = Path(path)
        self.partial_path = partial_path(self.path)
        if not overwrite and self.path.exists():
            raise FileExistsError(f"{self.path} exists (pass overwrite=True to replace it on close)")
        if dt_ps is not None and not (math.isfinite(dt_ps) and dt_ps > 0):
            raise ValueError(f"dt_ps must be a positive number, got {dt_ps}")
        self.dt_ps = None if dt_ps is None else float(dt_ps)
        self._static_box = None if box is None else _box_params_and_matrix(box)
        self._last_box: tuple[np.ndarray, np.ndarray] | None = None
        self._has_box: bool | None = None
        self.n_frames = 0
        self.times_ps: list[float | None] = []
        self.closed = False
        self._warned: set[str] = set()
        if self._binary:
            self._fh = open(self.partial_path, "wb")  # closed in close()/abort()
        else:
            self._fh = open(self.partial_path, "w", encoding="ascii", newline="\n")
        try:
            self._begin()
            self._fh.flush()
        except BaseException:
            self.abort()
            raise

    # ---- hooks for subclasses
    def _begin(self) -> None:
        """Write anything that precedes the first frame."""

    def _write_frame(
        self,
        positions: np.ndarray,
        time_ps: float | None,
        velocities: np.ndarray | None,
        box: tuple[np.ndarray, np.ndarray] | None,
        per_atom: dict[str, np.ndarray],
    ) -> None:
        raise NotImplementedError

    def _finalise(self) -> None:
        """Write trailing records before the rename."""

    def _default_time(self, index: int) -> float | None:
        """Time of a frame written without ``time_ps``: ``dt_ps`` after the previous frame, if known."""
        if self.dt_ps is None:
            return None
        previous = self.times_ps[-1] if self.times_ps else None
        return index * self.dt_ps if previous is None else previous + self.dt_ps

    # ---- public API
    def write(
        self,
        positions: Any,
        *,
        time_ps: float | None = None,
        velocities: Any = None,
        box: Any = None,
        **per_atom: Any,
    ) -> None:
        """Append one frame and flush it.

        Parameters
        ----------
        positions:
            ``[N, 3]`` coordinates (NumPy array or tensor), in Angstrom or the dataset's length unit.
        time_ps:
            Frame time in ps. If omitted and the writer has ``dt_ps``: the previous frame's time plus
            ``dt_ps`` (``0`` for the first frame). DCD always needs times; it continues the current spacing
            (``dt_ps``, else the spacing so far, else 1 ps).
        velocities:
            Optional ``[N, 3]`` velocities (extended XYZ only; ignored with a warning elsewhere).
        box:
            Optional per-frame box (``[3]``, ``[6]`` or ``[3, 3]``), overriding the writer's box.
        **per_atom:
            Extra per-atom arrays ``[N]`` or ``[N, k]``: extended-XYZ columns (int -> ``I``, float ->
            ``R``, bool -> ``L``, str -> ``S``); for PDB, ``bfactors=``/``occupancies=`` or the array
            named by the writer's ``bfactors``/``occupancies`` option fill those columns.
        """
        if self.closed:
            raise ValueError(f"write to a closed writer ({self.path})")
        pos = _to_numpy(positions)
        if pos.shape != (self.n_atoms, 3):
            raise ValueError(f"positions must have shape ({self.n_atoms}, 3), got {pos.shape}")
        if not np.issubdtype(pos.dtype, np.floating):
            pos = pos.astype(np.float64)
        if not np.all(np.isfinite(pos)):
            bad = int(np.count_nonzero(~np.isfinite(pos).all(axis=1)))
            raise ValueError(f"frame {self.n_frames}: {bad} atoms have non-finite positions; not written")
        vel = None
        if velocities is not None:
            vel = _to_numpy(velocities)
            if vel.shape != (self.n_atoms, 3):
                raise ValueError(f"velocities must have shape ({self.n_atoms}, 3), got {vel.shape}")
            if not np.issubdtype(vel.dtype, np.floating):
                vel = vel.astype(np.float64)
        arrays: dict[str, np.ndarray] = {}
        for key, value in per_atom.items():
            if not _NAME_RE.match(key):
                raise ValueError(f"per-atom property names must be identifiers, got {key!r}")
            arr = _to_numpy(value)
            if arr.ndim not in (1, 2) or arr.shape[0] != self.n_atoms:
                raise ValueError(f"per-atom array {key!r} must have shape [N] or [N, k], got {arr.shape}")
            arrays[key] = arr
        if time_ps is None:
            time = self._default_time(self.n_frames)
        else:
            time = float(time_ps)
            if not math.isfinite(time):
                raise ValueError(f"time_ps must be finite, got {time_ps}")
        frame_box = self._resolve_box(box)
        self._write_frame(pos, time, vel, frame_box, arrays)
        self._fh.flush()
        self.n_frames += 1
        self.times_ps.append(time)
        if frame_box is not None:
            self._last_box = frame_box
        if self._has_box is None:
            self._has_box = frame_box is not None

    def close(self) -> None:
        """Finalise, fsync and atomically rename the partial file onto the target. Idempotent.

        With no frames written, the partial file is removed and the target is left alone.
        """
        if self.closed:
            return
        self.closed = True
        if self.n_frames == 0:
            self._discard()
            warnings.warn(f"no frames were written; {self.path} left unchanged", RuntimeWarning, stacklevel=2)
            return
        try:
            self._finalise()
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()
        os.replace(self.partial_path, self.path)

    def abort(self) -> None:
        """Stop without touching the target: close and delete the partial file."""
        self.closed = True
        self._discard()

    def _discard(self) -> None:
        try:
            self._fh.close()
        finally:
            try:
                os.remove(self.partial_path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> _StreamingWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        name = type(self).__name__
        return f"{name}({str(self.path)!r}, n_atoms={self.n_atoms}, n_frames={self.n_frames}, {state})"

    # ---- helpers
    def _resolve_box(self, box: Any) -> tuple[np.ndarray, np.ndarray] | None:
        if box is not None:
            resolved = _box_params_and_matrix(box)
        elif self._last_box is not None:
            resolved = self._last_box
        else:
            resolved = self._static_box
        if self._box_presence_fixed and self._has_box is False and resolved is not None:
            raise ValueError(
                f"{self.format.upper()}: a box cannot appear after frames without one; "
                "give the box from the first frame (open_writer(..., box=...))"
            )
        return resolved

    def _warn_ignored(self, what: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"{self.format.upper()} cannot store {what}; ignored", UserWarning, stacklevel=4)


# ------------------------------------------------------------------------------------------------- PDB
def _pdb_atom_name(name: str, element: str) -> str:
    """Place an atom name in columns 13-16 following the PDB alignment rule."""
    if len(name) >= 4:
        return name[:4]
    if len(element.strip()) == 2 or name[:1].isdigit():
        return f"{name:<4s}"
    return f" {name:<3s}"


class PDBWriter(_StreamingWriter):
    """Multi-MODEL PDB writer (one MODEL per frame); see the module docstring."""

    format = "pdb"
    _box_presence_fixed = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        topology: AtomTopology,
        *,
        bfactors: Any = None,
        occupancies: Any = None,
        conect: bool = False,
        box: Any = None,
        dt_ps: float | None = None,
        overwrite: bool = True,
        remarks: str | list[str] | None = None,
    ) -> None:
        topology = _as_topology(topology)
        n = topology.n_atoms
        self._bfactor_source = self._column_source(bfactors, topology, n, "bfactors", default=0.0)
        self._occupancy_source = self._column_source(occupancies, topology, n, "occupancies", default=1.0)
        if conect:
            if topology.bonds is None:
                raise ValueError("conect=True needs topology.bonds")
            if n > 99999:
                raise ValueError("CONECT records need atom serials <= 99999 (readers reject hybrid-36 there)")
        self._conect = bool(conect)
        self._remarks = [remarks] if isinstance(remarks, str) else list(remarks or [])
        self._prefixes, self._suffixes = self._static_columns(topology)
        super().__init__(path, topology, box=box, dt_ps=dt_ps, overwrite=overwrite)

    @staticmethod
    def _column_source(value: Any, topology: AtomTopology, n: int, what: str, default: float) -> Any:
        if value is None:
            return np.full(n, default)
        if isinstance(value, str):
            if not _NAME_RE.match(value):
                raise ValueError(f"{what}={value!r} must name a topology label or a per-atom array")
            return value
        arr = _to_numpy(value).astype(np.float64)
        if arr.ndim == 0:
            arr = np.full(n, float(arr))
        if arr.shape != (n,):
            raise ValueError(f"{what} must have shape ({n},), got {arr.shape}")
        PDBWriter._check_column(arr, what)
        return arr

    @staticmethod
    def _check_column(arr: np.ndarray, what: str) -> None:
        if not np.all(np.isfinite(arr)) or arr.min() <= -99.995 or arr.max() >= 999.995:
            raise ValueError(f"PDB {what} must be finite and fit %6.2f, i.e. lie in (-99.995, 999.995)")

    def _static_columns(self, top: AtomTopology) -> tuple[list[str], list[str]]:
        truncated = set()
        prefixes, suffixes = [], []
        records = top.record_types if top.record_types is not None else ["ATOM"] * top.n_atoms
        for i, (name, element, resname, resid, chain, rec) in enumerate(
            zip(top.names, top.elements, top.resnames, top.resids, top.chainids, records, strict=True)
        ):
            element = element.strip().upper()
            if len(element) > 2:
                truncated.add("elements (2 characters)")
            if len(name) > 4:
                truncated.add("atom names (4 characters)")
            if len(resname) > 4:
                truncated.add("residue names (4 characters)")
            if len(chain) > 4:
                truncated.add("chain/segment IDs (4 characters)")
            resname = resname[:4]
            resname_field = resname if len(resname) == 4 else f"{resname:>3s} "
            resid = int(resid)
            if not -999 <= resid <= 9999:
                resid %= 10000
            prefixes.append(
                f"{rec:<6s}{_hy36_encode(5, i + 1)} {_pdb_atom_name(name, element[:2])} "
                f"{resname_field}{chain[:1] or ' '}{resid:>4d}    "
            )
            suffixes.append(f"      {chain[:4]:<4s}{element[:2]:>2s}  ")
        if truncated:
            warnings.warn("PDB: truncating " + ", ".join(sorted(truncated)), UserWarning, stacklevel=3)
        if not all(p.isascii() for p in prefixes) or not all(s.isascii() for s in suffixes):
            raise ValueError("PDB topology strings must be ASCII")
        return prefixes, suffixes

    def _begin(self) -> None:
        self._fh.write(f"REMARK     {'GENERATED BY MDSURROGATE':<69s}\n")
        for remark in self._remarks:
            for line in str(remark).splitlines() or [""]:
                if not line.isascii():
                    raise ValueError("PDB remarks must be ASCII")
                self._fh.write(f"REMARK     {line[:69]}\n")

    def _column(self, source: Any, per_atom: dict[str, np.ndarray], key: str, what: str) -> np.ndarray:
        if key in per_atom:
            arr = per_atom[key].astype(np.float64)
        elif isinstance(source, str):
            if source in per_atom:
                arr = per_atom[source].astype(np.float64)
            elif source in self.topology.labels:
                arr = self.topology.labels[source].astype(np.float64)
            else:
                raise ValueError(f"{what}={source!r}: no such per-atom array in write() or topology label")
        else:
            return source
        if arr.shape != (self.n_atoms,):
            raise ValueError(f"{what} must have shape ({self.n_atoms},), got {arr.shape}")
        self._check_column(arr, what)
        return arr

    def _write_frame(self, positions, time_ps, velocities, box, per_atom) -> None:
        lo, hi = positions.min(), positions.max()
        if lo <= -999.9995 or hi >= 9999.9995:
            raise ValueError(
                f"frame {self.n_frames}: coordinates in [{lo:.3f}, {hi:.3f}] do not fit the PDB "
                "%8.3f columns (-999.999 .. 9999.999); use .xyz or .dcd"
            )
        occupancies = self._column(self._occupancy_source, per_atom, "occupancies", "occupancies")
        bfactors = self._column(self._bfactor_source, per_atom, "bfactors", "bfactors")
        used = {"bfactors", "occupancies"}
        used.update(s for s in (self._bfactor_source, self._occupancy_source) if isinstance(s, str))
        for key in per_atom:
            if key not in used:
                self._warn_ignored(f"per-atom array {key!r}")
        if velocities is not None:
            self._warn_ignored("velocities")
        lines = []
        if box is not None:
            a, b, c, alpha, beta, gamma = box[0]
            lines.append(f"CRYST1{a:9.3f}{b:9.3f}{c:9.3f}{alpha:7.2f}{beta:7.2f}{gamma:7.2f} P 1           1")
        lines.append(f"MODEL     {(self.n_frames + 1) % 10000:>4d}")
        if time_ps is not None:
            lines.append(f"REMARK     FRAME {self.n_frames} TIME_PS {time_ps!r}")
        lines.extend(
            f"{pre}{x:8.3f}{y:8.3f}{z:8.3f}{o:6.2f}{bf:6.2f}{suf}"
            for pre, suf, (x, y, z), o, bf in zip(
                self._prefixes,
                self._suffixes,
                positions.tolist(),
                occupancies.tolist(),
                bfactors.tolist(),
                strict=True,
            )
        )
        lines.append("ENDMDL\n")
        self._fh.write("\n".join(lines))

    def _finalise(self) -> None:
        if self._conect:
            partners: dict[int, set[int]] = {}
            for i, j in self.topology.bonds.tolist():
                partners.setdefault(i, set()).add(j)
                partners.setdefault(j, set()).add(i)
            out = []
            for i in sorted(partners):
                others = sorted(partners[i])
                for k in range(0, len(others), 4):
                    out.append(f"CONECT{i + 1:5d}" + "".join(f"{j + 1:5d}" for j in others[k : k + 4]))
            if out:
                self._fh.write("\n".join(out) + "\n")
        self._fh.write("END\n")


# ---------------------------------------------------------------------------------------- extended XYZ
def _float_strings(arr: np.ndarray) -> np.ndarray:
    """Exact decimal strings for a float array: 9 significant digits for float32, shortest repr else."""
    if arr.dtype == np.float32 or arr.dtype == np.float16:
        flat = [f"{v:.9g}" for v in arr.astype(np.float32).ravel().tolist()]
    else:
        flat = [repr(v) for v in arr.astype(np.float64).ravel().tolist()]
    return np.array(flat, dtype=object).reshape(arr.shape)


class ExtXYZWriter(_StreamingWriter):
    """Extended-XYZ writer (one block per frame) readable by ``ase.io.read(path, index=":")``."""

    format = "xyz"

    def __init__(
        self,
        path: str | os.PathLike[str],
        topology: AtomTopology,
        *,
        box: Any = None,
        dt_ps: float | None = None,
        overwrite: bool = True,
    ) -> None:
        topology = _as_topology(topology)
        species = [e.strip() or "X" for e in topology.elements]
        bad = sorted({s for s in species if not s.isascii() or not s.isalpha()})
        if bad:
            raise ValueError(f"XYZ species must be element symbols, got {bad[:5]}")
        width = max((len(s) for s in species), default=1)
        self._species = [f"{s:<{width}s}" for s in species]
        super().__init__(path, topology, box=box, dt_ps=dt_ps, overwrite=overwrite)

    @staticmethod
    def _column(name: str, arr: np.ndarray) -> tuple[str, np.ndarray]:
        """Properties entry and ``[N, k]`` string array for one per-atom array."""
        arr2 = arr.reshape(arr.shape[0], -1)
        k = arr2.shape[1]
        if arr.dtype == np.bool_:
            kind, text = "L", np.where(arr2, "T", "F").astype(object)
        elif np.issubdtype(arr.dtype, np.integer):
            kind = "I"
            text = np.array([str(v) for v in arr2.ravel().tolist()], dtype=object).reshape(arr2.shape)
        elif np.issubdtype(arr.dtype, np.floating):
            kind, text = "R", _float_strings(arr2)
        elif arr.dtype.kind in "USO":
            kind = "S"
            text = np.array([str(v) for v in arr2.ravel().tolist()], dtype=object).reshape(arr2.shape)
            if any((not s) or any(ch.isspace() for ch in s) or not s.isascii() for s in text.ravel()):
                raise ValueError(f"string property {name!r} must be non-empty ASCII without whitespace")
        else:
            raise ValueError(f"per-atom array {name!r} has unsupported dtype {arr.dtype}")
        return f"{name}:{kind}:{k}", text

    def _write_frame(self, positions, time_ps, velocities, box, per_atom) -> None:
        columns: list[tuple[str, np.ndarray]] = [("pos:R:3", _float_strings(positions))]
        if velocities is not None:
            if "vel" in per_atom:
                raise ValueError("pass velocities either as velocities= or as vel=, not both")
            columns.append(("vel:R:3", _float_strings(velocities)))
        extra: dict[str, np.ndarray] = dict(self.topology.labels)
        extra.update(per_atom)
        for name in ("species", "pos", "Z"):
            if name in extra:
                raise ValueError(f"per-atom property name {name!r} is reserved")
        for name, arr in extra.items():
            columns.append(self._column(name, arr))
        props = "species:S:1:" + ":".join(spec for spec, _ in columns)
        header = []
        if box is not None:
            lattice = " ".join(repr(float(v)) for v in box[1].ravel())
            header.append(f'Lattice="{lattice}"')
        header.append(f"Properties={props}")
        if time_ps is not None:
            header.append(f"time={float(time_ps)!r}")
        header.append(f"frame={self.n_frames}")
        if box is not None:
            header.append('pbc="T T T"')
        species = np.array(self._species, dtype=object)[:, None]
        table = np.concatenate([species] + [text for _, text in columns], axis=1)
        body = "\n".join(" ".join(row) for row in table.tolist())
        self._fh.write(f"{self.n_atoms}\n{' '.join(header)}\n{body}\n")


# ------------------------------------------------------------------------------------------------- DCD
class DCDWriter(_StreamingWriter):
    """CHARMM/NAMD DCD writer (little-endian, float32); see the module docstring."""

    format = "dcd"
    _binary = True
    _box_presence_fixed = True

    # byte offsets in the file of the header fields patched after every frame
    _NSET_POS = 8
    _ISTART_POS = 12
    _NSTEP_POS = 20
    _DELTA_POS = 44

    def __init__(
        self,
        path: str | os.PathLike[str],
        topology: AtomTopology,
        *,
        box: Any = None,
        dt_ps: float | None = None,
        overwrite: bool = True,
        remarks: str | list[str] | None = None,
    ) -> None:
        self._remarks = [remarks] if isinstance(remarks, str) else list(remarks or [])
        self._header = (0, 1, 1.0 / AKMA_PS)  # istart, nsavc, delta (AKMA)
        super().__init__(path, topology, box=box, dt_ps=dt_ps, overwrite=overwrite)

    def _default_time(self, index: int) -> float:
        # DCD always carries times: continue the current spacing (dt_ps, else the spacing so far,
        # else MDAnalysis' default of 1 ps)
        times = self.times_ps
        if self.dt_ps is not None:
            dt = self.dt_ps
        elif len(times) >= 2:
            dt = (times[-1] - times[0]) / (len(times) - 1)
        else:
            dt = 1.0
        return index * dt if not times else times[-1] + dt

    def _timing(self, times: list[float]) -> tuple[int, int, float]:
        """``(istart, nsavc, delta_akma)`` representing the uniform frame times ``times``."""
        t0 = times[0]
        if len(times) == 1:
            dt = self.dt_ps if self.dt_ps is not None else 1.0
        else:
            dt = (times[-1] - t0) / (len(times) - 1)
            if not dt > 0:
                raise ValueError(f"DCD frame times must increase, got {times[0]} then {times[1]}")
            k = len(times) - 1
            expected = t0 + k * ((times[-2] - t0) / (k - 1) if k > 1 else dt)
            if abs(times[-1] - expected) > 1e-5 * dt + 1e-12 * abs(times[-1]):
                raise ValueError(
                    f"DCD needs uniform frame times t0 + i*dt; frame {k} is at {times[-1]} ps, "
                    f"expected {expected} ps"
                )
        # t0 = (ISTART / NSAVC) * dt: take the simplest fraction that matches t0 / dt up to float noise
        ratio = t0 / dt
        tol = 1e-6 + 1e-6 * abs(ratio)  # the DCD header keeps float32 times anyway
        frac = None
        for max_den in (1, 10, 100, 1000, 100_000):
            candidate = Fraction(ratio).limit_denominator(max_den)
            if abs(candidate.numerator) > _INT32_MAX:
                break
            frac = candidate
            if abs(float(frac) - ratio) <= tol:
                break
        if frac is None or abs(float(frac) - ratio) > tol:
            frac = frac if frac is not None else Fraction(0)
            if "start time" not in self._warned:
                self._warned.add("start time")
                stored = float(frac) * dt
                msg = f"DCD cannot store start time {t0} ps exactly with dt {dt} ps; stored {stored} ps"
                warnings.warn(msg, UserWarning, stacklevel=4)
        nsavc = frac.denominator
        return frac.numerator, nsavc, dt / nsavc / AKMA_PS

    def _write_header(self, has_box: bool) -> None:
        istart, nsavc, delta = self._header
        icntrl = [0] * 20
        icntrl[1] = istart
        icntrl[2] = nsavc
        icntrl[10] = 1 if has_box else 0  # CHARMM unit-cell ("extra") block per frame
        icntrl[19] = 24  # CHARMM version: marks the CHARMM flavour (float32 DELTA, extra block flag)
        head = bytearray(struct.pack("<i4s20i", 84, b"CORD", *icntrl) + struct.pack("<i", 84))
        struct.pack_into("<f", head, self._DELTA_POS, delta)
        titles = ["CREATED BY MDSURROGATE (time unit AKMA, length unit Angstrom)"]
        titles += [line for remark in self._remarks for line in str(remark).splitlines()]
        titles = [t.encode("ascii", "replace")[:80].ljust(80) for t in titles]
        title_block = struct.pack("<ii", 4 + 80 * len(titles), len(titles)) + b"".join(titles)
        title_block += struct.pack("<i", 4 + 80 * len(titles))
        self._fh.write(bytes(head) + title_block + struct.pack("<iii", 4, self.n_atoms, 4))

    def _write_frame(self, positions, time_ps, velocities, box, per_atom) -> None:
        if velocities is not None:
            self._warn_ignored("velocities")
        for key in per_atom:
            self._warn_ignored(f"per-atom array {key!r}")
        xyz = positions.astype("<f4")
        if not np.all(np.isfinite(xyz)):
            raise ValueError(f"frame {self.n_frames}: positions overflow float32; frame not written")
        header = self._timing([*self.times_ps, time_ps])  # validates before anything is written
        if self.n_frames == 0:
            self._header = header
            self._write_header(box is not None)
        chunks = []
        if box is not None:
            a, b, c, alpha, beta, gamma = box[0]
            # CHARMM/NAMD order [A, cos(gamma), B, cos(beta), cos(alpha), C]
            cell = np.array([a, _cos_deg(gamma), b, _cos_deg(beta), _cos_deg(alpha), c], dtype="<f8")
            chunks.append(struct.pack("<i", 48) + cell.tobytes() + struct.pack("<i", 48))
        marker = struct.pack("<i", 4 * self.n_atoms)
        for axis in range(3):
            chunks.append(marker + np.ascontiguousarray(xyz[:, axis]).tobytes() + marker)
        self._fh.write(b"".join(chunks))
        self._header = header
        self._patch_header(self.n_frames + 1)

    def _patch_header(self, n_frames: int) -> None:
        istart, nsavc, delta = self._header
        nstep = min(istart + (n_frames - 1) * nsavc, _INT32_MAX)
        self._fh.flush()
        end = self._fh.tell()
        self._fh.seek(self._NSET_POS)
        self._fh.write(struct.pack("<iii", n_frames, istart, nsavc))
        self._fh.seek(self._NSTEP_POS)
        self._fh.write(struct.pack("<i", nstep))
        self._fh.seek(self._DELTA_POS)
        self._fh.write(struct.pack("<f", delta))
        self._fh.seek(end)


# --------------------------------------------------------------------------------------------- factory
_FORMATS: dict[str, type[_StreamingWriter]] = {
    "pdb": PDBWriter,
    "ent": PDBWriter,
    "xyz": ExtXYZWriter,
    "extxyz": ExtXYZWriter,
    "dcd": DCDWriter,
}


def open_writer(
    path: str | os.PathLike[str],
    topology: AtomTopology | int,
    *,
    format: str | None = None,
    bfactors: Any = None,
    occupancies: Any = None,
    conect: bool = False,
    box: Any = None,
    dt_ps: float | None = None,
    overwrite: bool = True,
    remarks: str | list[str] | None = None,
) -> TrajectoryWriter:
    """Open a streaming trajectory writer; the format comes from ``format`` or the file extension.

    Parameters
    ----------
    path:
        Target file. Frames stream to :func:`partial_path` (``OUT.partial.EXT``) until :meth:`close`.
    topology:
        An :class:`~mdsurrogate.data.atoms.AtomTopology`, or an int ``n`` for ``n`` generic particles.
    format:
        ``"pdb"``, ``"xyz"`` (extended XYZ; ``"extxyz"`` too) or ``"dcd"``; default from the extension.
    bfactors, occupancies:
        PDB only: static per-atom arrays ``[N]``, or the name of a topology label / per-atom array
        passed to :meth:`write` (e.g. ``bfactors="cluster"``) to fill the B-factor/occupancy columns.
        Defaults: B-factor 0.0, occupancy 1.0. Ignored (with a warning) by other formats.
    conect:
        PDB only: write ``CONECT`` records for ``topology.bonds`` on close.
    box:
        Static box (``[3]`` lengths, ``[6]`` lengths+angles, or ``[3, 3]`` row vectors) written as PDB
        ``CRYST1``, XYZ ``Lattice`` or the DCD unit cell. ``write(..., box=)`` overrides it per frame.
    dt_ps:
        Default frame spacing: frames written without ``time_ps`` get ``index * dt_ps``. For DCD it is
        also the time step recorded for a single-frame file (default 1 ps).
    overwrite:
        If False, refuse (``FileExistsError``) when ``path`` exists. Either way it is only replaced on close.
    remarks:
        Free text for PDB ``REMARK`` lines / DCD title lines.

    Returns
    -------
    A :class:`TrajectoryWriter` (also a context manager; ``abort()`` discards the partial file).
    """
    fmt = (format or Path(path).suffix.lstrip(".")).lower()
    if fmt not in _FORMATS:
        raise ValueError(f"unknown trajectory format {fmt!r} for {path}; choose from {sorted(_FORMATS)}")
    topology = _as_topology(topology)
    cls = _FORMATS[fmt]
    if cls is PDBWriter:
        return PDBWriter(
            path,
            topology,
            bfactors=bfactors,
            occupancies=occupancies,
            conect=conect,
            box=box,
            dt_ps=dt_ps,
            overwrite=overwrite,
            remarks=remarks,
        )
    pdb_only = [k for k, v in (("bfactors", bfactors), ("occupancies", occupancies)) if v is not None]
    pdb_only += ["conect"] if conect else []
    if pdb_only:
        msg = f"{fmt.upper()}: {', '.join(pdb_only)} only apply to PDB; ignored"
        warnings.warn(msg, UserWarning, stacklevel=2)
    if cls is DCDWriter:
        return DCDWriter(path, topology, box=box, dt_ps=dt_ps, overwrite=overwrite, remarks=remarks)
    return cls(path, topology, box=box, dt_ps=dt_ps, overwrite=overwrite)
