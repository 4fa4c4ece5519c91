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
    from ..device import resolve_device
    from ..training.checkpoint import load_checkpoint, model_from_checkpoint
    from ..training.metrics import evaluate

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

    from ..io.topology import AtomTopology
    from ..io.writers import open_writer

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
