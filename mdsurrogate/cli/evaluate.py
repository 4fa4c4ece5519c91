"""`mdsurrogate eval RUN`: the papers' metric on a split, optionally after a random rigid motion."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .app import DEVICE, JSON_OUT, app, emit_json, err, fail, friendly


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
    device: str = DEVICE,
    clusters: Path = typer.Option(None, help="Write the first sample's hard cluster assignment (hierarchical "
                                  "models) to this PDB (B-factor) or extended-XYZ file."),
    json_out: bool = JSON_OUT,
):
    """Position MSE as the papers define it (Σ batch MSE × graphs / Σ graphs) on a split."""
    from ..data.dataset import Dataset
    from ..simulation.evaluation import evaluate_split, write_clusters
    from ..simulation.surrogate import Surrogate

    if batch_size < 1:
        fail("--batch-size must be ≥ 1")
    sur = Surrogate.load(model, device=device)
    ds = Dataset(data or sur.dataset.path)
    if clusters is not None and not sur.produces_clusters:
        fail(f"model {sur.name!r} has no cluster assignment to write (use a hierarchical model such as eghn)")
    res = evaluate_split(sur, ds, split, batch_size=batch_size, rotate=rotate, translate=translate, seed=seed)
    if clusters is not None:
        res["clusters_file"] = str(write_clusters(sur, ds, 0, clusters, split=split))
    table = Table(show_header=True, header_style="bold")
    for k in ("model", "split", "graphs", "mse", "mse_v"):
        table.add_column(k)
    table.add_row(res["model"], split + (" (rotated)" if rotate else "") + (" (translated)" if translate else ""),
                  str(res["graphs"]), f"{res['mse']:.6g}", f"{res['mse_v']:.6g}")
    err.print(table)
    if json_out:
        emit_json(res)
