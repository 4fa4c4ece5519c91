"""Mocap ingest: CMU motion capture → datasets, the Walk / Run benchmarks of the GMN and EGHN papers
(docs/protocols.md §3).

Two entry points:

* :func:`ingest_mocap_amc` — a subject's ASF skeleton and its AMC trials; joint positions come from
  :func:`~mdsurrogate.data.sources.asfamc.forward_kinematics` (31 joints for CMU, depth-first order, root = 0).
* :func:`ingest_mocap_positions` — joint positions already computed, e.g. the EGHN "Run" file
  (``cmu_subject09_run.npz``: ``trial_00`` … ``trial_10`` [T, J, 3], ``edges`` [J−1, 2] and the published
  split ``split_{train,val,test}_{trials,starts}``).

Both write one trajectory per trial, in the order the trials are given (``meta["trials"]`` names them):

* **States** (§3.2). Positions x(t) in the ASF length unit, not converted and not centred (CMU: ``:units
  length 0.45``, read by the usual convention as 1 unit = 1/0.45 in ≈ 5.64 cm; y is vertical, heights ≈ 0 … 30).
  Velocity v(t) = x(t+1) − x(t), a forward difference, so the last frame of every trial is dropped: a trial of
  T frames stores F = T − 1 frames.
* **Time unit = one frame** (1/fps s; 1/120 s for the CMU originals). That is the unit in which the forward
  difference *is* a velocity, so ``frame_dt = 1`` and x(t) + Δ·v(t) with Δ = ``delta_frames`` is the linear
  extrapolation (the Linear baseline's τ = Δ). ``meta["frame_seconds"]`` = 1/fps and
  ``meta["units"]["frame_seconds"]`` give the physical duration, ``meta["delta_seconds"]`` the gap in seconds.
* **Samples** (§3.3). A sample is (trial, start s, target s + Δ); Δ = 30 frames (0.25 s at 120 Hz) by
  default. The split is trial-disjoint (see :func:`resolve_split` for its dictionary form). Per split, every
  trial keeps at most ⌊max_samples[split] / trials in the split⌋ starts, in their stored order — the EGHN
  trainer's rule with its defaults 3000 / 600 / 600 (:data:`EGHN_MAX_SAMPLES`); for Run this gives exactly
  400 / 240 / 240 samples.
* **Graphs** (§3.4). Static ``global`` edge set: every ordered pair of joints at tree distance 1 or 2 with edge
  property ``hops`` (130 edges for CMU: 60 at one hop, 70 at two); static ``local`` edge set: the bones in
  both directions with ``hops`` = 1 (60 edges). Edge features [hops, ‖r_ij‖²] on both.
* **Node features** [‖v‖, height], height = y · ``scales["height"]`` with ``scales["height"]`` = 1 / (largest
  joint height over every stored frame of the *training* trials), a dataset constant fixed at ingest.
  Deviation: the official code divides by the maximum height over the nodes of the current batch, which makes
  a node's features depend on the other graphs in its batch (docs/protocols.md §3.5); a constant keeps the feature
  a function of the state alone (identical in training, evaluation and rollouts) and at the same scale (≈ 0 … 1).
  The height feature breaks full E(3) symmetry: models stay equivariant to rotations about the vertical axis
  and horizontal translations only. ``height_feature=False`` uses [‖v‖, 1] instead (the GMN choice) and keeps
  full E(3) equivariance.

Not reproduced: the official preprocessing drops the first 6 frames of the trial whose file name ends in
``_10`` (§3.1). That only matters to rebuild the official Walk pickle at 120 Hz, which cannot be matched
frame for frame anyway (its trial order is not published), so every trial is used from its first frame.

Walk at 30 Hz: the Walk benchmark uses subject 35's 23 walking trials at 120 Hz with Δ = 30 frames; only a
30 Hz copy (every 4th frame) is available here (``data/mocap/PROVENANCE.md``). :data:`WALK30_SPLIT` and
:data:`WALK30_DELTA` (8 frames = 0.267 s instead of 0.25 s) define our stand-in; numbers on it are not
comparable to the paper's Walk column.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..dataset import SPLITS, EdgeSetData, write_dataset
from ..sources.asfamc import MocapFormatError, forward_kinematics, read_amc, read_asf, tree_distance_edges

__all__ = [
    "EGHN_MAX_SAMPLES",
    "WALK30_DELTA",
    "WALK30_FPS",
    "WALK30_SPLIT",
    "WALK30_TRIALS",
    "default_split",
    "ingest_mocap_amc",
    "ingest_mocap_positions",
    "load_split",
    "resolve_split",
]

#: The EGHN trainer's caps on samples per split (docs/protocols.md §3.3); per trial ⌊cap / trials in the split⌋.
EGHN_MAX_SAMPLES: dict[str, int] = {"train": 3000, "val": 600, "test": 600}

#: Subject 35's 23 walking trials (35_01–16, 35_28–34), the trials of the Walk benchmark.
WALK30_TRIALS: tuple[str, ...] = tuple(f"35_{i:02d}" for i in (*range(1, 17), *range(28, 35)))

#: Frame rate of the 30 Hz copy of subject 35 (every 4th frame of the 120 Hz originals).
WALK30_FPS = 30.0

#: Gap for Walk at 30 Hz: 8 frames = 0.267 s (the paper: 30 frames at 120 Hz = 0.25 s, i.e. 7.5 frames here).
WALK30_DELTA = 8


def _walk30_split() -> dict:
    # The GMN/EGHN Walk split has 11 / 6 / 6 trials; its case ids (train 1,2,4,5,7,9,13,14,16,17,20; val 3,8,11,
    # 12,15,18; test 0,6,10,19,21,22) index a directory listing that was never published. We apply the same ids
    # to the trials in sorted name order: same proportions and the same shape of split, NOT the same trials.
    ids = {"train": (1, 2, 4, 5, 7, 9, 13, 14, 16, 17, 20), "val": (3, 8, 11, 12, 15, 18),
           "test": (0, 6, 10, 19, 21, 22)}
    return {s: {"trials": [WALK30_TRIALS[i] for i in ids[s]], "starts": None} for s in SPLITS}


#: Trial-disjoint 11 / 6 / 6 split of :data:`WALK30_TRIALS` (every valid start frame; see ``_walk30_split``).
WALK30_SPLIT: dict = _walk30_split()


# ------------------------------------------------------------------------------------------------ helpers
def _trial_states(positions: np.ndarray, name: str, delta: int) -> tuple[np.ndarray, np.ndarray]:
    """x(t) and v(t) = x(t+1) − x(t) for t = 0 … T−2 (float64) of one trial [T, J, 3]."""
    positions = np.asarray(positions, dtype=np.float64)
    n_frames = positions.shape[0]
    if n_frames < delta + 2:
        raise ValueError(
            f"trial {name} has {n_frames} frames, too short for a gap of {delta} frames: a sample needs "
            f"delta + 2 = {delta + 2} frames (the last frame only serves the forward-difference velocity)"
        )
    return positions[:-1], positions[1:] - positions[:-1]


def _trial_index(tid, names: Sequence[str], split: str) -> int:
    """A split's trial id (index into ``names`` or a trial name) → trajectory index."""
    if isinstance(tid, (int, np.integer)) and not isinstance(tid, bool):
        if 0 <= int(tid) < len(names):
            return int(tid)
    elif isinstance(tid, str) and tid in names:
        return list(names).index(tid)
    shown = ", ".join(names) if len(names) <= 40 else ", ".join(names[:40]) + ", …"
    raise ValueError(
        f"unknown trial id {tid!r} in split {split!r}: use an index 0 … {len(names) - 1} or a trial name "
        f"({shown})"
    )


