"""`mdsurrogate rollout SOURCE --model RUN`: a surrogate trajectory from a frame of an MD file or a dataset."""

from __future__ import annotations

import math
import time
from pathlib import Path

import typer
from rich.table import Table

from .app import DEVICE, JSON_OUT, OVERWRITE, app, emit_json, err, fail, friendly, warn


@app.command()
@friendly
def rollout(
    source: Path = typer.Argument(..., help="An MD trajectory (with --top; a PDB/GRO alone also works), or a dataset "
                                  "directory (the initial state is a sample's input frame)."),
    model: Path = typer.Option(..., help="Run directory or checkpoint."),
    steps: int = typer.Option(10, help="Number of model steps (each advances Δ)."),
    out_file: Path = typer.Option(..., "--out", help="Output trajectory: .pdb/.ent (multi-MODEL), .xyz/.extxyz "
                                  "(extended, with velocities), .dcd, or any format MDAnalysis writes (.xtc, .trr, "
                                  ".ncdf/.nc …); or .mdsr: a small file from which MDAnalysis computes the frames on "
                                  "demand."),
    top: Path = typer.Option(None, help="Topology of the trajectory (PSF, TPR, PRMTOP, PDB, GRO, …)."),
    select: str = typer.Option(None, help="Atom selection; any selection of the model's atoms (they are compared, "
                               "not the strings) \\[default: the model's]."),
    dt: float = typer.Option(None, help="ps between the trajectory's saved frames, where the file does not state "
                             "it (Amber NetCDF with zero times, PDB, XYZ; as `ingest md --dt`)."),
    frame: int = typer.Option(None, help="Frame to start from; negative counts from the end \\[trajectory: -1, "
                              "dataset: the sample's input frame]."),
    sample: int = typer.Option(0, help="Dataset source: index of the starting sample in --split."),
    split: str = typer.Option("test", help="Dataset source: split the sample is taken from."),
    guard: bool = typer.Option(True, "--guard/--no-guard", help="Stop when a state leaves the limits derived from "
                               "the training data (step size, bond lengths, Rg), keeping the frames before it; "
                               "--no-guard stops on NaN/inf only."),
    seed: int = typer.Option(None, help="Seed of a stochastic propagator's noise (same seed → same trajectory) "
                             "\\[default: 0]."),
    noise_gain: float = typer.Option(None, "--noise-gain", help="Multiply a stochastic propagator's noise by this "
                                     "instead of the gain calibrated after training (1 = the noise the likelihood "
                                     "learned; the calibrated gain fits short ensembles' spread to their error, which "
                                     "can heat a long chain)."),
    flow_steps: int = typer.Option(None, "--flow-steps", help="Midpoint steps of a flow propagator's transport "
                                   "per draw (model.flow = true; more: closer to the learned law, slower) "
                                   "\\[default: the recipe's model.flow_steps]."),
    replicas: int = typer.Option(1, help="Independent trajectories of a stochastic propagator, advanced together in "
                                 "one model call per step and written to OUT_r00, OUT_r01, … (same format)."),
    overwrite: bool = OVERWRITE,
    device: str = DEVICE,
    json_out: bool = JSON_OUT,
):
    """Autoregressive rollout from the last (or any) frame of a trajectory, or from a dataset sample; reports the
    per-step error where the source has later frames to compare with."""
    import numpy as np

    from ..simulation import initial_state
    from ..simulation.guard import StabilityGuard
    from ..simulation.surrogate import Surrogate

    if steps < 1:
        fail("--steps must be ≥ 1")
    if replicas < 1:
        fail("--replicas must be ≥ 1")
    if noise_gain is not None and not (math.isfinite(noise_gain) and noise_gain > 0):
        fail(f"--noise-gain must be a finite number > 0, not {noise_gain}")
    ext = out_file.suffix.lower()
    if replicas > 1 and ext == ".mdsr":
        fail("--replicas writes trajectory files; a .mdsr file holds one rollout")
    if flow_steps is not None and flow_steps < 1:
        fail(f"--flow-steps must be ≥ 1, not {flow_steps}")
    for flag, given in (("--noise-gain", noise_gain), ("--flow-steps", flow_steps)):
        if given is not None and ext == ".mdsr":
            fail(f"{flag} applies to trajectory files; a .mdsr file replays the checkpoint's own sampler")
    if ext != ".mdsr":
        from ..io.writers import supported_extensions, writer_class

        try:
            writer_class(out_file)
        except ValueError as exc:
            known = ", ".join("." + e for e in supported_extensions())
            fail(str(exc) if "needs the Python package" in str(exc) else
                 f"cannot write {out_file.name}: the extension must be .mdsr or one of {known}")
    if not source.exists():
        fail(f"{source} does not exist")
    if out_file.is_dir():
        fail(f"{out_file} is a folder; --out must be a file name")
    if out_file.exists() and not overwrite:
        fail(f"{out_file} exists; choose another --out or pass --overwrite to replace it")
    if dt is not None and source.is_dir():
        fail("--dt applies to trajectories; a dataset source has its own frame spacing")
    from ..io.atomic import ensure_parent

    ensure_parent(out_file)  # a parent that is a regular file: one sentence now, before the model is loaded
    sur = Surrogate.load(model, device=device)
    if noise_gain is not None:
        if not sur.stochastic:
            fail(f"--noise-gain applies to a stochastic propagator; {model} predicts one next state")
        sur.noise_gain = noise_gain
    if flow_steps is not None:
        if not sur.has_flow:
            fail(f"--flow-steps applies to a propagator with a flow step (model.flow = true); {model} has none")
        sur.flow_steps = flow_steps
    if source.is_dir():
        from ..data.dataset import Dataset

        if top is not None or select is not None:
            fail("--top and --select apply to trajectories; a dataset source has its own atoms")
        start = initial_state.from_dataset(Dataset(source), sur, split=split, sample=sample, frame=frame)
    else:
        with err.status(f"reading {source.name} with MDAnalysis…"):
            start = initial_state.from_trajectory(source, sur, top=top, frame=-1 if frame is None else frame,
                                                  select=select, dt=dt)
    for note in start.warnings:
        warn(note)
    if steps > 1 and not sur.velocity_trained:
        warn("this model was trained on positions only (train.velocity_weight = 0), so its next-velocity output is "
             "untrained and steps after the first are unreliable; retrain with --set train.velocity_weight=0.1 "
             "(or more) for rollouts")
    from rich.progress import Progress

    t_start = time.perf_counter()
    if ext == ".mdsr":
        from ..simulation.mdsr import read_mdsr, write_rollout_spec

        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("checking the chain", total=steps)
            path = write_rollout_spec(out_file, model, start.x0, start.v0, start.topo, start.atoms, steps,
                                      t0_ps=start.t0, dt_ps=sur.delta_time, device=device, seed=seed,
                                      guard=guard, on_step=lambda k: bar.update(task, completed=k))
        header = read_mdsr(path, load_model=False).header
        frames, stopped = header["n_frames"], header.get("stopped")
        if stopped:
            warn(f"{stopped}; {path} holds the {frames} frames before it")
        err.print(f"[green]wrote[/] {path} ({frames} frames, computed on demand when read; open it with "
                  f"`import mdsurrogate.mda` and `MDAnalysis.Universe({str(path)!r})`)", highlight=False)
        if json_out:
            emit_json({"out": str(path), "steps": frames - 1, "frames": frames, "stopped": stopped, "t0": start.t0,
                       "dt": sur.delta_time, "seconds": time.perf_counter() - t_start})
        if stopped:
            raise typer.Exit(3)
        return

    from ..io.writers import FrameError
    from ..simulation.rollout import rollout_to_file

    if replicas > 1:
        _write_replicas(sur, start, steps, replicas, out_file, seed, guard, overwrite, json_out, t_start)
        return

    try:
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("rolling out", total=steps)
            res = rollout_to_file(sur, start, steps, out_file, seed=seed, overwrite=overwrite,
                              guard="default" if guard else StabilityGuard(max_expansion=float("inf")),
                                  on_step=lambda k: bar.update(task, completed=k))
    except FrameError as exc:  # the format cannot hold a frame: the complete frames before it were kept
        kept = f"; the {exc.frame} frames before it are in {out_file}" if exc.frame else f"; {out_file} was not written"
        fail(f"{exc}{kept}", code=3)
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


