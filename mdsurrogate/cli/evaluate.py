"""`mdsurrogate eval RUN`: the papers' metric on a split, optionally after a random rigid motion; with
``--rollout K`` the rollout fidelity over K steps from many held-out starts (simulation/fidelity.py)."""

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
    seed: int = typer.Option(0, help="Seed of the random rigid motion; with --rollout, of the replicas, the trivial "
                             "ensembles and the bootstrap."),
    batch_size: int = typer.Option(100, help="Evaluation batch size."),
    device: str = DEVICE,
    clusters: Path = typer.Option(None, help="Write the first sample's hard cluster assignment (hierarchical "
                                  "models) to this PDB (B-factor) or extended-XYZ file."),
    json_out: bool = JSON_OUT,
    rollout: int = typer.Option(None, "--rollout", help="Rollout fidelity over K steps instead of the one-step "
                                "metric: RMSD (plain and superposed), skill against null models, bond deviation, "
                                "Rg, step size, envelope exits, ensemble scores, per horizon k = 1 … K."),
    starts: int = typer.Option(20, help="With --rollout: held-out starts, spread evenly over those with K·Δ frames "
                               "of reference after them."),
    replicas: int = typer.Option(16, help="With --rollout: replicas per start of a stochastic model (and of the "
                                 "trivial noise ensembles)."),
    baseline: Path = typer.Option(None, help="With --rollout: a second run measured alongside and used as a null "
                                  "model, e.g. the Linear baseline."),
    traj: Path = typer.Option(None, help="With --rollout: start from frames of this MD trajectory (the model's "
                              "atom selection) and compare with its own later frames, instead of a dataset split."),
    top: Path = typer.Option(None, help="Topology of --traj (PSF, PDB, GRO …) when the trajectory has none."),
    figure: Path = typer.Option(None, help="With --rollout: also draw the fidelity figure (.png, .pdf, .svg)."),
):
    """Position MSE as the papers define it (Σ batch MSE × graphs / Σ graphs) on a split; with --rollout K, the
    rollout fidelity per horizon (table; the full record with --json)."""
    from ..data.dataset import Dataset
    from ..simulation.evaluation import evaluate_split, write_clusters
    from ..simulation.surrogate import Surrogate

    if batch_size < 1:
        fail("--batch-size must be ≥ 1")
    if rollout is not None:
        return _eval_rollout(model, rollout, data=data, split=split, starts=starts, replicas=replicas, seed=seed,
                             baseline=baseline, traj=traj, top=top, figure=figure, device=device, json_out=json_out,
                             misplaced=[n for n, v in (("--rotate", rotate), ("--translate", translate),
                                                       ("--clusters", clusters)) if v])
    for name, value in (("--traj", traj), ("--top", top), ("--baseline", baseline), ("--figure", figure)):
        if value is not None:
            fail(f"{name} belongs to the rollout fidelity; add --rollout K")
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


