"""The machinery every trajectory writer shares: capabilities, validation, the atomic partial → rename path.

A writer class declares what its format can hold, as MDAnalysis' readers declare ``format`` and ``units``; callers
ask the class (``writer_class(path).velocities``), never the file extension:

=====================  ==========================================================================================
``format``             the format's name (``"PDB"``, ``"XYZ"``, ``"DCD"``, ``"XTC"`` …)
``extensions``         file extensions it is chosen for (lower case, no dot)
``velocities``         stores per-atom velocities (Å/ps)
``bonds``              stores bonds (PDB ``CONECT``), from ``AtomTopology.bonds`` with ``conect=True``
``per_atom_columns``   per-atom value columns a frame can carry: names of fixed slots (PDB: ``occupancies``,
                       ``bfactors``), ``("*",)`` for any name (extended XYZ), ``()`` for none
``times``              stores each frame's time (ps)
``box``                stores a periodic box per frame
=====================  ==========================================================================================

Guarantees of every writer
--------------------------
* **Atomic replacement.** Frames go to a partial file beside the target with a unique name
  (``OUT.partial-<8 hex>.EXT``, :func:`~mdsurrogate.io.atomic.reserve_partial`), so two writers aimed at one path
  never share a file. :meth:`TrajectoryWriter.close` finalises it and moves it onto the target in one step. The
  target's folder is created when missing. An existing target is refused when the writer is opened
  (:class:`~mdsurrogate.io.atomic.OutputExistsError`) unless ``overwrite=True``, and with ``overwrite=False`` it
  is not replaced either if it appears while the frames are written. If the process dies, the partial file
  stays (readable up to the last complete frame for the streaming formats).
* **Closing after an error finalises.** Used as a context manager, the writer is closed (the frames written so
  far moved into place) even when the body raises, e.g. a NaN guard stopping a rollout. A writer closed with no
  frames written removes its partial file and leaves the target alone; :meth:`TrajectoryWriter.abort` discards.
* **No garbage frames.** A frame that fails validation (wrong shape, non-finite coordinates, values a format
  cannot hold) raises ``ValueError`` before anything is written.
* Files get the permissions the umask allows (0644 under umask 022).

Units: positions in Å (or the dataset's length unit; nothing is converted), velocities in length/ps, times in ps.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...data.atoms import AtomTopology
from ...errors import UserError
from ..atomic import publish, refuse_existing, reserve_partial

__all__ = ["ANY_COLUMN", "FrameError", "StreamingWriter", "TrajectoryWriter", "as_topology", "box_params_and_matrix"]

class FrameError(UserError, ValueError):
    """A frame whose values the format cannot hold (non-finite numbers, coordinates beyond the format's columns or
    precision); nothing of it was written. ``frame`` is its index: the frames before it are complete."""

    def __init__(self, message: str, frame: int):
        super().__init__(message)
        self.frame = frame


#: ``per_atom_columns`` entry meaning "any name" (extended XYZ stores every per-atom array as a column).
ANY_COLUMN = "*"

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def to_numpy(x: Any) -> np.ndarray:
    """Array from NumPy input or a (possibly GPU, possibly grad-tracking) tensor, without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def as_topology(topology: Any) -> AtomTopology:
    """An :class:`AtomTopology` as given, or ``AtomTopology.generic(n)`` for an int ``n``."""
    if isinstance(topology, int | np.integer):
        return AtomTopology.generic(int(topology))
    if not isinstance(topology, AtomTopology):
        raise TypeError(f"topology must be an AtomTopology or an int, got {type(topology).__name__}")
    return topology


def cos_deg(angle: float) -> float:
    """cos of an angle in degrees, exactly 0 for 90 degrees."""
    return 0.0 if abs(angle - 90.0) < 1e-12 else math.cos(math.radians(angle))


def box_params_and_matrix(box: Any) -> tuple[np.ndarray, np.ndarray]:
    """Normalise a box to ``(a, b, c, alpha, beta, gamma)`` (Å, degrees) and to a 3x3 matrix of row vectors.

    Accepts ``[3]`` (orthorhombic edge lengths), ``[6]`` (MDAnalysis ``dimensions``: lengths, angles in
    degrees) or ``[3, 3]`` (cell vectors as rows).
    """
    arr = to_numpy(box).astype(np.float64)
    if arr.shape == (3,):
        params = np.concatenate([arr, [90.0, 90.0, 90.0]])
        matrix = np.diag(arr)
    elif arr.shape == (6,):
        params = arr.copy()
        a, b, c = arr[:3]
        cos_a, cos_b, cos_g = (cos_deg(v) for v in arr[3:])
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


