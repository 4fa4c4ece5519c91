"""MD ingest: any trajectory MDAnalysis reads → a dataset of (frame i → frame i + Δ) samples of one selection.

The steps, in order (each a function below):

1. :func:`_check_parameters` — the arguments make sense before any file is opened.
2. :func:`_read_system` — one :class:`~mdsurrogate.data.sources.md.MDSystem` (elements, charges, bonds, atom
   identity) for the selection, from the first trajectory's topology.
3. :func:`_read_trajectory` — per file: the selection's positions (in a periodic box made whole and unwrapped in
   time, :mod:`~mdsurrogate.data.periodic`), the frame spacing (the file's times or ``dt``,
   :func:`~mdsurrogate.data.sources.md.frame_spacing`) and the velocities as the dataset defines them
   (:func:`~mdsurrogate.data.sources.md.state_velocities`; the file's own only where they describe its motion,
   :func:`~mdsurrogate.data.sources.md.velocity_mismatch`).
4. :func:`_check_consistent` — all files agree on the velocity kind and the frame spacing.
5. :func:`_trajectory_samples` / :func:`chronological_samples` — samples and split codes
   (:data:`~mdsurrogate.data.dataset.SPLITS`), never straddling a split boundary or two files.
6. :func:`_feature_scales` — the dataset constants of the features (speed and charge scales).
7. :func:`_meta` — ``meta.json``; then :func:`~mdsurrogate.data.dataset.write_dataset`.

Conventions (units, velocities, bonds) are those of :mod:`mdsurrogate.data.sources.md`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dataset import SPLITS, EdgeSetData, check_new_dataset, write_dataset
from ..periodic import Unwrapper
from ..sources import md

TRAIN, VAL, TEST = SPLITS["train"], SPLITS["val"], SPLITS["test"]


@dataclass
class _Trajectory:
    """One trajectory file, read: positions / velocities [F, N, 3] (Å, Å per frame), spacing (ps), velocity kind,
    ``first``: the first frame a sample may start at (1 for difference velocities: frame 0 has no previous one),
    ``periodic``: whether its frames have a periodic box (then unwrapped), ``box0``: the first frame's box."""

    path: str
    positions: np.ndarray
    velocities: np.ndarray
    spacing: float
    kind: str
    first: int
    periodic: bool = False
    box0: list | None = None
    symmetric_box: bool = False


def chronological_samples(n_frames: int, delta: int, ratios=(0.6, 0.2, 0.2), first: int = 1):
    """Samples (input frame i, target i + Δ) of one trajectory and their split codes (``SPLITS`` values).

    The frames are cut into contiguous train / val / test spans by ``ratios``; a sample belongs to a span only
    if every frame it uses (i − 1 for the velocity, i, i + Δ) lies inside it, so nothing leaks across a boundary.
    Returns (starts [S] int64, codes [S] int8).
    """
    if not abs(sum(ratios) - 1.0) < 1e-6 or any(r < 0 for r in ratios) or len(ratios) != len(SPLITS):
        raise md.MDInputError(f"split ratios must be three non-negative numbers that sum to 1, got {ratios}")
    bounds = np.floor(np.cumsum([0.0, *ratios]) * n_frames).astype(int)
    bounds[-1] = n_frames
    starts, codes = [], []
    for k, code in enumerate(SPLITS.values()):
        lo, hi = bounds[k], bounds[k + 1]
        i = np.arange(max(lo + first, first), hi - delta)
        starts.append(i)
        codes.append(np.full(len(i), code, np.int8))
    return np.concatenate(starts), np.concatenate(codes)


