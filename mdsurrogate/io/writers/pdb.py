"""Multi-MODEL PDB writer (pure Python; ``.pdb`` and ``.ent``).

One ``MODEL``/``ENDMDL`` block per frame, fixed-column ``ATOM``/``HETATM`` records (serials in hybrid-36 above
99999, residue numbers wrapped modulo 10000 like other MD tools), occupancy and B-factor columns from per-atom
arrays (e.g. hard cluster ids), element in columns 77-78, segment ID in 73-76, a ``REMARK`` with the frame time
inside each MODEL, ``CRYST1`` before each MODEL only if a box is given, optional ``CONECT`` records (written on
close) for bonds. Valid after every frame.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar

import numpy as np

from ...data.atoms import AtomTopology
from .base import NAME_RE, FrameError, StreamingWriter, as_topology, to_numpy

__all__ = ["PDBWriter"]

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



def _pdb_atom_name(name: str, element: str) -> str:
    """Place an atom name in columns 13-16 following the PDB alignment rule."""
    if len(name) >= 4:
        return name[:4]
    if len(element.strip()) == 2 or name[:1].isdigit():
        return f"{name:<4s}"
    return f" {name:<3s}"


class PDBWriter(StreamingWriter):
    """Multi-MODEL PDB writer (one MODEL per frame); see the module docstring.

    Options: ``bfactors`` / ``occupancies``: static per-atom arrays ``[N]``, or the name of a topology label or of
    a per-atom array passed to :meth:`write` (e.g. ``bfactors="cluster"``) that fills the column (defaults:
    B-factor 0.0, occupancy 1.0); ``conect``: write ``CONECT`` records for ``topology.bonds`` on close;
    ``remarks``: free text for ``REMARK`` lines.
    """

    format = "PDB"
    extensions = ("pdb", "ent")
    velocities = False
    bonds = True
    per_atom_columns = ("occupancies", "bfactors")
    times = True  # in a REMARK inside each MODEL (read back by mdsurrogate, not by MDAnalysis)
    box = True
    _box_presence_fixed: ClassVar[bool] = True

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
        overwrite: bool = False,
        remarks: str | list[str] | None = None,
    ) -> None:
        topology = as_topology(topology)
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
            if not NAME_RE.match(value):
                raise ValueError(f"{what}={value!r} must name a topology label or a per-atom array")
            return value
        arr = to_numpy(value).astype(np.float64)
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
            raise FrameError(
                f"frame {self.n_frames}: coordinates in [{lo:.3f}, {hi:.3f}] do not fit the PDB "
                "%8.3f columns (-999.999 .. 9999.999); use .xyz or .dcd", self.n_frames
            )
        occupancies = self._column(self._occupancy_source, per_atom, "occupancies", "occupancies")
        bfactors = self._column(self._bfactor_source, per_atom, "bfactors", "bfactors")
        used = {"bfactors", "occupancies"}
        used.update(s for s in (self._bfactor_source, self._occupancy_source) if isinstance(s, str))
        for key in per_atom:
            if key not in used:
                self._warn_ignored(f"per-atom array {key!r}")
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

    def _trailer(self) -> None:
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
