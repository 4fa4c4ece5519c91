"""Equilibrium Langevin MD with OpenMM: minimise, equilibrate (discarded), produce, report, resume.

    from mdsurrogate.teacher import SimulationSettings, simulate, resume
    record = simulate("ala2", "data/ala2", SimulationSettings(ns=2.0))     # → data/ala2/{topology.pdb, …}
    record = resume("data/ala2", ns=4.0)                                 # continue (or extend) a run

Output directory (every file written to a temporary name and renamed into place):
    topology.pdb     the production start structure (after minimisation and equilibration), all bonds as
                     CONECT records, so MDAnalysis and ``ingest md`` get the force field's bonds
    trajectory.dcd   production frames every ``frame_ps``: frame k at time (k + 1) · frame_ps ps (production
                     starts at t = 0 after equilibration), Å, no velocities
    simulate.json    settings, input, system, platform and software versions, per-frame time (ps), potential
                     and kinetic energy (kJ/mol) and instantaneous temperature (K), throughput (ns/day), and a
                     Ramachandran summary when the system has backbone φ/ψ (analysis/ramachandran.py)
    system.xml       the OpenMM System (force field applied), for resuming and for reuse
    checkpoint.chk   OpenMM checkpoint of the last frame (positions, velocities, integrator random state)
While a run is in progress (or after it was interrupted) these files live in ``OUT/.simulate.partial/``
with ``progress.json`` (simulate.json so far); they move into OUT when the run completes, simulate.json last.
A checkpoint is committed every ``checkpoint_ps`` of production and when the run is interrupted (Ctrl-C) at a
frame boundary: the trajectory is fsynced, then progress.json, then the checkpoint is written atomically.
:func:`resume` cuts the trajectory and the energies back to the checkpoint and continues.

Default protocol (chosen for throughput on 2 CPU cores without giving up physical validity):
    force field  amber99sbildn with OBC II implicit solvent (OpenMM's native GBSAOBCForce), no cutoff
    integrator   LangevinMiddleIntegrator (LFMiddle: accurate configurational sampling at large steps),
                 friction 1/ps, 300 K
    time step    4 fs with bonds to hydrogen constrained and hydrogen mass repartitioning to 1.5 amu (the
                 smallest mass OpenMM's developers found stable at 4 fs with this integrator); masses only change
                 the dynamics' time scales, not the configurational (Boltzmann) ensemble
    frames       every 1 ps; 20 ps of equilibration after minimisation, discarded
Measured for ACE-ALA-NME (22 atoms; see the README for the commands): the Reference platform runs this
2.5-4x faster than the CPU platform (per-step overhead dominates so small a system), the CPU platform wins from
~60 atoms on, so ``platform="auto"`` takes CUDA when OpenMM has it, else Reference up to
``settings.AUTO_REFERENCE_MAX_ATOMS`` atoms, else CPU.

Reproducibility: the same seed, platform and thread count give a bitwise identical trajectory on the
Reference platform and on the CPU platform with one thread (the default, ``threads=1``); the CPU platform
with several threads is not bitwise reproducible (the order of its force sums varies), nor is CUDA unless
its DeterministicForces property is set, which this module does. A resumed run continues from the checkpoint's
exact state, so an interrupted and resumed run is bitwise identical to an uninterrupted one on a
deterministic platform (tested).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_file
from .outputs import (
    FILES,
    PROGRESS,
    RECORD,
    RECORD_FORMAT,
    RECORD_VERSION,
    WORK_DIR,
    DCDTopology,
    read_record_file,
    software_versions,
    truncate_dcd,
    umask,
    write_json,
    write_topology_pdb,
)
from .settings import SimulationSettings, available_platforms, platform_candidates
from .systems import (
    DEFAULT_FORCEFIELD,
    FORCEFIELDS,
    PreparedInput,
    SimulateInputError,
    build_system,
    import_openmm,
    load_input,
)

MOLAR_GAS_CONSTANT = 0.00831446261815324  # kJ / (mol K)

Progress = Callable[[str, float, float, "float | None"], None]
"""progress(phase, done, total, ns_per_day): phase "minimise" | "equilibrate" | "produce"; done/total in ps."""


class SimulationError(SimulateInputError):
    """The simulation itself failed (blew up, platform failure); the message says what to change."""


def _context(system, integrator_factory, candidates, warn):
    """(Context, integrator, platform name, properties): the first candidate that starts."""
    mm = import_openmm()
    last = None
    for k, (name, props) in enumerate(candidates):
        integrator = integrator_factory()
        try:
            ctx = mm.Context(system, integrator, mm.Platform.getPlatformByName(name), props)
            return ctx, integrator, name, props
        except Exception as exc:  # noqa: BLE001 - OpenMMException for a platform that cannot start
            last = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            if k + 1 < len(candidates):
                warn(f"OpenMM platform {name} could not start ({last}); trying {candidates[k + 1][0]}")
    raise SimulateInputError(f"OpenMM platform {candidates[-1][0]} could not start: {last}")


def make_integrator(settings: SimulationSettings):
    mm = import_openmm()
    unit = mm.unit
    integ = mm.LangevinMiddleIntegrator(settings.temperature * unit.kelvin, settings.friction / unit.picosecond,
                                        settings.timestep_ps * unit.picosecond)
    integ.setRandomNumberSeed(_openmm_seed(settings.seed))
    return integ


def _openmm_seed(seed: int) -> int:
    """OpenMM takes seed 0 as "choose one at random": our seed s is OpenMM's s + 1."""
    return int(seed) + 1


