"""CHARMM/NAMD DCD writer (pure NumPy; ``.dcd``): little-endian, float32 coordinates, optional unit cell block.

Frame times must be uniform ``t_i = t_0 + i * dt``; ``ISTART``/``NSAVC``/``DELTA`` are chosen so that MDAnalysis
reports ``u.trajectory.dt == dt`` and ``ts.time == t_i`` (its reader uses ``dt = DELTA * NSAVC`` and
``time = (frame + ISTART / NSAVC) * dt``), exact up to the float32 precision of ``DELTA`` (relative ~1e-7).
``t_0 / dt`` must be a fraction with denominator <= 1e5 and numerator < 2**31 (else a warning, and the nearest
representable start is stored). The time step is stored in AKMA units (:data:`AKMA_PS`). The header (frame count,
step counters, time step) is patched after every frame, so the file is valid after every frame.
"""

from __future__ import annotations

import os
import struct
import warnings
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from ...data.atoms import AtomTopology
from .base import FrameError, StreamingWriter, cos_deg

__all__ = ["AKMA_PS", "DCDWriter"]

#: One AKMA time unit (CHARMM's internal time unit, 4.888821e-14 s) in picoseconds.
AKMA_PS = 0.04888821

_INT32_MAX = 2**31 - 1


class DCDWriter(StreamingWriter):
    """CHARMM/NAMD DCD writer (little-endian, float32); see the module docstring. Option: ``remarks`` (title
    lines)."""

    format = "DCD"
    extensions = ("dcd",)
    velocities = False
    bonds = False
    per_atom_columns = ()
    times = True
    box = True
    _binary: ClassVar[bool] = True
    _box_presence_fixed: ClassVar[bool] = True

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
        overwrite: bool = False,
        remarks: str | list[str] | None = None,
    ) -> None:
        self._remarks = [remarks] if isinstance(remarks, str) else list(remarks or [])
        self._header = (0, 1, 1.0 / AKMA_PS)  # istart, nsavc, delta (AKMA)
        super().__init__(path, topology, box=box, dt_ps=dt_ps, overwrite=overwrite)

    def _default_time(self, index: int) -> float:
        return self._continued_time(index)  # DCD always carries times

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
        xyz = positions.astype("<f4")
        if not np.all(np.isfinite(xyz)):
            raise FrameError(f"frame {self.n_frames}: positions overflow float32; frame not written", self.n_frames)
        header = self._timing([*self.times_ps, time_ps])  # validates before anything is written
        if self.n_frames == 0:
            self._header = header
            self._write_header(box is not None)
        chunks = []
        if box is not None:
            a, b, c, alpha, beta, gamma = box[0]
            # CHARMM/NAMD order [A, cos(gamma), B, cos(beta), cos(alpha), C]
            cell = np.array([a, cos_deg(gamma), b, cos_deg(beta), cos_deg(alpha), c], dtype="<f8")
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
