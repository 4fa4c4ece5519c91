"""Drive a learned propagator from ASE with SurrogateDynamics and write the trajectory as a .traj file.

    python examples/ase_propagate.py runs/md_egnn --structure start.traj --steps 200 --out propagated.traj
    python examples/ase_propagate.py runs/md_egnn/best.pt --temperature 300            # a Cu55 cluster
    python examples/ase_propagate.py runs/nbody_egnn --length-unit Å --time-unit fs --random-charges

Every step advances the model's Δ (the checkpoint's ``dataset.delta_time``, converted to ASE time). The start
structure is the last frame of --structure (any file ASE reads; its momenta are used when it has them, else
velocities are drawn at --temperature) or, by default, a free Cu55 cuboctahedron with Maxwell–Boltzmann
velocities. Dimensionless checkpoints (synthetic systems) need --length-unit and --time-unit; models whose
features read per-atom charges need charges on the atoms (from the file, or --random-charges: ±1, seeded).
View the result with `ase gui propagated.traj`.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="propagator checkpoint (best.pt) or run directory")
    p.add_argument("--structure", default=None, help="start structure: a file ASE reads (its last frame is used)")
    p.add_argument("--steps", type=int, default=100, help="propagator steps (each advances Δ)")
    p.add_argument("--out", default="propagated.traj", help="output trajectory (.traj)")
    p.add_argument("--interval", type=int, default=1, help="write / log every this many steps")
    p.add_argument("--log", default="-", help="MDLogger output: '-' for stdout, a file name, or 'none'")
    p.add_argument("--temperature", type=float, default=300.0, help="K, for velocities when the start has none")
    p.add_argument("--length-unit", default=None, help="override the checkpoint's length unit (Å, nm, bohr, …)")
    p.add_argument("--time-unit", default=None, help="override the checkpoint's time unit (fs, ps, ns, ase)")
    p.add_argument("--random-charges", action="store_true", help="give the atoms seeded random ±1 charges")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="model precision")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the velocities and charges")
    return p.parse_args(argv)


def start_structure(args, rng):
    import ase.io
    from ase.cluster import Octahedron

    if args.structure:
        atoms = ase.io.read(args.structure, index=-1)
        atoms.calc = None
        has_velocities = atoms.has("momenta") and bool(abs(atoms.get_momenta()).max() > 0)
    else:
        atoms = Octahedron("Cu", 5, cutoff=2)
        atoms.center(vacuum=8.0)
        atoms.pbc = False
        has_velocities = False
    if not has_velocities:
        from ase.md.velocitydistribution import Stationary

        try:
            from ase.md.velocitydistribution import thermalize_momenta
        except ImportError:  # ASE < 3.29
            from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
        thermalize_momenta(atoms, temperature_K=args.temperature, rng=rng)
        Stationary(atoms)
    if args.random_charges:
        atoms.set_initial_charges(rng.choice([-1.0, 1.0], size=len(atoms)))
    return atoms


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    from ase import units

    from mdsurrogate.integrations.ase import SurrogateDynamics

    rng = np.random.default_rng(args.seed)
    atoms = start_structure(args, rng)
    override = {k: v for k, v in (("length", args.length_unit), ("time", args.time_unit)) if v}
    log = None if args.log == "none" else args.log
    with SurrogateDynamics(atoms, args.checkpoint, trajectory=args.out, logfile=log, loginterval=args.interval,
                           device=args.device, dtype=args.dtype, units=override or None) as dyn:
        print(f"{len(atoms)} atoms, Δ = {dyn.dt / units.fs:.6g} fs per step ({dyn.delta_time:g} in the checkpoint's "
              f"time unit), {args.steps} steps → {args.out}", file=sys.stderr)
        dyn.run(args.steps)
    print(f"wrote {args.steps // args.interval + 1} frames covering {args.steps * dyn.dt / units.fs / 1000:.6g} ps "
          f"to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from mdsurrogate.errors import run_script

    run_script(main)  # bad checkpoint, unknown element, units, cell too small, …: one line, exit code 2
