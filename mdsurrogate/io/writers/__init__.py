"""Streaming, crash-safe trajectory writers: one module per format, capabilities declared by each class.

Rollouts stream frames: open a writer, append frames one at a time, close it::

    from mdsurrogate.data.atoms import AtomTopology
    from mdsurrogate.io.writers import open_writer, writer_class

    top = AtomTopology.generic(n_particles, element="Ar")
    cls = writer_class("rollout.xtc")                  # ask the class what the format holds
    with open_writer("rollout.xtc", top, conect=True, bfactors="cluster") as w:   # options it lacks are dropped
        for t, x, v in rollout:                        # x: [N, 3] in Å, v: [N, 3] in Å/ps
            w.write(x, time_ps=t, velocities=v if cls.velocities else None)

=========  =====================  ==========  =====  ========================  =====  ===  ===========================
class      extensions             velocities  bonds  per_atom_columns          times  box  module
=========  =====================  ==========  =====  ========================  =====  ===  ===========================
PDB        pdb, ent               no          yes    occupancies, bfactors     yes    yes  :mod:`.pdb` (pure Python)
XYZ        xyz, extxyz            yes         no     any                       yes    yes  :mod:`.xyz` (pure Python)
DCD        dcd                    no          no     —                         yes    yes  :mod:`.dcd` (pure NumPy)
XTC        xtc                    no          no     —                         yes    yes  :mod:`.mdanalysis`
TRR        trr                    yes         no     —                         yes    yes  :mod:`.mdanalysis`
NCDF       ncdf, nc               yes         no     —                         yes    yes  :mod:`.mdanalysis`
=========  =====================  ==========  =====  ========================  =====  ===  ===========================

Any other multi-frame format MDAnalysis writes (e.g. ``.trz``; ``.h5md`` with h5py) gets a writer class made on
demand (:func:`~.mdanalysis.mdanalysis_writer_class`). The guarantees every writer gives (unique partial file,
atomic rename, refusal of an existing file unless ``overwrite=True``, folders created, umask permissions) are in
:mod:`.base`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...data.atoms import AtomTopology
from ...errors import UserError
from .base import ANY_COLUMN, FrameError, StreamingWriter, TrajectoryWriter, as_topology
from .dcd import AKMA_PS, DCDWriter
from .mdanalysis import (
    MDAnalysisWriter,
    NCDFWriter,
    TRRWriter,
    XTCWriter,
    mdanalysis_formats,
    mdanalysis_writer_class,
    missing_packages,
)
from .pdb import PDBWriter
from .xyz import ExtXYZWriter

__all__ = ["AKMA_PS", "ANY_COLUMN", "DCDWriter", "ExtXYZWriter", "FrameError", "MDAnalysisWriter", "NCDFWriter",
           "PDBWriter", "TRRWriter", "TrajectoryWriter", "UnknownFormatError", "WRITERS", "StreamingWriter",
           "XTCWriter", "open_writer", "supported_extensions", "writer_class"]


class UnknownFormatError(UserError, ValueError):
    """No writer for a file extension or format name."""


#: extension (lower case, no dot) → writer class, for the classes defined here; MDAnalysis' other multi-frame
#: formats are added on demand by :func:`writer_class`.
WRITERS: dict[str, type[TrajectoryWriter]] = {
    ext: cls for cls in (PDBWriter, ExtXYZWriter, DCDWriter, XTCWriter, TRRWriter, NCDFWriter) for ext in cls.extensions
}


def supported_extensions() -> list[str]:
    """Every extension a writer exists for (ours, then MDAnalysis' other multi-frame formats), lower case."""
    return sorted(set(WRITERS) | set(mdanalysis_formats()))


def writer_class(path: str | os.PathLike[str] | None = None, *, format: str | None = None) -> type[TrajectoryWriter]:
    """The writer class for ``path``'s extension, or for ``format`` (a format name such as ``"pdb"`` or ``"XTC"``,
    or an extension); :class:`UnknownFormatError` naming the supported extensions otherwise."""
    key = (format or (Path(path).suffix if path is not None else "")).lstrip(".").lower()
    if key in WRITERS:
        return WRITERS[key]
    by_name = {cls.format.lower(): cls for cls in WRITERS.values()}
    if key in by_name:
        return by_name[key]
    cls = mdanalysis_writer_class(key) if key else None
    missing = missing_packages(key) if cls is None and key else []
    if missing:
        raise UnknownFormatError(f"writing .{key} files needs the Python package(s) {', '.join(missing)}, which "
                                 f"are not installed (pip install {' '.join(missing)})")
    if cls is None:
        where = f" for {path}" if path is not None else ""
        shown = key or "(no extension)"
        raise UnknownFormatError(f"unknown trajectory format {shown!r}{where}; the extension must be one of "
                                 f"{', '.join('.' + e for e in supported_extensions())}")
    WRITERS[key] = cls
    return cls


def open_writer(path: str | os.PathLike[str], topology: AtomTopology | int, *, format: str | None = None,
                overwrite: bool = False, **options: Any) -> TrajectoryWriter:
    """Open a streaming trajectory writer for ``path``; the class comes from ``format`` or the file extension.

    Args:
        path: target file; frames go to a unique partial file beside it until :meth:`~.base.TrajectoryWriter.close`.
        topology: an :class:`~mdsurrogate.data.atoms.AtomTopology`, or an int ``n`` for ``n`` generic particles.
        format: a format name or extension (default: ``path``'s extension), see :func:`writer_class`.
        overwrite: replace an existing ``path`` on close; False (default) refuses it with
            :class:`~mdsurrogate.io.atomic.OutputExistsError`, before anything is written.
        **options: passed on where the class accepts them (``cls.options()``), dropped otherwise, so one call
            serves every format (an option no writer knows is a ``TypeError``). Common: ``box`` (static box:
            ``[3]``, ``[6]`` or ``[3, 3]``), ``dt_ps`` (frame spacing for frames written without ``time_ps``).
            PDB: ``bfactors`` / ``occupancies`` (a per-atom array, or the name of a topology label or of a
            per-atom array given to ``write``, e.g. ``bfactors="cluster"``), ``conect`` (``CONECT`` records for
            ``topology.bonds``: pass ``conect=topology.bonds is not None``), ``remarks``. DCD: ``remarks``.

    Returns:
        A :class:`~.base.TrajectoryWriter` (a context manager; ``abort()`` discards the partial file).
    """
    cls = writer_class(path, format=format)
    known = frozenset().union(*(c.options() for c in set(WRITERS.values())))
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"open_writer() got unknown option(s) {', '.join(unknown)}; writers accept "
                        f"{', '.join(sorted(known))}")
    accepted = cls.options()
    kwargs = {k: v for k, v in options.items() if k in accepted}
    return cls(path, as_topology(topology), overwrite=overwrite, **kwargs)
