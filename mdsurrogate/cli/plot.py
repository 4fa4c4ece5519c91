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


@plot_app.command("ramachandran")
@friendly
def plot_ramachandran_cmd(
    source: Path = typer.Argument(..., help="A `mdsurrogate simulate` output directory, a topology file (with "
                                  "--traj), or a file that holds its own frames (a multi-MODEL PDB rollout)."),
    traj: list[Path] = typer.Option(None, help="Trajectory file(s) of a topology SOURCE, in order (repeatable)."),
    dt: float = typer.Option(None, help="ps between saved frames, for files that do not state it (PDB, XYZ): "
                             "a rollout's Δ."),
    out_file: Path = typer.Option(..., "--out", help="Figure file: .png (or .pdf, .svg)."),
    title: str = typer.Option(None, help="Figure title \\[default: source, frames, residues]."),
    json_out: bool = JSON_OUT,
):
    """φ/ψ free-energy map (10° bins) with the αR / β / other basins and their populations, and φ(t), ψ(t).
    Reports the populations, the Jensen–Shannon divergence (bits, 30° bins) between the two halves of the
    frames and the core-to-core transitions per ns (basin and core definitions: mdsurrogate.analysis)."""
    from ..apps.plot import plot_ramachandran

    res = plot_ramachandran(source, out_file, trajs=traj or (), title=title, dt=dt)
    pops = ", ".join(f"{k} {v:.3f}" for k, v in res["populations"].items())
    js = res.get("js_halves_bits")
    err.print(f"[green]wrote[/] {out_file}: {res['frames']} frames; basins {pops}; JS(halves) "
              f"{'n/a' if js is None else f'{js:.4f}'} bits; {res['transitions']['per_ns']:.1f} transitions/ns",
              highlight=False)
    if json_out:
        emit_json(res)