# ----------------------------------------------------------------------------------------------- the run
@dataclass
class _Run:
    """The state of one run while it executes (context, files, the record so far)."""

    work: Path
    out: Path
    settings: SimulationSettings
    record: dict
    context: object
    integrator: object
    dof: int
    eq_steps: int
    dcd_fh: object = None
    dcd: object = None


def simulate(input: str | os.PathLike, out: str | os.PathLike, settings: SimulationSettings | None = None, *,
             coordinates: str | os.PathLike | None = None, overwrite: bool = False, progress: Progress | None = None,
             warn: Callable[[str], None] | None = None, command: str | None = None) -> dict:
    """Run a new simulation of ``input`` (embedded name, PDB, or prmtop + ``coordinates``) into directory
    ``out`` and return its record (the content of simulate.json).

    ``out`` must not hold a simulation already unless ``overwrite`` (the old files are replaced only when the
    new run completes). Interrupted runs (KeyboardInterrupt) keep their last checkpoint: :func:`resume`.
    """
    settings = settings or SimulationSettings()
    settings.validate()
    warn = warn or (lambda message: None)
    progress = progress or (lambda *a: None)
    out = Path(out)
    work = out / WORK_DIR
    if out.exists() and not out.is_dir():
        raise SimulateInputError(f"{out} exists and is not a directory")
    if work.exists() and not (work / PROGRESS).exists():
        shutil.rmtree(work)  # a run interrupted before its first checkpoint: nothing to resume
    if (out / RECORD).exists() or work.exists():
        if not overwrite:
            what = "an unfinished run" if work.exists() else "a finished simulation"
            raise SimulateInputError(f"{out} already holds {what}: pass --resume to continue it or --overwrite to "
                                     "start again (old files are replaced only when the new run completes)")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise SimulateInputError(f"{out} exists and is not empty: choose a new directory or pass --overwrite")
    if settings.platform.lower() != "auto":
        platform_candidates(settings.platform, 0, settings.threads)  # an unavailable platform: say so first
    t_setup = time.perf_counter()
    prepared = load_input(input, forcefield=settings.forcefield, coordinates=coordinates)
    if prepared.prmtop is not None and settings.forcefield != DEFAULT_FORCEFIELD:
        warn(f"{prepared.name} is an Amber prmtop: its own force field is used, not --forcefield "
             f"{settings.forcefield}")
    system = build_system(prepared, forcefield=settings.forcefield, solvent=settings.solvent,
                          constraints=settings.constraints, hydrogen_mass=settings.hydrogen_mass,
                          cutoff_nm=settings.cutoff_nm)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    mm = import_openmm()
    with atomic_file(work / FILES["system"], "w") as fh:
        fh.write(mm.XmlSerializer.serialize(system))
    candidates = platform_candidates(settings.platform, prepared.n_atoms, settings.threads)
    ctx, integ, plat, props = _context(system, lambda: make_integrator(settings), candidates, warn)
    record = _new_record(input, coordinates, prepared, system, settings, plat, props, command)
    run = _Run(work, out, settings, record, ctx, integ, _degrees_of_freedom(system), settings.equilibration_steps())
    _prepare(run, prepared, progress)
    record["throughput"]["setup_wall_s"] = round(time.perf_counter() - t_setup, 3)
    _open_trajectory(run, append=False)
    _commit(run)
    return _produce(run, progress, warn)


