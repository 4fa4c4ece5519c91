"""`mdsurrogate simulate`: equilibrium MD with OpenMM (the teacher), optionally ingested as a dataset."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .app import JSON_OUT, OVERWRITE, app, command_line, emit_json, err, fail, friendly, warn


@app.command("simulate")
@friendly
def simulate_cmd(
    input: str = typer.Argument(..., metavar="INPUT", help="An embedded system (ala2: alanine dipeptide, 22 atoms; "
                                "adk: adenylate kinase, 3341 atoms, for GPUs), a PDB/mmCIF file (hydrogens and "
                                "missing heavy atoms are added, water and Na⁺/K⁺/Cl⁻ removed) or an Amber prmtop "
                                "(with --coordinates, or an .inpcrd/.rst7 of the same name beside it)."),
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Output directory: topology.pdb, trajectory.dcd, "
                                   "simulate.json, system.xml, checkpoint.chk."),
    ns: float = typer.Option(None, help="Production length in ns \\[default: 2; with --resume: the recorded "
                             "length, or a longer one to extend the run]."),
    frame_ps: float = typer.Option(None, help="Time between saved frames in ps \\[default: 1]."),
    temperature: float = typer.Option(None, help="Temperature in K \\[default: 300]."),
    forcefield: str = typer.Option(None, help="amber99sbildn (native OBC II implicit solvent; fastest), amber99sb, "
                                   "amber03 or amber14 (OBC II as a custom GB force) \\[default: amber99sbildn]. "
                                   "A prmtop brings its own."),
    solvent: str = typer.Option(None, help="implicit (OBC II generalized Born) or vacuum \\[default: implicit]."),
    seed: int = typer.Option(None, help="Seed of the initial velocities and the Langevin noise \\[default: 0]. Same "
                             "seed, platform and --threads → the same trajectory (CPU: with one thread)."),
    platform: str = typer.Option("auto", help="auto (CUDA when OpenMM has it; else Reference for ≤ 60 atoms, where "
                                 "it is fastest, else CPU), CPU, CUDA, OpenCL or Reference."),
    threads: int = typer.Option(None, help="CPU-platform threads \\[default: 1, bitwise reproducible; more threads "
                                "are faster for large systems but not reproducible bit for bit]."),
    timestep_fs: float = typer.Option(None, help="Integration time step in fs \\[default: 4, with --constraints "
                                      "hbonds and --hydrogen-mass 1.5]."),
    hydrogen_mass: float = typer.Option(None, help="Hydrogen mass in amu, repartitioned from the bonded heavy "
                                        "atom (leaves the Boltzmann ensemble unchanged); 0 = off \\[default: 1.5]."),
    constraints: str = typer.Option(None, help="none, hbonds, allbonds or hangles \\[default: hbonds]."),
    friction: float = typer.Option(None, help="Langevin collision rate in 1/ps \\[default: 1]."),
    equilibration_ps: float = typer.Option(None, help="MD after minimisation, discarded, in ps \\[default: 20]."),
    minimize_iterations: int = typer.Option(None, help="Energy-minimisation iterations, 0 = until converged "
                                            "\\[default: 1000]."),
    cutoff: float = typer.Option(None, help="Non-bonded cutoff in nm \\[default: none, every pair]."),
    coordinates: Path = typer.Option(None, help="Coordinates (.inpcrd / .rst7) of a prmtop INPUT."),
    checkpoint_ps: float = typer.Option(None, help="Production time between checkpoints in ps \\[default: 100]; "
                                        "Ctrl-C also checkpoints."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in OUT from its checkpoint, "
                                "or extend a finished one to a larger --ns (same platform; recorded settings)."),
    ingest: Path = typer.Option(None, help="Also write a dataset here (`ingest md` on the output with "
                                "--ingest-select, --ingest-delta, a 10 Å cutoff and a chronological 0.6/0.2/0.2 "
                                "split)."),
    ingest_select: str = typer.Option("not element H", help="Atoms of the --ingest dataset (MDAnalysis "
                                      "selection): heavy atoms by default (10 for ala2)."),
    ingest_delta: int = typer.Option(1, help="Δ of the --ingest dataset in saved frames (1 = --frame-ps)."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_OUT,
):
    """Run equilibrium Langevin MD with OpenMM: minimise, equilibrate (discarded), produce frames every --frame-ps
    with a progress bar (ns/day, ETA). The output directory is what `ingest md` reads
    (`--top OUT/topology.pdb --traj OUT/trajectory.dcd`); simulate.json records settings, energies,
    temperature, throughput, versions and, for peptides, the Ramachandran basin populations."""
    from ..teacher import SimulationSettings
    from ..teacher import resume as resume_run
    from ..teacher import simulate as simulate_run

    given = {"frame_ps": frame_ps, "temperature": temperature, "friction": friction, "timestep_fs": timestep_fs,
             "hydrogen_mass": hydrogen_mass, "constraints": constraints, "forcefield": forcefield,
             "solvent": solvent, "cutoff_nm": cutoff, "equilibration_ps": equilibration_ps,
             "minimize_iterations": minimize_iterations, "seed": seed, "threads": threads,
             "checkpoint_ps": checkpoint_ps}
    given = {k: v for k, v in given.items() if v is not None}
    if constraints is not None:
        given["constraints"] = constraints.lower()
    if solvent is not None:
        given["solvent"] = solvent.lower()
    if ingest_delta < 1:
        fail("--ingest-delta must be ≥ 1 frame")
    if ingest is not None and ingest.exists() and not overwrite:
        fail(f"{ingest} exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    with _Progress() as bar:
        try:
            if resume:
                record = _resume(resume_run, input, out_dir, ns, platform, given, bar, command_line())
            else:
                if coordinates is not None and not coordinates.exists():
                    fail(f"{coordinates} does not exist")
                settings = SimulationSettings(**given)
                if ns is not None:
                    settings.ns = ns
                settings.platform = platform
                if hydrogen_mass == 0:
                    settings.hydrogen_mass = None
                record = simulate_run(input, out_dir, settings, coordinates=coordinates, overwrite=overwrite,
                                      progress=bar.update, warn=warn, command=command_line())
        except KeyboardInterrupt:
            bar.stop()
            fail(f"interrupted; the run continues from its last checkpoint with: mdsurrogate simulate {input} "
                 f"{out_dir} --resume", code=130)
    summary = _summary(record, out_dir, time.perf_counter() - t0)
    _report(summary)
    if ingest is not None:
        from ..data.ingest import ingest_md

        with err.status("ingesting the trajectory…"):
            path = ingest_md(ingest, out_dir / "topology.pdb", [out_dir / "trajectory.dcd"], select=ingest_select,
                             delta=ingest_delta, cutoff=10.0, name=f"simulate_{record['input']['name']}",
                             overwrite=overwrite, warn=warn)
        from ..data.dataset import Dataset

        n = Dataset(path).describe()["samples"]
        summary["dataset"] = {"path": str(path), "samples": n, "select": ingest_select, "delta_frames": ingest_delta}
        err.print(f"[green]wrote[/] {path}: {n['train']} train / {n['val']} val / {n['test']} test samples")
    if json_out:
        emit_json(summary)


def _resume(resume_run, input, out_dir: Path, ns, platform, given: dict, bar, command):
    from ..teacher.outputs import PROGRESS, RECORD, WORK_DIR, read_record_file

    path = out_dir / WORK_DIR / PROGRESS
    path = path if path.exists() else out_dir / RECORD
    if not path.exists():
        fail(f"nothing to resume in {out_dir}: it holds neither an interrupted nor a finished run")
    record = read_record_file(path)
    if str(input) != record["input"]["spec"]:
        fail(f"{out_dir} holds a run of {record['input']['spec']}, not {input}")
    recorded = record["settings"]
    for key, value in given.items():
        if key == "hydrogen_mass" and value == 0:
            value = None
        if value != recorded.get(key):
            fail(f"--resume continues with the recorded settings: --{key.replace('_nm', '').replace('_', '-')} "
                 f"cannot change from {recorded.get(key)} to {value}")
    if platform.lower() not in ("auto", str(record["platform"]["name"]).lower()):
        fail(f"the run was made on the {record['platform']['name']} platform; a checkpoint only resumes there")
    return resume_run(out_dir, ns=ns, progress=bar.update, warn=warn, command=command)


def _summary(record: dict, out_dir: Path, wall: float) -> dict:
    rama = record.get("ramachandran") or {}
    out = {
        "out": str(out_dir),
        "system": record["input"]["name"],
        "n_atoms": record["system"]["n_atoms"],
        "frames": record["summary"]["frames"],
        "ns": record["summary"]["production_ns"],
        "frame_ps": record["settings"]["frame_ps"],
        "platform": record["platform"]["name"],
        "ns_per_day": record["throughput"]["ns_per_day"],
        "wall_s": round(wall, 2),
        "temperature_mean_k": record["summary"]["temperature_mean_k"],
    }
    if rama:
        out["ramachandran"] = {"populations": rama["populations"], "js_halves_bits": rama.get("js_halves_bits"),
                               "transitions_per_ns": rama["transitions"]["per_ns"]}
    return out


def _report(s: dict) -> None:
    err.print(f"[green]wrote[/] {s['out']}: {s['frames']} frames, {s['ns']:g} ns of {s['system']} "
              f"({s['n_atoms']} atoms) at {s['ns_per_day']:.0f} ns/day on {s['platform']}, "
              f"{s['wall_s']:.0f} s in all; mean temperature {s['temperature_mean_k']:.1f} K", highlight=False)
    rama = s.get("ramachandran")
    if rama:
        pops = ", ".join(f"{k} {v:.3f}" for k, v in rama["populations"].items())
        js = rama.get("js_halves_bits")
        err.print(f"Ramachandran basins: {pops}; JS divergence between the halves "
                  f"{'n/a' if js is None else f'{js:.4f}'} bits; {rama['transitions_per_ns']:.1f} transitions/ns",
                  highlight=False)


class _Progress:
    """A rich progress bar per phase (minimise, equilibrate, produce) with ns/day and ETA."""

    LABELS = {"minimise": "minimising", "equilibrate": "equilibrating", "produce": "producing"}

    def __enter__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description:<13}"), BarColumn(),
                                 TextColumn("{task.fields[ps]:>14}"),
                                 TextColumn("{task.fields[rate]:>14}"), TimeRemainingColumn(),
                                 console=err, transient=False)
        self.started = False
        self.tasks = {}
        return self

    def update(self, phase: str, done: float, total: float, ns_per_day: float | None) -> None:
        if not self.started:  # started on the first report, so that errors before it print nothing else
            self.progress.start()
            self.started = True
        rate = "" if ns_per_day is None else f"{ns_per_day:,.0f} ns/day"
        ps = f"{done:,.0f}/{total:,.0f} ps" if total else ""
        if phase not in self.tasks:
            for task in self.tasks.values():  # the previous phase is over
                t = self.progress.tasks[task]
                self.progress.update(task, total=t.total or 1, completed=t.total or 1)
            self.tasks[phase] =  self.progress.add_task(self.LABELS.get(phase, phase), total=total or None,
                                                       completed=done, rate=rate, ps=ps)
        self.progress.update(self.tasks[phase], completed=done, total=total or None, rate=rate, ps=ps)

    def stop(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False

    def __exit__(self, *exc):
        self.stop()
        return False
