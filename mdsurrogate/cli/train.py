"""`mdsurrogate train RECIPE`: one recipe (a shipped name or a TOML file) into one run directory, with a progress
bar showing the loss, the best validation figure so far and the time left."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import typer

from .app import DEVICE, JSON_OUT, app, command_line, emit_json, err, fail, friendly

# library parameters → this command's flags (for errors that name them)
FLAGS = {"resume": "--resume", "run_dir": "--out", "data_path": "--data"}


class TrainProgress:
    """A rich progress bar over epochs: training loss, last and best validation figure, elapsed time and ETA."""

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
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=err, transient=False, disable=not enabled)
        self.task = None
        self.label = "val"
        self.best = ""

    def __call__(self, ev: dict):
        kind = ev.get("event")
        if kind == "start":
            self.progress.start()
            self.label = ev.get("selection", "val")
            if ev.get("best_val") is not None:
                self.best = f"best {self.label} {ev['best_val']:.4g}"
            self.task = self.progress.add_task("training", total=ev["epochs"], completed=ev["start_epoch"], stats="")
            err.print(f"{ev.get('task', 'model')} with {ev['parameters']:,} parameters on {ev['device']}, "
                      f"{ev['train_samples']} training samples", highlight=False)
        elif kind == "epoch" and self.task is not None:
            if "best_val" in ev and math.isfinite(ev["best_val"]):
                test = f" (test {ev['best_test']:.4g})" if "best_test" in ev else ""
                self.best = f"best {self.label} {ev['best_val']:.4g} @{ev['best_epoch']}{test}"
            self.progress.update(self.task, completed=ev["epoch"] + 1,
                                 stats=f"loss {ev['train_loss']:.4g}  {self.best}")

    def stop(self):
        self.progress.stop()


@app.command()
@friendly
def train(
    recipe: str = typer.Argument(..., help="A shipped recipe's name (list them: mdsurrogate recipes) or a recipe "
                                 "TOML file."),
    data: str = typer.Option(None, help="Dataset directory (overrides the recipe's data.path)."),
    out_dir: Path = typer.Option(None, "--out", help="Run directory (default runs/<recipe>-<time>)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a recipe entry: section.key=value (repeatable)."),
    device: str = DEVICE,
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    init_from: str = typer.Option(None, "--init-from", help="Fine-tune: start from the weights of this run "
                                  "directory or checkpoint (same model and settings; sets train.init_from)."),
    tensorboard: bool = typer.Option(False, help="Also log to TensorBoard, in RUN/tensorboard (needs the optional "
                                     "tensorboard package: pip install tensorboard)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    json_out: bool = JSON_OUT,
):
    """Train the recipe's model: a propagator (state at t → t + Δ) or, when the recipe's model.name is a
    potential (egnn_potential), a learned potential on energies and forces. Writes best.pt, last.pt, metrics.jsonl,
    metrics.csv, recipe.toml and summary.json to the run directory.

    Several processes or GPUs (DDP): `torchrun --nproc-per-node 4 -m mdsurrogate train RECIPE --out RUN`.
    """
    from ..config import load_recipe
    from ..errors import ParameterError
    from ..training.trainer import Trainer

    rec, _ = load_recipe(recipe, set_ or [])
    flags = dict(FLAGS)
    if init_from:
        rec.train.init_from = init_from
        flags["init_from"] = "--init-from"
    if out_dir is None:
        if resume:
            fail("--resume needs --out RUN_DIR (the run to continue)")
        stem = rec.name or Path(recipe).stem
        out_dir = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    rank = int(os.environ.get("RANK", "0"))
    progress = TrainProgress(enabled=not quiet and rank == 0)
    try:
        trainer = Trainer(rec, out_dir, device=device, resume=resume, data_path=data, command=command_line(),
                          callback=progress, tensorboard=tensorboard)
        summary = trainer.run()
    except ParameterError as exc:
        progress.stop()
        fail(exc.render(flags))
    finally:
        progress.stop()
    if rank != 0:
        return
    if summary["task"] == "potential":
        test = summary["test"] or summary["val"]
        err.print(f"[green]done[/] {summary['run_dir']}: {'test' if summary['test'] else 'val'} force MAE "
                  f"{test['force_mae']:.4g} eV/Å, energy MAE {1000 * test['energy_mae']:.3g} meV/atom (best epoch "
                  f"{summary['best_epoch']} of {summary['epochs_run']}), {summary['seconds']} s", highlight=False)
    else:
        err.print(f"[green]done[/] {summary['run_dir']}: test MSE {summary['test_mse']:.6g} at the best validation "
                  f"(epoch {summary['best_epoch']}, val {summary['best_val_mse']:.6g}), {summary['seconds']} s",
                  highlight=False)
        from ..simulation.calibration import calibrate_if_asked

        calibration = calibrate_if_asked(rec, out_dir, device=device)
        if calibration is not None:
            from .evaluate import report_calibration

            summary["noise_calibration"] = calibration
            report_calibration(calibration)
    if json_out:
        emit_json(summary)