def resume(out: str | os.PathLike, *, ns: float | None = None, progress: Progress | None = None,
           warn: Callable[[str], None] | None = None, command: str | None = None) -> dict:
    """Continue the interrupted run in ``out`` from its last checkpoint, or extend a finished one to ``ns``
    (the new total production length; default: the recorded one). Same platform as recorded (a checkpoint only
    loads there); the continued trajectory is bitwise the uninterrupted one on a deterministic platform."""
    warn = warn or (lambda message: None)
    progress = progress or (lambda *a: None)
    out = Path(out)
    work = out / WORK_DIR
    if (work / PROGRESS).exists():
        record = read_record_file(work / PROGRESS)
    elif (out / RECORD).exists():
        record = read_record_file(out / RECORD)
        done = len(record["energies"]["time_ps"])
        target = ns if ns is not None else record["settings"]["ns"]
        if round(target * 1000.0 / record["settings"]["frame_ps"]) <= done:
            raise SimulateInputError(f"{out} holds a finished run of {done} frames; pass a larger --ns to extend it")
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        for name in FILES.values():
            shutil.copy2(out / name, work / name)
        record["complete"] = False
    else:
        raise SimulateInputError(f"nothing to resume in {out}: it holds neither an interrupted nor a finished run")
    settings = SimulationSettings.from_dict(record["settings"])
    if ns is not None:
        settings.ns = float(ns)
    settings.validate()
    if settings.n_frames() < len(record["energies"]["time_ps"]):
        raise SimulateInputError(f"--ns {settings.ns} is shorter than the {len(record['energies']['time_ps'])} "
                                 "frames already simulated")
    record["settings"] = settings.to_dict()
    if command:
        record.setdefault("resumed_by", []).append(command)
    mm = import_openmm()
    for name in FILES.values():
        if not (work / name).exists():
            raise SimulateInputError(f"cannot resume: {work / name} is missing")
    with open(work / FILES["system"]) as fh:
        system = mm.XmlSerializer.deserialize(fh.read())
    plat, props = record["platform"]["name"], dict(record["platform"]["properties"])
    if plat not in available_platforms():
        raise SimulateInputError(f"the run was made on the OpenMM platform {plat}, which is not available here; a "
                                 "checkpoint only resumes on the platform that wrote it")
    ctx, integ, plat, props = _context(system, lambda: make_integrator(settings), [(plat, props)], warn)
    try:
        with open(work / FILES["checkpoint"], "rb") as fh:
            ctx.loadCheckpoint(fh.read())
    except Exception as exc:  # noqa: BLE001 - OpenMMException
        raise SimulateInputError(f"cannot load the checkpoint {work / FILES['checkpoint']}: "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
    run = _Run(work, out, settings, record, ctx, integ, _degrees_of_freedom(system), record["equilibration_steps"])
    step = ctx.getState().getStepCount()
    spf = settings.steps_per_frame()
    done, rem = divmod(step - run.eq_steps, spf)
    if rem or done < 0 or done > len(record["energies"]["time_ps"]):
        raise SimulateInputError(f"the checkpoint (step {step}) does not match the record in {work}")
    for key in ("time_ps", "potential_kj_mol", "kinetic_kj_mol", "temperature_k"):
        del record["energies"][key][done:]
    truncate_dcd(work / FILES["trajectory"], done)
    _open_trajectory(run, append=True)
    return _produce(run, progress, warn)


def _degrees_of_freedom(system) -> int:
    mm = import_openmm()
    n = sum(1 for i in range(system.getNumParticles()) if system.getParticleMass(i).value_in_unit(mm.unit.dalton) > 0)
    dof = 3 * n - system.getNumConstraints()
    if any(isinstance(system.getForce(i), mm.CMMotionRemover) for i in range(system.getNumForces())):
        dof -= 3
    return dof


def _new_record(input, coordinates, prepared: PreparedInput, system, settings, plat, props, command) -> dict:
    mm = import_openmm()
    residues = [r.name for r in prepared.topology.residues()]
    masses = np.array([system.getParticleMass(i).value_in_unit(mm.unit.dalton)
                       for i in range(system.getNumParticles())])
    return {
        "format": RECORD_FORMAT, "version": RECORD_VERSION, "complete": False,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "input": {"spec": str(input), "coordinates": None if coordinates is None else str(coordinates),
                  "name": prepared.name, "kind": prepared.kind, "source": prepared.source},
        "system": {"n_atoms": prepared.n_atoms, "n_residues": len(residues),
                   "residues": residues if len(residues) <= 40 else f"{len(residues)} residues",
                   "n_constraints": system.getNumConstraints(), "degrees_of_freedom": _degrees_of_freedom(system),
                   "total_mass_amu": float(masses.sum()),
                   "forces": [system.getForce(i).__class__.__name__ for i in range(system.getNumForces())],
                   "forcefield": "prmtop" if prepared.prmtop is not None else settings.forcefield,
                   "implicit_solvent": None if settings.solvent == "vacuum" else (
                       "OBC II (prmtop GB radii)" if prepared.prmtop is not None
                       else FORCEFIELDS[settings.forcefield].implicit_model),
                   "notes": prepared.notes},
        "settings": settings.to_dict(),
        "integrator": {"kind": "LangevinMiddleIntegrator", "openmm_seed": _openmm_seed(settings.seed)},
        "platform": {"name": plat, "properties": props, "auto": settings.platform.lower() == "auto"},
        "versions": software_versions(),
        "files": dict(FILES),
        "units": {"time": "ps", "energy": "kJ/mol", "temperature": "K", "length": "Å (files)"},
        "frames": {"spacing_ps": settings.frame_ps, "steps_per_frame": settings.steps_per_frame(),
                   "first_time_ps": settings.frame_ps,
                   "note": "frame k is at (k + 1) * spacing_ps ps after the end of equilibration"},
        "equilibration_steps": settings.equilibration_steps(),
        "minimisation": {},
        "equilibration": {},
        "energies": {"time_ps": [], "potential_kj_mol": [], "kinetic_kj_mol": [], "temperature_k": []},
        "throughput": {"segments": []},
    }


def _energies(run: _Run, state) -> tuple[float, float, float]:
    mm = import_openmm()
    pot = state.getPotentialEnergy().value_in_unit(mm.unit.kilojoule_per_mole)
    kin = state.getKineticEnergy().value_in_unit(mm.unit.kilojoule_per_mole)
    temp = 2.0 * kin / (run.dof * MOLAR_GAS_CONSTANT) if run.dof > 0 else float("nan")
    return pot, kin, temp


def _prepare(run: _Run, prepared: PreparedInput, progress: Progress) -> None:
    """Minimise, draw velocities, equilibrate; write the topology of the production start structure."""
    mm = import_openmm()
    unit = mm.unit
    ctx, s = run.context, run.settings
    ctx.setPositions(prepared.positions * unit.nanometer)
    progress("minimise", 0.0, 0.0, None)
    e0 = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    t0 = time.perf_counter()
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, s.minimize_iterations)
    e1 = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    run.record["minimisation"] = {"potential_before_kj_mol": e0, "potential_after_kj_mol": e1,
                                  "max_iterations": s.minimize_iterations, "tolerance_kj_mol_nm": 10.0,
                                  "wall_s": round(time.perf_counter() - t0, 3)}
    if not math.isfinite(e1):
        raise SimulationError(f"the energy of {prepared.name} is not finite after minimisation: check the structure")
    ctx.setVelocitiesToTemperature(s.temperature * unit.kelvin, _openmm_seed(s.seed))
    spf = s.steps_per_frame()
    total_ps = run.eq_steps * s.timestep_ps
    done = 0
    temps = []
    t0 = time.perf_counter()
    progress("equilibrate", 0.0, total_ps, None)
    while done < run.eq_steps:
        n = min(spf, run.eq_steps - done)
        run.integrator.step(n)
        done += n
        state = ctx.getState(getEnergy=True)
        pot, kin, temp = _energies(run, state)
        if not math.isfinite(pot):
            raise SimulationError(_blew_up(done * s.timestep_ps, "equilibration"))
        temps.append(temp)
        wall = time.perf_counter() - t0
        progress("equilibrate", done * s.timestep_ps, total_ps, _ns_per_day(done * s.timestep_ps, wall))
    wall = time.perf_counter() - t0
    run.record["equilibration"] = {
        "ps": total_ps, "steps": run.eq_steps, "wall_s": round(wall, 3),
        "ns_per_day": _ns_per_day(total_ps, wall),
        "temperature_mean_k": float(np.mean(temps)) if temps else None}
    state = ctx.getState(getPositions=True)
    pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    write_topology_pdb(run.work / FILES["topology"], prepared.topology, np.asarray(pos))


