"""Extended-XYZ writer (pure Python; ``.xyz`` and ``.extxyz``), read by ``ase.io.read(path, index=":")``.

One block per frame: ``Properties=species:S:1:pos:R:3[:vel:R:3:masses:R:1:momenta:R:3]`` plus one column per
topology label and per extra per-atom array, ``time=`` (ps) and ``frame=`` in the comment line,
``Lattice``/``pbc`` only if a box is given. Floats are written with enough digits to read back bit-exactly
(9 significant digits for float32 input, shortest round-trip for float64). Valid after every frame.

Velocities: ``vel`` holds them as given (length/ps, bit-exact). ASE has no velocity column: ``Atoms`` keeps
*momenta* (``momenta`` column) and masses, and ``get_velocities()`` returns momenta / masses in ASE units
(Å per ASE time unit, 1 ASE time unit = Å·√(u/eV) ≈ 10.18 fs). So each frame with velocities also carries
``masses`` (u; the topology's masses, else the elements' standard masses) and ``momenta`` = masses × velocity in
ASE units: ``ase.io.read(path).get_velocities()`` returns the velocities in ASE units and
``get_velocities() * 1000 * ase.units.fs`` in Å/ps.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ...data.atoms import AtomTopology
from .base import ANY_COLUMN, StreamingWriter, as_topology

__all__ = ["ExtXYZWriter", "ase_velocity_unit"]

# the reserved column names (ASE reads them as positions, species, atomic numbers, masses, momenta)
_RESERVED = ("species", "pos", "Z", "vel", "masses", "momenta")


def ase_velocity_unit() -> float:
    """Å/ps in one ASE velocity unit (Å per ASE time unit): ``1000 * ase.units.fs``, ≈ 98.2.

    From ASE when it is installed (its default CODATA version), else from the CODATA 2014 values ASE uses by
    default: the ASE time unit is Å·√(u/eV) = 1e-10 m · √(1.660539040e-27 kg / 1.6021766208e-19 J).
    """
    try:
        from ase import units
    except ImportError:
        return 1e-2 * math.sqrt(1.6021766208e-19 / 1.660539040e-27)
    return 1000.0 * units.fs


def _float_strings(arr: np.ndarray) -> np.ndarray:
    """Exact decimal strings for a float array: 9 significant digits for float32, shortest repr else."""
    if arr.dtype == np.float32 or arr.dtype == np.float16:
        flat = [f"{v:.9g}" for v in arr.astype(np.float32).ravel().tolist()]
    else:
        flat = [repr(v) for v in arr.astype(np.float64).ravel().tolist()]
    return np.array(flat, dtype=object).reshape(arr.shape)


class ExtXYZWriter(StreamingWriter):
    """Extended-XYZ writer (one block per frame); see the module docstring."""

    format = "XYZ"
    extensions = ("xyz", "extxyz")
    velocities = True
    bonds = False
    per_atom_columns = (ANY_COLUMN,)
    times = True
    box = True

    def __init__(self, path: str | os.PathLike[str], topology: AtomTopology, *, box: Any = None,
                 dt_ps: float | None = None, overwrite: bool = False) -> None:
        topology = as_topology(topology)
        species = [e.strip() or "X" for e in topology.elements]
        bad = sorted({s for s in species if not s.isascii() or not s.isalpha()})
        if bad:
            raise ValueError(f"XYZ species must be element symbols, got {bad[:5]}")
        width = max((len(s) for s in species), default=1)
        self._species = [f"{s:<{width}s}" for s in species]
        self._masses: np.ndarray | None = None  # [N] u, computed with the first velocities
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

    def _velocity_columns(self, velocities: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """``vel`` (as given), ``masses`` (u) and ``momenta`` (ASE units) for ASE's ``get_velocities()``."""
        if self._masses is None:
            self._masses = self.topology.masses_or_standard()
        momenta = self._masses[:, None] * (velocities.astype(np.float64) / ase_velocity_unit())
        if velocities.dtype == np.float32:  # as precise as the velocities, and shorter to write
            momenta = momenta.astype(np.float32)
        return [("vel:R:3", _float_strings(velocities)), ("masses:R:1", _float_strings(self._masses[:, None])),
                ("momenta:R:3", _float_strings(momenta))]

    def _write_frame(self, positions, time_ps, velocities, box, per_atom) -> None:
        columns: list[tuple[str, np.ndarray]] = [("pos:R:3", _float_strings(positions))]
        extra: dict[str, np.ndarray] = dict(self.topology.labels)
        extra.update(per_atom)
        for name in _RESERVED:
            if name in extra:
                raise ValueError(f"per-atom property name {name!r} is reserved")
        if velocities is not None:
            columns += self._velocity_columns(velocities)
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
