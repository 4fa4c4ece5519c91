"""The versioned on-disk dataset: a directory of ``.npy`` arrays plus ``meta.json``, memory-mapped on read.

Layout (format ``mdsurrogate-dataset``, version 1); T trajectories, trajectory t has F_t frames of N_t nodes,
R = Σ_t F_t·N_t state rows, S samples::

    meta.json                   format, version, units, frame_dt, delta_frames, feature spec, provenance …
    trajectories.npy  [T, 2]    int64 (F_t, N_t)
    positions.npy     [R, 3]    float32, frame f of trajectory t = rows off_t + f·N_t … + N_t (length unit)
    velocities.npy    [R, 3]    float32 (length unit / time unit)
    node.<prop>.npy   [ΣN(,k)]  per-node properties, trajectory t owns rows Σ_{t'<t} N_t' …
    edges.<set>.npy   [ΣE, 2]   static edges (receiver, sender) with node indices local to their trajectory
    edges.<set>.count.npy [T]   edges per trajectory
    edges.<set>.<prop>.npy [ΣE] per-edge static properties
    samples.npy       [S, 3]    int64 (trajectory, input frame, target frame)
    split.npy         [S]       int8: 0 train, 1 val, 2 test
    forces.npy [R, 3], energy.npy [ΣF]   optional (eV/Å, eV)

Everything is readable with plain NumPy (``np.load(..., mmap_mode="r")``) and ``json``; nothing is pickled.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .featurize import FeatureSpec
from .topology import BatchTopology, EdgeSet

FORMAT = "mdsurrogate-dataset"
FORMAT_VERSION = 1
SPLITS = {"train": 0, "val": 1, "test": 2}


class DatasetError(UserError, ValueError):
    """A dataset directory is missing, corrupt, or of an unsupported version."""


def segment_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every (s, n) pair, without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg_start = np.cumsum(lengths) - lengths
    return np.repeat(starts - seg_start, lengths) + np.arange(total, dtype=np.int64)


def _as_rows(arrays, width: int | None) -> np.ndarray:
    """Concatenate per-trajectory arrays (a list, or one stacked array) into flat rows."""
    if isinstance(arrays, np.ndarray):
        return arrays.reshape((-1,) + ((width,) if width else arrays.shape[2:] if arrays.ndim > 2 else ()))
    if len(arrays) == 0:
        return np.zeros((0,) + ((width,) if width else ()))
    return np.concatenate([np.asarray(a).reshape((-1,) + ((width,) if width else np.asarray(a).shape[1:]))
                           for a in arrays])


@dataclass
class EdgeSetData:
    """Per-trajectory static edges for the writer: ``edges[t]`` [E_t, 2] local indices, ``props[name][t]`` [E_t]."""

    edges: Sequence[np.ndarray]
    props: Mapping[str, Sequence[np.ndarray]]


def _partial_dir(path: Path) -> Path:
    """A new, empty, uniquely named folder beside ``path`` (its parents created), mode ``0777 & ~umask`` (0755 under
    umask 022; :func:`tempfile.mkdtemp` would make it 0700, unreadable to colleagues on shared storage)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path.parent, *path.parent.parents] if p.exists() and not p.is_dir()), path.parent)
        raise DatasetError(f"cannot write {path}: {blocker} is a file, not a folder") from None
    for _ in range(64):
        candidate = path.with_name(f".{path.name}.partial-{secrets.token_hex(4)}")
        try:
            os.mkdir(candidate, 0o777)
        except FileExistsError:
            continue
        return candidate
    raise DatasetError(f"cannot find a free temporary name beside {path}")  # pragma: no cover