def _blew_up(t_ps: float, phase: str) -> str:
    return (f"the simulation blew up (non-finite energy) {t_ps:g} ps into {phase}: use a smaller --timestep-fs, "
            "keep --constraints hbonds with --hydrogen-mass, or check the structure")


def _ns_per_day(ps: float, wall_s: float) -> float | None:
    return ps / 1000.0 / wall_s * 86400.0 if wall_s > 0 else None


def _open_trajectory(run: _Run, append: bool) -> None:
    app = import_openmm().app
    topology = DCDTopology(run.record["system"]["n_atoms"])
    spf = run.settings.steps_per_frame()
    run.dcd_fh = open(run.work / FILES["trajectory"], "r+b" if append else "wb")  # closed in _produce
    run.dcd = app.DCDFile(run.dcd_fh, topology, run.settings.timestep_ps, firstStep=spf, interval=spf,
                          append=append)
    if append:
        run.dcd_fh.seek(0, os.SEEK_END)


def _commit(run: _Run) -> None:
    """Trajectory on disk first, then the record, then the checkpoint (the record never lags the checkpoint)."""
    run.dcd_fh.flush()
    os.fsync(run.dcd_fh.fileno())
    write_json(run.work / PROGRESS, run.record)
    with atomic_file(run.work / FILES["checkpoint"]) as fh:
        fh.write(run.context.createCheckpoint())


