"""ASE ingest: frames with energies and forces (any file ASE reads, or EMT reference MD) → a potential dataset.

``ingest_ase`` writes the standard dataset format with **one trajectory per frame** (so frames may differ in atom
count, elements and cell):

    positions.npy [R, 3]   Å (float32)               velocities.npy [R, 3]  Å/ps (zeros when a file has none)
    forces.npy    [R, 3]   eV/Å                       energy.npy     [T]     eV (one per frame)
    node.Z.npy    [ΣN]     atomic numbers (int64)
    node.cell.npy [ΣN, 3, 3] the frame's cell (rows = lattice vectors, Å, float64), repeated on each of its atoms
    node.pbc.npy  [ΣN, 3]  the frame's periodicity (bool), repeated on each of its atoms
    samples.npy   [T, 3]   (frame t, 0, 0);  split.npy: a seeded random frame split

The cell and pbc are stored as node properties because node properties are the dataset's only per-trajectory
arrays, and a trajectory here is one frame: ``Dataset.topology`` then hands them to the trainer with the atoms.
``meta.json`` carries ``task = "potential"``, the cutoff, the elements, the mean neighbour count at that cutoff
(from :func:`~mdsurrogate.data.neighbors.neighbor_list`, the search the potential itself uses), the energy
property used and the source files. There is no time step (``frame_dt = 0``, ``delta_frames = 0``): such a
dataset trains potentials, not propagators.

``ingest_emt`` simulates EMT frames (:func:`~mdsurrogate.data.sources.ase_frames.simulate_emt_frames`) and
ingests them with ``ingest_ase`` in one step. ASE is imported inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..dataset import SPLITS, DatasetError, write_dataset
from ..neighbors import mean_degree, neighbor_list
from ..sources.ase_frames import EMT_TEMPERATURES, ase_velocity_unit, read_frames, simulate_emt_frames


def ingest_ase(out: str | os.PathLike, files: Sequence[str | os.PathLike], *, cutoff: float = 5.0,
               val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0, index: str = ":",
               energy_key: str = "energy", forces_key: str = "forces", overwrite: bool = False,
               provenance: dict | None = None) -> Path:
    """Read frames with energies and forces from ``files`` and write a potential dataset at ``out``.

    Args:
        cutoff: neighbour cutoff (Å) the potential will use; every frame's neighbour list is built once here
            (periodic images included, also for cells smaller than twice the cutoff), which checks the cells
            and gives the mean neighbour count stored in ``meta.json``.
        val_fraction, test_fraction: fractions of frames (rounded) drawn at random, with ``seed``, for the
            validation and test splits; the rest trains (at least one frame).
        index: which frames of each file to read (ASE's slice syntax, ``":"`` = all).
        energy_key, forces_key: result names (``"energy"`` or ``"free_energy"``; or ``atoms.info`` /
            ``atoms.arrays`` keys such as ``"REF_energy"``).
        provenance: extra ``meta.json`` entries (how the frames were made); a dict merges into an existing one.
    """
    if not files:
        raise DatasetError("no input files given")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError("val and test fractions must be in [0, 1) and sum to less than 1")
    if not cutoff > 0:
        raise DatasetError(f"cutoff must be positive, got {cutoff}")
    frames, energies, forces, origin = read_frames(files, index=index, energy_key=energy_key, forces_key=forces_key)
    n_frames = len(frames)
    to_ps = ase_velocity_unit()
    pos, vel, frc, z, cells, pbcs = [], [], [], [], [], []
    edges = atoms_total = 0
    for k, atoms in enumerate(frames):
        n = len(atoms)
        if n == 0:
            raise DatasetError(f"frame {origin[k][1]} of {origin[k][0]} has no atoms")
        x = atoms.get_positions()
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        try:
            ei, _ = neighbor_list(torch.from_numpy(x), cutoff, torch.zeros(n, dtype=torch.long),
                                  torch.from_numpy(cell)[None], torch.from_numpy(pbc)[None])
        except ValueError as exc:
            raise DatasetError(f"frame {origin[k][1]} of {origin[k][0]}: {exc}") from None
        edges += ei.shape[1]
        atoms_total += n
        pos.append(x[None])
        vel.append((atoms.get_velocities() * to_ps)[None])
        frc.append(forces[k][None])
        z.append(atoms.numbers.astype(np.int64))
        cells.append(np.broadcast_to(cell, (n, 3, 3)))
        pbcs.append(np.broadcast_to(pbc, (n, 3)))

    rng = np.random.default_rng(seed)
    n_val = int(round(val_fraction * n_frames))
    n_test = int(round(test_fraction * n_frames))
    if n_frames - n_val - n_test < 1:
        raise DatasetError(f"{n_frames} frames leave none for training with these val/test fractions")
    codes = np.full(n_frames, SPLITS["train"], np.int8)
    perm = rng.permutation(n_frames)
    codes[perm[:n_val]] = SPLITS["val"]
    codes[perm[n_val : n_val + n_test]] = SPLITS["test"]
    samples = np.stack([np.arange(n_frames), np.zeros(n_frames, np.int64), np.zeros(n_frames, np.int64)], axis=1)
    elements = sorted({int(v) for a in z for v in a})
    meta = {
        "name": Path(out).name,
        "source": "ase",
        "task": "potential",
        "description": "frames with energies and forces read by ASE (one trajectory per frame)",
        "units": {"length": "Å", "time": "ps", "velocity": "Å/ps", "energy": "eV", "force": "eV/Å"},
        "frame_dt": 0.0,
        "delta_frames": 0,
        "cutoff": float(cutoff),
        "elements": elements,
        "avg_num_neighbors": mean_degree(edges, atoms_total),
        "energy_key": energy_key,
        "forces_key": forces_key,
        "features": {"global_graph": {"kind": "radius", "cutoff": float(cutoff)}, "node": [], "edge": ["dist"]},
        "files": [str(f) for f in files],
        "frames_per_file": {str(f): sum(1 for o in origin if o[0] == str(Path(f))) for f in files},
        "generator": {"reader": "ase.io.read", "index": index, "seed": seed, "val_fraction": val_fraction,
                      "test_fraction": test_fraction},
    }
    for key, value in (provenance or {}).items():
        meta[key] = meta[key] | value if isinstance(value, dict) and isinstance(meta.get(key), dict) else value
    return write_dataset(out, positions=pos, velocities=vel, samples=samples, split=codes, meta=meta,
                         node_props={"Z": z, "cell": cells, "pbc": pbcs}, forces=frc, energy=energies,
                         overwrite=overwrite)


def ingest_emt(out: str | os.PathLike, *, system: str = "bulk", element: str = "Cu", size: int | None = None,
               temperatures: Sequence[float] = EMT_TEMPERATURES, frames_per_temperature: int = 40, stride: int = 10,
               timestep_fs: float = 2.0, friction: float = 0.02, equilibrate: int = 100, seed: int = 0,
               frames_file: str | os.PathLike | None = None, cutoff: float = 5.0, val_fraction: float = 0.1,
               test_fraction: float = 0.1, overwrite: bool = False) -> Path:
    """EMT reference frames (:func:`simulate_emt_frames`) turned into a potential dataset by :func:`ingest_ase`.

    Args:
        size: bulk: cell repeats per axis (default 3: 108 atoms); cluster: shells (default 2: 55 atoms).
        frames_file: also keep the simulated frames there (extended XYZ or .traj by suffix), e.g. to re-ingest
            them with another cutoff or together with other files (``mdsurrogate ingest ase``); by default they
            are simulated into a temporary file.
        seed: of the MD (velocities and Langevin noise) and of the frame split.
        Other arguments: as :func:`simulate_emt_frames` and :func:`ingest_ase`.
    """
    import tempfile

    if system not in ("bulk", "cluster"):
        raise ValueError(f"system must be 'bulk' or 'cluster', not {system!r}")
    size = size if size is not None else (3 if system == "bulk" else 2)
    temperatures = [float(t) for t in temperatures]
    if size < 1 or not temperatures or min(temperatures) <= 0:
        raise ValueError("size must be ≥ 1 and the temperatures positive (K)")
    if frames_per_temperature < 1 or stride < 1 or equilibrate < 0 or timestep_fs <= 0 or friction < 0:
        raise ValueError("frames per temperature and stride must be ≥ 1, equilibrate ≥ 0, the time step positive "
                         "and the friction ≥ 0")
    if Path(out).exists() and not overwrite:  # before minutes of MD
        raise DatasetError(f"{out} already exists; choose another output or pass overwrite=True")
    md = {"simulator": "ase.calculators.emt.EMT", "dynamics": "ase.md.langevin.Langevin", "system": system,
          "element": element, "size": size, "temperatures_K": temperatures,
          "frames_per_temperature": frames_per_temperature, "stride": stride, "timestep_fs": timestep_fs,
          "friction_per_fs": friction, "equilibrate": equilibrate, "md_seed": seed}
    with tempfile.TemporaryDirectory(prefix="mdsurrogate-emt-") as tmp:
        path = Path(frames_file) if frames_file is not None else Path(tmp) / "frames.xyz"
        simulate_emt_frames(path, system=system, element=element, size=size, temperatures=temperatures,
                            frames_per_temperature=frames_per_temperature, stride=stride, timestep_fs=timestep_fs,
                            friction=friction, seed=seed, equilibrate=equilibrate)
        provenance = {"source": "ase-emt", "generator": {"emt_md": md},
                      "description": f"EMT Langevin MD of {element} ({system}, size {size}) at "
                                     f"{', '.join(f'{t:g}' for t in temperatures)} K, one frame every {stride} steps"}
        if frames_file is None:
            provenance |= {"files": [], "frames_per_file": {}}
        return ingest_ase(out, [path], cutoff=cutoff, val_fraction=val_fraction, test_fraction=test_fraction,
                          seed=seed, overwrite=overwrite, provenance=provenance)
