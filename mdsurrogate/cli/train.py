"""`mdsurrogate train RECIPE`: one recipe into one run directory, with a progress bar."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from .app import DEVICE, JSON_OUT, app, command_line, emit_json, err, fail, friendly


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
    device: str = DEVICE,
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    json_out: bool = JSON_OUT,
):
    """Train a propagator or, when the recipe's [model] name is a potential (egnn_potential), a learned potential
    on energies and forces; writes best.pt, last.pt, metrics.jsonl, recipe.toml and summary.json to the run dir.

    Multi-GPU / multi-process (propagators): `torchrun --nproc-per-node 4 -m mdsurrogate train RECIPE --out RUN`.
    """
    from ..config import load_recipe
    from ..training.loop import Trainer
    from ..training.potential_recipe import is_potential_recipe, read_raw_recipe

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
    command = command_line()
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
    from ..training.potential_recipe import train_potential_recipe

    if resume:
        fail("--resume is not supported for potentials; start a new run with another --out")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        fail("potentials train in one process; run without torchrun")
    if out_dir is None:
        out_dir = Path("runs") / f"{raw.get('name') or recipe.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    progress = TrainProgress(enabled=not quiet)
    command = command_line()
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
