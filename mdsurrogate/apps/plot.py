"""Figures: predicted vs true skeletons of a propagator, and training curves of runs (matplotlib, optional).

    plot_skeletons(RUN_OR_CKPT, OUT.png, dataset=DS, split="test", samples=4)   # rows: samples; columns: input,
                                                                               # true next, predicted next (3-D)
    plot_curves([RUN_A, RUN_B], OUT.png)                                       # train loss | val/test metric
    plot_fidelity(RESULT_OR_JSON, OUT.png)                                     # rollout fidelity per horizon

matplotlib is the optional extra ``plot`` (``pip install 'mdsurrogate[plot]'``); it is imported only when a figure
is drawn, and only through its object-oriented API (``matplotlib.figure.Figure`` with the Agg canvas), so no
pyplot state or display is touched. Figures are written atomically: a temporary file in the target directory,
then a rename, so a figure on disk is always complete.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import UserError

PLOT_EXTRA_HINT = "plotting needs matplotlib, which is not installed: pip install 'mdsurrogate[plot]'"

# metrics.jsonl keys drawn in the right-hand panel: propagator runs (`mdsurrogate train` on a propagator recipe)
# log the papers' position MSE on val and test; potential runs log force errors on val
EVAL_SERIES = {
    "propagator": (("val_mse", "val"), ("test_mse", "test")),
    "potential": (("val_force_mae", "val"),),
}
EVAL_LABEL = {"propagator": "position MSE", "potential": "force MAE (eV/Å)"}


def _figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot); a UserError naming the extra when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(PLOT_EXTRA_HINT) from None
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _check_output(out: Path) -> str:
    """The image format of ``out`` from its suffix (png, pdf, svg, …); UserError for what matplotlib cannot write."""
    fmt = out.suffix.lower().lstrip(".")
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise UserError(PLOT_EXTRA_HINT) from None
    known = FigureCanvasBase.get_supported_filetypes()
    if fmt not in known:
        raise UserError(f"cannot write {out.name}: the extension must be one of {', '.join('.' + k for k in known)}")
    return fmt


def figure_format(out: str | os.PathLike) -> str:
    """The image format of ``out`` (png, pdf, svg, …); a UserError, before any work, for what cannot be written."""
    return _check_output(Path(out))


def save_figure(fig, out: str | os.PathLike) -> Path:
    """Write ``fig`` to ``out`` atomically (temporary file in the same directory, then ``os.replace``)."""
    out = Path(out)
    fmt = _check_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from ..io.atomic import atomic_file

    with atomic_file(out) as fh:
        fig.savefig(fh, format=fmt, bbox_inches="tight")
    return out


# ----------------------------------------------------------------------------------------------------------
# skeletons
# ----------------------------------------------------------------------------------------------------------


def bones_of(ds, traj: int) -> np.ndarray:
    """Undirected local edges (bones, bonds, sticks) [B, 2] of trajectory ``traj``, i < j; UserError if none."""
    if "local" not in ds.edge_set_names:
        raise UserError(f"dataset {ds.path} has no local edges (bones, bonds) to draw; `plot skeleton` needs a "
                        "dataset with a local edge set, e.g. one made by `mdsurrogate ingest mocap`")
    edges, _ = ds.edge_set("local", traj)
    if len(edges) == 0:
        raise UserError(f"trajectory {traj} of dataset {ds.path} has no local edges (bones) to draw")
    return np.unique(np.sort(edges, axis=1), axis=0)


def stick_polyline(x: np.ndarray, bones: np.ndarray) -> np.ndarray:
    """One polyline [3B, 3] for all bones: (x_i, x_j, NaN) per bone, so one line object draws a whole figure
    (matplotlib breaks lines at NaN). x: [N, 3] positions; bones: [B, 2]."""
    nan = np.full((len(bones), 1, 3), np.nan)
    return np.concatenate([x[bones[:, 0], None], x[bones[:, 1], None], nan], axis=1).reshape(-1, 3)


def pick_samples(n_split: int, k: int) -> np.ndarray:
    """``k`` positions evenly spread over a split of ``n_split`` samples (consecutive samples of one trial look
    alike; spreading them shows different poses and trials)."""
    k = min(k, n_split)
    return np.unique(np.round(np.linspace(0, n_split - 1, k)).astype(np.int64))


def plot_skeletons(checkpoint: str | os.PathLike, out: str | os.PathLike, *, dataset: str | os.PathLike | None = None,
                   split: str = "test", samples: int = 4, device: str = "auto") -> dict:
    """:func:`skeleton_figure` written to ``out`` (atomically); returns its summary with ``out`` added."""
    out = Path(out)
    _check_output(out)
    fig, info = skeleton_figure(checkpoint, dataset=dataset, split=split, samples=samples, device=device)
    save_figure(fig, out)
    return {"out": str(out), **info}


def skeleton_figure(checkpoint: str | os.PathLike, *, dataset: str | os.PathLike | None = None, split: str = "test",
                    samples: int = 4, device: str = "auto"):
    """Draw input, true next and predicted next states of ``samples`` samples of ``split`` as 3-D stick figures.

    One row per sample, three 3-D panels per row (input x_t, true x_{t+Δ}, predicted x̂_{t+Δ} with the true state
    in light grey behind it). Each figure is one line object through its bones (``stick_polyline``); the
    dataset's vertical axis (``features.vertical_axis``, mocap: y) is drawn upwards, and the three panels of a
    row share their limits and an equal aspect, so the motion between them is to scale.

    Args:
        checkpoint: a propagator run directory (its best.pt) or checkpoint file.
        dataset: a dataset with a ``local`` edge set (default: the one the model was trained on).
        samples: how many samples, spread evenly over the split. device: auto, cpu or cuda.
    Returns: (Figure, {"samples" (sample ids), "mse" (position MSE per sample, dataset units²), "axes"}).
    """
    import torch

    from ..data.dataset import Dataset
    from ..simulation.evaluation import check_features
    from ..simulation.surrogate import Surrogate

    if samples < 1:
        raise UserError(f"samples must be ≥ 1, not {samples}")
    sur = Surrogate.load(checkpoint, device=device)
    ds = Dataset(dataset or sur.dataset.path)
    check_features(sur, ds)
    split_ids = ds.split_indices(split)
    if len(split_ids) == 0:
        raise UserError(f"split {split!r} of dataset {ds.path} has no samples")
    ids = split_ids[pick_samples(len(split_ids), samples)]
    trajs = ds.samples[ids, 0]
    bones = [bones_of(ds, int(t)) for t in trajs]  # checks for local edges before any model work

    x0, v0, x1, _, topo = ds.gather(ids)
    pred = sur.predict(x0, v0, topo.to(sur.device))
    ptr = topo.ptr.tolist()
    xs = [t.detach().to("cpu", torch.float64).numpy() for t in (x0, x1, pred.x)]

    up = int(ds.meta["features"].get("vertical_axis", ds.meta.get("vertical_axis", 2)))
    order = [(up + 1) % 3, (up + 2) % 3, up]  # data axes drawn as matplotlib x, y, z (z up); cyclic: no mirroring
    names = "xyz"
    fig = _figure(3 * 3.0, len(ids) * 3.0)
    columns = ("input  t", "true  t + Δ", "predicted  t + Δ")
    mses = []
    for r, sid in enumerate(ids):
        a, b = ptr[r], ptr[r + 1]
        states = [x[a:b][:, order] for x in xs]
        mse = float(((states[2] - states[1]) ** 2).mean())
        mses.append(mse)
        allx = np.concatenate(states)
        centre = 0.5 * (allx.max(0) + allx.min(0))
        half = 0.5 * float((allx.max(0) - allx.min(0)).max()) * 1.05 or 1.0
        for c in range(3):
            ax = fig.add_subplot(len(ids), 3, 3 * r + c + 1, projection="3d")
            if c == 2:
                ref = stick_polyline(states[1], bones[r])
                ax.plot(ref[:, 0], ref[:, 1], ref[:, 2], color="0.75", lw=1.0, label="true")
            seg = stick_polyline(states[c], bones[r])
            color = ("tab:blue", "tab:green", "tab:red")[c]
            ax.plot(seg[:, 0], seg[:, 1], seg[:, 2], color=color, lw=1.5, marker="o", markersize=1.5,
                    label=columns[c].split()[0])
            for k, setter in enumerate((ax.set_xlim, ax.set_ylim, ax.set_zlim)):
                setter(centre[k] - half, centre[k] + half)
            ax.set_box_aspect((1, 1, 1))
            ax.view_init(elev=12, azim=-60)
            ax.set_xlabel(names[order[0]], fontsize=6, labelpad=-8)
            ax.set_ylabel(names[order[1]], fontsize=6, labelpad=-8)
            ax.set_zlabel(names[order[2]], fontsize=6, labelpad=-8)
            ax.tick_params(labelsize=5, pad=-2)
            title = columns[c] if r == 0 else ""
            if c == 0:
                title = (title + "\n" if title else "") + f"sample {int(sid)} (trajectory {int(trajs[r])})"
            if c == 2:
                title = (title + "\n" if title else "") + f"MSE {mse:.4g}"
            ax.set_title(title, fontsize=8)
    fig.suptitle(f"{sur.name} on {ds.meta.get('name') or ds.path.name}: {split} split, "
                 f"Δ = {ds.delta_frames} frames", fontsize=10)
    return fig, {"samples": [int(s) for s in ids], "mse": mses, "axes": len(fig.axes)}


# ----------------------------------------------------------------------------------------------------------
# training curves
# ----------------------------------------------------------------------------------------------------------


def read_metrics(run_dir: str | os.PathLike) -> tuple[list[dict], str]:
    """The epoch records of a run's ``metrics.jsonl`` and the run's kind ("propagator" or "potential").

    A line that does not parse (e.g. the last one, while a training is still writing it) is skipped.
    """
    run = Path(run_dir)
    f = run / "metrics.jsonl"
    if not run.is_dir():
        raise UserError(f"{run} is not a run directory")
    if not f.is_file():
        raise UserError(f"{run} has no metrics.jsonl; is it a run directory of `mdsurrogate train`?")
    records = []
    for line in f.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "epoch" in rec:
            records.append(rec)
    if not records:
        raise UserError(f"{f} holds no epoch records yet")
    kind = "potential" if any("val_force_mae" in r for r in records) else "propagator"
    return records, kind


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of one metric, keeping only the positive finite values a log axis can show."""
    pts = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    pts = [(e, v) for e, v in pts if math.isfinite(v) and v > 0]
    arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def plot_curves(run_dirs, out: str | os.PathLike, *, labels: list[str] | None = None) -> dict:
    """:func:`curves_figure` written to ``out`` (atomically); returns its summary with ``out`` added."""
    out = Path(out)
    _check_output(out)
    fig, info = curves_figure(run_dirs, labels=labels)
    save_figure(fig, out)
    return {"out": str(out), **info}