def _is_dataset(path: Path) -> bool:
    try:
        return json.loads((path / "meta.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_new_dataset(path: str | os.PathLike, overwrite: bool) -> None:
    """Refuse early, before any work, what :func:`write_dataset` would refuse at the end: an existing ``path``
    without ``overwrite``; with ``overwrite``, anything there but a dataset or an empty folder (a regular file, a
    folder of other files are never replaced); a ``path`` below a regular file."""
    path = Path(path)
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise DatasetError(f"cannot write {path}: {blocker} is a file, not a folder")
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise DatasetError(f"{path} already exists; choose another output or pass overwrite=True")
    if path.is_symlink() or not path.is_dir():
        raise DatasetError(f"{path} exists and is not a dataset folder; it is not replaced, even with overwrite")
    if not _is_dataset(path) and any(path.iterdir()):
        raise DatasetError(f"{path} is a folder that holds other files, not an mdsurrogate dataset; it is not "
                           "replaced, even with overwrite")


def write_dataset(
    path: str | os.PathLike,
    *,
    positions: Sequence[np.ndarray] | np.ndarray,
    velocities: Sequence[np.ndarray] | np.ndarray,
    samples: np.ndarray,
    split: np.ndarray,
    meta: dict,
    node_props: Mapping[str, Sequence[np.ndarray] | np.ndarray] | None = None,
    edge_sets: Mapping[str, EdgeSetData] | None = None,
    forces: Sequence[np.ndarray] | np.ndarray | None = None,
    energy: Sequence[np.ndarray] | np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a dataset atomically (a temporary directory renamed into place at the end).

    Args:
        positions, velocities: per trajectory [F_t, N_t, 3] (a list, or a stacked [T, F, N, 3] array).
        samples: [S, 3] (trajectory, input frame, target frame); split: [S] of 0/1/2 (train/val/test).
        meta: JSON-able metadata; must contain ``features`` (a FeatureSpec dict), ``units``, ``frame_dt``,
            ``delta_frames``. Format keys and array shapes are added here.
        node_props: name → per trajectory [N_t] (or [N_t, k]); edge_sets: name → EdgeSetData.
        overwrite: replace an existing dataset (or empty folder) at ``path``, only once the new one is complete;
            anything else there is never replaced (:func:`check_new_dataset`).
    """
    path = Path(path)
    check_new_dataset(path, overwrite)
    frames = np.array([p.shape[0] for p in positions], dtype=np.int64)
    nodes = np.array([p.shape[1] for p in positions], dtype=np.int64)
    traj = np.stack([frames, nodes], axis=1) if len(frames) else np.zeros((0, 2), np.int64)
    pos = _as_rows(positions, 3).astype(np.float32)
    vel = _as_rows(velocities, 3).astype(np.float32)
    if pos.shape != vel.shape or pos.shape[0] != int((frames * nodes).sum()):
        raise DatasetError("positions and velocities must have the same [F_t, N_t, 3] shape per trajectory")
    samples = np.asarray(samples, dtype=np.int64).reshape(-1, 3)
    split = np.asarray(split, dtype=np.int8).reshape(-1)
    if samples.shape[0] != split.shape[0]:
        raise DatasetError("samples and split must have the same length")
    FeatureSpec.from_dict(meta["features"])  # validates

    tmp = _partial_dir(path)
    try:
        np.save(tmp / "trajectories.npy", traj)
        np.save(tmp / "positions.npy", pos)
        np.save(tmp / "velocities.npy", vel)
        np.save(tmp / "samples.npy", samples)
        np.save(tmp / "split.npy", split)
        arrays = ["trajectories", "positions", "velocities", "samples", "split"]
        for name, vals in (node_props or {}).items():
            arr = _as_rows(vals, None)
            if arr.shape[0] != int(nodes.sum()):
                raise DatasetError(f"node property {name!r} has {arr.shape[0]} rows, expected {int(nodes.sum())}")
            np.save(tmp / f"node.{name}.npy", arr)
            arrays.append(f"node.{name}")
        for set_name, es in (edge_sets or {}).items():
            counts = np.array([len(e) for e in es.edges], dtype=np.int64)
            if counts.shape[0] != traj.shape[0]:
                raise DatasetError(f"edge set {set_name!r} must list edges for every trajectory")
            edges = _as_rows(list(es.edges), 2).astype(np.int64) if counts.sum() else np.zeros((0, 2), np.int64)
            np.save(tmp / f"edges.{set_name}.npy", edges)
            np.save(tmp / f"edges.{set_name}.count.npy", counts)
            arrays += [f"edges.{set_name}", f"edges.{set_name}.count"]
            for pname, pvals in es.props.items():
                arr = _as_rows(list(pvals), None) if counts.sum() else np.zeros(0)
                np.save(tmp / f"edges.{set_name}.{pname}.npy", arr)
                arrays.append(f"edges.{set_name}.{pname}")
        if forces is not None:
            np.save(tmp / "forces.npy", _as_rows(forces, 3).astype(np.float32))
            arrays.append("forces")
        if energy is not None:
            np.save(tmp / "energy.npy", _as_rows(energy, None).astype(np.float64))
            arrays.append("energy")
        full_meta = dict(meta)
        full_meta.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            n_trajectories=int(traj.shape[0]),
            n_samples={k: int((split == v).sum()) for k, v in SPLITS.items()},
            node_properties=sorted((node_props or {}).keys()),
            edge_sets={k: sorted(v.props.keys()) for k, v in (edge_sets or {}).items()},
            arrays=sorted(arrays),
        )
        with open(tmp / "meta.json", "w") as fh:
            json.dump(full_meta, fh, indent=2, sort_keys=True)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


class Dataset:
    """Read-only view of a dataset directory; arrays are memory-mapped (datasets larger than RAM train)."""

    def __init__(self, path: str | os.PathLike, *, in_memory: bool | None = None):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not self.path.is_dir():
            raise DatasetError(f"no dataset at {self.path} (expected a directory made by `mdsurrogate ingest`)")
        if not meta_file.is_file():
            raise DatasetError(f"{self.path} is not an mdsurrogate dataset (meta.json is missing)")
        try:
            self.meta = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{meta_file} is corrupt ({exc.__class__.__name__})") from None
        if self.meta.get("format") != FORMAT:
            raise DatasetError(f"{self.path} is not an mdsurrogate dataset (format {self.meta.get('format')!r})")
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"{self.path} has dataset format version {self.meta.get('format_version')}, this mdsurrogate "
                f"reads version {FORMAT_VERSION}; re-run `mdsurrogate ingest`"
            )
        self._check_meta()
        self._arrays: dict[str, np.ndarray] = {}
        for name in self.meta.get("arrays", []):
            f = self.path / f"{name}.npy"
            try:
                arr = np.load(f, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{f} is missing or corrupt ({exc})") from None
            self._arrays[name] = arr
        self._check_arrays()
        total_bytes = sum(a.nbytes for a in self._arrays.values())
        if in_memory is None:
            in_memory = total_bytes < 2**30
        if in_memory:
            self._arrays = {k: np.ascontiguousarray(a) for k, a in self._arrays.items()}
        self._index()

    # -- structure ---------------------------------------------------------------------------------------
    def _check_meta(self):
        """The keys every consumer relies on, checked once here (one sentence instead of a KeyError later)."""
        meta = self.meta
        if not isinstance(meta, dict):
            raise DatasetError(f"{self.path}/meta.json is corrupt: it is not a JSON object")
        if not isinstance(meta.get("features"), dict):
            raise DatasetError(f"{self.path}/meta.json is corrupt: it has no 'features' (the feature spec)")
        try:
            FeatureSpec.from_dict(meta["features"])
        except (UserError, TypeError, ValueError) as exc:
            raise DatasetError(f"{self.path}/meta.json is corrupt: its feature spec is invalid ({exc})") from None
        dt, delta = meta.get("frame_dt"), meta.get("delta_frames")
        timeless = meta.get("task") == "potential"  # frames without a time step: frame_dt = delta_frames = 0
        if not (isinstance(dt, int | float) and not isinstance(dt, bool) and np.isfinite(dt)
                and (dt > 0 or (timeless and dt == 0))):
            raise DatasetError(f"{self.path}/meta.json is corrupt: frame_dt must be a positive number, got {dt!r}")
        if not (isinstance(delta, int) and not isinstance(delta, bool) and (delta >= 1 or (timeless and delta == 0))):
            raise DatasetError(f"{self.path}/meta.json is corrupt: delta_frames must be a whole number ≥ 1, got "
                               f"{delta!r}")
        if not isinstance(meta.get("arrays", []), list) or not isinstance(meta.get("edge_sets", {}), dict):
            raise DatasetError(f"{self.path}/meta.json is corrupt: 'arrays' must be a list, 'edge_sets' an object")

    def _check_arrays(self):
        """Dtypes and lengths of the arrays (memory-mapped, so this reads headers only)."""
        a = self._arrays
        for key, kinds in (("trajectories", "iu"), ("positions", "f"), ("velocities", "f"), ("samples", "iu"),
                           ("split", "iu")):
            if key in a and a[key].dtype.kind not in kinds:
                want = "integers" if kinds == "iu" else "floating-point numbers"
                raise DatasetError(f"{self.path} is corrupt: {key}.npy holds {a[key].dtype} values, not {want}")
        for key in ("forces", "energy"):
            if key in a and a[key].dtype.kind != "f":
                raise DatasetError(f"{self.path} is corrupt: {key}.npy holds {a[key].dtype} values")
        if "trajectories" in a and (a["trajectories"].ndim != 2 or a["trajectories"].shape[1] != 2
                                    or (np.asarray(a["trajectories"]) < 0).any()):
            raise DatasetError(f"{self.path} is corrupt: trajectories.npy must be [T, 2] non-negative (frames, "
                               "nodes)")
        if "samples" in a and (a["samples"].ndim != 2 or a["samples"].shape[1] != 3):
            raise DatasetError(f"{self.path} is corrupt: samples.npy has shape {a['samples'].shape}, expected "
                               "[S, 3]")
        if "samples" in a and "split" in a and a["split"].shape != (a["samples"].shape[0],):
            raise DatasetError(f"{self.path} is corrupt: split.npy has shape {a['split'].shape} for "
                               f"{a['samples'].shape[0]} samples")
        if "split" in a and len(a["split"]) and not np.isin(np.asarray(a["split"]), list(SPLITS.values())).all():
            raise DatasetError(f"{self.path} is corrupt: split.npy holds codes other than 0, 1, 2")

    def _index(self):
        a = self._arrays
        try:
            traj = a["trajectories"]
            self.traj_frames = np.asarray(traj[:, 0], dtype=np.int64)
            self.traj_nodes = np.asarray(traj[:, 1], dtype=np.int64)
            self.row_offset = np.concatenate([[0], np.cumsum(self.traj_frames * self.traj_nodes)[:-1]]).astype(np.int64)
            self.node_offset = np.concatenate([[0], np.cumsum(self.traj_nodes)[:-1]]).astype(np.int64)
            rows = int((self.traj_frames * self.traj_nodes).sum())
            for key in ("positions", "velocities"):
                if a[key].shape != (rows, 3):
                    raise DatasetError(f"{self.path}: {key}.npy has shape {a[key].shape}, expected ({rows}, 3)")
            self.samples = np.asarray(a["samples"], dtype=np.int64)
            self.split_codes = np.asarray(a["split"], dtype=np.int8)
        except KeyError as exc:
            raise DatasetError(f"{self.path} is corrupt: array {exc.args[0]} is missing") from None
        if len(self.samples) and (
            self.samples[:, 0].max() >= len(self.traj_frames)
            or (self.samples[:, 1:] >= self.traj_frames[self.samples[:, 0], None]).any()
            or (self.samples < 0).any()
        ):
            raise DatasetError(f"{self.path} is corrupt: samples point outside the stored frames")
        self.edge_set_names = sorted(self.meta.get("edge_sets", {}))
        self._edge_offsets = {}
        for name in self.edge_set_names:
            counts = np.asarray(a[f"edges.{name}.count"], dtype=np.int64)
            self._edge_offsets[name] = (np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64), counts)

    @property
    def features(self) -> FeatureSpec:
        return FeatureSpec.from_dict(self.meta["features"])

    @property
    def n_trajectories(self) -> int:
        return len(self.traj_frames)

    @property
    def frame_dt(self) -> float:
        """Time between stored frames (dataset time unit, ``meta['units']['time']``)."""
        return float(self.meta["frame_dt"])

    @property
    def delta_frames(self) -> int:
        return int(self.meta["delta_frames"])

    @property
    def units(self) -> dict:
        return dict(self.meta.get("units", {}))

    def has(self, array: str) -> bool:
        return array in self._arrays

    def split_indices(self, split: str) -> np.ndarray:
        """Sample ids of a split (``train``, ``val`` or ``test``)."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.split_codes == SPLITS[split])

    # -- access ------------------------------------------------------------------------------------------
    def frame(self, traj: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions and velocities [N_t, 3] of one stored frame."""
        n = int(self.traj_nodes[traj])
        if not -self.traj_frames[traj] <= frame < self.traj_frames[traj]:
            raise DatasetError(f"trajectory {traj} has {self.traj_frames[traj]} frames; frame {frame} does not exist")
        frame %= int(self.traj_frames[traj])
        start = self.row_offset[traj] + frame * n
        return (np.array(self._arrays["positions"][start : start + n]),
                np.array(self._arrays["velocities"][start : start + n]))

    def node_property(self, name: str, traj: int) -> np.ndarray:
        n = int(self.traj_nodes[traj])
        return np.array(self._arrays[f"node.{name}"][self.node_offset[traj] : self.node_offset[traj] + n])

    def edge_set(self, name: str, traj: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Static edges [E_t, 2] (local node indices) of one trajectory and their properties."""
        off, counts = self._edge_offsets[name]
        sl = slice(off[traj], off[traj] + counts[traj])
        props = {p: np.array(self._arrays[f"edges.{name}.{p}"][sl]) for p in self.meta["edge_sets"][name]}
        return np.array(self._arrays[f"edges.{name}"][sl]), props

    def topology(self, trajs: np.ndarray) -> BatchTopology:
        """Static topology of a batch made of the given trajectories (repeats allowed), flat-batched."""
        trajs = np.asarray(trajs, dtype=np.int64)
        n = self.traj_nodes[trajs]
        ptr = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
        node_rows = segment_arange(self.node_offset[trajs], n)
        props = {
            name: torch.from_numpy(np.asarray(self._arrays[f"node.{name}"][node_rows]))
            for name in self.meta.get("node_properties", [])
        }
        sets = {}
        for name in self.edge_set_names:
            off, counts = self._edge_offsets[name]
            c = counts[trajs]
            rows = segment_arange(off[trajs], c)
            local = np.asarray(self._arrays[f"edges.{name}"][rows])
            shift = np.repeat(ptr[:-1], c)
            index = torch.from_numpy((local + shift[:, None]).T.copy())
            eprops = {p: torch.from_numpy(np.asarray(self._arrays[f"edges.{name}.{p}"][rows]))
                      for p in self.meta["edge_sets"][name]}
            sets[name] = EdgeSet(index, eprops)
        return BatchTopology(torch.from_numpy(ptr), props, sets)

    def states(self, trajs: np.ndarray, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat positions and velocities [ΣN, 3] (float32) for (trajectory, frame) pairs."""
        trajs = np.asarray(trajs, dtype=np.int64)
        n = self.traj_nodes[trajs]
        rows = segment_arange(self.row_offset[trajs] + np.asarray(frames, dtype=np.int64) * n, n)
        return (torch.from_numpy(np.asarray(self._arrays["positions"][rows])),
                torch.from_numpy(np.asarray(self._arrays["velocities"][rows])))

    def gather(self, sample_ids: np.ndarray):
        """A batch of samples: (x_t, v_t, x_{t+Δ}, v_{t+Δ}) flat [ΣN, 3] and their ``BatchTopology``."""
        s = self.samples[np.asarray(sample_ids, dtype=np.int64)]
        x0, v0 = self.states(s[:, 0], s[:, 1])
        x1, v1 = self.states(s[:, 0], s[:, 2])
        return x0, v0, x1, v1, self.topology(s[:, 0])

    def describe(self) -> dict:
        """A short JSON-able summary (for ``mdsurrogate info``)."""
        return {
            "path": str(self.path),
            "name": self.meta.get("name"),
            "source": self.meta.get("source"),
            "trajectories": self.n_trajectories,
            "nodes": sorted({int(n) for n in np.unique(self.traj_nodes)})[:10],
            "samples": self.meta.get("n_samples"),
            "frame_dt": self.frame_dt,
            "delta_frames": self.delta_frames,
            "units": self.units,
            "features": self.meta["features"],
        }
