"""`mdsurrogate plot …`: figures (matplotlib is imported by the library, lazily)."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import DEVICE, JSON_OUT, emit_json, err, fail, friendly, plot_app


@plot_app.command("skeleton")
@friendly
def plot_skeleton_cmd(
    model: Path = typer.Argument(..., help="Propagator run directory (uses best.pt) or checkpoint."),
    data: str = typer.Option(None, help="Dataset with local edges (bones), e.g. mocap (default: the model's)."),
    split: str = typer.Option("test", help="train, val or test."),
    samples: int = typer.Option(4, help="Number of samples, spread evenly over the split (one row each)."),
    out_file: Path = typer.Option(..., "--out", help="Figure file: .png (or .pdf, .svg)."),
    device: str = DEVICE,
    json_out: bool = JSON_OUT,
):
    """Input, true next and predicted next state of a few samples as 3-D stick figures (bones = local edges)."""
    from ..apps.plot import plot_skeletons

    if samples < 1:
        fail("--samples must be ≥ 1")
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
    from ..apps.plot import plot_curves

    plot_curves(runs, out_file, labels=label or None)
    err.print(f"[green]wrote[/] {out_file} ({len(runs)} run(s))")


@plot_app.command("fidelity")
@friendly
def plot_fidelity_cmd(
    result: Path = typer.Argument(..., help="JSON record of `mdsurrogate eval RUN --rollout K --json` (its stdout "
                                  "redirected to a file)."),
    out_file: Path = typer.Option(..., "--out", help="Figure file: .png (or .pdf, .svg)."),
):
    """Rollout fidelity per horizon: RMSD and skill against null models, bond deviation, Rg and step size against
    the data's envelope, envelope exits, energy score and spread–skill ratio."""
    from ..apps.plot import plot_fidelity

    plot_fidelity(result, out_file)
    err.print(f"[green]wrote[/] {out_file}")
