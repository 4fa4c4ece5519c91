"""`mdsurrogate info`, `demo` and `reproduce`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from .app import DEVICE, JSON_OUT, app, emit_json, err, fail, friendly, out


@app.command()
@friendly
def info(path: Path = typer.Argument(..., help="A dataset directory, run directory or checkpoint."),
         json_out: bool = JSON_OUT):
    """Describe a dataset or a checkpoint: kind, model, parameters, units, Δ, features, training, versions and date
    (a table; --json for the machine-readable record)."""
    from ..apps.describe import checkpoint_rows, checkpoint_summary, dataset_rows
    from ..data.dataset import Dataset
    from ..training.checkpoint import Checkpoint

    if path.is_dir() and (path / "meta.json").exists():
        desc = Dataset(path).describe()
        if json_out:
            emit_json(desc)
            return
        _print_rows(f"dataset {path}", dataset_rows(desc))
        return
    ck = Checkpoint.load(path)
    if json_out:
        emit_json(checkpoint_summary(ck))
        return
    _print_rows(f"{ck.kind} checkpoint {ck.path}", checkpoint_rows(ck))


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.markup import escape

    table = Table(title=escape(title), show_header=False, title_justify="left", title_style="bold")
    table.add_column("field", style="bold cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(escape(key), escape(value))
    out.print(table)


@app.command()
@friendly
def demo(
    out_dir: Path = typer.Option(Path("demo_out"), "--out", help="Where the dataset, runs and rollout go."),
    system: str = typer.Option("adk", help="adk: the AdK protein trajectories of MDAnalysisTests (EGHN vs Linear, "
                               "rollout from a DCD to PDB); nbody: simulated charged particles (EGNN vs Linear)."),
    device: str = DEVICE,
    json_out: bool = JSON_OUT,
):
    """The whole pipeline on an embedded default: ingest, train, evaluate (also rotated), roll out."""
    from ..apps.demo import run_demo, run_demo_adk

    if system not in ("adk", "nbody"):
        fail(f"--system must be adk or nbody, not {system!r}")
    if system == "adk":
        res = run_demo_adk(out_dir, device=device, console=err)
        title = "AdK Cα (MDAnalysisTests), Δ = 5 frames; test = adk_dims2.dcd, held out"
    else:
        res = run_demo(out_dir, device=device, console=err)
        title = "charged N-body, Δ = 1000 steps"
    unit = "Å²" if system == "adk" else "dimensionless (simulator units)"
    table = Table("model", f"test MSE ({unit})", "test MSE, rotated+reflected+translated", "train s",
                  header_style="bold", title=title)
    for row in res["models"]:
        table.add_row(row["model"], f"{row['test_mse']:.5f}", f"{row['test_mse_rotated']:.5f}", f"{row['seconds']:.1f}")
    out.print(table)
    if res.get("fidelity"):
        out.print(demo_fidelity_table(res))
    if res.get("rollout_geometry"):
        g, ps = res["rollout_geometry"], res["delta_ps"] * (res["rollout_frames"] - 1)
        state = f"stopped: {res['rollout_stopped']}" if res["rollout_stopped"] else "the guard never stopped it"
        out.print(f"rollout: {res['rollout']}, {res['rollout_frames'] - 1} steps = {ps:g} ps ({state}); "
                  f"Cα–Cα RMS deviation ≤ {g['bond_rms_dev_max']:.3f} Å (data spread {g['data_bond_std']:.3f}), "
                  f"closest non-bonded pair {g['closest_contact']:.2f} Å (data {g['data_closest_contact']:.2f}), "
                  f"Rg {g['rg_min']:.1f}–{g['rg_max']:.1f} Å (data {g['data_rg'][0]:.1f}–{g['data_rg'][1]:.1f})",
                  highlight=False)
    else:
        out.print(f"rollout: {res['rollout']}")
    out.print(f"total {res['seconds']:.0f} s")
    if json_out:
        emit_json(res)


def demo_fidelity_table(res: dict) -> Table:
    """Per horizon k: RMSD (Å) of EGHN (its ensemble mean when stochastic) and of the null models, skill against
    them (90 % intervals in the JSON), spread/error for a stochastic model, and the bond and step checks against the
    data (from ``apps.demo.fidelity_summary``)."""
    stochastic = res.get("stochastic")
    columns = ["k (ps)", "EGHN", "still", "Linear", "drift", "skill: still", "Linear", "drift", "bond dev", "step"]
    if stochastic:
        columns.insert(8, "spread/err")
    what = f"ensemble mean of {res['fidelity_replicas']} replicas, " if stochastic else ""
    table = Table(*columns, header_style="bold", title=f"rollout RMSD (Å) from {res['fidelity_starts']} starts of "
                  f"adk_dims2.dcd ({what}bond dev and step ÷ the data's)")
    for k, row in res["fidelity"].items():
        r, sk = row["rmsd"], row["skill"]
        cells = [f"{k} ({float(k) * res['delta_ps']:g})", f"{r['model']:.3f}", f"{r['stay_still']:.3f}",
                 f"{r.get('baseline', float('nan')):.3f}", f"{r['drift']:.3f}",
                 *(("–" if sk.get(n) is None or sk[n][0] is None else f"{sk[n][0]:+.3f}")
                   for n in ("stay_still", "baseline", "drift")),
                 f"{row['bond_dev_rel']:.2f}", f"{row['step_ratio']:.2f}"]
        if stochastic:
            cells.insert(8, "–" if row["spread_skill"] is None else f"{row['spread_skill']:.2f}")
        table.add_row(*cells)
    return table


@app.command()
@friendly
def reproduce(
    table: str = typer.Argument(..., help="egnn-nbody (EGNN Table 2), eghn-mcomplex (EGHN Table 1) or eghn-mocap "
                                "(EGHN Table 2, Run)."),
    device: str = DEVICE,
    runs: int = typer.Option(3, help="Runs per model, with train.seed = 1 … runs."),
    quick: bool = typer.Option(False, help="Minutes-long smoke version: small datasets, 3 epochs."),
    out_dir: Path = typer.Option(None, "--out", help="Runs, datasets (quick) and reports go here "
                                 "(default reproduce/TABLE)."),
    models: str = typer.Option(None, help="Comma-separated subset of the table's models (default: all)."),
    set_: list[str] = typer.Option(None, "--set", help="Override an entry of every recipe, e.g. train.epochs=500 "
                                   "(repeatable)."),
    config: str = typer.Option(None, help="eghn-mcomplex column M_A_J<j>, e.g. 5_5_J1 (default 3_3_J1)."),
    jobs: int = typer.Option(1, help="Runs trained at the same time, each in its own process."),
    json_out: bool = JSON_OUT,
):
    """Train (or reuse finished runs of) every model of a paper's table over several seeds and print our test MSE
    (mean ± std) beside the paper's number; writes OUT/TABLE.md and OUT/TABLE.json. Missing datasets are ingested
    first; models without a recipe are listed as skipped."""
    from ..apps.reproduce import reproduce as run_reproduce
    from ..errors import ParameterError

    try:
        res = run_reproduce(table, device=device, runs=runs, quick=quick, out=out_dir, models=models,
                            overrides=set_ or [], config=config, jobs=jobs,
                            log=lambda line: err.print(line, highlight=False, markup=False))
    except ParameterError as exc:
        fail(exc.render({k: f"--{k}" for k in ("runs", "jobs", "models", "config", "out")}))
    sys.stdout.write(res.markdown)
    err.print(f"[green]wrote[/] {res.markdown_file} and {res.json_file}", highlight=False)
    if json_out:
        emit_json(res.summary)
    if res.failed:
        fail(f"{res.failed} run(s) failed; see the table and the run logs", code=3)