def _write_replicas(sur, start, steps, replicas, out_file, seed, guard, overwrite, json_out, t_start):
    """rollout --replicas R: one ensemble chain, R files."""
    from ..simulation.ensemble import ensemble_to_files
    from ..simulation.guard import StabilityGuard

    if not sur.stochastic:
        warn(f"{sur.name} is deterministic: its {replicas} replicas are identical copies of one trajectory")
    with err.status(f"rolling {replicas} replicas out for {steps} steps…"):
        res, paths = ensemble_to_files(sur, start, steps, replicas, out_file, seed=seed, overwrite=overwrite,
                                       guard="default" if guard else StabilityGuard(max_expansion=float("inf")))
    secs = time.perf_counter() - t_start
    if res.stopped:
        warn(f"{res.stopped}; every replica keeps the {res.steps_done} steps before it")
    err.print(f"[green]wrote[/] {len(paths)} files {paths[0].name} … {paths[-1].name} ({res.steps_done + 1} frames "
              f"each, {secs:.2f} s)")
    if json_out:
        emit_json({"out": [str(p) for p in paths], "replicas": replicas, "steps": res.steps_done,
                   "stopped": res.stopped, "seconds": secs, "times": res.times.tolist()})
    if res.stopped:
        raise typer.Exit(3)
