"""The files of a `simulate` output directory: names, the JSON record, the topology PDB, DCD truncation.

    OUT/topology.pdb  trajectory.dcd  system.xml  checkpoint.chk  simulate.json
    OUT/.simulate.partial/  the same files (and progress.json) while a run is in progress or interrupted
"""

from __future__ import annotations

import json
import os
import platform as _platform
import struct
import sys
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_file
from .systems import SimulateInputError

WORK_DIR = ".simulate.partial"
PROGRESS = "progress.json"
FILES = {"topology": "topology.pdb", "trajectory": "trajectory.dcd", "system": "system.xml",
         "checkpoint": "checkpoint.chk"}
RECORD = "simulate.json"
RECORD_FORMAT = "mdsurrogate-simulate"
RECORD_VERSION = 1


def write_json(path: Path, obj: dict) -> None:
    with atomic_file(path, "w") as fh:
        json.dump(obj, fh, indent=1, default=float)
        fh.write("\n")


def read_record_file(path: Path) -> dict:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SimulateInputError(f"cannot read {path}: {exc}") from None
    if data.get("format") != RECORD_FORMAT:
        raise SimulateInputError(f"{path} is not a simulate record")
    return data


def write_topology_pdb(path: Path, topology, positions_nm: np.ndarray) -> None:
    """PDB of ``topology`` at ``positions_nm`` with every bond as CONECT (OpenMM's own writer lists only the
    bonds of non-standard residues, so MDAnalysis would see a partial bond graph)."""
    from ..data.atoms import AtomTopology
    from ..io.writers import PDBWriter

    atoms = list(topology.atoms())
    standard = {"ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET", "PHE",
                "PRO", "SER", "THR", "TRP", "TYR", "VAL", "HID", "HIE", "HIP", "CYX", "ASH", "GLH", "LYN",
                "DA", "DC", "DG", "DT", "A", "C", "G", "U"}
    chain_ids = [a.residue.chain.id or "A" for a in atoms]
    top = AtomTopology(
        names=[a.name for a in atoms],
        elements=[a.element.symbol if a.element is not None else "X" for a in atoms],
        resnames=[a.residue.name for a in atoms],
        resids=[int(a.residue.id) if str(a.residue.id).lstrip("-").isdigit() else a.residue.index + 1
                for a in atoms],
        chainids=chain_ids,
        bonds=np.array([(b[0].index, b[1].index) for b in topology.bonds()], np.int64).reshape(-1, 2),
        record_types=["ATOM" if a.residue.name in standard else "HETATM" for a in atoms],
    )
    writer = PDBWriter(path, top, conect=True)
    try:
        writer.write(np.asarray(positions_nm) * 10.0, time_ps=0.0)
    except BaseException:
        writer.abort()
        raise
    writer.close()


def truncate_dcd(path: Path, n_frames: int) -> None:
    """Cut a CHARMM DCD back to its first ``n_frames`` frames (header frame count and last step patched)."""
    with open(path, "r+b") as fh:
        head = fh.read(92)
        if len(head) < 92 or struct.unpack("<i", head[:4])[0] != 84 or head[4:8] != b"CORD":
            raise SimulateInputError(f"{path} is not a DCD file")
        n_set, istart, nsavc = struct.unpack("<iii", head[8:20])
        has_box = struct.unpack("<i", head[48:52])[0] != 0
        title_len = struct.unpack("<i", fh.read(4))[0]
        fh.seek(92 + 4 + title_len + 4 + 4)
        n_atoms = struct.unpack("<i", fh.read(4))[0]
        header_end = 92 + 8 + title_len + 12
        frame = (56 if has_box else 0) + 3 * (4 * n_atoms + 8)
        size = os.fstat(fh.fileno()).st_size
        have = (size - header_end) // frame
        if have < n_frames:
            raise SimulateInputError(f"{path} has {have} frames, fewer than the checkpoint's {n_frames}")
        fh.truncate(header_end + n_frames * frame)
        fh.seek(8)
        fh.write(struct.pack("<i", n_frames))
        fh.seek(20)
        fh.write(struct.pack("<i", istart + max(n_frames - 1, 0) * nsavc))
        fh.flush()
        os.fsync(fh.fileno())


def software_versions() -> dict:
    import numpy

    from .. import __version__

    out = {"mdsurrogate": __version__, "python": sys.version.split()[0], "numpy": numpy.__version__,
           "os": _platform.platform()}
    try:
        import openmm

        out["openmm"] = openmm.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        from importlib.metadata import version

        out["pdbfixer"] = version("pdbfixer")
    except Exception:  # noqa: BLE001 - optional information
        pass
    return out


class DCDTopology:
    """What openmm.app.DCDFile asks of a topology: the atom count, and no periodic box."""

    def __init__(self, n_atoms: int):
        self.n_atoms = n_atoms

    def getNumAtoms(self):  # noqa: N802 - OpenMM's method name
        return self.n_atoms

    def getUnitCellDimensions(self):  # noqa: N802
        return None

    def getPeriodicBoxVectors(self):  # noqa: N802
        return None


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_record(out: str | os.PathLike) -> dict:
    """The simulate.json of a finished run directory."""
    path = Path(out) / RECORD
    if not path.exists():
        raise SimulateInputError(f"{out} holds no finished simulation ({RECORD} is missing)")
    return read_record_file(path)
