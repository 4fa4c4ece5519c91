"""`mdsurrogate rollout SOURCE --model RUN`: a surrogate trajectory from a frame of an MD file or a dataset."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from .app import DEVICE, JSON_OUT, app, emit_json, err, fail, friendly, warn


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
    device: str = DEVICE,
    json_out: bool = JSON_OUT,
):
    """Autoregressive rollout from the last (or any) frame of a trajectory, or from a dataset sample; reports the
    per-step error where the source has later frames to compare with."""
    import numpy as np

    from .. import initial_state
    from ..device import resolve_device
    from ..training.checkpoint import load_checkpoint, model_from_checkpoint

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
        from ..data.dataset import Dataset

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

    from ..rollout import rollout_to_file

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
    from ..io.mdsr import write_rollout_spec

    path = write_rollout_spec(out_file, model, x0, v0, topo, atoms, steps, t0_ps=t0, dt_ps=dt, device=device)
    err.print(f"[green]wrote[/] {path} ({steps + 1} frames, computed on demand when read; open it with "
              f"`import mdsurrogate.mda` and `MDAnalysis.Universe({str(path)!r})`)", highlight=False)
    if json_out:
        emit_json({"out": str(path), "steps": steps, "frames": steps + 1, "t0": t0, "dt": dt})


def untrained_velocity(ck: dict) -> bool:
    """True when a trainable propagator's velocity output got no training signal (velocity_weight = 0)."""
    weight = ck.get("recipe", {}).get("train", {}).get("velocity_weight", 0.0)
    return weight == 0 and ck["model"]["name"] != "linear"
