"""The ``mdsurrogate`` command line: subcommands that mirror the pipeline.

    ingest  → dataset on disk        train → run directory (checkpoints, metrics)
    eval    → test MSE (papers' metric), optionally after a random rigid motion
    rollout → trajectory file (PDB / XYZ / DCD)       demo → the whole pipeline on an embedded default
    info    → what a dataset or checkpoint holds          plot → skeleton / training-curve figures

Thin by design: parse, validate, call the library, show progress. Errors are one red sentence and a non-zero
exit code; set MDSURROGATE_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .errors import UserError

app = typer.Typer(
    help="Learned E(n)-equivariant surrogates of particle and molecular simulations: ingest, train, roll out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(help="Turn a simulation or trajectory into a training dataset.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
plot_app = typer.Typer(help="Figures (PNG, PDF, SVG): skeletons and training curves. Needs matplotlib, the "
                       "optional extra `plot`.", no_args_is_help=True)
app.add_typer(plot_app, name="plot")

err = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2):
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # "[plot]" is no markup
    raise typer.Exit(code)


def friendly(fn):
    """Turn user errors into one sentence and exit code 2; unexpected errors into exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except (UserError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            if os.environ.get("MDSURROGATE_DEBUG"):
                raise
            fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - last line of defence: never a traceback for users
            if os.environ.get("MDSURROGATE_DEBUG"):
                raise
            fail(f"{exc.__class__.__name__}: {exc} (set MDSURROGATE_DEBUG=1 for the traceback)", code=1)

    return wrapper


@contextlib.contextmanager
def input_errors():
    """Inside an ingest: a ValueError from a source (infeasible parameters, malformed file) is bad input."""
    try:
        yield
    except ValueError as exc:
        fail(str(exc))


def emit_json(obj: dict) -> None:
    """Print one JSON object as the last line of stdout."""
    sys.stdout.write(json.dumps(obj, default=float) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------------------
# ingest
# --------------------------------------------------------------------------------------------------------
# parameters every ingest command shares (typer reads these defaults as metadata; sharing them is safe)
NEW_DATASET = typer.Argument(..., help="Dataset directory to create.")
OVERWRITE = typer.Option(False, help="Replace an existing dataset (only once the new one is complete).")
JSON_SUMMARY = typer.Option(False, "--json", help="Print a JSON summary as the last line.")


@ingest_app.command("nbody")
@friendly
def ingest_nbody_cmd(
    out_dir: Path = NEW_DATASET,
    train: int = typer.Option(3000, help="Training simulations (paper: first 3000 of 10 000)."),
    val: int = typer.Option(2000, help="Validation simulations."),
    test: int = typer.Option(2000, help="Test simulations."),
    seed: int = typer.Option(43, help="Seed of the one legacy-NumPy stream (paper: 43)."),
    stream_train: int = typer.Option(10000, help="Train initial conditions drawn before val/test, as the official "
                                     "generator does (keeps val/test identical whatever --train is)."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_SUMMARY,
):
    """Simulate the charged N-body system (EGNN paper, Table 2) and write the dataset (frames 30 → 40)."""
    from .data.ingest import ingest_nbody

    if min(train, val, test) < 0:
        fail("--train, --val and --test must be ≥ 0")
    t0 = time.perf_counter()
    with input_errors(), err.status(f"simulating {train + val + test} N-body systems…"):
        path = ingest_nbody(out_dir, n_train=train, n_val=val, n_test=test, seed=seed,
                            stream_train=max(stream_train, train), overwrite=overwrite)
    report_dataset(path, t0, json_out)


@ingest_app.command("mcomplex")
@friendly
def ingest_mcomplex_cmd(
    out_dir: Path = NEW_DATASET,
    complexes: int = typer.Option(3, help="M: complexes per system."),
    size: int = typer.Option(3, help="N/M: average complex size a (sizes drawn from {2 … 2a−2})."),
    systems: int = typer.Option(1, help="J: number of system types (1 = single system, 5 = multiple)."),
    train: int = typer.Option(1000, help="Training systems (paper: 1000)."),
    val: int = typer.Option(2000, help="Validation systems."),
    test: int = typer.Option(2000, help="Test systems."),
    seed: int = typer.Option(43, help="Seed (system types follow the official generator for the same seed)."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_SUMMARY,
):
    """Simulate the M-complex system (EGHN paper, Table 1) and write the dataset (frames 10 → 25)."""
    from .data.ingest import ingest_mcomplex

    if min(train, val, test) < 0 or min(complexes, size, systems) < 1:
        fail("--complexes, --size and --systems must be ≥ 1 and the split sizes ≥ 0")
    t0 = time.perf_counter()
    with input_errors(), err.status(f"simulating {train + val + test} M-complex systems…"):
        path = ingest_mcomplex(out_dir, n_complexes=complexes, avg_size=size, n_types=systems, n_train=train,
                               n_val=val, n_test=test, seed=seed, overwrite=overwrite)
    report_dataset(path, t0, json_out)


@ingest_app.command("mocap")
@friendly
def ingest_mocap_cmd(
    out_dir: Path = NEW_DATASET,
    more_amc: list[Path] = typer.Argument(None, metavar="[B.amc …]", show_default=False,
                                          help="Further AMC trials after --amc (so that `--amc dir/*.amc` works)."),
    asf: Path = typer.Option(None, help="The subject's ASF skeleton (with --amc)."),
    amc: list[Path] = typer.Option(None, help="AMC trial(s) of that skeleton, one trajectory each (trial name = "
                                   "file stem); repeat the option or list the files after it."),
    positions: Path = typer.Option(None, help="Joint positions already computed instead of --asf/--amc: .npz with "
                                   "trial_00 … [T, J, 3], edges [J-1, 2] and the published split_* arrays."),
    delta: int = typer.Option(30, help="Gap Δ in frames between input and target (paper: 30 at 120 Hz = 0.25 s; "
                              "use 8 for the 30 Hz subject-35 walks)."),
    split: str = typer.Option(None, help="Trial-disjoint split: a JSON file {\"train\": {\"trials\": [...], "
                              "\"starts\": [[...], ...] | null}, \"val\": …, \"test\": …} (trial ids: indices or "
                              "names) or 'walk30'. Default: the .npz's published split; for AMC trials WALK30 when "
                              "they are the 23 subject-35 walks, else a seeded 11:6:6 split of the trials."),
    fps: float = typer.Option(120.0, help="Frame rate of the trials (CMU: 120; the 30 Hz subject-35 copy: 30). "
                              "The dataset's time unit is one frame; v = x(t+1) − x(t) per frame."),
    height: bool = typer.Option(True, "--height/--no-height", help="Node features [‖v‖, y / max train height] "
                                "(EGHN; only rotations about y and horizontal shifts stay symmetries) or "
                                "[‖v‖, 1] (GMN; full E(3))."),
    cap: bool = typer.Option(True, "--cap/--no-cap", help="Keep at most ⌊3000 | 600 | 600 / trials⌋ starts per "
                             "train | val | test trial, as the EGHN trainer (Run: 400 / 240 / 240 samples)."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_SUMMARY,
):
    """Turn CMU motion capture (ASF + AMC trials, or joint positions in an .npz) into a dataset for the
    GMN/EGHN Walk/Run protocol: static 2-hop skeleton graph, forward-difference velocities, Δ = 30 frames."""
    from .data.sources.mocap import EGHN_MAX_SAMPLES, ingest_mocap_amc, ingest_mocap_positions, load_split

    amc_files = list(amc or []) + list(more_amc or [])
    if positions is not None and (asf is not None or amc_files):
        fail("give either --positions FILE.npz or --asf with --amc trials, not both")
    if positions is None and (asf is None or not amc_files):
        fail("give --asf SKELETON.asf with at least one --amc TRIAL.amc (or --positions FILE.npz)")
    if delta < 1 or fps <= 0:
        fail("--delta must be ≥ 1 frame and --fps positive")
    for f in [positions] if positions is not None else [asf, *amc_files]:
        if not f.is_file():
            fail(f"{f} does not exist")
    with input_errors():
        split_dict = load_split(split) if split is not None else None
        caps = EGHN_MAX_SAMPLES if cap else None
        t0 = time.perf_counter()
        if positions is not None:
            with err.status(f"reading joint positions from {positions.name}…"):
                path = ingest_mocap_positions(out_dir, positions, delta=delta, split_from_file=split_dict is None,
                                              split=split_dict, height_feature=height, fps=fps, max_samples=caps,
                                              overwrite=overwrite)
        else:
            with err.status(f"forward kinematics of {len(amc_files)} trials…"):
                path = ingest_mocap_amc(out_dir, asf, amc_files, delta=delta, split=split_dict,
                                        height_feature=height, fps=fps, max_samples=caps, overwrite=overwrite)
    report_dataset(path, t0, json_out)


@ingest_app.command("ase")
@friendly
def ingest_ase_cmd(
    out_dir: Path = NEW_DATASET,
    files: list[Path] = typer.Argument(..., help="Files ASE reads (.traj, extended XYZ, OUTCAR, …) whose frames carry "
                                       "energies and forces; periodic cells are kept."),
    cutoff: float = typer.Option(5.0, help="Neighbour cutoff in Å of the potential (cells of any size work)."),
    val_fraction: float = typer.Option(0.1, help="Fraction of frames for validation (seeded random frame split)."),
    test_fraction: float = typer.Option(0.1, help="Fraction of frames for the test split."),
    seed: int = typer.Option(0, help="Seed of the frame split."),
    index: str = typer.Option(":", help="Frames to read from each file, ASE slice syntax (':' all, '-1', '::10')."),
    energy_key: str = typer.Option("energy", help="Energy to learn: energy, free_energy, or an atoms.info key."),
    forces_key: str = typer.Option("forces", help="Forces to learn: forces, or an atoms.arrays key."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_SUMMARY,
):
    """Read frames with energies and forces (eV, Å) with ASE and write a dataset for learned potentials."""
    from .data.sources.ase_frames import ingest_ase

    t0 = time.perf_counter()
    with input_errors(), err.status(f"reading {len(files)} file(s) with ASE…"):
        path = ingest_ase(out_dir, files, cutoff=cutoff, val_fraction=val_fraction, test_fraction=test_fraction,
                          seed=seed, index=index, energy_key=energy_key, forces_key=forces_key, overwrite=overwrite)
    report_dataset(path, t0, json_out)


@ingest_app.command("md")
@friendly
def ingest_md_cmd(
    out_dir: Path = NEW_DATASET,
    top: Path = typer.Option(..., help="Topology MDAnalysis reads (PSF, TPR, PRMTOP, PDB, GRO, …)."),
    traj: list[Path] = typer.Option(..., help="Trajectory (DCD, XTC, TRR, NetCDF, PDB, …); repeat for several runs "
                                    "of the same system (no sample straddles two files)."),
    select: str = typer.Option("backbone", help="MDAnalysis selection of the atoms to model."),
    delta: int = typer.Option(15, help="Δ in saved frames between input and target (EGHN AdK: 15 = 3.6 ns)."),
    cutoff: float = typer.Option(10.0, help="Global-graph cutoff in Å (rebuilt for every state)."),
    velocities: str = typer.Option("auto", help="auto (the trajectory's when it has them, else the backward "
                                   "difference), trajectory or difference; stored in Å per frame."),
    split: str = typer.Option("0.6,0.2,0.2", help="Chronological train,val,test fractions of each trajectory."),
    test_traj: list[Path] = typer.Option(None, help="Trajectory held out whole as test data (repeatable); then "
                                         "--split may give the other trajectories a test fraction of 0."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_SUMMARY,
):
    """Any MD trajectory MDAnalysis reads → dataset: one atom selection, bonds as local edges, atoms within the
    cutoff as global edges, chronological split without leakage across its boundaries."""
    from .data.ingest import ingest_md

    t0 = time.perf_counter()
    with input_errors(), err.status(f"reading {len(traj)} trajectory file(s) with MDAnalysis…"):
        path = ingest_md(out_dir, top, traj, select=select, delta=delta, cutoff=cutoff, velocities=velocities,
                         ratios=parse_ratios(split), test_trajs=test_traj or [], overwrite=overwrite, warn=warn)
    report_dataset(path, t0, json_out)


@ingest_app.command("adk")
@friendly
def ingest_adk_cmd(
    out_dir: Path = NEW_DATASET,
    source: str = typer.Option("equilibrium", help="equilibrium: MDAnalysisData's adk_equilibrium (downloaded once, "
                               "the EGHN paper's data); embedded: the AdK DIMS trajectories of MDAnalysisTests "
                               "(offline)."),
    select: str = typer.Option("backbone", help="MDAnalysis selection (EGHN paper: backbone)."),
    delta: int = typer.Option(None, help="Δ in frames [default: 15 (3.6 ns) for equilibrium, 5 for embedded]."),
    cutoff: float = typer.Option(10.0, help="Global-graph cutoff in Å (EGHN paper: 10)."),
    data_home: Path = typer.Option(None, help="Where MDAnalysisData keeps its downloads [~/MDAnalysis_data]."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_SUMMARY,
):
    """Adenylate kinase: the EGHN paper's AdK equilibrium trajectory, or the AdK data shipped with MDAnalysisTests."""
    from .data.ingest import ingest_adk

    t0 = time.perf_counter()
    status = "fetching adk_equilibrium with MDAnalysisData (once) and reading it…" if source == "equilibrium" else \
        "reading the AdK trajectories of MDAnalysisTests…"
    with input_errors(), err.status(status):
        path = ingest_adk(out_dir, source=source, select=select, delta=delta, cutoff=cutoff, data_home=data_home,
                          overwrite=overwrite, warn=warn)
    report_dataset(path, t0, json_out)


def parse_ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        fail(f"--split must be three non-negative fractions that sum to 1, like 0.6,0.2,0.2 (got {text!r})")
    return parts


def warn(message: str) -> None:
    err.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

@ingest_app.command("emt")
@friendly
def ingest_emt_cmd(
    out_dir: Path = NEW_DATASET,
    system: str = typer.Option("bulk", help="bulk (periodic cubic fcc cell, SIZE³ repeats: 4·SIZE³ atoms) or "
                               "cluster (free cuboctahedron with SIZE shells: 13, 55, 147 … atoms)."),
    element: str = typer.Option("Cu", help="An fcc metal EMT knows: Cu, Ag, Au, Ni, Pd, Pt, Al."),
    size: int = typer.Option(None, help="Default 3 for bulk (108 atoms), 2 for cluster (55 atoms)."),
    temperatures: str = typer.Option("300,400,500,600,700,800", help="Comma-separated temperatures in K; each "
                                     "is equilibrated, then sampled."),
    frames_per_temperature: int = typer.Option(40, help="Frames stored per temperature."),
    stride: int = typer.Option(10, help="MD steps between stored frames."),
    timestep: float = typer.Option(2.0, help="MD time step in fs."),
    friction: float = typer.Option(0.02, help="Langevin friction in 1/fs."),
    equilibrate: int = typer.Option(100, help="MD steps at each temperature before sampling."),
    seed: int = typer.Option(0, help="Seed of the MD (velocities, thermostat noise) and of the frame split."),
    frames: Path = typer.Option(None, help="Also keep the simulated frames in this file (.xyz extended XYZ or "
                                ".traj), e.g. to merge bulk and cluster frames with `ingest ase`."),
    cutoff: float = typer.Option(5.0, help="Neighbour cutoff in Å of the potential."),
    val_fraction: float = typer.Option(0.1, help="Fraction of frames for validation (seeded random frame split)."),
    test_fraction: float = typer.Option(0.1, help="Fraction of frames for the test split."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_SUMMARY,
):
    """Reference data from ASE's EMT: seeded Langevin MD of an fcc metal (periodic cell or cluster) at several
    temperatures, written as a potential dataset (energies in eV, forces in eV/Å) for `mdsurrogate train`."""
    from .data.sources.ase_frames import ingest_emt

    try:
        temps = [float(t) for t in temperatures.split(",") if t.strip()]
    except ValueError:
        fail(f"--temperatures must be comma-separated numbers in K, not {temperatures!r}")
    t0 = time.perf_counter()
    with input_errors(), err.status(f"EMT molecular dynamics of {element} ({system})…"):
        path = ingest_emt(out_dir, system=system, element=element, size=size, temperatures=temps,
                          frames_per_temperature=frames_per_temperature, stride=stride, timestep_fs=timestep,
                          friction=friction, equilibrate=equilibrate, seed=seed, frames_file=frames, cutoff=cutoff,
                          val_fraction=val_fraction, test_fraction=test_fraction, overwrite=overwrite)
    report_dataset(path, t0, json_out)


def report_dataset(path: Path, t0: float, json_out: bool) -> None:
    from .data.dataset import Dataset

    summary = Dataset(path).describe() | {"seconds": round(time.perf_counter() - t0, 2)}
    n = summary["samples"]
    err.print(f"[green]wrote[/] {path}: {n['train']} train / {n['val']} val / {n['test']} test samples "
              f"({summary['seconds']} s)")
    if json_out:
        emit_json(summary)


# --------------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------------
class TrainProgress:
    """A rich progress bar over epochs with the live loss and the best validation/test MSE."""

    def __init__(self, enabled: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.enabled = enabled
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=err, transient=False, disable=not enabled)
        self.task = None
        self.best = ""

    def __call__(self, ev: dict):
        kind = ev.get("event")
        if kind == "start":
            self.progress.start()
            self.task = self.progress.add_task("training", total=ev["epochs"], completed=ev["start_epoch"], stats="")
            err.print(f"model with {ev['parameters']:,} parameters on {ev['device']}, "
                      f"{ev['train_samples']} training samples", highlight=False)
        elif kind == "epoch" and self.task is not None:
            if "best_val" in ev:
                self.best = f"val {ev['val_mse']:.4g} best {ev['best_val']:.4g} (test {ev['best_test']:.4g})"
            elif "val_force_mae" in ev:  # potentials
                self.best = f"val force MAE {ev['val_force_mae']:.4g} eV/Å"
            self.progress.update(self.task, completed=ev["epoch"] + 1,
                                 stats=f"loss {ev['train_loss']:.4g}  {self.best}")

    def stop(self):
        self.progress.stop()


@app.command()
@friendly
def train(
    recipe: Path = typer.Argument(..., help="Recipe TOML file (see recipes/)."),
    data: str = typer.Option(None, help="Dataset directory (overrides [data] path)."),
    out_dir: Path = typer.Option(None, "--out", help="Run directory (default runs/<recipe>-<time>)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a recipe entry: section.key=value (repeatable)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:i]."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on the last line."),
):
    """Train a propagator or, when the recipe's [model] name is a potential (egnn_potential), a learned potential
    on energies and forces; writes best.pt, last.pt, metrics.jsonl, recipe.toml and summary.json to the run dir.

    Multi-GPU / multi-process (propagators): `torchrun --nproc-per-node 4 -m mdsurrogate train RECIPE --out RUN`.
    """
    from .config import load_recipe
    from .training.loop import Trainer
    from .training.potential_recipe import is_potential_recipe, read_raw_recipe

    raw = read_raw_recipe(recipe, set_ or [])
    if is_potential_recipe(raw):
        return train_potential_cmd(raw, recipe, data, out_dir, device, resume, quiet, json_out)
    rec, _ = load_recipe(recipe, set_ or [])
    if out_dir is None:
        if resume:
            fail("--resume needs --out RUN_DIR (the run to continue)")
        out_dir = Path("runs") / f"{rec.name or recipe.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    rank = int(os.environ.get("RANK", "0"))
    progress = TrainProgress(enabled=not quiet and rank == 0)
    command = "mdsurrogate " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        trainer = Trainer(rec, out_dir, device=device, resume=resume, data_path=data, command=command,
                          callback=progress)
        summary = trainer.run()
    finally:
        progress.stop()
    if rank == 0:
        err.print(f"[green]done[/] {summary['run_dir']}: test MSE {summary['test_mse']:.6g} at the best validation "
                  f"(epoch {summary['best_epoch']}, val {summary['best_val_mse']:.6g}), {summary['seconds']} s",
                  highlight=False)
        if json_out:
            emit_json(summary)


def train_potential_cmd(raw: dict, recipe: Path, data, out_dir, device, resume, quiet, json_out):
    """`train` for a potential recipe (training/potential_recipe.py): same options, force/energy figures."""
    from .training.potential_recipe import train_potential_recipe

    if resume:
        fail("--resume is not supported for potentials; start a new run with another --out")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        fail("potentials train in one process; run without torchrun")
    if out_dir is None:
        out_dir = Path("runs") / f"{raw.get('name') or recipe.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    progress = TrainProgress(enabled=not quiet)
    command = "mdsurrogate " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        summary = train_potential_recipe(raw, out_dir, data=data, device=device, command=command, callback=progress)
    finally:
        progress.stop()
    test = summary["test"] or summary["val"]
    err.print(f"[green]done[/] {summary['run_dir']}: {'test' if summary['test'] else 'val'} force MAE "
              f"{test['force_mae']:.4g} eV/Å, energy MAE {1000 * test['energy_mae']:.3g} meV/atom (best epoch "
              f"{summary['best_epoch']} of {summary['epochs_run']}), {summary['seconds']} s", highlight=False)
    if json_out:
        emit_json(summary)


# --------------------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------------------
@app.command("eval")
@friendly
def eval_cmd(
    model: Path = typer.Argument(..., help="Run directory (uses best.pt) or checkpoint file."),
    data: str = typer.Option(None, help="Dataset (default: the one the model was trained on)."),
    split: str = typer.Option("test", help="train, val or test."),
    rotate: bool = typer.Option(False, help="Apply a random rotation with reflection to the split first."),
    translate: bool = typer.Option(False, help="Apply a random translation to the split first."),
    seed: int = typer.Option(0, help="Seed of the random rigid motion."),
    batch_size: int = typer.Option(100, help="Evaluation batch size."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:i]."),
    clusters: Path = typer.Option(None, help="Write the first sample's hard cluster assignment (hierarchical "
                                  "models) to this PDB (B-factor) or extended-XYZ file."),
    json_out: bool = typer.Option(False, "--json", help="Print the figures as JSON on the last line."),
):
    """Position MSE as the papers define it (Σ batch MSE × graphs / Σ graphs) on a split."""
    from .data.dataset import Dataset
    from .training.checkpoint import load_checkpoint, model_from_checkpoint
    from .training.loop import resolve_device
    from .training.metrics import evaluate

    dev = resolve_device(device)
    ck = load_checkpoint(model, kind="propagator")
    net, feat = model_from_checkpoint(ck, device=dev)
    ds = Dataset(data or ck["dataset"]["path"])
    if ds.features.to_dict() != feat.spec.to_dict():
        fail(f"dataset {ds.path} has other features than the model was trained with")
    ids = ds.split_indices(split)
    res = evaluate(net, ds, ids, feat, device=dev, batch_size=batch_size, rotate=rotate, translate=translate,
                   seed=seed)
    res = {"model": ck["model"]["name"], "split": split, "rotate": rotate, "translate": translate, **res}
    if clusters is not None:
        if not net.produces_clusters:
            fail(f"model {net.name!r} has no cluster assignment to write (use a hierarchical model such as eghn)")
        res["clusters_file"] = str(write_clusters(net, feat, ds, ids[:1], clusters, dev))
    table = Table(show_header=True, header_style="bold")
    for k in ("model", "split", "graphs", "mse", "mse_v"):
        table.add_column(k)
    table.add_row(res["model"], split + (" (rotated)" if rotate else "") + (" (translated)" if translate else ""),
                  str(res["graphs"]), f"{res['mse']:.6g}", f"{res['mse_v']:.6g}")
    err.print(table)
    if json_out:
        emit_json(res)


def write_clusters(net, feat, ds, ids, path: Path, device) -> Path:
    import torch

    from .io.topology import AtomTopology
    from .io.writers import open_writer

    x0, v0, _, _, topo = ds.gather(ids)
    with torch.no_grad():
        pred = net(feat(x0.to(device), v0.to(device), topo.to(device)))
    if not net.produces_clusters:
        fail(f"model {net.name!r} has no cluster assignment to write (use a hierarchical model such as eghn)")
    cl = pred.extras["clusters"].cpu().numpy()
    top = AtomTopology.generic(x0.shape[0])
    opts = {"bfactors": "cluster"} if path.suffix.lower() == ".pdb" else {}
    with open_writer(path, top, **opts) as w:
        w.write(x0.numpy(), cluster=cl)
    return path


# --------------------------------------------------------------------------------------------------------
# rollout
# --------------------------------------------------------------------------------------------------------
@app.command()
@friendly
def rollout(
    source: Path = typer.Argument(..., help="An MD trajectory (with --top; a PDB/GRO alone also works), or a dataset "
                                  "directory (the initial state is a sample's input frame)."),
    model: Path = typer.Option(..., help="Run directory or checkpoint."),
    steps: int = typer.Option(10, help="Number of model steps (each advances Δ)."),
    out_file: Path = typer.Option(..., "--out", help="Output trajectory: .pdb (multi-MODEL), .xyz (extended) or .dcd; "
                                  "or .mdsr: a small file from which MDAnalysis computes the frames on demand."),
    top: Path = typer.Option(None, help="Topology of the trajectory (PSF, TPR, PRMTOP, PDB, GRO, …)."),
    select: str = typer.Option(None, help="Atom selection; must be the model's (default: the model's)."),
    frame: int = typer.Option(None, help="Frame to start from; negative counts from the end [trajectory: -1, "
                              "dataset: the sample's input frame]."),
    sample: int = typer.Option(0, help="Dataset source: index of the starting sample in --split."),
    split: str = typer.Option("test", help="Dataset source: split the sample is taken from."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:i]."),
    json_out: bool = typer.Option(False, "--json", help="Print per-step errors and timing as JSON on the last line."),
):
    """Autoregressive rollout from the last (or any) frame of a trajectory, or from a dataset sample; reports the
    per-step error where the source has later frames to compare with."""
    import numpy as np

    from . import initial_state
    from .training.checkpoint import load_checkpoint, model_from_checkpoint
    from .training.loop import resolve_device

    if steps < 1:
        fail("--steps must be ≥ 1")
    ext = out_file.suffix.lower()
    if ext not in (".pdb", ".xyz", ".dcd", ".mdsr"):
        fail(f"cannot write {out_file.name}: the extension must be .pdb, .xyz, .dcd or .mdsr")
    if not source.exists():
        fail(f"{source} does not exist")
    dev = resolve_device(device)
    ck = load_checkpoint(model, kind="propagator")
    net, feat = model_from_checkpoint(ck, device=dev)
    if source.is_dir():
        from .data.dataset import Dataset

        if top is not None or select is not None:
            fail("--top and --select apply to trajectories; a dataset source has its own atoms")
        start = initial_state.from_dataset(Dataset(source), ck, split=split, sample=sample, frame=frame)
    else:
        with err.status(f"reading {source.name} with MDAnalysis…"):
            start = initial_state.from_trajectory(source, ck, top=top, frame=-1 if frame is None else frame,
                                                  select=select)
    for note in start.warnings:
        warn(note)
    if steps > 1 and untrained_velocity(ck):
        warn("this model was trained on positions only (train.velocity_weight = 0), so its next-velocity output is "
             "untrained and steps after the first are unreliable; retrain with --set train.velocity_weight=0.1 "
             "(or more) for rollouts")
    delta_time = float(ck["dataset"]["delta_time"])
    if ext == ".mdsr":
        return write_mdsr_spec(out_file, model, start.x0, start.v0, start.topo, start.atoms, steps, start.t0,
                               delta_time, device, json_out)
    from rich.progress import Progress

    from .rollout import rollout_to_file

    t_start = time.perf_counter()
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("rolling out", total=steps)
        res = rollout_to_file(net, feat, start, steps, out_file, delta_time=delta_time, device=dev,
                              on_step=lambda k: bar.update(task, completed=k))
    secs = time.perf_counter() - t_start
    if res.stopped:
        warn(f"{res.stopped}; the {res.steps_done} steps before it are in {out_file}")
    table = Table("step", "time", "position MSE vs reference", header_style="bold")
    for k in range(1, res.steps_done + 1):
        e = res.errors[k]
        table.add_row(str(k), f"{res.times[k]:.6g}", "—" if np.isnan(e) else f"{e:.6g}")
    err.print(table)
    err.print(f"[green]wrote[/] {out_file} ({res.steps_done + 1} frames, {secs:.2f} s)")
    if json_out:
        emit_json({"out": str(out_file), "steps": res.steps_done, "stopped": res.stopped, "seconds": secs,
                   "times": res.times.tolist(),
                   "errors": [None if np.isnan(e) else e for e in res.errors.tolist()]})
    if res.stopped:
        raise typer.Exit(3)


def write_mdsr_spec(out_file: Path, model: Path, x0, v0, topo, atoms, steps: int, t0: float, dt: float, device: str,
                    json_out: bool) -> None:
    """`rollout --out run.mdsr`: write the rollout's specification instead of its frames (mdsurrogate/io/mdsr.py)."""
    from .io.mdsr import write_rollout_spec

    path = write_rollout_spec(out_file, model, x0, v0, topo, atoms, steps, t0_ps=t0, dt_ps=dt, device=device)
    err.print(f"[green]wrote[/] {path} ({steps + 1} frames, computed on demand when read; open it with "
              f"`import mdsurrogate.mda` and `MDAnalysis.Universe({str(path)!r})`)", highlight=False)
    if json_out:
        emit_json({"out": str(path), "steps": steps, "frames": steps + 1, "t0": t0, "dt": dt})


def untrained_velocity(ck: dict) -> bool:
    """True when a trainable propagator's velocity output got no training signal (velocity_weight = 0)."""
    weight = ck.get("recipe", {}).get("train", {}).get("velocity_weight", 0.0)
    return weight == 0 and ck["model"]["name"] != "linear"


# --------------------------------------------------------------------------------------------------------
# plot (logic in plot.py; matplotlib is imported there, lazily)
# --------------------------------------------------------------------------------------------------------
@plot_app.command("skeleton")
@friendly
def plot_skeleton_cmd(
    model: Path = typer.Argument(..., help="Propagator run directory (uses best.pt) or checkpoint."),
    data: str = typer.Option(None, help="Dataset with local edges (bones), e.g. mocap (default: the model's)."),
    split: str = typer.Option("test", help="train, val or test."),
    samples: int = typer.Option(4, help="Number of samples, spread evenly over the split (one row each)."),
    out_file: Path = typer.Option(..., "--out", help="Figure file: .png (or .pdf, .svg)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:i]."),
    json_out: bool = typer.Option(False, "--json", help="Print the sample ids and their MSE as JSON on the last line."),
):
    """Input, true next and predicted next state of a few samples as 3-D stick figures (bones = local edges)."""
    from .plot import plot_skeletons

    res = plot_skeletons(model, out_file, dataset=data, split=split, samples=samples, device=device)
    err.print(f"[green]wrote[/] {out_file}: samples {res['samples']}, position MSE "
              + ", ".join(f"{m:.4g}" for m in res["mse"]), highlight=False)
    if json_out:
        emit_json(res)


@plot_app.command("curves")
@friendly
def plot_curves_cmd(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with metrics.jsonl); overlaid."),
    out_file: Path = typer.Option(..., "--out", help="Figure file: .png (or .pdf, .svg)."),
    label: list[str] = typer.Option(None, help="Legend label per run, in order (default: directory names)."),
):
    """Training loss and validation/test metric against epoch (log scale) for one or more runs."""
    from .plot import plot_curves

    plot_curves(runs, out_file, labels=label or None)
    err.print(f"[green]wrote[/] {out_file} ({len(runs)} run(s))")


# --------------------------------------------------------------------------------------------------------
# info, demo
# --------------------------------------------------------------------------------------------------------
@app.command()
@friendly
def info(path: Path = typer.Argument(..., help="A dataset directory, run directory or checkpoint.")):
    """Describe a dataset or a checkpoint (JSON)."""
    from .data.dataset import Dataset
    from .training.checkpoint import load_checkpoint

    if path.is_dir() and (path / "meta.json").exists():
        emit_json(Dataset(path).describe())
        return
    ck = load_checkpoint(path)
    emit_json({k: ck[k] for k in ("kind", "model", "features", "dataset", "train_state", "n_parameters") if k in ck})


@app.command()
@friendly
def demo(
    out_dir: Path = typer.Option(Path("demo_out"), "--out", help="Where the dataset, runs and rollout go."),
    system: str = typer.Option("adk", help="adk: the AdK protein trajectories of MDAnalysisTests (EGHN vs Linear, "
                               "rollout from a DCD to PDB); nbody: simulated charged particles (EGNN vs Linear)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on the last line."),
):
    """The whole pipeline on an embedded default: ingest, train, evaluate (also rotated), roll out."""
    from .demo import run_demo, run_demo_adk

    if system not in ("adk", "nbody"):
        fail(f"--system must be adk or nbody, not {system!r}")
    if system == "adk":
        res = run_demo_adk(out_dir, device=device, console=err)
        title = "AdK Cα (MDAnalysisTests), Δ = 5 frames; test = adk_dims2.dcd, held out"
    else:
        res = run_demo(out_dir, device=device, console=err)
        title = "charged N-body, Δ = 1000 steps"
    table = Table("model", "test MSE (Å² for AdK)", "test MSE, rotated+reflected+translated", "train s",
                  header_style="bold", title=title)
    for row in res["models"]:
        table.add_row(row["model"], f"{row['test_mse']:.5f}", f"{row['test_mse_rotated']:.5f}", f"{row['seconds']:.1f}")
    out.print(table)
    out.print(f"rollout: {res['rollout']}  ·  total {res['seconds']:.0f} s")
    if json_out:
        emit_json(res)


@app.command()
@friendly
def reproduce(
    table: str = typer.Argument(..., help="egnn-nbody (EGNN Table 2), eghn-mcomplex (EGHN Table 1) or eghn-mocap "
                                "(EGHN Table 2, Run)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:i]."),
    runs: int = typer.Option(3, help="Runs per model, with train.seed = 1 … runs."),
    quick: bool = typer.Option(False, help="Minutes-long smoke version: small datasets, 3 epochs."),
    out_dir: Path = typer.Option(None, "--out", help="Runs, datasets (quick) and reports go here "
                                 "(default reproduce/TABLE)."),
    models: str = typer.Option(None, help="Comma-separated subset of the table's models (default: all)."),
    set_: list[str] = typer.Option(None, "--set", help="Override an entry of every recipe, e.g. train.epochs=500 "
                                   "(repeatable)."),
    config: str = typer.Option(None, help="eghn-mcomplex column M_A_J<j>, e.g. 5_5_J1 (default 3_3_J1)."),
    jobs: int = typer.Option(1, help="Runs trained at the same time, each in its own process."),
    json_out: bool = typer.Option(False, "--json", help="Print every figure as JSON on the last line."),
):
    """Train (or reuse finished runs of) every model of a paper's table over several seeds and print our test MSE
    (mean ± std) beside the paper's number; writes OUT/TABLE.md and OUT/TABLE.json. Missing datasets are ingested
    first; models without a recipe are listed as skipped."""
    from .reproduce import reproduce as run_reproduce

    res = run_reproduce(table, device=device, runs=runs, quick=quick, out=out_dir, models=models,
                        overrides=set_ or [], config=config, jobs=jobs,
                        log=lambda line: err.print(line, highlight=False, markup=False))
    sys.stdout.write(res.markdown)
    err.print(f"[green]wrote[/] {res.markdown_file} and {res.json_file}", highlight=False)
    if json_out:
        emit_json(res.summary)
    if res.failed:
        fail(f"{res.failed} run(s) failed; see the table and the run logs", code=3)


def main():  # console-script entry point
    app()


if __name__ == "__main__":
    main()
