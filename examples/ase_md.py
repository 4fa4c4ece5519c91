"""Molecular dynamics in ASE with a learned potential: NVE (velocity Verlet) and Langevin (NVT).

    python examples/ase_md.py runs/cu_potential                      # both, 2000 × 2 fs on a 108-atom Cu cell
    python examples/ase_md.py runs/cu_potential/best.pt --mode nve --steps 2000 --dt 2 --dtype float64 --json
    python examples/ase_md.py CHECKPOINT --system cluster --size 2 --temperature 500 --traj md.traj
    python examples/ase_md.py runs/cu_emt --mode nve --temperature 600 --reference emt --json   # vs ASE's EMT

The system is built with ASE (a periodic cubic fcc cell repeated SIZE³ times, or a free cuboctahedral cluster)
of ELEMENT (default: the first element the potential knows), with Maxwell–Boltzmann velocities at TEMPERATURE.
NVE reports the total-energy drift per atom (last − first, and the largest excursion), the figure that shows
whether the potential's forces are conservative and smooth; Langevin reports the mean temperature of the second
half of the run. ``--reference emt`` also evaluates ASE's EMT on the states the learned potential visits (every
``--reference-every`` steps) and reports the force MAE against it: configurations the model never saw, for
potentials trained on EMT data (``mdsurrogate ingest emt``). Units: Å, eV, fs, K.
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
    p.add_argument("--mode", choices=["nve", "langevin", "both"], default="both", help="which ensemble(s) to run")
    p.add_argument("--system", choices=["bulk", "cluster"], default="bulk", help="periodic fcc cell or free cluster")
    p.add_argument("--element", default=None, help="chemical symbol (default: the potential's first element)")
    p.add_argument("--size", type=int, default=3, help="bulk: cell repeats per axis (4·size³ atoms); cluster: shells")
    p.add_argument("--lattice", type=float, default=None, help="fcc lattice constant in Å (default: ASE's)")
    p.add_argument("--temperature", type=float, default=300.0, help="initial / thermostat temperature in K")
    p.add_argument("--steps", type=int, default=2000, help="MD steps per ensemble")
    p.add_argument("--dt", type=float, default=2.0, help="time step in fs")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64", help="model precision")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and the thermostat noise")
    p.add_argument("--traj", default=None, help="write the NVE (or Langevin) trajectory to this .traj file")
    p.add_argument("--log-every", type=int, default=100, help="MDLogger line every this many steps (0: quiet)")
    p.add_argument("--reference", choices=["none", "emt"], default="none",
                   help="compare forces with ASE's EMT along the trajectory (potentials trained on EMT data)")
    p.add_argument("--reference-every", type=int, default=20, help="steps between reference comparisons")
    p.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    return p.parse_args(argv)


def build_system(args, elements):
    from ase.build import bulk
    from ase.cluster import Octahedron
    from ase.data import chemical_symbols

    symbol = args.element or chemical_symbols[elements[0]]
    if args.system == "bulk":
        atoms = bulk(symbol, "fcc", a=args.lattice, cubic=True).repeat((args.size,) * 3)
    else:
        atoms = Octahedron(symbol, 2 * args.size + 1, cutoff=args.size, latticeconstant=args.lattice)
        atoms.center(vacuum=8.0)
        atoms.pbc = False
    return atoms


def thermalize(atoms, temperature, rng):
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)


class ReferenceForces:
    """Observer: ASE's EMT forces on a copy of the current state vs the learned potential's (eV/Å)."""

    def __init__(self, atoms):
        from ase.calculators.emt import EMT

        self.atoms, self.emt = atoms, EMT()
        self.abs_sum, self.count, self.max_abs, self.samples = 0.0, 0, 0.0, 0

    def __call__(self):
        import numpy as np

        ref = self.atoms.copy()
        ref.calc = self.emt
        err = np.abs(ref.get_forces() - self.atoms.get_forces())
        self.abs_sum += float(err.sum())
        self.count += err.size
        self.max_abs = max(self.max_abs, float(err.max()))
        self.samples += 1

    def summary(self) -> dict:
        return {"reference": "EMT", "states": self.samples, "force_mae_eV_per_A": self.abs_sum / max(self.count, 1),
                "force_max_abs_error_eV_per_A": self.max_abs}


def attach_reference(dyn, atoms, args):
    if args.reference != "emt":
        return None
    ref = ReferenceForces(atoms)
    dyn.attach(ref, interval=max(args.reference_every, 1))
    return ref


def run_nve(atoms, args):
    import numpy as np
    from ase import units
    from ase.md.verlet import VelocityVerlet

    n = len(atoms)
    energies = []
    dyn = VelocityVerlet(atoms, args.dt * units.fs, trajectory=args.traj,
                         logfile="-" if args.log_every else None, loginterval=max(args.log_every, 1))
    dyn.attach(lambda: energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()))
    ref = attach_reference(dyn, atoms, args)
    t0 = time.perf_counter()
    dyn.run(args.steps)
    seconds = time.perf_counter() - t0
    e = np.asarray(energies)
    slope = np.polyfit(np.arange(len(e)) * args.dt / 1000.0, e / n, 1)[0] if len(e) > 1 else 0.0
    out = {
        "atoms": n, "steps": args.steps, "dt_fs": args.dt,
        "drift_meV_per_atom": 1000.0 * (e[-1] - e[0]) / n,
        "max_excursion_meV_per_atom": 1000.0 * float(np.abs(e - e[0]).max()) / n,
        "drift_slope_meV_per_atom_per_ps": 1000.0 * float(slope),
        "final_temperature_K": float(atoms.get_temperature()),
        "steps_per_second": args.steps / seconds,
    }
    return out | ({"vs_reference": ref.summary()} if ref else {})


def run_langevin(atoms, args, rng):
    import numpy as np
    from ase import units
    from ase.md.langevin import Langevin

    temps = []
    dyn = Langevin(atoms, args.dt * units.fs, temperature_K=args.temperature, friction=args.friction / units.fs,
                   fixcm=False, rng=rng, trajectory=args.traj if args.mode == "langevin" else None,
                   logfile="-" if args.log_every else None, loginterval=max(args.log_every, 1))
    dyn.attach(lambda: temps.append(atoms.get_temperature()))
    ref = attach_reference(dyn, atoms, args)
    t0 = time.perf_counter()
    dyn.run(args.steps)
    seconds = time.perf_counter() - t0
    half = np.asarray(temps[len(temps) // 2 :])
    out = {"atoms": len(atoms), "steps": args.steps, "dt_fs": args.dt, "target_K": args.temperature,
           "mean_temperature_K_second_half": float(half.mean()), "steps_per_second": args.steps / seconds}
    return out | ({"vs_reference": ref.summary()} if ref else {})


def report_reference(r: dict):
    if "vs_reference" in r:
        v = r["vs_reference"]
        print(f"  force MAE vs {v['reference']} on {v['states']} visited states: {v['force_mae_eV_per_A']:.4f} eV/Å "
              f"(largest error {v['force_max_abs_error_eV_per_A']:.3f} eV/Å)", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np

    from mdsurrogate.integrations.ase import SurrogateCalculator

    calc = SurrogateCalculator(args.checkpoint, device=args.device, dtype=args.dtype)
    rng = np.random.default_rng(args.seed)
    atoms = build_system(args, calc.elements)
    atoms.calc = calc
    thermalize(atoms, args.temperature, rng)
    print(f"{len(atoms)} atoms ({atoms.get_chemical_formula()}), pbc={atoms.pbc.tolist()}, potential cutoff "
          f"{calc.cutoff} Å, {args.dtype} on {args.device}", file=sys.stderr)
    results = {"checkpoint": str(calc.checkpoint_path)}
    if args.mode in ("nve", "both"):
        results["nve"] = r = run_nve(atoms, args)
        print(f"NVE: {r['steps']} × {r['dt_fs']} fs, total-energy drift {r['drift_meV_per_atom']:+.4f} meV/atom "
              f"(largest excursion {r['max_excursion_meV_per_atom']:.4f} meV/atom), {r['steps_per_second']:.1f} "
              "steps/s", file=sys.stderr)
        report_reference(r)
    if args.mode in ("langevin", "both"):
        results["langevin"] = r = run_langevin(atoms, args, rng)
        print(f"Langevin: {r['steps']} × {r['dt_fs']} fs at {r['target_K']} K, mean temperature of the second half "
              f"{r['mean_temperature_K_second_half']:.1f} K", file=sys.stderr)
        report_reference(r)
    results["calculations"] = calc.calculations
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    from mdsurrogate.errors import run_script

    run_script(main)  # bad checkpoint, unknown element, units, cell too small, …: one line, exit code 2