def _eval_rollout(model, steps, *, data, split, starts, replicas, seed, baseline, traj, top, figure, device,
                  json_out, misplaced):
    """`eval --rollout K`: run simulation.fidelity.rollout_fidelity and show it per horizon."""
    from rich.progress import Progress

    from ..simulation.fidelity import rollout_fidelity
    from ..simulation.surrogate import Surrogate

    if misplaced:
        fail(f"{misplaced[0]} applies to the one-step evaluation, not to --rollout")
    if steps < 1:
        fail(f"--rollout must be ≥ 1 step, not {steps}")
    if starts < 1:
        fail(f"--starts must be ≥ 1, not {starts}")
    if replicas < 1:
        fail(f"--replicas must be ≥ 1, not {replicas}")
    if top is not None and traj is None:
        fail("--top needs --traj (the trajectory it describes)")
    if traj is not None and data is not None:
        fail("choose the starts either from a dataset (--data) or from a trajectory (--traj), not both")
    if figure is not None:
        from ..apps.plot import figure_format

        figure_format(figure)
    sur = Surrogate.load(model, device=device)
    base = Surrogate.load(baseline, device=device) if baseline is not None else None
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(f"rolling out {steps} steps", total=None)
        rec = rollout_fidelity(sur, steps=steps, dataset=data, split=split, traj=traj, top=top, starts=starts,
                               replicas=replicas, seed=seed, baseline=base,
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
    for table in fidelity_tables(rec):
        err.print(table)
    for note in rec["notes"]:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    if rec["stopped"]:
        err.print(f"[yellow]note:[/] {len(rec['stopped'])} rollout(s) stopped early: {rec['stopped'][0]['reason']}",
                  highlight=False)
    if figure is not None:
        from ..apps.plot import plot_fidelity

        rec["figure"] = str(plot_fidelity(rec, figure))
        err.print(f"[green]wrote[/] {figure}")
    if json_out:
        emit_json(rec)


def _f(v, fmt=".3g") -> str:
    return "–" if v is None else format(v, fmt)


def fidelity_tables(rec: dict):
    """Two rich tables per horizon: accuracy (RMSD of every method, skill with its interval) and physics (bond
    deviation, Rg, step size against the data's, envelope exits, ensemble scores)."""
    lu = rec["units"].get("length", "")
    lu = "" if lu in ("", "1") else f" ({lu})"
    names = [m for m in ("model", "baseline", "stay_still", "constant_velocity", "drift") if m in rec["methods"]]
    short = {"model": rec["labels"]["model"], "baseline": "base " + rec["labels"].get("baseline", "").split(" (")[0],
             "stay_still": "still", "constant_velocity": "c.vel", "drift": "drift"}
    skills = [m for m in ("stay_still", "baseline", "drift") if m in rec["skill"]]
    acc = Table(title=f"rollout RMSD{lu} over {rec['starts']} starts, and skill of {short['model']} "
                f"(1 − RMSD/RMSD_null, {int(rec['bootstrap']['level'] * 100)} % bootstrap interval)",
                header_style="bold")
    acc.add_column("k", justify="right")
    acc.add_column("t", justify="right")
    for m in names:
        acc.add_column(short[m], justify="right")
    for m in skills:
        acc.add_column(f"skill vs {short[m]}", justify="right")
    for i, k in enumerate(rec["horizons"]):
        row = [str(k), _f(rec["times"][i], ".4g")] + [_f(rec["methods"][m]["rmsd"][i]) for m in names]
        for m in skills:
            s = rec["skill"][m]
            row.append(f"{_f(s['rmsd'][i], '+.3f')} [{_f(s['rmsd_lo'][i], '+.2f')}, {_f(s['rmsd_hi'][i], '+.2f')}]")
        acc.add_row(*row)
    d = rec["data"]
    phys = Table(title=f"physics of {short['model']} against the data (bond spread {_f(d['bond_spread'])}, Rg "
                 f"{_f(d['rg_envelope'][0])}–{_f(d['rg_envelope'][1])}, RMS step {_f(d['step_rms'])})",
                 header_style="bold")
    cols = ["k", "bond dev", "÷ data", "Rg", "Rg ref", "step", "÷ data", "left env."]
    ens = rec["ensemble"]
    if ens["spread_skill"] is not None:
        cols += ["spread/skill"]
    cols += ["ES", "ES trivial"]
    for c in cols:
        phys.add_column(c, justify="right")
    mm, ref = rec["methods"]["model"], rec["reference"]
    for i, k in enumerate(rec["horizons"]):
        row = [str(k), _f(mm["bond_dev"][i]), _f(mm["bond_dev_rel"][i]), _f(mm["rg"][i], ".4g"),
               _f(ref["rg"][i], ".4g"), _f(mm["step"][i]), _f(mm["step_ratio"][i]),
               "–" if mm["left_any"][i] is None else f"{100 * mm['left_any'][i]:.0f} %"]
        if ens["spread_skill"] is not None:
            row.append(_f(ens["spread_skill"][i]))
        best = ens["best_trivial"][i]
        row += [_f(ens["energy_score"][i]), f"{_f(ens['trivial'][best]['energy_score'][i])} ({best})"]
        phys.add_row(*row)
    return acc, phys


@app.command("calibrate")
@friendly
def calibrate_cmd(
    model: Path = typer.Argument(..., help="Run directory (uses best.pt) or checkpoint file of a stochastic "
                                 "propagator; the gain is written into it."),
    steps: int = typer.Option(5, help="Horizons k = 1 … K whose spread–skill ratios are averaged."),
    data: str = typer.Option(None, help="Dataset (default: the one the model was trained on)."),
    split: str = typer.Option("val", help="train, val or test (judge on data the model did not fit)."),
    starts: int = typer.Option(20, help="Starts spread evenly over the split."),
    replicas: int = typer.Option(16, help="Replicas per start."),
    rounds: int = typer.Option(2, help="Measure-and-rescale rounds."),
    seed: int = typer.Option(0, help="Seed of the replicas."),
    memory: bool = typer.Option(False, "--memory", help="Also fit the noise memory ρ (draws correlated along a "
                                "rollout), so that the spread grows with k as the error does; needs --steps ≥ 2."),
    probe_steps: int = typer.Option(None, "--probe-steps", help="Then roll the same ensembles out this many steps "
                                    "and report how many reach non-finite coordinates (default 2 × --steps; 0 = "
                                    "no probe)."),
    probe_split: str = typer.Option(None, "--probe-split", help="Split the probe starts from (default: --split; "
                                    "held-out starts find more blow-ups than the training span)."),
    device: str = DEVICE,
    json_out: bool = JSON_OUT,
):
    """Scale a stochastic propagator's noise so that its K-step ensembles are as wide as their error (spread–skill
    ratio 1 on held-out starts); every later rollout of the checkpoint uses the gain (and the memory)."""
    from ..simulation.calibration import calibrate_run

    for name, value, least in (("--steps", steps, 1), ("--starts", starts, 1), ("--replicas", replicas, 2),
                               ("--rounds", rounds, 1), ("--probe-steps", 0 if probe_steps is None else probe_steps,
                                                         0)):
        if value < least:
            fail(f"{name} must be ≥ {least}, not {value}")
    if probe_split is not None and probe_split not in ("train", "val", "test"):
        fail(f"--probe-split must be train, val or test, not {probe_split!r}")
    if memory and steps < 2:
        fail(f"--memory needs --steps ≥ 2 (the memory sets how the spread grows with k), not {steps}")
    rec = calibrate_run(model, steps=steps, dataset=data, split=split, starts=starts, replicas=replicas,
                        rounds=rounds, seed=seed, memory=memory, probe_steps=probe_steps, probe_split=probe_split,
                        device=device)
    report_calibration(rec)
    if json_out:
        emit_json(rec)


def report_calibration(rec: dict) -> None:
    """One line per memory tried and per round: the gain and its spread–skill ratios at k = 1 … K."""
    for m in rec.get("memory_search", []):
        ratios = " ".join(_f(v, ".2f") for v in m["spread_skill"])
        err.print(f"memory {m['memory']:.2f}: spread–skill at k = 1…{rec['steps']}: {ratios}", highlight=False)
    for r in rec["rounds"]:
        ratios = " ".join(_f(v, ".2f") for v in r["spread_skill"])
        err.print(f"gain {r['gain']:.3g}: spread–skill at k = 1…{rec['steps']}: {ratios}", highlight=False)
    memory = f", memory {rec['memory']:.2f}" if rec.get("memory") else ""
    err.print(f"[green]noise gain[/] {rec['gain']:.3g}{memory} stored in the checkpoint", highlight=False)
    probe = rec.get("probe")
    if probe:
        if probe["non_finite"]:
            err.print(f"[yellow]stability:[/] {probe['non_finite']} of {probe['starts']} ensembles from the "
                      f"{probe['split']} split reached non-finite coordinates within {probe['steps']} steps (first at "
                      f"step {probe['first_stop']}): rollouts longer than the calibration horizon can blow up",
                      highlight=False)
        else:
            err.print(f"stability: all {probe['starts']} ensembles from the {probe['split']} split stayed finite for "
                      f"{probe['steps']} steps", highlight=False)