def _check_parameters(trajs: Sequence, delta: int, cutoff: float, velocities: str, dt: float | None,
                      smooth_cutoff: float = 0.0) -> None:
    if not trajs:
        raise md.MDInputError("give at least one trajectory (trajs)")
    if isinstance(delta, bool) or not isinstance(delta, int | np.integer) or delta < 1:
        raise md.MDInputError(f"delta must be a whole number of frames ≥ 1, got {delta}")
    if not (isinstance(cutoff, int | float) and math.isfinite(cutoff) and cutoff > 0):
        raise md.MDInputError(f"cutoff must be a positive, finite number of Å, got {cutoff}")
    if not (isinstance(smooth_cutoff, int | float) and 0 <= smooth_cutoff <= cutoff):  # also rejects NaN
        raise md.MDInputError(f"smooth_cutoff must lie between 0 (a hard cutoff) and the cutoff ({cutoff:g} Å), "
                              f"got {smooth_cutoff}")
    if velocities not in ("auto", *md.VELOCITY_KINDS):
        raise md.MDInputError(f"velocities must be 'auto', 'trajectory', 'difference' or 'lag', not {velocities!r}")
    if dt is not None and not (isinstance(dt, int | float) and math.isfinite(dt) and dt > 0):
        raise md.MDInputError(f"dt must be a positive number of ps between saved frames, got {dt}")


def _read_system(universe, select: str, warn: Callable[[str], None]) -> md.MDSystem:
    """The selection's system (one topology for every trajectory of the dataset)."""
    system = md.MDSystem.from_atomgroup(md.select_atoms(universe, select), select)
    if system.bonds_guessed:
        warn(f"the topology has no bonds for {select!r}: {len(system.bonds)} bonds were guessed from "
             "covalent radii at the first frame")
    return system


def _read_trajectory(universe, path, system: md.MDSystem, velocities: str, delta: int, dt: float | None,
                     warn: Callable[[str], None], reference: np.ndarray | None = None) -> _Trajectory:
    """Every frame of one file: positions (whole and unwrapped in a periodic box; superposed on ``reference``
    [N, 3] when given), the dataset's velocities and the frame spacing."""
    ag = md.select_atoms(universe, system.selection)
    has_v = md.has_velocities(universe)
    if velocities == "trajectory" and not has_v:
        raise md.MDInputError(f"{path} has no velocities; use velocities='difference'")
    own = has_v and velocities in ("auto", "trajectory")
    frames = md.read_frames(universe, ag, velocities=own, unwrap=Unwrapper(system.n_atoms, system.bonds), path=path)
    for note in frames.notes:
        warn(note)
    x = frames.positions
    if reference is not None:
        from ..align import align_frames

        x = align_frames(x, reference)
    least = delta + 1 + (0 if own else {"difference": 1, "lag": delta}["lag" if velocities == "lag" else "difference"])
    if len(x) < least:  # too short whatever the frame spacing: say so before asking for one
        raise md.MDInputError(f"{path} has {len(x)} frame{'s' if len(x) != 1 else ''}, too few for delta = {delta} "
                              f"frames (need at least {least})")
    spacing = md.frame_spacing(universe, frames.times, dt=dt, path=path)
    kind = "lag" if velocities == "lag" else "difference"
    if own and len(x) > 1:
        mismatch, v_rms, d_rms = md.velocity_mismatch(x, frames.velocities, spacing)
        if mismatch <= md.VELOCITY_MISMATCH:
            kind = "trajectory"
        else:
            why = (f"the velocities of {path} (RMS {v_rms:.3g} Å per frame of {spacing:g} ps) do not describe its "
                   f"motion over a frame (RMS displacement {d_rms:.3g} Å; they differ from it by {mismatch:.3g} times "
                   "its size): they are thermal velocities of one instant")
            if velocities == "trajectory":
                raise md.MDInputError(f"{why}; use velocities='difference' (or 'lag', or 'auto')")
            warn(f"{why}, so the backward difference of the positions is used (velocities='difference')")
    elif own:
        kind = "trajectory"
    first = {"trajectory": 0, "difference": 1, "lag": delta}[kind]
    if len(x) < delta + 1 + first:
        raise md.MDInputError(f"{path} has {len(x)} frames, too few for delta = {delta} frames "
                              f"(need at least {delta + 1 + first})")
    if reference is not None and kind == "trajectory":
        raise md.MDInputError("align=True removes rigid-body motion from positions; the trajectory's own "
                              "velocities would keep it: use velocities='lag' or 'difference'")
    v = md.state_velocities(x, frames.velocities if kind == "trajectory" else None, spacing,
                            lag=delta if kind == "lag" else None, align=reference is not None)
    return _Trajectory(str(path), x, v, spacing, kind, first, frames.periodic, frames.box0, md.symmetric_box(universe))


