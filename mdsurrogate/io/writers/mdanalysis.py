"""Formats written by MDAnalysis' own writers (XTC, TRR, Amber NetCDF, and any other multi-frame format it writes),
behind the same atomic partial → rename path and capability declarations as the native writers.

The atoms become an in-memory MDAnalysis ``Universe`` (:func:`~mdsurrogate.data.atoms.mdanalysis_topology`); each
frame sets its positions (Å), velocities (Å/ps), box and time (ps) and is handed to ``MDAnalysis.Writer``, which
converts to the format's native units (nm for XTC/TRR). The MDAnalysis writer is created at the first frame, when
it is known whether the frames carry velocities and a box (NetCDF fixes both in its header).

Unlike the native writers these formats are not guaranteed readable before :meth:`close` (MDAnalysis buffers);
the target is untouched until then either way. XTC is lossy: coordinates are rounded to 0.001 nm (0.01 Å).
MDAnalysis is imported when a writer is opened, never at import time.
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any, ClassVar

import numpy as np

from ...data.atoms import AtomTopology, mdanalysis_topology
from .base import TrajectoryWriter

__all__ = ["MDAnalysisWriter", "NCDFWriter", "TRRWriter", "XTCWriter", "mdanalysis_formats",
           "mdanalysis_writer_class"]

# MDAnalysis multi-frame formats not offered: no file format of their own, or not writable from our atoms
_NOT_FILES = {"NULL", "CHEMFILES", "MOL2", "LAMMPS"}  # MOL2 needs force-field types; LAMMPS is DCD


class MDAnalysisWriter(TrajectoryWriter):
    """A trajectory written by ``MDAnalysis.Writer(format=mda_format)``. Subclasses set the capabilities."""

    mda_format: ClassVar[str] = ""
    _box_presence_fixed: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str], topology: AtomTopology, *, box: Any = None,
                 dt_ps: float | None = None, overwrite: bool = False) -> None:
        try:
            import MDAnalysis  # noqa: F401
        except ImportError:
            raise ImportError(f"writing {self.format} needs MDAnalysis (pip install MDAnalysis)") from None
        self._writer = None
        self._universe = None
        self._with_velocities: bool | None = None
        super().__init__(path, topology, box=box, dt_ps=dt_ps, overwrite=overwrite)

    def _default_time(self, index: int) -> float:
        return self._continued_time(index)  # these formats always carry times

    def _start(self, velocities: bool, box: np.ndarray | None) -> None:
        """Build the in-memory Universe and the MDAnalysis writer for the partial file."""
        import MDAnalysis as mda
        from MDAnalysis.coordinates.memory import MemoryReader

        n = self.n_atoms
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. mass guessing notes
            u = mda.Universe(mdanalysis_topology(self.topology))
            u.load_new(np.zeros((1, n, 3), np.float32), format=MemoryReader,
                       velocities=np.zeros((1, n, 3), np.float32) if velocities else None,
                       dimensions=box)
        kwargs: dict[str, Any] = {}
        writer_cls = mda.coordinates.core.get_writer_for(str(self.partial_path), format=self.mda_format)
        if "velocities" in inspect.signature(writer_cls.__init__).parameters:
            kwargs["velocities"] = velocities
        try:
            self._writer = mda.Writer(str(self.partial_path), n_atoms=n, format=self.mda_format, **kwargs)
        except (ImportError, RuntimeError) as exc:  # e.g. H5MD without h5py
            raise ValueError(f"MDAnalysis cannot write {self.format} here: {exc}") from None
        self._universe = u
        self._with_velocities = velocities

    def _write_frame(self, positions, time_ps, velocities, box, per_atom) -> None:
        if self._writer is None:
            self._start(velocities is not None, None if box is None else box[0])
        elif (velocities is not None) != self._with_velocities:
            if self._with_velocities:
                raise ValueError(f"{self.format}: frame {self.n_frames} has no velocities but the first frame had "
                                 "them; give velocities for every frame")
            self._warn_ignored("velocities that the first frame did not have")
            velocities = None
        ts = self._universe.trajectory.ts
        ts.positions = np.asarray(positions, dtype=np.float32)
        if velocities is not None:
            ts.velocities = np.asarray(velocities, dtype=np.float32)
        ts.dimensions = None if box is None else box[0]
        ts.frame = self.n_frames
        ts.time = float(time_ps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._writer.write(self._universe.atoms)

    def _finish(self) -> None:
        try:
            self._writer.close()
        finally:
            self._writer = None
        with open(self.partial_path, "rb+") as fh:  # make the content durable before the rename
            os.fsync(fh.fileno())

    def _close_quietly(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the partial file is deleted anyway
                pass
            self._writer = None


class XTCWriter(MDAnalysisWriter):
    """GROMACS XTC (compressed positions, 0.001 nm precision), box and time per frame; no velocities."""

    format = "XTC"
    mda_format = "XTC"
    extensions = ("xtc",)
    velocities = False
    times = True
    box = True


class TRRWriter(MDAnalysisWriter):
    """GROMACS TRR (full-precision positions and velocities), box and time per frame."""

    format = "TRR"
    mda_format = "TRR"
    extensions = ("trr",)
    velocities = True
    times = True
    box = True


class NCDFWriter(MDAnalysisWriter):
    """Amber NetCDF trajectory (positions, velocities, box, time), readable by cpptraj, VMD and MDAnalysis."""

    format = "NCDF"
    mda_format = "NCDF"
    extensions = ("ncdf", "nc")
    velocities = True
    times = True
    box = True


def _missing_packages(writer_cls) -> list[str]:
    """Optional packages an MDAnalysis writer's module says are missing (its ``HAS_<PACKAGE> = False`` flags, e.g.
    ``HAS_H5PY`` of the H5MD writer), lower case."""
    import sys

    module = sys.modules.get(writer_cls.__module__)
    return sorted(k[4:].lower() for k, v in vars(module or object).items() if k.startswith("HAS_") and v is False)


def mdanalysis_formats(*, unavailable: bool = False) -> dict[str, str]:
    """Extension (lower case) → MDAnalysis format of every multi-frame format MDAnalysis writes here ({} without
    MDAnalysis); formats whose writer needs a package that is not installed (H5MD without h5py) are left out, or,
    with ``unavailable=True``, are the only ones returned."""
    try:
        from MDAnalysis.coordinates.base import _MULTIFRAME_WRITERS
    except ImportError:
        return {}
    return {f.lower(): f for f, cls in _MULTIFRAME_WRITERS.items()
            if f not in _NOT_FILES and bool(_missing_packages(cls)) == unavailable}


def missing_packages(ext: str) -> list[str]:
    """The packages that writing ``ext`` (an MDAnalysis format's extension) needs and that are not installed."""
    fmt = mdanalysis_formats(unavailable=True).get(ext.lower())
    if fmt is None:
        return []
    from MDAnalysis.coordinates.base import _MULTIFRAME_WRITERS

    return _missing_packages(_MULTIFRAME_WRITERS[fmt])


def mdanalysis_writer_class(ext: str) -> type[MDAnalysisWriter] | None:
    """A writer class for another multi-frame format MDAnalysis writes (``ext`` without dot), or None.

    Its capabilities come from the MDAnalysis writer's declared ``units``: velocities where it has a velocity unit,
    times where it has a time unit; a box is always passed on (formats without one drop it).
    """
    fmt = mdanalysis_formats().get(ext.lower())
    if fmt is None:
        return None
    from MDAnalysis.coordinates.base import _MULTIFRAME_WRITERS

    units = getattr(_MULTIFRAME_WRITERS[fmt], "units", {}) or {}
    attrs = {"format": fmt, "mda_format": fmt, "extensions": (ext.lower(),),
             "velocities": units.get("velocity") is not None, "times": units.get("time") is not None, "box": True,
             "__doc__": f"{fmt} written by MDAnalysis' {_MULTIFRAME_WRITERS[fmt].__name__}."}
    return type(f"{fmt.capitalize()}Writer", (MDAnalysisWriter,), attrs)
