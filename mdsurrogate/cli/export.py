"""`mdsurrogate export`: a trained model as a self-contained torch.export archive (.pt2)."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import JSON_OUT, OVERWRITE, app, emit_json, err, friendly, out


@app.command()
@friendly
def export(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory (uses best.pt) or checkpoint file."),
    out_path: Path = typer.Argument(..., metavar="OUT", help="The archive to write (.pt2)."),
    dtype: str = typer.Option("float32", help="float32 or float64: the precision the program computes in."),
    aot_inductor: bool = typer.Option(False, "--aot-inductor", help="Compile to native code with AOTInductor "
                                      "(needs a C++ compiler; a minute or more): load with "
                                      "torch._inductor.aoti_load_package(OUT), or from C++."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_OUT,
):
    """Write a potential or propagator as a torch.export program that loads and runs with torch alone (no
    mdsurrogate): torch.export.load(OUT).module(). The graph (edges, lattice shifts) is an input; the archive
    holds mdsurrogate.json (inputs, outputs, units, cutoff, Δ) and neighbors.py (a pure-torch neighbour search).
    The program is checked against the model before anything is written."""
    from rich.markup import escape

    from ..apps.export import export_model

    if out_path.suffix != ".pt2":
        err.print(f"[yellow]note:[/] {out_path} does not end in .pt2 (the usual suffix of torch.export archives)",
                  highlight=False)
    with err.status(f"exporting {run} (tracing and checking; tens of seconds)"):
        res = export_model(run, out_path, dtype=dtype, overwrite=overwrite, aot_inductor=aot_inductor)
    ins = ", ".join(i["name"] for i in res.meta["inputs"])
    outs = ", ".join(o["name"] for o in res.meta["outputs"])
    out.print(f"[green]wrote[/] {escape(str(res.path))}: {res.kind} {res.model!r}, {res.dtype}, ({ins}) → ({outs}); "
              f"largest deviation from the model {res.max_abs_error:.2g} (relative); {res.seconds:.0f} s",
              highlight=False)
    if json_out:
        emit_json(res.to_dict())