def curves_figure(run_dirs, *, labels: list[str] | None = None):
    """Training loss (left) and the evaluation metric (right) against epoch for one or more runs, log-scale y.

    Right panel: val (solid) and test (dashed) position MSE for propagator runs, val force MAE (eV/Å) for
    potential runs, with a star at each run's best validation epoch. One colour per run; runs of the two kinds
    cannot share a figure.
    Returns: (Figure, {"runs", "kind", "lines": [lines in the left panel, lines in the right panel]}).
    """
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise UserError("give at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise UserError(f"{len(labels)} labels for {len(run_dirs)} runs")
    data = [read_metrics(r) for r in run_dirs]
    kinds = {k for _, k in data}
    if len(kinds) > 1:
        raise UserError("cannot overlay propagator and potential runs in one figure (their metrics differ)")
    kind = kinds.pop()
    if labels is None:
        names = [r.resolve().name for r in run_dirs]
        labels = names if len(set(names)) == len(names) else [str(r) for r in run_dirs]

    fig = _figure(11.0, 4.2)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colors = [f"C{k % 10}" for k in range(len(run_dirs))]
    for (records, _), label, color in zip(data, labels, colors, strict=True):
        e, v = _series(records, "train_loss")
        left.plot(e, v, color=color, lw=1.2, label=label)
        for key, split in EVAL_SERIES[kind]:
            e, v = _series(records, key)
            if len(e) == 0:
                continue
            right.plot(e, v, color=color, lw=1.2, ls="-" if split == "val" else "--", label=f"{label} ({split})")
            if split == "val":
                best = int(np.argmin(v))
                right.scatter([e[best]], [v[best]], marker="*", s=60, color=color, zorder=3)
    left.set_title("training loss")
    right.set_title(f"validation / test {EVAL_LABEL[kind]}" if kind == "propagator"
                    else f"validation {EVAL_LABEL[kind]}")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    right.set_ylabel(EVAL_LABEL[kind])
    fig.tight_layout()
    return fig, {"runs": [str(r) for r in run_dirs], "kind": kind, "lines": [len(left.lines), len(right.lines)]}


# ----------------------------------------------------------------------------------------------------------
# rollout fidelity
# ----------------------------------------------------------------------------------------------------------

FIDELITY_STYLE = {"model": ("C3", "-"), "baseline": ("C0", "-"), "stay_still": ("0.35", "--"),
                  "constant_velocity": ("C2", ":"), "drift": ("C1", "-."), "reference": ("k", "-")}


def read_fidelity(path: str | os.PathLike) -> dict:
    """A rollout-fidelity record (``mdsurrogate eval RUN --rollout K --json``; the JSON object on the file's last
    non-empty line, so the command's stdout redirected to a file works)."""
    f = Path(path)
    if not f.is_file():
        raise UserError(f"{f} does not exist")
    lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
    try:
        rec = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        rec = None
    if not isinstance(rec, dict) or "horizons" not in rec or "methods" not in rec:
        raise UserError(f"{f} is not a rollout-fidelity record (the --json output of `mdsurrogate eval RUN "
                        "--rollout K`)")
    return rec


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def plot_fidelity(result: dict | str | os.PathLike, out: str | os.PathLike) -> Path:
    """:func:`fidelity_figure` of a record (or a JSON file holding one) written to ``out`` atomically."""
    out = Path(out)
    _check_output(out)
    rec = result if isinstance(result, dict) else read_fidelity(result)
    fig = fidelity_figure(rec)
    return save_figure(fig, out)


def fidelity_figure(rec: dict):
    """Eight panels against the horizon k (model steps) of a rollout-fidelity record:

    RMSD to the reference of the model and every null model; skill of the model against each null model with its
    bootstrap interval (band); local-edge RMS deviation, radius of gyration and per-step RMS displacement of the
    model (and baseline) beside the reference frames, over the data's envelope (grey band) and the data's RMS
    (dotted); the fraction of the model's (and baseline's) rollouts that have left the envelope, in any quantity
    and in each; the energy score of the model against the
    trivial ensembles; the spread–skill ratio (1 = calibrated; 0.7–1.4 band) for a stochastic model.
    """
    k = np.asarray(rec["horizons"], dtype=np.float64)
    labels = rec.get("labels", {})
    methods = rec["methods"]
    d = rec["data"]
    lu = rec.get("units", {}).get("length", "")
    lu = "" if lu in ("", "1") else f" ({lu})"
    fig = _figure(17.0, 7.6)
    ax = [fig.add_subplot(2, 4, i + 1) for i in range(8)]

    def line(a, name, values, **kw):
        color, ls = FIDELITY_STYLE.get(name, ("C4", "-"))
        a.plot(k, _arr(values), color=color, ls=ls, marker="o", ms=3, lw=1.3,
               label=labels.get(name, name) if name != "reference" else "reference", **kw)

    def band(a, lo, hi, label="data envelope"):
        lo = 0.0 if lo is None else lo
        if hi is not None:
            a.axhspan(lo, hi, color="0.85", zorder=0, label=label)

    for name in methods:
        line(ax[0], name, methods[name]["rmsd"])
    ax[0].set_title(f"RMSD to the reference{lu}")

    for name, s in rec["skill"].items():
        color, ls = FIDELITY_STYLE.get(name, ("C4", "-"))
        ax[1].plot(k, _arr(s["rmsd"]), color=color, ls=ls, marker="o", ms=3, label=f"vs {labels.get(name, name)}")
        ax[1].fill_between(k, _arr(s["rmsd_lo"]), _arr(s["rmsd_hi"]), color=color, alpha=0.15)
    ax[1].axhline(0, color="k", lw=0.8)
    level = int(round(100 * rec.get("bootstrap", {}).get("level", 0.9)))
    ax[1].set_title(f"skill 1 − RMSD/RMSD_null ({level} % interval)")

    geo = [n for n in ("model", "baseline") if n in methods]
    band(ax[2], None, d["bond_dev_envelope"][1])
    if d.get("bond_spread") is not None:
        ax[2].axhline(d["bond_spread"], color="k", ls=":", lw=1, label="data RMS")
    for name in geo:
        line(ax[2], name, methods[name]["bond_dev"])
    line(ax[2], "reference", rec["reference"]["bond_dev"])
    ax[2].set_title(f"local-edge RMS deviation{lu}")

    band(ax[3], *d["rg_envelope"])
    for name in geo:
        line(ax[3], name, methods[name]["rg"])
    line(ax[3], "reference", rec["reference"]["rg"])
    ax[3].set_title(f"radius of gyration{lu}")

    band(ax[4], *d["step_envelope"])
    if d.get("step_rms") is not None:
        ax[4].axhline(d["step_rms"], color="k", ls=":", lw=1, label="data RMS")
    for name in geo:
        line(ax[4], name, methods[name]["step"])
    line(ax[4], "reference", rec["reference"]["step"])
    ax[4].set_title(f"RMS displacement per step{lu}")

    for name in geo:
        color = FIDELITY_STYLE[name][0]
        for key, ls, what in (("left_any", "-", "any"), ("left_bond", "--", "bonds"), ("left_rg", ":", "Rg"),
                              ("left_step", "-.", "step size")):
            ax[5].plot(k, _arr(methods[name][key]), color=color, ls=ls, marker="o", ms=2.5, lw=1.2,
                       label=f"{labels.get(name, name)}: {what}")
    ax[5].set_ylim(-0.03, 1.03)
    ax[5].set_title("fraction that left the data's envelope")

    ens = rec["ensemble"]
    line(ax[6], "model", ens["energy_score"])
    for kind, color in (("tethered", "C5"), ("random_walk", "C9")):
        ax[6].plot(k, _arr(ens["trivial"][kind]["energy_score"]), color=color, ls="--", marker="s", ms=3,
                   label=kind.replace("_", " ") + " noise")
    ax[6].set_title(f"energy score (RMSD norm){lu}")

    if ens.get("spread_skill") is not None:
        ax[7].axhspan(0.7, 1.4, color="0.85", zorder=0, label="0.7–1.4")
        ax[7].axhline(1.0, color="k", lw=0.8)
        ax[7].plot(k, _arr(ens["spread_skill"]), color="C3", marker="o", ms=3, label=labels.get("model", "model"))
        if ens.get("spread_skill_lo") is not None:
            ax[7].fill_between(k, _arr(ens["spread_skill_lo"]), _arr(ens["spread_skill_hi"]), color="C3", alpha=0.15)
    else:
        ax[7].text(0.5, 0.5, "deterministic model:\nno ensemble spread", ha="center", va="center",
                   transform=ax[7].transAxes, fontsize=9)
    ax[7].set_title("spread–skill ratio √((R+1)/R)·spread/RMSE")

    from matplotlib.ticker import MaxNLocator

    for a in ax:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlabel("step k")
        a.grid(True, alpha=0.3)
        if a.lines:
            a.legend(fontsize=6)
    src = rec.get("source", {})
    where = src.get("traj") or f"{src.get('path', '')} ({src.get('split', '')})"
    dt = rec.get("delta_time")
    tu = rec.get("units", {}).get("time", "")
    fig.suptitle(f"{labels.get('model', rec.get('model', 'model'))}: rollout fidelity from {rec['starts']} starts of "
                 f"{where}; Δ = {dt:g} {tu}, {rec['replicas']} replica(s)", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------
# Ramachandran maps
# ----------------------------------------------------------------------------------------------------------


def trajectory_files(source: str | os.PathLike, trajs=()) -> tuple[Path, list[Path]]:
    """(topology, trajectories) of ``source``: a `mdsurrogate simulate` output directory (its topology.pdb and
    trajectory.dcd), a topology file with ``trajs``, or without ``trajs`` a file that holds its own frames (a
    multi-MODEL PDB written by ``rollout``); UserError when none fits."""
    source = Path(source)
    if source.is_dir():
        top, traj = source / "topology.pdb", source / "trajectory.dcd"
        if not (top.is_file() and traj.is_file()):
            raise UserError(f"{source} is not a `mdsurrogate simulate` output (no topology.pdb + trajectory.dcd); "
                            "give a topology file and --traj instead")
        return top, [traj, *map(Path, trajs)]
    if not source.exists():
        raise UserError(f"{source} does not exist")
    return source, [Path(t) for t in trajs] or [source]


def plot_ramachandran(source: str | os.PathLike, out: str | os.PathLike, *, trajs=(), title: str | None = None,
                      dt: float | None = None) -> dict:
    """:func:`ramachandran_figure` of a trajectory (see :func:`trajectory_files`) written to ``out`` atomically;
    returns :func:`~mdsurrogate.analysis.ramachandran.ramachandran_summary` (without the histogram) with ``out``.
    ``dt``: ps between frames for files that do not state it."""
    from ..analysis.ramachandran import ramachandran_summary
    from ..analysis.trajectory import phi_psi_from_files

    _check_output(Path(out))
    top, files = trajectory_files(source, trajs)
    try:
        phi, psi, resids, frame_ps = phi_psi_from_files(top, files, dt=dt)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    summary = ramachandran_summary(phi, psi, frame_ps)
    summary.pop("histogram")
    fig = ramachandran_figure(phi, psi, frame_ps, title=title or f"{top.parent.name or top.name}: "
                              f"{len(phi)} frames, {len(resids)} residue(s)")
    save_figure(fig, out)
    return summary | {"frame_ps": frame_ps, "out": str(out)}


def ramachandran_figure(phi: np.ndarray, psi: np.ndarray, frame_ps: float, *, title: str | None = None,
                        bin_deg: float = 10.0):
    """Left: free energy −ln p (kT, minimum 0) of (φ, ψ) on ``bin_deg`` bins (empty bins blank) with the basin
    boundaries and populations of analysis.ramachandran; right: φ and ψ of the first residue against time (ns).
    ``phi``, ``psi``: [F] or [F, R] degrees."""
    from ..analysis.ramachandran import BASINS, basin_populations, ramachandran_histogram

    fig = _figure(11.0, 4.6)
    fig.set_layout_engine("constrained")
    ax, ts = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    p = ramachandran_histogram(phi, psi, bin_deg)
    with np.errstate(divide="ignore"):
        f = -np.log(p)
    f = np.ma.masked_invalid(f - f[np.isfinite(f)].min())
    edges = np.linspace(-180, 180, p.shape[0] + 1)
    mesh = ax.pcolormesh(edges, edges, f.T, cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label="−ln p (kT)")
    pops = basin_populations(phi, psi)
    labels = {"alphaR": "αR", "beta": "β", "other": "other"}
    for k, (name, rects) in enumerate(BASINS.items()):
        for lo_phi, hi_phi, lo_psi, hi_psi in rects:
            ax.plot([lo_phi, hi_phi, hi_phi, lo_phi, lo_phi], [lo_psi, lo_psi, hi_psi, hi_psi, lo_psi],
                    color=f"C{k + 1}", lw=1.0, ls="--")
        lo_phi, hi_phi, lo_psi, hi_psi = rects[0]
        ax.text(0.5 * (lo_phi + hi_phi), 0.5 * (lo_psi + hi_psi), f"{labels.get(name, name)}\n{pops[name]:.3f}",
                ha="center", va="center", color=f"C{k + 1}", fontsize=9, fontweight="bold",
                bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1.5})
    ax.set_xlim(-180, 180)
    ax.set_ylim(-180, 180)
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-180, 181, 60))
    ax.set_xlabel("φ (°)")
    ax.set_ylabel("ψ (°)")
    ax.set_aspect("equal")
    first_phi = phi if phi.ndim == 1 else phi[:, 0]
    first_psi = psi if psi.ndim == 1 else psi[:, 0]
    t = np.arange(1, len(first_phi) + 1) * frame_ps / 1000.0
    ts.plot(t, first_phi, ".", ms=1.5, label="φ")
    ts.plot(t, first_psi, ".", ms=1.5, label="ψ")
    ts.set_ylim(-180, 180)
    ts.set_yticks(range(-180, 181, 60))
    ts.set_xlabel("time (ns)")
    ts.set_ylabel("angle (°)")
    ts.legend(loc="upper right", markerscale=6)
    if title:
        fig.suptitle(title)
    return fig