class TrajectoryWriter:
    """Base class of the trajectory writers: capabilities (class attributes), validation, atomic publication.

    Args:
        path: target file (its folder is created when missing).
        topology: an :class:`~mdsurrogate.data.atoms.AtomTopology`, or an int ``n`` for ``n`` generic particles.
        box: static box (``[3]`` lengths, ``[6]`` lengths + angles, or ``[3, 3]`` row vectors), used for every
            frame unless :meth:`write` gives one; only where the class declares ``box``.
        dt_ps: frame spacing in ps for frames written without ``time_ps`` (see :meth:`_default_time`).
        overwrite: replace an existing ``path`` (on close); False refuses it with
            :class:`~mdsurrogate.io.atomic.OutputExistsError` right away.

    Subclasses set the capability attributes and implement :meth:`_open_partial`, :meth:`_write_frame`,
    :meth:`_finish` (complete and close the partial file) and :meth:`_close_quietly` (release it on abort);
    subclass-specific options are keyword-only ``__init__`` arguments (see :meth:`options`).
    """

    format: ClassVar[str] = ""
    extensions: ClassVar[tuple[str, ...]] = ()
    velocities: ClassVar[bool] = False
    bonds: ClassVar[bool] = False
    per_atom_columns: ClassVar[tuple[str, ...]] = ()
    times: ClassVar[bool] = False
    box: ClassVar[bool] = False
    #: whether a box, once present (or absent) on the first frame, must stay so
    _box_presence_fixed: ClassVar[bool] = False

    def __init__(self, path: str | os.PathLike[str], topology: AtomTopology | int, *, box: Any = None,
                 dt_ps: float | None = None, overwrite: bool = False) -> None:
        topology = as_topology(topology)
        self.topology = topology
        self.n_atoms = topology.n_atoms
        self.path = Path(path)
        self.overwrite = bool(overwrite)
        refuse_existing(self.path, self.overwrite)
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a folder; give a file name")
        if dt_ps is not None and not (math.isfinite(dt_ps) and dt_ps > 0):
            raise ValueError(f"dt_ps must be a positive number, got {dt_ps}")
        self.dt_ps = None if dt_ps is None else float(dt_ps)
        self._static_box = None if box is None else box_params_and_matrix(box)
        self._last_box: tuple[np.ndarray, np.ndarray] | None = None
        self._has_box: bool | None = None
        self.n_frames = 0
        self.times_ps: list[float | None] = []
        self.closed = False
        self._warned: set[str] = set()
        self.partial_path = reserve_partial(self.path)
        try:
            self._open_partial()
        except BaseException:
            self.abort()
            raise

    # ---- capabilities
    @classmethod
    def options(cls) -> frozenset[str]:
        """Names of the keyword options this class accepts (``open_writer`` passes only these)."""
        names = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.kind is inspect.Parameter.KEYWORD_ONLY:
                    names.add(p.name)
        return frozenset(names)

    @classmethod
    def stores_column(cls, name: str) -> bool:
        """Whether a per-atom array called ``name`` passed to :meth:`write` can end up in the file."""
        return ANY_COLUMN in cls.per_atom_columns or name in cls.per_atom_columns

    # ---- hooks for subclasses
    def _open_partial(self) -> None:
        """Open :attr:`partial_path` and write anything that precedes the first frame."""

    def _write_frame(self, positions: np.ndarray, time_ps: float | None, velocities: np.ndarray | None,
                     box: tuple[np.ndarray, np.ndarray] | None, per_atom: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Write trailing records, flush, fsync and close the partial file."""

    def _close_quietly(self) -> None:
        """Release the partial file without finishing it (abort)."""

    def _default_time(self, index: int) -> float | None:
        """Time of a frame written without ``time_ps``: ``dt_ps`` after the previous frame, if known."""
        if self.dt_ps is None:
            return None
        previous = self.times_ps[-1] if self.times_ps else None
        return index * self.dt_ps if previous is None else previous + self.dt_ps

    def _continued_time(self, index: int) -> float:
        """For formats that always carry times: continue the spacing (``dt_ps``, else the spacing so far, else
        MDAnalysis' default of 1 ps)."""
        times = self.times_ps
        if self.dt_ps is not None:
            dt = self.dt_ps
        elif len(times) >= 2:
            dt = (times[-1] - times[0]) / (len(times) - 1)
        else:
            dt = 1.0
        return index * dt if not times else times[-1] + dt

    # ---- public API
    def write(self, positions: Any, *, time_ps: float | None = None, velocities: Any = None, box: Any = None,
              **per_atom: Any) -> None:
        """Append one frame.

        Args:
            positions: ``[N, 3]`` coordinates (NumPy array or tensor), in Å or the dataset's length unit.
            time_ps: frame time in ps. If omitted: see :meth:`_default_time` (the previous frame's time plus
                ``dt_ps``, ``0`` for the first frame; formats that always store times continue the spacing).
            velocities: ``[N, 3]`` in length/ps, where the class declares ``velocities`` (else ignored with a
                warning; ask ``writer.velocities`` first).
            box: per-frame box (``[3]``, ``[6]`` or ``[3, 3]``), overriding the writer's box.
            **per_atom: per-atom arrays ``[N]`` or ``[N, k]`` for the class's ``per_atom_columns``.
        """
        if self.closed:
            raise ValueError(f"write to a closed writer ({self.path})")
        pos = to_numpy(positions)
        if pos.shape != (self.n_atoms, 3):
            raise ValueError(f"positions must have shape ({self.n_atoms}, 3), got {pos.shape}")
        if not np.issubdtype(pos.dtype, np.floating):
            pos = pos.astype(np.float64)
        if not np.all(np.isfinite(pos)):
            bad = int(np.count_nonzero(~np.isfinite(pos).all(axis=1)))
            raise FrameError(f"frame {self.n_frames}: {bad} atoms have non-finite positions; not written",
                             self.n_frames)
        vel = None
        if velocities is not None:
            vel = to_numpy(velocities)
            if vel.shape != (self.n_atoms, 3):
                raise ValueError(f"velocities must have shape ({self.n_atoms}, 3), got {vel.shape}")
            if not np.issubdtype(vel.dtype, np.floating):
                vel = vel.astype(np.float64)
            if not self.velocities:
                self._warn_ignored("velocities")
                vel = None
            elif not np.all(np.isfinite(vel)):
                raise FrameError(f"frame {self.n_frames}: non-finite velocities; not written", self.n_frames)
        arrays: dict[str, np.ndarray] = {}
        for key, value in per_atom.items():
            if not NAME_RE.match(key):
                raise ValueError(f"per-atom property names must be identifiers, got {key!r}")
            arr = to_numpy(value)
            if arr.ndim not in (1, 2) or arr.shape[0] != self.n_atoms:
                raise ValueError(f"per-atom array {key!r} must have shape [N] or [N, k], got {arr.shape}")
            if self.per_atom_columns:
                arrays[key] = arr
            else:
                self._warn_ignored(f"per-atom array {key!r}")
        if time_ps is None:
            time = self._default_time(self.n_frames)
        else:
            time = float(time_ps)
            if not math.isfinite(time):
                raise ValueError(f"time_ps must be finite, got {time_ps}")
        frame_box = self._resolve_box(box)
        self._write_frame(pos, time, vel, frame_box, arrays)
        self.n_frames += 1
        self.times_ps.append(time)
        if frame_box is not None:
            self._last_box = frame_box
        if self._has_box is None:
            self._has_box = frame_box is not None

    def close(self) -> None:
        """Finish the partial file and move it onto the target in one step. Idempotent.

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
            self._finish()
        except BaseException:
            self._discard()
            raise
        publish(self.partial_path, self.path, overwrite=self.overwrite)

    def abort(self) -> None:
        """Stop without touching the target: close and delete the partial file."""
        self.closed = True
        self._discard()

    def _discard(self) -> None:
        try:
            self._close_quietly()
        finally:
            try:
                os.remove(self.partial_path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> TrajectoryWriter:
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
            resolved = box_params_and_matrix(box)
        elif self._last_box is not None:
            resolved = self._last_box
        else:
            resolved = self._static_box
        if resolved is not None and not self.box:
            self._warn_ignored("a box")
            return None
        if self._box_presence_fixed and self._has_box is False and resolved is not None:
            raise ValueError(
                f"{self.format}: a box cannot appear after frames without one; "
                "give the box from the first frame (open_writer(..., box=...))"
            )
        return resolved

    def _warn_ignored(self, what: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"{self.format} cannot store {what}; ignored", UserWarning, stacklevel=4)


class StreamingWriter(TrajectoryWriter):
    """A writer that streams frames into its own file handle (PDB, XYZ, DCD): each frame is complete and flushed
    when :meth:`write` returns, so the partial file is a valid trajectory of the frames so far."""

    _binary: ClassVar[bool] = False

    def _open_partial(self) -> None:
        if self._binary:
            self._fh = open(self.partial_path, "wb")  # closed in _finish() / _close_quietly()
        else:
            self._fh = open(self.partial_path, "w", encoding="ascii", newline="\n")
        self._begin()
        self._fh.flush()

    def _begin(self) -> None:
        """Write anything that precedes the first frame."""

    def _trailer(self) -> None:
        """Write trailing records before the rename."""

    def write(self, positions: Any, **kwargs: Any) -> None:
        super().write(positions, **kwargs)
        self._fh.flush()

    def _finish(self) -> None:
        try:
            self._trailer()
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()

    def _close_quietly(self) -> None:
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()