def resolve_split(split: Mapping, names: Sequence[str], n_frames: Sequence[int], delta: int,
                  max_samples: Mapping[str, int] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Turn a trial-disjoint split into samples.

    Args:
        split: ``{"train": {"trials": [...], "starts": [[...], ...] or None}, "val": ..., "test": ...}``.
            Trial ids are indices into ``names`` or trial names; ``starts`` gives the input frames per listed
            trial (in that order), None (or absent) means every valid start 0 … F−1−Δ. A split may be absent
            (no samples) or given as a bare list of trial ids (every valid start).
        names: trial names in stored order; n_frames: stored frames F per trial (T − 1).
        delta: gap Δ in frames; max_samples: split → cap, per trial ⌊cap / trials in the split⌋ (None: no cap).

    Returns:
        samples [S, 3] int64 (trajectory, start, start + Δ), split codes [S] int8, and a JSON-able record of
        the resolved split (trial names and samples per trial).
    """
    if not isinstance(split, Mapping):
        raise ValueError(f"a split must be a mapping of train / val / test to trials, not {type(split).__name__}")
    unknown = set(split) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split name(s) {sorted(unknown)}; use train, val and test")
    owner: dict[int, str] = {}
    samples, codes, record = [], [], {}
    for s in SPLITS:
        entry = split.get(s)
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            entry = {"trials": entry, "starts": None}
        extra = set(entry) - {"trials", "starts"}
        if extra:
            raise ValueError(f"split {s!r} has unknown key(s) {sorted(extra)}; use 'trials' and 'starts'")
        trials = [_trial_index(t, names, s) for t in np.asarray(entry.get("trials", []), dtype=object).ravel()]
        for t in trials:
            if t in owner:
                where = "twice" if owner[t] == s else f"in both {owner[t]!r} and {s!r}"
                raise ValueError(f"trial {names[t]} appears {where}; the split must be trial-disjoint")
            owner[t] = s
        starts = entry.get("starts")
        if starts is not None and len(starts) != len(trials):
            raise ValueError(f"split {s!r} lists {len(trials)} trials but {len(starts)} lists of start frames")
        cap = None
        if max_samples is not None and max_samples.get(s) is not None and trials:
            cap = int(max_samples[s]) // len(trials)
        record[s] = {"trials": [names[t] for t in trials], "samples_per_trial": []}
        for k, t in enumerate(trials):
            last = int(n_frames[t]) - 1 - delta  # largest valid start
            if starts is None:
                st = np.arange(max(last + 1, 0), dtype=np.int64)
            else:
                raw = np.asarray(starts[k])
                if raw.ndim != 1 or (raw.size and not np.issubdtype(raw.dtype, np.integer)):
                    raise ValueError(f"split {s!r}, trial {names[t]}: start frames must be a list of integers")
                st = raw.astype(np.int64)
                bad = st[(st < 0) | (st > last)]
                if bad.size:
                    raise ValueError(
                        f"split {s!r}, trial {names[t]}: start frame {int(bad[0])} is outside 0 … {last} (the "
                        f"trial stores {int(n_frames[t])} frames and the target is start + {delta})"
                    )
            if cap is not None:
                st = st[:cap]
            samples.append(np.stack([np.full(len(st), t), st, st + delta], axis=1))
            codes.append(np.full(len(st), SPLITS[s], np.int8))
            record[s]["samples_per_trial"].append(int(len(st)))
    if not samples:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.int8), record
    return np.concatenate(samples).astype(np.int64), np.concatenate(codes), record


def default_split(names: Sequence[str], seed: int = 100) -> dict:
    """A trial-disjoint split when none is given: :data:`WALK30_SPLIT` when ``names`` are exactly the 23
    walking trials of subject 35, otherwise a seeded shuffle of the trials into ≈ 11/23, 6/23, 6/23 (the Walk
    proportions; at least one trial each), every valid start."""
    names = list(names)
    if sorted(names) == sorted(WALK30_TRIALS):
        return {s: {"trials": list(v["trials"]), "starts": None} for s, v in WALK30_SPLIT.items()}
    if len(names) < 3:
        raise ValueError(f"a train / val / test split needs at least 3 trials, got {len(names)}; pass a split")
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = max(1, round(len(names) * 6 / 23))
    n_train = len(names) - 2 * n_val
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {s: {"trials": [names[i] for i in sorted(p)], "starts": None} for s, p in parts.items()}


def load_split(path: str | os.PathLike) -> dict:
    """Read a split from JSON (the dictionary form of :func:`resolve_split`), or the name ``"walk30"``."""
    if str(path).lower() == "walk30":
        return WALK30_SPLIT
    import json

    try:
        split = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"split file {path} is not valid JSON ({exc})") from None
    if not isinstance(split, dict):
        raise ValueError(f"split file {path} must hold a JSON object with train / val / test entries")
    return split


def _skeleton_edge_sets(bones: np.ndarray, n_joints: int, n_traj: int) -> tuple[dict[str, EdgeSetData], dict]:
    """Static ``global`` (tree distance 1 and 2, property ``hops``) and ``local`` (bones, both directions,
    ``hops`` = 1) edge sets, identical for every trajectory; rows are (receiver, sender)."""
    glob_index, hops = tree_distance_edges(bones, n_joints, max_hops=2)
    glob = np.ascontiguousarray(glob_index.T)
    local = glob[hops == 1]
    local_hops = np.ones(len(local), dtype=np.int64)
    sets = {
        "global": EdgeSetData([glob] * n_traj, {"hops": [hops] * n_traj}),
        "local": EdgeSetData([local] * n_traj, {"hops": [local_hops] * n_traj}),
    }
    return sets, {"global": int(len(glob)), "local": int(len(local))}


def _write_mocap(out, *, names: list[str], positions: list[np.ndarray], bones: np.ndarray, delta: int,
                 split: Mapping, max_samples: Mapping[str, int] | None, height_feature: bool, fps: float,
                 meta_extra: dict, overwrite: bool) -> Path:
    if int(delta) != delta or delta < 1:
        raise ValueError(f"delta must be a whole number of frames >= 1, got {delta!r}")
    delta = int(delta)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    n_joints = positions[0].shape[1]
    bones = np.asarray(bones)
    if bones.ndim != 2 or bones.shape[1] != 2 or not np.issubdtype(bones.dtype, np.integer):
        raise MocapFormatError(f"the skeleton's edges must be integer pairs [E, 2], got {bones.dtype} {bones.shape}")
    if bones.size and (bones.min() < 0 or bones.max() >= n_joints):
        raise MocapFormatError(f"the skeleton's edges refer to joints outside 0 … {n_joints - 1}")
    xs, vs = zip(*(_trial_states(p, n, delta) for p, n in zip(positions, names, strict=True)), strict=True)
    n_frames = [x.shape[0] for x in xs]
    samples, codes, record = resolve_split(split, names, n_frames, delta, max_samples)
    if not (codes == SPLITS["train"]).any():
        raise ValueError("the split has no training samples; list at least one trial under 'train'")
    train_trials = sorted({int(t) for t in samples[codes == SPLITS["train"], 0]})
    axis = 1  # CMU: y is vertical
    top = max(float(xs[t][..., axis].max()) for t in train_trials)
    if not top > 0:
        raise ValueError(f"the training trials' largest height (y) is {top:g}; the height feature needs it > 0")
    edge_sets, n_edges = _skeleton_edge_sets(bones, n_joints, len(names))
    features = {
        "global_graph": {"kind": "static"},
        "node": ["speed", "height"] if height_feature else ["speed", "ones"],
        "edge": ["hops", "dist2"],
        "local_edge": ["hops", "dist2"],
        "scales": {"height": 1.0 / top} if height_feature else {},
        "vertical_axis": axis,
    }
    frame_seconds = 1.0 / float(fps)
    meta = {
        "source": "mocap",
        "units": {
            "length": "ASF length unit, not converted (CMU ':units length 0.45': 1 unit = 1/0.45 in ≈ 5.64 cm)",
            "time": f"frame (1/{float(fps):g} s)",
            "velocity": "length unit per frame: v(t) = x(t+1) − x(t)",
            "frame_seconds": frame_seconds,
        },
        "frame_dt": 1.0,
        "frame_seconds": frame_seconds,
        "fps": float(fps),
        "delta_frames": delta,
        "delta_seconds": delta * frame_seconds,
        "features": features,
        "trials": list(names),
        "trial_frames": [int(f) for f in n_frames],
        "split_trials": record,
        "max_samples": dict(max_samples) if max_samples is not None else None,
        "edge_counts": n_edges,
        "height": {
            "max_train_height": top,
            "note": "height feature = y / max_train_height, a dataset constant (official EGHN: y / max y of the "
                    "batch, which depends on batch composition)",
        } if height_feature else None,
        "notes": [
            "velocity is the forward difference x(t+1) - x(t); the last frame of every trial is dropped",
            "the official 6-frame drop at the start of trial *_10 (Walk pickle) is not applied",
        ],
    }
    meta.update(meta_extra)
    return write_dataset(out, positions=list(xs), velocities=list(vs), samples=samples, split=codes, meta=meta,
                         edge_sets=edge_sets, overwrite=overwrite)


# ------------------------------------------------------------------------------------------- entry points
def ingest_mocap_amc(out: str | os.PathLike, asf: str | os.PathLike, amc_files: Sequence[str | os.PathLike], *,
                     delta: int = 30, split: Mapping | None = None, height_feature: bool = True,
                     fps: float = 120.0, max_samples: Mapping[str, int] | None = EGHN_MAX_SAMPLES,
                     name: str | None = None, overwrite: bool = False) -> Path:
    """Ingest a subject's ASF skeleton and AMC trials (one trajectory per trial, in the given order).

    Args:
        out: dataset directory to create.
        asf: the subject's skeleton; amc_files: its trials (trial name = file stem, e.g. ``35_01``).
        delta: gap Δ in frames (30 = 0.25 s at 120 Hz; use :data:`WALK30_DELTA` for the 30 Hz walks).
        split: trial-disjoint split (see :func:`resolve_split`; trial ids are indices into ``amc_files`` or
            file stems). None: :func:`default_split` (:data:`WALK30_SPLIT` for the 23 subject-35 walks).
        height_feature: node features [‖v‖, height] (EGHN) or [‖v‖, 1] (GMN, fully E(3)-invariant).
        fps: frame rate of the AMC files (CMU: 120; the subject-35 copy here: 30). Sets the time unit.
        max_samples: per-split caps (EGHN defaults); None keeps every start.
        name: dataset name for ``meta["name"]`` (default ``mocap_<subject>``).

    Raises:
        MocapFormatError: a malformed ASF/AMC file; ValueError: a trial shorter than Δ + 2 frames, an unknown
        or repeated trial id in the split, start frames outside a trial.
    """
    amc_files = [Path(p) for p in amc_files]
    if not amc_files:
        raise ValueError("give at least one AMC trial")
    names = [p.stem for p in amc_files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"trial name(s) {dupes} occur more than once among the AMC files")
    skeleton = read_asf(asf)
    positions = [forward_kinematics(skeleton, read_amc(p, skeleton)) for p in amc_files]
    if split is None:
        split = default_split(names)
    subject = skeleton.name if skeleton.name and skeleton.name.upper() != "VICON" else Path(asf).stem
    extra = {
        "name": name or f"mocap_{subject}",
        "description": f"CMU motion capture, skeleton {Path(asf).name}: {len(names)} AMC trials at {fps:g} Hz, "
                       f"joint positions by forward kinematics (GMN/EGHN Walk/Run protocol, docs/protocols.md §3)",
        "generator": {"kind": "asf/amc", "asf": str(asf), "amc": [str(p) for p in amc_files],
                      "joints": skeleton.names, "asf_length_unit": skeleton.length_unit},
    }
    return _write_mocap(out, names=names, positions=positions, bones=skeleton.edges, delta=delta, split=split,
                        max_samples=max_samples, height_feature=height_feature, fps=fps, meta_extra=extra,
                        overwrite=overwrite)


_TRIAL_KEY = re.compile(r"^trial_(\d+)$")


def ingest_mocap_positions(out: str | os.PathLike, npz: str | os.PathLike, *, delta: int = 30,
                           split_from_file: bool = True, split: Mapping | None = None,
                           height_feature: bool = True, fps: float = 120.0,
                           max_samples: Mapping[str, int] | None = EGHN_MAX_SAMPLES,
                           name: str | None = None, overwrite: bool = False) -> Path:
    """Ingest joint positions already computed (e.g. the EGHN Run file ``cmu_subject09_run.npz``).

    The file holds ``trial_<k>`` arrays [T, J, 3] (ASF length units, y up; trials are ordered by k and trial id
    i is the i-th of them), ``edges`` [J−1, 2] (bones as joint pairs) and, for ``split_from_file``, the
    published split ``split_{train,val,test}_trials`` [n] and ``split_{train,val,test}_starts`` [n, k], used
    exactly (start frames in stored order, capped per trial by ``max_samples`` as the EGHN trainer does: for Run
    400 / 240 / 240 samples). Otherwise ``split`` (see :func:`resolve_split`) or :func:`default_split`.

    Raises:
        MocapFormatError: missing keys, trials of different joint counts, non-finite values, bad edges;
        ValueError: a trial shorter than Δ + 2 frames, unknown trial ids, start frames outside a trial.
    """
    src = str(npz)
    try:
        data = np.load(npz, allow_pickle=False)
    except (OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise MocapFormatError(f"{src}: not a readable .npz file ({exc})") from None
    with data:
        keyed = sorted((int(m.group(1)), k) for k in data.files if (m := _TRIAL_KEY.match(k)))
        if not keyed:
            raise MocapFormatError(f"{src}: no trial_<k> arrays of joint positions")
        if "edges" not in data.files:
            raise MocapFormatError(f"{src}: no 'edges' array (the skeleton's bones as joint index pairs)")
        names = [k for _, k in keyed]
        positions = []
        for k in names:
            arr = data[k]
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise MocapFormatError(f"{src}: {k} has shape {arr.shape}, expected [frames, joints, 3]")
            if arr.shape[1] != (positions[0].shape[1] if positions else arr.shape[1]):
                raise MocapFormatError(
                    f"{src}: {k} has {arr.shape[1]} joints but {names[0]} has {positions[0].shape[1]}; every "
                    f"trial must use the same skeleton"
                )
            if not np.isfinite(arr).all():
                raise MocapFormatError(f"{src}: {k} contains non-finite positions")
            positions.append(np.asarray(arr, dtype=np.float64))
        bones = np.asarray(data["edges"])
        if bones.size and bones.max(initial=0) >= positions[0].shape[1]:
            raise MocapFormatError(
                f"{src}: 'edges' refers to joint {int(bones.max())} but the trials have {positions[0].shape[1]} "
                f"joints"
            )
        if split_from_file:
            if split is not None:
                raise ValueError("pass either split_from_file=True or a split, not both")
            keys = [f"split_{s}_{w}" for s in SPLITS for w in ("trials", "starts")]
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise MocapFormatError(f"{src}: no published split ({', '.join(missing)} missing)")
            split = {}
            for s in SPLITS:
                trials = np.asarray(data[f"split_{s}_trials"]).reshape(-1)
                starts = np.asarray(data[f"split_{s}_starts"])
                if starts.ndim != 2 or starts.shape[0] != trials.shape[0]:
                    raise MocapFormatError(f"{src}: split_{s}_starts has shape {starts.shape}, expected "
                                           f"[{trials.shape[0]}, starts per trial]")
                split[s] = {"trials": [int(t) for t in trials], "starts": [row for row in starts]}
        elif split is None:
            split = default_split(names)
    extra = {
        "name": name or f"mocap_{Path(src).stem}",
        "description": f"CMU motion capture, joint positions from {Path(src).name}: {len(names)} trials at "
                       f"{fps:g} Hz (GMN/EGHN Walk/Run protocol, docs/protocols.md §3)",
        "generator": {"kind": "positions", "file": src, "split_from_file": bool(split_from_file)},
    }
    return _write_mocap(out, names=names, positions=positions, bones=bones, delta=delta, split=split,
                        max_samples=max_samples, height_feature=height_feature, fps=fps, meta_extra=extra,
                        overwrite=overwrite)