def _time_reversed_training_span(run: _Trajectory, delta: int, ratios, align: bool) -> _Trajectory:
    """The training span of ``run`` played backwards, its velocities recomputed by the same rule in reversed time
    (a trajectory's own velocities change sign): an equally likely path of dynamics that obey detailed balance,
    and the other direction of a driven transition."""
    n = len(run.positions)
    hi = int(np.floor(ratios[0] * n))
    x = np.ascontiguousarray(run.positions[:hi][::-1])
    own = -run.velocities[:hi][::-1] / run.spacing if run.kind == "trajectory" else None  # Å per frame → Å/ps
    v = md.state_velocities(x, own, run.spacing, lag=delta if run.kind == "lag" else None, align=align)
    return dataclasses.replace(run, path=f"{run.path} (time-reversed training span)", positions=x, velocities=v)


def _check_consistent(runs: Sequence[_Trajectory]) -> None:
    if len({r.kind for r in runs}) > 1:
        raise md.MDInputError("some trajectories have velocities and others not; use velocities='difference'")
    spacings = [r.spacing for r in runs]
    if max(spacings) > 1.01 * min(spacings):
        raise md.MDInputError(f"the trajectories save frames at different intervals ({min(spacings):g} to "
                              f"{max(spacings):g} ps); one dataset needs one frame spacing")


def _trajectory_samples(runs: Sequence[_Trajectory], delta: int, ratios, held_out: set[int]):
    """(samples [S, 3] (trajectory, input frame, target frame), codes [S] int8) of every file: chronological
    splits per file, held-out files entirely test."""
    samples, codes = [], []
    for t, run in enumerate(runs):
        n = len(run.positions)
        if t in held_out:
            starts = np.arange(run.first, n - delta)
            code = np.full(len(starts), TEST, np.int8)
        else:
            starts, code = chronological_samples(n, delta, ratios, first=run.first)
        samples.append(np.stack([np.full(len(starts), t), starts, starts + delta], axis=1))
        codes.append(code)
    samples, codes = np.concatenate(samples), np.concatenate(codes)
    empty = [name for name, c in SPLITS.items() if not (codes == c).any()]
    if empty:
        advice = "longer trajectories" if delta == 1 else "a smaller delta or longer trajectories"
        raise md.MDInputError(f"too few frames for delta = {delta}: the {' and '.join(empty)} split(s) get no "
                              f"sample; use {advice}")
    return samples, codes


def _feature_scales(runs: Sequence[_Trajectory], samples: np.ndarray, codes: np.ndarray,
                    system: md.MDSystem) -> dict[str, float]:
    """Dataset constants: 1 / RMS speed over the training inputs, 1 / max |charge| of the selection."""
    train = samples[codes == TRAIN]
    v_train = np.concatenate([runs[t].velocities[train[train[:, 0] == t, 1]] for t in np.unique(train[:, 0])])
    v_rms = float(np.sqrt((v_train.astype(np.float64) ** 2).sum(-1).mean())) or 1.0
    q_max = float(np.abs(system.charge).max()) or 1.0
    return {"speed": 1.0 / v_rms, "charge": 1.0 / q_max}


def _periodic_meta(runs: Sequence[_Trajectory]) -> dict:
    """How periodic boxes were handled (``meta["md"]["periodic"]``)."""
    if not any(r.periodic for r in runs):
        return {"box": False}
    symmetric = any(r.symmetric_box for r in runs if r.periodic)
    return {"box": True, "first_box": next(r.box0 for r in runs if r.box0 is not None),
            "box_vectors": "CHARMM's symmetric shape matrix" if symmetric else "a along x, b in the xy plane",
            "whole": "fragments of the selection's bonds made whole at each file's first frame, their centres of "
                     "geometry placed in the primary cell",
            "unwrap": "nojump: every atom at the image nearest its previous position (reduced coordinates)",
            "module": "mdsurrogate.data.periodic"}


