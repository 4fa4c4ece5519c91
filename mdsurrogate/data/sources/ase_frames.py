"""Frames with energies and forces read by ASE, and EMT reference data simulated with ASE.

:func:`read_frames` reads any file ASE reads (``ase.io.read(f, ":")``: ``.traj``, extended XYZ, VASP OUTCAR, …)
with the energy and forces of every frame; :func:`simulate_emt_frames` makes seeded reference data with physics
that ships with ASE (EMT, Langevin MD): a periodic fcc cell or a cluster at a few temperatures, written with
energies and forces (extended XYZ, .traj, …). The datasets built from them (one trajectory per frame, the cell and
pbc as node properties) are written by :mod:`mdsurrogate.data.ingest.ase`.

ASE is imported inside the functions: the rest of mdsurrogate imports without it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..dataset import DatasetError

EMT_TEMPERATURES = (300.0, 400.0, 500.0, 600.0, 700.0, 800.0)  # K, default of `ingest emt`


def ase_velocity_unit() -> float:
    """Å/ps per ASE velocity unit (Å per ASE time unit): 1 ps = 1000 fs = 1000·units.fs ASE time units."""
    from ase import units

    return 1000.0 * units.fs


def _frame_labels(atoms, energy_key: str, forces_key: str):
    """(energy, forces) of a frame: from its calculator's results, else from ``atoms.info`` / ``atoms.arrays``."""
    energy = forces = None
    results = getattr(atoms.calc, "results", None) or {}
    if energy_key in results:
        energy = results[energy_key]
    if forces_key in results:
        forces = results[forces_key]
    if energy is None and energy_key in atoms.info:
        energy = atoms.info[energy_key]
    if forces is None and forces_key in atoms.arrays:
        forces = atoms.arrays[forces_key]
    return energy, forces


def read_frames(files: Sequence[str | os.PathLike], *, index: str = ":", energy_key: str = "energy",
                forces_key: str = "forces"):
    """Read every frame of ``files`` with ASE; returns (list of Atoms, energies [T], forces list, provenance)."""
    import ase.io

    frames, energies, forces, origin = [], [], [], []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise DatasetError(f"{path} does not exist")
        try:
            images = ase.io.read(path, index)
        except Exception as exc:  # noqa: BLE001 - ASE raises many kinds for unreadable files
            raise DatasetError(f"ASE cannot read {path} ({exc.__class__.__name__}: {exc})") from None
        if not isinstance(images, list):
            images = [images]
        if not images:
            raise DatasetError(f"{path} holds no frames")
        for k, atoms in enumerate(images):
            e, fr = _frame_labels(atoms, energy_key, forces_key)
            if e is None or fr is None:
                missing = " and ".join(n for n, v in ((f"energy ({energy_key!r})", e), (f"forces ({forces_key!r})", fr))
                                       if v is None)
                raise DatasetError(f"frame {k} of {path} has no {missing}; a potential needs both (write them with "
                                   "the calculator attached, or name the keys with energy_key / forces_key)")
            fr = np.asarray(fr, dtype=np.float64)
            if fr.shape != (len(atoms), 3) or not np.isfinite(fr).all() or not np.isfinite(float(e)):
                raise DatasetError(f"frame {k} of {path} has malformed or non-finite energy/forces")
            frames.append(atoms)
            energies.append(float(e))
            forces.append(fr)
            origin.append((str(path), k))
    return frames, np.asarray(energies, dtype=np.float64), forces, origin


def simulate_emt_frames(out: str | os.PathLike, *, system: str = "bulk", element: str = "Cu", size: int = 2,
                        temperatures: Sequence[float] = (300.0, 800.0), frames_per_temperature: int = 20,
                        stride: int = 10, timestep_fs: float = 2.0, friction: float = 0.02, seed: int = 0,
                        equilibrate: int = 50) -> Path:
    """Seeded reference data from ASE's EMT: Langevin MD, one frame every ``stride`` steps, written to ``out``.

    The format follows the suffix of ``out`` (extended XYZ for ``.xyz``/``.extxyz``, an ASE trajectory for
    ``.traj``, …); every frame carries its energy and forces.

    Args:
        system: ``"bulk"`` (a periodic cubic fcc cell repeated ``size``³ times: 4·size³ atoms) or ``"cluster"``
            (a free fcc cuboctahedron with ``size`` shells; 13 atoms for 1, 55 for 2, …).
        temperatures: K; each temperature runs ``equilibrate`` steps, then stores ``frames_per_temperature``
            frames. friction: Langevin friction in 1/fs. Positions Å, energies eV, forces eV/Å, velocities
            stored as ASE momenta.
    """
    import ase.io
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.cluster import Octahedron
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    rng = np.random.default_rng(seed)
    if system == "bulk":
        atoms = bulk(element, "fcc", cubic=True).repeat((size, size, size))
    elif system == "cluster":
        atoms = Octahedron(element, 2 * size + 1, cutoff=size)
        atoms.center(vacuum=6.0)
        atoms.pbc = False
    else:
        raise ValueError(f"system must be 'bulk' or 'cluster', not {system!r}")
    atoms.calc = EMT()
    images = []
    for temp in temperatures:
        thermalize_momenta(atoms, temperature_K=temp, rng=rng)
        Stationary(atoms)
        dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temp, friction=friction / units.fs, fixcm=False,
                       rng=rng)
        dyn.run(equilibrate)
        for _ in range(frames_per_temperature):
            dyn.run(stride)
            snap = atoms.copy()
            snap.calc = SinglePointCalculator(snap, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
            images.append(snap)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(out, images, format="extxyz" if out.suffix.lower() in (".xyz", ".extxyz") else None)
    return out
