"""Throughput of the MD teacher (`mdsurrogate simulate`'s system and integrator) in ns/day.

    python benchmarks/bench_simulate.py                                  # ala2 and adk on every platform here
    python benchmarks/bench_simulate.py --system adk --platform CUDA --steps 2000
    python benchmarks/bench_simulate.py --system adk --platform CPU --threads 1 --steps 20 --cutoff 2

For each (system, platform) it builds the System exactly as `simulate` does (default force field, OBC II,
HBonds, 1.5 amu hydrogens, 4 fs), minimises briefly, takes a few warm-up steps and times ``--steps`` steps.
It reports wall-clock ns/day and, on CPU platforms, ns per CPU-day (simulated time per day of process CPU
time), which is what one free core gives when the machine is shared. JSON lines on stdout with --json.
"""

from __future__ import annotations

import argparse
import json
import time


def bench(system_name: str, platform: str, steps: int, threads: int, cutoff: float | None) -> dict:
    import openmm as mm
    import openmm.unit as unit

    from mdsurrogate.teacher.openmm_run import make_integrator
    from mdsurrogate.teacher.settings import SimulationSettings, platform_candidates
    from mdsurrogate.teacher.systems import build_system, load_input

    prepared = load_input(system_name)
    system = build_system(prepared, cutoff_nm=cutoff)
    settings = SimulationSettings(threads=threads)
    name, props = platform_candidates(platform, prepared.n_atoms, threads)[0]
    integ = make_integrator(settings)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName(name), props)
    ctx.setPositions(prepared.positions * unit.nanometer)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 50)
    ctx.setVelocitiesToTemperature(settings.temperature * unit.kelvin, 1)
    integ.step(max(2, steps // 10))
    ctx.getState(getEnergy=True)
    c0, w0 = time.process_time(), time.perf_counter()
    integ.step(steps)
    ctx.getState(getEnergy=True)  # waits for the device
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    ns = steps * settings.timestep_ps / 1000.0
    out = {"system": system_name, "n_atoms": prepared.n_atoms, "platform": name, "properties": props,
           "cutoff_nm": cutoff, "steps": steps, "wall_s": round(wall, 3), "ns_per_day": ns / wall * 86400}
    if name in ("CPU", "Reference"):
        out["cpu_s"] = round(cpu, 3)
        out["ns_per_cpu_day"] = ns / cpu * 86400 if cpu > 0 else None
    if name in ("CUDA", "OpenCL"):
        try:
            out["device"] = mm.Platform.getPlatformByName(name).getPropertyValue(ctx, "DeviceName")
        except Exception:  # noqa: BLE001 - not every platform names its device
            pass
    return out


def main() -> None:
    from mdsurrogate.teacher.settings import available_platforms

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", action="append", help="ala2, adk, or a structure file (repeatable)")
    ap.add_argument("--platform", action="append", help="Reference, CPU, CUDA, OpenCL (default: all here)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 2500 for ala2, 20 for adk "
                    "on CPU, 2000 on a GPU)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cutoff", type=float, default=None, help="non-bonded cutoff in nm (default: none)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for system in args.system or ["ala2", "adk"]:
        for platform in args.platform or available_platforms():
            if system != "ala2" and platform == "Reference":
                continue  # hours for a protein
            steps = args.steps or (2500 if system == "ala2" else 2000 if platform in ("CUDA", "OpenCL") else 20)
            r = bench(system, platform, steps, args.threads, args.cutoff)
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                extra = f", {r['ns_per_cpu_day']:.1f} ns per CPU-day (one busy core)" if "cpu_s" in r else ""
                dev = f" ({r['device']})" if "device" in r else ""
                print(f"{r['system']} ({r['n_atoms']} atoms) on {r['platform']}{dev}, cutoff {r['cutoff_nm']}: "
                      f"{r['ns_per_day']:.2f} ns/day wall{extra}", flush=True)


if __name__ == "__main__":
    main()