def _meta(*, name, top, trajs, test_trajs, select, delta, cutoff, velocities, ratios, system: md.MDSystem,
          kind: str, frame_dt: float, scales: dict, dt: float | None, periodic: dict, align: bool = False,
          smooth_cutoff: float = 0.0, time_reversal: bool = False) -> dict:
    graph = {"kind": "radius", "cutoff": float(cutoff)}
    if smooth_cutoff > 0:
        graph["envelope"] = float(smooth_cutoff)
    return {
        "name": name or f"md_{Path(top).stem}",
        "source": "md",
        "description": f"MD trajectory {Path(top).name} + {', '.join(Path(p).name for p in trajs)}, "
                       f"selection {select!r}",
        "units": {"length": "Å", "time": "ps", "velocity": f"Å per frame ({frame_dt:g} ps)"},
        "frame_dt": frame_dt,
        "delta_frames": int(delta),
        "selection": select,
        "features": {
            "global_graph": graph,
            "node": ["speed", "charge", "one_hot:element"],
            "edge": ["dist", "dist2"],
            "local_edge": ["length0", "dist2"],
            "scales": scales,
            "classes": {"element": len(md.ELEMENTS)},
        },
        "md": {"selection": select, "n_atoms": system.n_atoms, "signature": system.signature,
               "elements": list(md.ELEMENTS), "velocities": kind, "align": bool(align),
               "time_reversal": bool(time_reversal),
               "bonds_guessed": system.bonds_guessed,
               "n_bonds": int(len(system.bonds)), "split_ratios": list(ratios), "cutoff": float(cutoff),
               "test_trajectories": [str(p) for p in test_trajs], "periodic": periodic,
               "frame_dt_from": "the dt parameter" if dt is not None else "the trajectory's frame times",
               "element": system.element.tolist(), "charge": [round(float(q), 6) for q in system.charge],
               "files": {"topology": str(top), "trajectories": [str(p) for p in trajs]}},
        "generator": {"kind": "md", "topology": str(top),
                      "trajectories": [str(p) for p in trajs[:len(trajs) - len(test_trajs)]],
                      "test_trajectories": [str(p) for p in test_trajs], "select": select,
                      "delta": int(delta), "cutoff": float(cutoff), "smooth_cutoff": float(smooth_cutoff),
                      "velocities": velocities,
                      **({"dt": float(dt)} if dt is not None else {})},
    }


