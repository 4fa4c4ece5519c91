"""Cell relaxation and NPT with a learned potential: stress by autograd, ASE's FrechetCellFilter + BFGS.

    mdsurrogate ingest emt data/cu_emt && mdsurrogate train recipes/cu_emt_potential.toml --out runs/cu_emt
    python examples/ase_relax_cell.py runs/cu_emt                       # 32-atom Cu cell, fmax 1e-3 eV/Å
    python examples/ase_relax_cell.py runs/cu_emt --strain 0.03 --shear 0.02 --reference emt --json
    python examples/ase_relax_cell.py runs/cu_emt --npt 500 --temperature 300 --pressure 1

Builds a periodic cubic fcc cell (SIZE³ conventional cells, 4·SIZE³ atoms; default 32) of the potential's first
element, strains it (``--strain``: isotropic, ``--shear``: the xy component), rattles the atoms, and:

1. checks the stress against central finite differences of the energy under symmetric strains (relative error
   of the largest component, float64);
2. relaxes positions and cell together with ``ase.filters.FrechetCellFilter`` + ``BFGS`` to ``--fmax`` (eV/Å; the
   filter turns the stress × volume into generalised forces of the same unit) and reports the steps, the final
   lattice constant and the remaining stress; ``--reference emt`` relaxes the same start with ASE's EMT too;
3. optionally (``--npt N``) runs N steps of ASE's isotropic MTK barostat (``IsotropicMTKNPT``) from the relaxed
   cell and reports the mean volume per atom and pressure over the second half.

Units: Å, eV, eV/Å³ (stress; 1 eV/Å³ = 160.2 GPa), fs, K, GPa (``--pressure``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="potential checkpoint (best.pt) or run directory")
    p.add_argument("--size", type=int, default=2, help="conventional fcc cells per axis (4·size³ atoms)")
    p.add_argument("--element", default=None, help="chemical symbol (default: the potential's first element)")
    p.add_argument("--lattice", type=float, default=None, help="fcc lattice constant in Å before straining "
                   "(default: ASE's)")
    p.add_argument("--strain", type=float, default=0.02, help="isotropic strain of the start cell")
    p.add_argument("--shear", type=float, default=0.01, help="xy shear strain of the start cell")
    p.add_argument("--rattle", type=float, default=0.03, help="random displacement of the atoms in Å")
    p.add_argument("--fmax", type=float, default=1e-3, help="convergence: largest generalised force in eV/Å")
    p.add_argument("--steps", type=int, default=500, help="most BFGS steps")
    p.add_argument("--reference", choices=["none", "emt"], default="none", help="relax with ASE's EMT too")
    p.add_argument("--npt", type=int, default=0, help="steps of isotropic MTK NPT after the relaxation (0: none)")
    p.add_argument("--temperature", type=float, default=300.0, help="NPT temperature in K")
    p.add_argument("--pressure", type=float, default=0.0, help="NPT pressure in GPa")
    p.add_argument("--dt", type=float, default=2.0, help="NPT time step in fs")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64", help="model precision")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rattle and the NPT velocities")
    p.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    return p.parse_args(argv)


def start_cell(args, elements):
    import numpy as np
    from ase.build import bulk
    from ase.data import chemical_symbols

    symbol = args.element or chemical_symbols[elements[0]]
    atoms = bulk(symbol, "fcc", a=args.lattice, cubic=True).repeat((args.size,) * 3)
    eps = np.eye(3) * args.strain
    eps[0, 1] = eps[1, 0] = args.shear
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    atoms.rattle(args.rattle, seed=args.seed)
    return atoms


def stress_check(atoms, h: float = 1e-5) -> float:
    """Largest |σ_model − σ_fd| over the largest |σ_fd| (σ_fd: central differences of E under strain)."""
    import numpy as np

    calc = atoms.calc
    volume = atoms.get_volume()
    model = atoms.get_stress(voigt=False)
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            eps = np.zeros((3, 3))
            eps[i, j] += h / 2
            eps[j, i] += h / 2
            e = []
            for sign in (1, -1):
                b = atoms.copy()
                b.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
                b.calc = calc
                e.append(b.get_potential_energy())
            fd[i, j] = fd[j, i] = (e[0] - e[1]) / (2 * h * volume)
    return float(np.abs(model - fd).max() / np.abs(fd).max())


def relax(atoms, fmax: float, steps: int) -> dict:
    import numpy as np
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    t0 = time.perf_counter()
    opt = BFGS(FrechetCellFilter(atoms), logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    n = len(atoms)
    return {"converged": converged, "steps": int(opt.nsteps), "seconds": round(time.perf_counter() - t0, 2),
            "lattice_constant": float(np.cbrt(atoms.get_volume() / n * 4)),  # fcc: 4 atoms per conventional cell
            "volume_per_atom": float(atoms.get_volume() / n),
            "energy_per_atom": float(atoms.get_potential_energy() / n),
            "max_force": float(np.abs(atoms.get_forces()).max()),
            "max_stress": float(np.abs(atoms.get_stress()).max())}


def npt(atoms, args) -> dict:
    import numpy as np
    from ase import units
    from ase.md.nose_hoover_chain import IsotropicMTKNPT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=np.random.default_rng(args.seed))
    dyn = IsotropicMTKNPT(atoms, timestep=args.dt * units.fs, temperature_K=args.temperature,
                          pressure_au=args.pressure * units.GPa, tdamp=100 * args.dt * units.fs,
                          pdamp=1000 * args.dt * units.fs)
    volumes, pressures = [], []

    def record():
        volumes.append(atoms.get_volume() / len(atoms))
        pressures.append(-np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / units.GPa)

    dyn.attach(record, interval=1)
    t0 = time.perf_counter()
    dyn.run(args.npt)
    half = len(volumes) // 2
    return {"steps": args.npt, "seconds": round(time.perf_counter() - t0, 2),
            "mean_volume_per_atom": float(np.mean(volumes[half:])),
            "mean_pressure_GPa": float(np.mean(pressures[half:])), "temperature": float(atoms.get_temperature())}


def main(argv=None) -> int:
    args = parse_args(argv)
    from mdsurrogate.ase import SurrogateCalculator

    calc = SurrogateCalculator(args.checkpoint, device=args.device, dtype=args.dtype)
    atoms = start_cell(args, calc.elements)
    atoms.calc = calc
    result = {"atoms": len(atoms), "dtype": args.dtype, "fmax": args.fmax,
              "stress_fd_relative_error": stress_check(atoms), "start_max_stress": float(abs(atoms.get_stress()).max())}
    result["relax"] = relax(atoms, args.fmax, args.steps)
    print(f"{len(atoms)} atoms: stress vs finite differences {result['stress_fd_relative_error']:.2e} (relative); "
          f"relaxed in {result['relax']['steps']} BFGS steps (converged: {result['relax']['converged']}), "
          f"a = {result['relax']['lattice_constant']:.4f} Å, max stress {result['relax']['max_stress']:.2e} eV/Å³",
          file=sys.stderr)
    if args.reference == "emt":
        from ase.calculators.emt import EMT

        ref = start_cell(args, calc.elements)
        ref.calc = EMT()
        result["reference_emt"] = relax(ref, args.fmax, args.steps)
        print(f"EMT: a = {result['reference_emt']['lattice_constant']:.4f} Å "
              f"({result['reference_emt']['steps']} steps)", file=sys.stderr)
    if args.npt:
        result["npt"] = npt(atoms, args)
        print(f"NPT {args.npt} × {args.dt} fs: ⟨V/N⟩ = {result['npt']['mean_volume_per_atom']:.4f} Å³, "
              f"⟨P⟩ = {result['npt']['mean_pressure_GPa']:.3f} GPa", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    return 0 if result["relax"]["converged"] else 1


if __name__ == "__main__":
    from mdsurrogate.errors import run_script

    run_script(main)  # bad checkpoint, unknown element, …: one line, exit code 2
