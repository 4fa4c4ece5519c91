"""The ``mdsurrogate`` command line: subcommands that mirror the pipeline.

    ingest  → dataset on disk        train → run directory (checkpoints, metrics)
    eval    → test MSE (papers' metric), optionally after a random rigid motion
    rollout → trajectory file (PDB / XYZ / DCD)       demo → the whole pipeline on an embedded default
    info    → what a dataset or checkpoint holds

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

err = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2):
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
@ingest_app.command("nbody")
@friendly
def ingest_nbody_cmd(
    out_dir: Path = typer.Argument(..., help="Dataset directory to create."),
    train: int = typer.Option(3000, help="Training simulations (paper: first 3000 of 10 000)."),
    val: int = typer.Option(2000, help="Validation simulations."),
    test: int = typer.Option(2000, help="Test simulations."),
    seed: int = typer.Option(43, help="Seed of the one legacy-NumPy stream (paper: 43)."),
    stream_train: int = typer.Option(10000, help="Train initial conditions drawn before val/test, as the official "
                                     "generator does (keeps val/test identical whatever --train is)."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset (only once the new one is complete)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary as the last line."),
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
    out_dir: Path = typer.Argument(..., help="Dataset directory to create."),
    complexes: int = typer.Option(3, help="M: complexes per system."),
    size: int = typer.Option(3, help="N/M: average complex size a (sizes drawn from {2 … 2a−2})."),
    systems: int = typer.Option(1, help="J: number of system types (1 = single system, 5 = multiple)."),
    train: int = typer.Option(1000, help="Training systems (paper: 1000)."),
    val: int = typer.Option(2000, help="Validation systems."),
    test: int = typer.Option(2000, help="Test systems."),
    seed: int = typer.Option(43, help="Seed (system types follow the official generator for the same seed)."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset (only once the new one is complete)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary as the last line."),
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
    out_dir: Path = typer.Argument(..., help="Dataset directory to create."),
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
    overwrite: bool = typer.Option(False, help="Replace an existing dataset (only once the new one is complete)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary as the last line."),
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
    out_dir: Path = typer.Argument(..., help="Dataset directory to create."),
    files: list[Path] = typer.Argument(..., help="Files ASE reads (.traj, extended XYZ, OUTCAR, …) whose frames carry "
                                       "energies and forces; periodic cells are kept."),
    cutoff: float = typer.Option(5.0, help="Neighbour cutoff in Å of the potential (cells of any size work)."),
    val_fraction: float = typer.Option(0.1, help="Fraction of frames for validation (seeded random frame split)."),
    test_fraction: float = typer.Option(0.1, help="Fraction of frames for the test split."),
    seed: int = typer.Option(0, help="Seed of the frame split."),
    index: str = typer.Option(":", help="Frames to read from each file, ASE slice syntax (':' all, '-1', '::10')."),
    energy_key: str = typer.Option("energy", help="Energy to learn: energy, free_energy, or an atoms.info key."),
    forces_key: str = typer.Option("forces", help="Forces to learn: forces, or an atoms.arrays key."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset (only once the new one is complete)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary as the last line."),
):
    """Read frames with energies and forces (eV, Å) with ASE and write a dataset for learned potentials."""
    from .data.sources.ase_frames import ingest_ase

    t0 = time.perf_counter()
    with input_errors(), err.status(f"reading {len(files)} file(s) with ASE…"):
        path = ingest_ase(out_dir, files, cutoff=cutoff, val_fraction=val_fraction, test_fraction=test_fraction,
                          seed=seed, index=index, energy_key=energy_key, forces_key=forces_key, overwrite=overwrite)
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
    """Train a propagator; writes best.pt, last.pt, metrics.jsonl, recipe.toml and summary.json to the run dir.

    Multi-GPU / multi-process: `torchrun --nproc-per-node 4 -m mdsurrogate train RECIPE --out RUN`.
    """
    from .config import load_recipe
    from .training.loop import Trainer

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
    source: Path = typer.Argument(..., help="A dataset directory (the initial state is a sample's input frame)."),
    model: Path = typer.Option(..., help="Run directory or checkpoint."),
    steps: int = typer.Option(10, help="Number of model steps (each advances Δ)."),
    out_file: Path = typer.Option(..., "--out", help="Output trajectory: .pdb (multi-MODEL), .xyz (extended) or .dcd; "
                                  "or .mdsr: a small file from which MDAnalysis computes the frames on demand."),
    sample: int = typer.Option(0, help="Index of the starting sample in --split."),
    split: str = typer.Option("test", help="Split the sample is taken from."),
    frame: int = typer.Option(None, help="Start from this stored frame of the sample's trajectory instead of the "
                              "sample's input frame (negative counts from the end)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:i]."),
    json_out: bool = typer.Option(False, "--json", help="Print per-step errors and timing as JSON on the last line."),
):
    """Autoregressive rollout from a dataset sample; reports the per-step error where the data has a reference."""
    import numpy as np

    from .data.dataset import Dataset
    from .io.topology import AtomTopology
    from .io.writers import open_writer
    from .rollout import rollout as run_rollout
    from .training.checkpoint import load_checkpoint, model_from_checkpoint
    from .training.loop import resolve_device

    if steps < 1:
        fail("--steps must be ≥ 1")
    if out_file.suffix.lower() not in (".pdb", ".xyz", ".dcd", ".mdsr"):
        fail(f"cannot write {out_file.name}: the extension must be .pdb, .xyz, .dcd or .mdsr")
    dev = resolve_device(device)
    ck = load_checkpoint(model, kind="propagator")
    net, feat = model_from_checkpoint(ck, device=dev)
    ds = Dataset(source)
    if steps > 1 and untrained_velocity(ck):
        err.print("[bold yellow]warning:[/] this model was trained on positions only (train.velocity_weight = 0), "
                  "so its next-velocity output is untrained and steps after the first are unreliable; retrain "
                  "with --set train.velocity_weight=0.1 (or more) for rollouts")
    ids = ds.split_indices(split)
    if not 0 <= sample < len(ids):
        fail(f"--sample {sample} is out of range: split {split!r} has {len(ids)} samples")
    traj, f0, _ = (int(a) for a in ds.samples[ids[sample]])
    if frame is not None:
        n_frames = int(ds.traj_frames[traj])
        if not -n_frames <= frame < n_frames:
            fail(f"--frame {frame} is out of range: the trajectory has {n_frames} frames")
        f0 = frame % n_frames
    x0, v0 = ds.states([traj], [f0])
    topo = ds.topology([traj])
    delta = int(ck["dataset"]["delta_frames"])
    frame_dt = float(ck["dataset"]["frame_dt"])

    def reference(k: int):
        f = f0 + k * delta
        return ds.frame(traj, f)[0] if f < ds.traj_frames[traj] else None

    top = AtomTopology.generic(x0.shape[0], bonds=static_bonds(ds, traj))
    ext = out_file.suffix.lower()
    if ext == ".mdsr":
        return write_mdsr_spec(out_file, model, x0, v0, topo, top, steps, f0 * frame_dt, delta * frame_dt, device,
                               json_out)
    has_clusters = net.produces_clusters
    t_start = time.perf_counter()
    from rich.progress import Progress

    writer_opts = {"conect": top.bonds is not None} if ext == ".pdb" else {}
    if has_clusters and ext == ".pdb":
        writer_opts["bfactors"] = "cluster"
    with open_writer(out_file, top, **writer_opts) as writer, Progress(console=err, transient=True) as bar:
        task = bar.add_task("rolling out", total=steps)

        def on_frame(k, x, v, t, cl):
            extra = {"cluster": cl} if cl is not None and ext != ".dcd" else {}
            writer.write(x, time_ps=t, velocities=v if ext == ".xyz" else None, **extra)
            bar.update(task, completed=k)

        res = run_rollout(net, feat, x0, v0, topo, steps, delta_time=delta * frame_dt, t0=f0 * frame_dt,
                          reference=reference, on_frame=on_frame, device=dev)
    secs = time.perf_counter() - t_start
    if res.stopped:
        err.print(f"[bold yellow]warning:[/] {res.stopped}; the {res.steps_done} steps before it are in {out_file}")
    table = Table("step", "time", "position MSE vs reference", header_style="bold")
    for k in range(1, res.steps_done + 1):
        e = res.errors[k]
        table.add_row(str(k), f"{res.times[k]:.4g}", "—" if np.isnan(e) else f"{e:.6g}")
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


def static_bonds(ds, traj: int):
    """Undirected local edges (bonds, bones, intra-complex pairs) of a trajectory as [E, 2] with i < j, or None;
    written as PDB CONECT records so that VMD/PyMOL draw the connectivity (e.g. a skeleton as sticks)."""
    import numpy as np

    if "local" not in ds.edge_set_names:
        return None
    edges, _ = ds.edge_set("local", traj)
    if len(edges) == 0:
        return None
    return np.unique(np.sort(edges, axis=1), axis=0)


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
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on the last line."),
):
    """The whole pipeline on an embedded default: simulate N-body, train EGNN and Linear, evaluate, roll out."""
    from .demo import run_demo

    res = run_demo(out_dir, device=device, console=err)
    table = Table("model", "test MSE", "test MSE (rotated+translated)", "train s", header_style="bold",
                  title="charged N-body, Δ = 1000 steps")
    for row in res["models"]:
        table.add_row(row["model"], f"{row['test_mse']:.5f}", f"{row['test_mse_rotated']:.5f}", f"{row['seconds']:.1f}")
    out.print(table)
    out.print(f"rollout: {res['rollout']}  ·  total {res['seconds']:.0f} s")
    if json_out:
        emit_json(res)


def main():  # console-script entry point
    app()


if __name__ == "__main__":
    main()