def ingest_md(out: str | Path, top: str | Path, trajs, *, select: str = "backbone", delta: int = 15,
              cutoff: float = 10.0, velocities: str = "auto", ratios=(0.6, 0.2, 0.2), test_trajs=(),
              name: str | None = None, dt: float | None = None, align: bool = False, smooth_cutoff: float = 2.0,
              time_reversal: bool = False, overwrite: bool = False, warn=None) -> Path:
    """Any MD trajectory MDAnalysis reads → a dataset of (frame i → frame i + Δ) samples of one atom selection.

    Several trajectories of one system become one dataset; each is split chronologically on its own
    (``ratios`` train/val/test) and no sample straddles two files or two splits (see
    :func:`chronological_samples`). Global graph: atoms within ``cutoff`` Å, rebuilt for every state, each edge's
    messages weighted by a smooth step that falls from 1 at ``cutoff − smooth_cutoff`` to 0 at ``cutoff`` (Å;
    0 = a hard cutoff, as in the papers), so that a step is continuous as atoms cross the cutoff;
    edge features [‖r_ij‖, ‖r_ij‖²]; local graph: bonds with [length0, ‖r_ij‖²]; node features
    [‖v‖ / v_rms, q / max|q|, one-hot element]. Velocities: ``"auto"`` (the trajectory's when it has them and they
    describe its motion over a frame, else the backward difference), ``"trajectory"`` (refused when they do not),
    ``"difference"`` or ``"lag"``; in Å per frame (sources/md.py). Periodic boxes: the selection's molecules are
    made whole and the frames unwrapped in time (:mod:`mdsurrogate.data.periodic`; recorded in
    ``meta["md"]["periodic"]``). ``dt``: ps between saved frames, for files that do not state it (otherwise the
    files' frame times; a file with no or zero times and no ``dt`` is refused). ``align``: every frame superposed on
    the first frame of the first trajectory (rigid-body translation and rotation removed; velocities from superposed
    pairs), for molecules that diffuse and tumble (a small peptide in implicit solvent).
    ``test_trajs``: further trajectories held out whole as test data (independent runs of the same system: the
    strictest test); the ``ratios`` then split the other trajectories (their test fraction may be 0).
    ``time_reversal``: also train on each trajectory's training span played backwards (appended as further
    trajectories, training samples only): right for dynamics that obey detailed balance, and for a driven
    transition it teaches both directions, so that a rollout does not inherit the drive (meta ``time_reversal``).
    ``warn(message)`` receives non-fatal notes (e.g. guessed bonds).
    """
    warn = warn or (lambda message: None)
    trajs, test_trajs = list(trajs), list(test_trajs)
    _check_parameters(trajs, delta, cutoff, velocities, dt, smooth_cutoff)
    check_new_dataset(out, overwrite)
    held_out = set(range(len(trajs), len(trajs) + len(test_trajs)))
    files = trajs + test_trajs
    universes = md.open_universe(top, files)
    system = _read_system(universes[0], select, warn)
    reference = None
    if align:  # the first frame of the first trajectory: every frame of every file is superposed on it
        reference = md.FrameReader(universes[0], md.select_atoms(universes[0], select), system.bonds)(0)
        reference = reference.astype(np.float64)
    runs = [_read_trajectory(u, path, system, velocities, delta, dt, warn, reference)
            for u, path in zip(universes, files, strict=True)]
    _check_consistent(runs)
    samples, codes = _trajectory_samples(runs, delta, ratios, held_out)
    reversed_runs = []
    if time_reversal:  # appended after every file; training samples only, so validation and test stay forward
        for t, run in enumerate(list(runs)):
            if t in held_out:
                continue
            rev = _time_reversed_training_span(run, delta, ratios, align)
            starts = np.arange(rev.first, len(rev.positions) - delta)
            if len(starts):
                samples = np.concatenate([samples, np.stack([np.full(len(starts), len(runs) + len(reversed_runs)),
                                                             starts, starts + delta], axis=1)])
                codes = np.concatenate([codes, np.full(len(starts), SPLITS["train"], np.int8)])
                reversed_runs.append(rev)
        runs = runs + reversed_runs
    frame_dt = float(np.median([r.spacing for r in runs]))
    meta = _meta(name=name, top=top, trajs=files, test_trajs=test_trajs, select=select, delta=delta, cutoff=cutoff,
                 velocities=velocities, ratios=ratios, system=system, kind=runs[0].kind, frame_dt=frame_dt,
                 scales=_feature_scales(runs, samples, codes, system), dt=dt, periodic=_periodic_meta(runs),
                 align=align, smooth_cutoff=smooth_cutoff, time_reversal=time_reversal)
    local = system.topology(runs[0].positions[0]).edge_sets["local"]
    e_idx, length0 = local.index.numpy().T, local.props["length0"].numpy()
    n_t = len(runs)
    return write_dataset(
        out, positions=[r.positions for r in runs], velocities=[r.velocities for r in runs], samples=samples,
        split=codes, meta=meta, node_props={"element": [system.element] * n_t, "charge": [system.charge] * n_t},
        edge_sets={"local": EdgeSetData([e_idx] * n_t, {"length0": [length0] * n_t})}, overwrite=overwrite)