def _produce(run: _Run, progress: Progress, warn) -> dict:
    mm = import_openmm()
    unit = mm.unit
    s, rec = run.settings, run.record
    e = rec["energies"]
    spf, n_total, every = s.steps_per_frame(), s.n_frames(), s.checkpoint_frames()
    start = len(e["time_ps"])
    total_ps = n_total * s.frame_ps
    segment = {"start_frame": start, "end_frame": start, "wall_s": 0.0, "platform": rec["platform"]["name"],
               "threads": s.threads, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    rec["throughput"]["segments"].append(segment)
    t0 = time.perf_counter()
    progress("produce", start * s.frame_ps, total_ps, None)
    try:
        try:
            for k in range(start, n_total):
                run.integrator.step(spf)
                state = run.context.getState(getPositions=True, getEnergy=True)
                pot, kin, temp = _energies(run, state)
                pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                if not (math.isfinite(pot) and np.isfinite(pos).all()):
                    raise SimulationError(_blew_up((k + 1) * s.frame_ps, "production"))
                run.dcd.writeModel(pos)
                e["time_ps"].append(round((k + 1) * s.frame_ps, 9))
                e["potential_kj_mol"].append(round(pot, 4))
                e["kinetic_kj_mol"].append(round(kin, 4))
                e["temperature_k"].append(round(temp, 3))
                wall = time.perf_counter() - t0
                segment["end_frame"], segment["wall_s"] = k + 1, round(wall, 3)
                if (k + 1) % every == 0 or k + 1 == n_total:
                    _update_throughput(rec)
                    _commit(run)
                progress("produce", (k + 1) * s.frame_ps, total_ps,
                         _ns_per_day((k + 1 - start) * s.frame_ps, wall))
        except KeyboardInterrupt:
            # commit what is consistent: the context's step must be the last written frame's
            frames = len(e["time_ps"])
            if run.context.getState().getStepCount() == run.eq_steps + frames * spf:
                segment["wall_s"] = round(time.perf_counter() - t0, 3)
                _update_throughput(rec)
                _commit(run)
            raise
    finally:
        run.dcd_fh.close()
    return _finish(run, warn)


def _update_throughput(rec: dict) -> None:
    segs = rec["throughput"]["segments"]
    frames = sum(sg["end_frame"] - sg["start_frame"] for sg in segs)
    wall = sum(sg["wall_s"] for sg in segs)
    ps = frames * rec["settings"]["frame_ps"]
    rec["throughput"].update({"production_ps": ps, "production_wall_s": round(wall, 3),
                              "ns_per_day": _ns_per_day(ps, wall)})


def _finish(run: _Run, warn) -> dict:
    rec, work, out = run.record, run.work, run.out
    e = rec["energies"]
    temps = np.asarray(e["temperature_k"], np.float64)
    rec["summary"] = {"frames": len(temps), "production_ns": len(temps) * run.settings.frame_ps / 1000.0,
                      "temperature_mean_k": float(temps.mean()), "temperature_std_k": float(temps.std()),
                      "potential_mean_kj_mol": float(np.mean(e["potential_kj_mol"]))}
    try:
        from ..analysis.ramachandran import ramachandran_summary
        from ..analysis.trajectory import phi_psi_from_files

        phi, psi, resids, _ = phi_psi_from_files(work / FILES["topology"], [work / FILES["trajectory"]])
        rec["ramachandran"] = ramachandran_summary(phi, psi, run.settings.frame_ps) | {
            "residues_analysed": [int(r) for r in resids[:50]]}
    except ValueError:
        rec["ramachandran"] = None  # no backbone φ/ψ in this system
    rec["complete"] = True
    rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(work / RECORD, rec)
    (out / RECORD).unlink(missing_ok=True)  # an old record must never describe new files
    for name in FILES.values():
        os.replace(work / name, out / name)
    os.replace(work / RECORD, out / RECORD)
    shutil.rmtree(work, ignore_errors=True)
    mode = 0o666 & ~umask()  # temporary files are created private; the outputs get the usual permissions
    for name in [*FILES.values(), RECORD]:
        os.chmod(out / name, mode)
    return rec


