"""The ``.mdsr`` file: a surrogate trajectory whose frames are computed on demand from a model.

A ``.mdsr`` file does not store frames. It stores what is needed to *compute* them: the propagator checkpoint
it was made with (path + SHA-256), the initial state, the static topology the featurizer needs, the per-atom
identity writers and MDAnalysis need, the number of frames and their times. Frame ``k`` is the state after ``k``
model steps from the initial state, chained by the same :class:`~mdsurrogate.simulation.rollout.Chain` as every
rollout, so that reading a ``.mdsr`` file gives the frames ``rollout --out run.pdb`` would have written::

    from mdsurrogate.simulation.mdsr import read_mdsr, write_mdsr

    write_mdsr("run.mdsr", "runs/adk/best.pt", x0, v0, topo, atoms, n_frames=101, t0_ps=0.0, dt_ps=3600.0)
    run = read_mdsr("run.mdsr")
    for fr in run.frames():            # fr.index, fr.time_ps, fr.positions [N, 3], fr.velocities [N, 3]
        ...
    fr = run.frame(57)                 # random access

MDAnalysis opens the file as a trajectory after ``import mdsurrogate.mda`` (see :mod:`mdsurrogate.mda`).

File layout (format ``mdsurrogate-mdsr``, version 1): a ZIP archive holding ``header.json`` and NumPy ``.npy``
members, all read with ``allow_pickle=False`` (nothing in the file can run code; the checkpoint is loaded with
``torch.load(weights_only=True)``):

    header.json                          format, version, checkpoint {path, absolute, sha256, model}, n_atoms,
                                         n_frames, t0_ps, dt_ps, dtype, device, units, names of the arrays below
    state/x0.npy, state/v0.npy           [N, 3] initial positions (Å for MD) and velocities (the model's velocity
                                         unit: Å/ps for MD datasets)
    topology/node/<i>.npy                node property i (name in the header), [N] or [N, k]
    topology/edges/<i>/index.npy         static edge set i: [2, E] (receiver, sender)
    topology/edges/<i>/props/<j>.npy     its edge property j, [E]
    atoms/{names,elements,resnames,chainids,record_types}.npy   [N] strings
    atoms/resids.npy, atoms/bonds.npy, atoms/labels/<i>.npy     [N], [E, 2] and [N] integers

The checkpoint path is stored relative to the ``.mdsr`` file (so a directory holding both can be moved) and as
an absolute path; the relative one is tried first. A checkpoint whose SHA-256 differs from the stored one (it was
retrained or overwritten) is refused with a clear error: its frames would not be the ones the file describes.

Random access: the states of every ``stride``-th frame met along the one sequential chain are kept (in host
memory); frame ``k`` is recomputed from the nearest kept state at or before ``k``, and the states of the
``stride``-frame block holding the last frame asked for are kept too (on the device), so that reverse iteration
costs about one model step per frame. In eval mode, without
gradients, with the same dtype and device this is the same arithmetic as sequential reading, so on the CPU the
frames agree bit for bit. On CUDA, the scatter-adds of message passing use atomics whose summation order may vary
between calls; recomputed frames then agree to float round-off grown over at most ``stride - 1`` steps. Pass
``stride=1`` to keep every state (exact agreement on any device, memory ``n_frames × N × 6`` numbers).

Units: time in ps (``t0_ps``, ``dt_ps``); for dimensionless synthetic datasets the numbers are in the dataset's
time unit and labelled ps. Positions and velocities are in the checkpoint's dataset units (``header["units"]``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.atoms import AtomTopology
from ..data.topology import BatchTopology, EdgeSet
from ..device import DTYPES, resolve_device
from ..errors import UserError
from ..io.atomic import atomic_file

__all__ = ["FORMAT", "FORMAT_VERSION", "MdsrError", "MdsrFrame", "MdsrRun", "read_mdsr", "write_mdsr",
           "write_rollout_spec"]

FORMAT = "mdsurrogate-mdsr"
FORMAT_VERSION = 1
SUFFIX = ".mdsr"
DEFAULT_STRIDE = 16
_DTYPES = DTYPES


class MdsrError(UserError, ValueError):
    """A ``.mdsr`` file is unreadable, its checkpoint is missing or changed, or a frame cannot be computed."""


# ---------------------------------------------------------------------------------------------- helpers
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _numpy(a: Any, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu").numpy()
    return np.asarray(a)


def _state_array(a: Any, n: int | None, what: str) -> np.ndarray:
    arr = _numpy(a, what)
    if arr.ndim != 2 or arr.shape[1] != 3 or (n is not None and arr.shape[0] != n):
        want = f"[{n}, 3]" if n is not None else "[N, 3]"
        raise MdsrError(f"{what} must have shape {want}, got {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise MdsrError(f"{what} holds non-finite values")
    return arr


def _put(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    zf.writestr(name, buf.getvalue())


def _strings(values: np.ndarray) -> np.ndarray:
    """Object arrays of str → fixed-width unicode (storable without pickle)."""
    return np.asarray([str(v) for v in values], dtype=str) if len(values) else np.zeros(0, dtype="U1")


def _resolve_device(name: str | torch.device | None) -> torch.device:
    """The package's device rule, honouring a stored preference: CUDA on a machine without one → CPU + warning."""
    try:
        return resolve_device(name or "cpu", fallback=True)
    except UserError as exc:
        raise MdsrError(str(exc)) from None


# ---------------------------------------------------------------------------------------------- writing
def write_mdsr(path: str | os.PathLike, checkpoint: str | os.PathLike, x0: Any, v0: Any, topo: BatchTopology,
               atoms: AtomTopology, n_frames: int, t0_ps: float, dt_ps: float, *, device: str = "cpu",
               dtype: str = "float32", seed: int | None = None, verify: bool = True, guard: bool = True,
               on_step=None) -> Path:
    """Write a ``.mdsr`` file atomically (temporary file in the same directory, then rename).

    Args:
        path: the file to write (``.mdsr`` by convention).
        checkpoint: a propagator checkpoint file or run directory (its ``best.pt``).
        x0, v0: [N, 3] initial positions (Å for MD) and velocities (the model's velocity unit), NumPy or torch.
        topo: the static topology of the one system (``BatchTopology`` with one graph of N nodes).
        atoms: per-atom identity (names, residues, chains, elements, bonds) of the N atoms.
        n_frames: frames asked for, the initial state included (``steps + 1``), ≥ 1.
        t0_ps, dt_ps: time of frame 0 and between frames (one model step Δ), in ps.
        device: where frames are computed when the file is read (``cpu``, ``cuda[:i]`` or ``auto``); a reader
            may override it.
        dtype: ``float32`` (as rollouts compute by default) or ``float64``.
        seed: seed of a stochastic propagator's random stream (recorded; the same seed gives the same frames).
        verify: compute the chain once now with the stability guard, so that the file never promises frames the
            model cannot produce: when the guard stops the chain, the file holds the frames before the stop and
            the header records why. ``False`` skips this (the reader then stops with an error at that frame).
        guard: check every state against the checkpoint's data-derived limits (False: NaN/inf only); recorded.
        on_step: ``on_step(k)`` after step k of the verification (e.g. a progress bar).

    Returns the path; ``header["stopped"]`` of the file holds the guard's reason when the chain stopped early.
    """
    from ..training.checkpoint import Checkpoint, resolve_checkpoint
    from .surrogate import Surrogate

    path = Path(path)
    if dtype not in _DTYPES:
        raise MdsrError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    ck_path = resolve_checkpoint(checkpoint).resolve()
    x0 = _state_array(x0, None, "x0")
    n = x0.shape[0]
    v0 = _state_array(v0, n, "v0")
    if topo.num_graphs != 1 or int(topo.ptr[-1]) != n:
        raise MdsrError(f"the topology must describe one system of {n} atoms, got {topo.num_graphs} graph(s) of "
                        f"{int(topo.ptr[-1])} nodes")
    if atoms.n_atoms != n:
        raise MdsrError(f"the atom topology has {atoms.n_atoms} atoms but the initial state has {n}")
    if int(n_frames) != n_frames or n_frames < 1:
        raise MdsrError(f"n_frames must be an integer ≥ 1, got {n_frames}")
    if not (math.isfinite(t0_ps) and math.isfinite(dt_ps) and dt_ps > 0):
        raise MdsrError(f"t0_ps must be finite and dt_ps finite and > 0, got t0_ps={t0_ps}, dt_ps={dt_ps}")
    _resolve_device(device)  # an unknown device name fails now, not when the file is read

    ck = Checkpoint.load(ck_path, kind="propagator")
    topo = topo.to("cpu")
    stopped = None
    if verify and n_frames > 1:
        sur = Surrogate.from_checkpoint(ck, device=_resolve_device(device), dtype=dtype)
        chain = sur.chain(torch.as_tensor(x0), torch.as_tensor(v0), topo, seed=seed, guard=_guard(sur, guard))
        for k in range(1, int(n_frames)):
            step = chain.advance()
            if step.stopped:
                stopped = f"the chain stops before step {k}: {step.stopped}"
                n_frames = k
                break
            if on_step is not None:
                on_step(k)
    else:  # a file that could never produce a frame (missing node properties, wrong shapes) fails now
        ck.featurizer()(torch.as_tensor(x0, dtype=_DTYPES[dtype]), torch.as_tensor(v0, dtype=_DTYPES[dtype]), topo)

    node_names = list(topo.node_props)
    edge_names = list(topo.edge_sets)
    rel = os.path.relpath(ck_path, path.resolve().parent) if _same_drive(ck_path, path) else str(ck_path)
    from .. import __version__

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "checkpoint": {"path": Path(rel).as_posix(), "absolute": str(ck_path), "sha256": sha256_file(ck_path),
                       "model": ck.model_name},
        "n_atoms": n,
        "n_frames": int(n_frames),
        "t0_ps": float(t0_ps),
        "dt_ps": float(dt_ps),
        "dtype": dtype,
        "device": str(device),
        "seed": seed,
        "guard": bool(guard),
        "stopped": stopped,
        "units": dict(ck.dataset.units),
        "delta_time": ck.dataset.delta_time,
        "selection": ck.dataset.selection,
        "topology": {"node_props": node_names,
                     "edge_sets": [{"name": k, "props": list(topo.edge_sets[k].props)} for k in edge_names]},
        "atoms": {"labels": list(atoms.labels), "bonds": atoms.bonds is not None,
                  "record_types": atoms.record_types is not None},
        "written_by": f"mdsurrogate {__version__}",
    }

    with atomic_file(path) as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("header.json", json.dumps(header, indent=1))
            _put(zf, "state/x0.npy", x0)
            _put(zf, "state/v0.npy", v0)
            for i, k in enumerate(node_names):
                _put(zf, f"topology/node/{i}.npy", _numpy(topo.node_props[k], k))
            for i, k in enumerate(edge_names):
                es = topo.edge_sets[k]
                _put(zf, f"topology/edges/{i}/index.npy", _numpy(es.index, k).astype(np.int64))
                for j, p in enumerate(es.props):
                    _put(zf, f"topology/edges/{i}/props/{j}.npy", _numpy(es.props[p], p))
            for name in ("names", "elements", "resnames", "chainids"):
                _put(zf, f"atoms/{name}.npy", _strings(getattr(atoms, name)))
            _put(zf, "atoms/resids.npy", atoms.resids.astype(np.int64))
            if atoms.bonds is not None:
                _put(zf, "atoms/bonds.npy", atoms.bonds.astype(np.int64))
            if atoms.record_types is not None:
                _put(zf, "atoms/record_types.npy", _strings(atoms.record_types))
            for i, k in enumerate(atoms.labels):
                _put(zf, f"atoms/labels/{i}.npy", atoms.labels[k].astype(np.int64))
    return path


def _guard(surrogate, on: bool):
    """The checkpoint's guard, or one that stops on non-finite states only."""
    from .guard import StabilityGuard

    return surrogate.guard() if on else StabilityGuard(max_expansion=float("inf"))


def _same_drive(a: Path, b: Path) -> bool:
    return os.path.splitdrive(str(a.resolve()))[0] == os.path.splitdrive(str(b.resolve()))[0]


def write_rollout_spec(out_file: str | os.PathLike, checkpoint: str | os.PathLike, x0: Any, v0: Any,
                       topo: BatchTopology, atoms: AtomTopology, steps: int, *, t0_ps: float, dt_ps: float,
                       device: str = "cpu", seed: int | None = None, guard: bool = True, on_step=None) -> Path:
    """What ``mdsurrogate rollout … --out run.mdsr`` does instead of writing frames: the ``.mdsr`` file of a
    ``steps``-step rollout from (x0, v0) [N, 3] (``steps + 1`` frames, the initial one included, fewer when the
    stability guard stops the chain), each step ``dt_ps`` ps (Δ of the model), starting at ``t0_ps``."""
    if steps < 1:
        raise MdsrError(f"the number of steps must be ≥ 1, got {steps}")
    return write_mdsr(out_file, checkpoint, x0, v0, topo, atoms, steps + 1, t0_ps, dt_ps, device=device, seed=seed,
                      guard=guard, on_step=on_step)


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class MdsrFrame:
    """One frame: ``index`` k (0 = initial state), ``time_ps`` = t0 + k·dt, ``positions`` and ``velocities``
    [N, 3] NumPy arrays in the run's dtype and the dataset's units (fresh copies: changing them changes nothing)."""

    index: int
    time_ps: float
    positions: np.ndarray
    velocities: np.ndarray


@dataclass(eq=False)
class MdsrRun:
    """An opened ``.mdsr`` file: its header, initial state and topologies, and the frames computed on demand.

    Frames: :meth:`frame` (random access, negative indices count from the end) and :meth:`frames` (a generator
    over a range). The model is loaded on the first frame after the initial one. Deliberately no ``__len__`` and
    no ``next``: MDAnalysis treats any object with either as a list of files (its ChainReader); use
    :attr:`n_frames`.

    Attributes:
        path: the ``.mdsr`` file.
        header: its JSON header (dict).
        x0, v0: [N, 3] initial state as stored (NumPy).
        topology: the static ``BatchTopology`` (one graph, CPU tensors) the featurizer needs.
        atoms: the per-atom identity (``AtomTopology``).
        device, dtype: where and in which precision frames are computed.
        stride: every ``stride``-th state met along the chain is kept for random access.
    """

    path: Path
    header: dict
    x0: np.ndarray
    v0: np.ndarray
    topology: BatchTopology
    atoms: AtomTopology
    device: torch.device
    dtype: torch.dtype
    stride: int = DEFAULT_STRIDE
    _chain: Any = field(default=None, init=False, repr=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False)
    _block: tuple[int, dict] = field(default_factory=lambda: (-1, {}), init=False, repr=False)
    _failed: tuple[int, str] | None = field(default=None, init=False, repr=False)
    steps_computed: int = field(default=0, init=False, repr=False)

    def __repr__(self) -> str:
        return (f"MdsrRun({str(self.path)!r}, n_atoms={self.n_atoms}, n_frames={self.n_frames}, "
                f"model={self.header['checkpoint'].get('model')!r}, device={str(self.device)!r})")

    # -- header ------------------------------------------------------------------------------------------
    @property
    def n_atoms(self) -> int:
        return int(self.header["n_atoms"])

    @property
    def n_frames(self) -> int:
        return int(self.header["n_frames"])

    @property
    def t0_ps(self) -> float:
        return float(self.header["t0_ps"])

    @property
    def dt_ps(self) -> float:
        return float(self.header["dt_ps"])

    def time(self, k: int) -> float:
        """Time of frame k in ps: t0 + k·dt."""
        return self.t0_ps + k * self.dt_ps

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint file (relative path first, then absolute); raises MdsrError when neither exists."""
        ck = self.header["checkpoint"]
        candidates = [self.path.parent / ck["path"], Path(ck["absolute"])]
        for c in candidates:
            if c.is_file():
                return c
        raise MdsrError(f"{self.path} was made with checkpoint {ck['path']}, which is missing (looked for "
                        f"{candidates[0]} and {candidates[1]}); put the checkpoint back or write the file again "
                        f"with `mdsurrogate rollout … --out {self.path.name}`")

    def check_checkpoint(self) -> Path:
        """The checkpoint file, after checking that its SHA-256 is the one recorded when the file was written."""
        p = self.checkpoint_path
        want = self.header["checkpoint"]["sha256"]
        got = sha256_file(p)
        if got != want:
            raise MdsrError(f"checkpoint {p} has changed since {self.path.name} was written (SHA-256 {got[:12]}… "
                            f"instead of {want[:12]}…), so it would not reproduce the frames the file describes; "
                            f"restore it or write the file again with `mdsurrogate rollout … --out {self.path.name}`")
        return p

    # -- model -------------------------------------------------------------------------------------------
    def load_model(self) -> None:
        """Check and load the checkpoint now (otherwise done on the first frame after the initial one)."""
        if self._chain is not None:
            return
        from ..training.checkpoint import Checkpoint
        from .surrogate import Surrogate

        sur = Surrogate.from_checkpoint(Checkpoint.load(self.check_checkpoint(), kind="propagator"),
                                        device=self.device, dtype=self.dtype)
        self._chain = sur.chain(torch.as_tensor(self.x0), torch.as_tensor(self.v0), self.topology,
                                seed=self.header.get("seed"), guard=_guard(sur, self.header.get("guard", True)))
        self._cache = {0: self._chain.snapshot()}

    def close(self) -> None:
        """Drop the model and the kept states (the run can be used again: they are rebuilt on demand)."""
        self._chain = None
        self._cache, self._block = {}, (-1, {})

    # -- frames ------------------------------------------------------------------------------------------
    def _index(self, k: int) -> int:
        k = int(k)
        if k < 0:
            k += self.n_frames
        if not 0 <= k < self.n_frames:
            raise IndexError(f"frame {k} is out of range: {self.path.name} has {self.n_frames} frames")
        return k

    @torch.no_grad()
    def state(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, v) [N, 3] tensors of frame k on the run's device (do not modify them in place)."""
        k = self._index(k)
        if self._failed is not None and k >= self._failed[0]:
            raise MdsrError(self._failed[1])
        self.load_model()
        chain = self._chain
        block, recent = self._block
        if k // self.stride != block:
            block, recent = k // self.stride, {}
            self._block = (block, recent)
        if k in recent:
            chain.restore(recent[k])
            return chain.x, chain.v
        if not chain.k <= k or max(c for c in self._cache if c <= k) > chain.k:
            chain.restore(self._cache[max(c for c in self._cache if c <= k)])
        while chain.k < k:
            j = chain.k
            step = chain.advance()
            self.steps_computed += 1
            if step.stopped:
                msg = (f"frame {j + 1} of {self.path.name} cannot be computed: {step.stopped} in the step from "
                       f"frame {j}; frames 0 to {j} are valid")
                self._failed = (j + 1, msg)
                raise MdsrError(msg)
            if chain.k % self.stride == 0 and chain.k not in self._cache:
                self._cache[chain.k] = chain.snapshot()
            if chain.k // self.stride == block:
                recent[chain.k] = chain.snapshot(self.device)
        return chain.x, chain.v

    def frame(self, k: int) -> MdsrFrame:
        """Frame k (0 = the initial state; negative counts from the end)."""
        k = self._index(k)
        if k == 0:
            x = np.asarray(self.x0, dtype=_np_dtype(self.dtype)).copy()
            v = np.asarray(self.v0, dtype=_np_dtype(self.dtype)).copy()
            return MdsrFrame(0, self.time(0), x, v)
        x, v = self.state(k)
        return MdsrFrame(k, self.time(k), x.to("cpu").numpy().copy(), v.to("cpu").numpy().copy())

    def frames(self, start: int = 0, stop: int | None = None, step: int = 1) -> Iterator[MdsrFrame]:
        """Frames ``range(start, stop, step)`` (Python semantics, ``stop=None`` = to the end)."""
        for k in range(*slice(start, stop, step).indices(self.n_frames)):
            yield self.frame(k)


def _np_dtype(dtype: torch.dtype):
    return np.float64 if dtype == torch.float64 else np.float32


def read_mdsr(path: str | os.PathLike, *, device: str | torch.device | None = None, stride: int = DEFAULT_STRIDE,
              load_model: bool = True) -> MdsrRun:
    """Open a ``.mdsr`` file.

    Args:
        path: the file.
        device: where frames are computed (default: the one stored in the file; ``auto`` picks CUDA when
            available; a CUDA device on a machine without one falls back to the CPU with a warning).
        stride: keep every ``stride``-th state for random access (≥ 1; 1 keeps them all).
        load_model: check the checkpoint (present, same SHA-256) and load it now, so that problems show when the
            file is opened; ``False`` defers this to the first computed frame (enough to read the topology).
    """
    path = Path(path)
    if not path.is_file():
        raise MdsrError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    if int(stride) != stride or stride < 1:
        raise MdsrError(f"stride must be an integer ≥ 1, got {stride}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise MdsrError(f"{path} is not an .mdsr file ({exc})") from None
    with zf:
        try:
            header = json.loads(zf.read("header.json"))
        except (KeyError, ValueError) as exc:
            raise MdsrError(f"{path} is not an .mdsr file (no readable header: {exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise MdsrError(f"{path} is not an .mdsr file (format {header.get('format')!r})")
        version = header.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise MdsrError(f"{path} has .mdsr version {version}; this mdsurrogate reads up to {FORMAT_VERSION} "
                            "(upgrade mdsurrogate)")

        def arr(name: str) -> np.ndarray:
            try:
                with zf.open(name) as fh:
                    return np.lib.format.read_array(fh, allow_pickle=False)
            except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
                raise MdsrError(f"{path} is damaged: member {name} cannot be read ({exc})") from None

        try:
            n = int(header["n_atoms"])
            x0, v0 = arr("state/x0.npy"), arr("state/v0.npy")
            for what, a in (("x0", x0), ("v0", v0)):
                if a.shape != (n, 3):
                    raise MdsrError(f"{path} is damaged: {what} has shape {list(a.shape)}, expected [{n}, 3]")
            t = header["topology"]
            props = {k: torch.from_numpy(arr(f"topology/node/{i}.npy")) for i, k in enumerate(t["node_props"])}
            sets = {}
            for i, es in enumerate(t["edge_sets"]):
                index = torch.from_numpy(arr(f"topology/edges/{i}/index.npy"))
                eprops = {p: torch.from_numpy(arr(f"topology/edges/{i}/props/{j}.npy"))
                          for j, p in enumerate(es["props"])}
                sets[es["name"]] = EdgeSet(index, eprops)
            topo = BatchTopology(torch.tensor([0, n]), props, sets)
            a = header["atoms"]
            atoms = AtomTopology(
                names=arr("atoms/names.npy"), elements=arr("atoms/elements.npy"),
                resnames=arr("atoms/resnames.npy"), resids=arr("atoms/resids.npy"),
                chainids=arr("atoms/chainids.npy"),
                bonds=arr("atoms/bonds.npy") if a["bonds"] else None,
                labels={k: arr(f"atoms/labels/{i}.npy") for i, k in enumerate(a["labels"])},
                record_types=arr("atoms/record_types.npy") if a["record_types"] else None,
            )
            dtype = _DTYPES[header["dtype"]]
            missing = [k for k in ("n_frames", "t0_ps", "dt_ps", "checkpoint") if k not in header]
            if missing:
                raise KeyError(missing[0])
            if not isinstance(header["n_frames"], int) or header["n_frames"] < 1:
                raise MdsrError(f"{path} is damaged: it declares {header['n_frames']!r} frames")
        except (KeyError, TypeError) as exc:
            raise MdsrError(f"{path} is damaged: its header lacks {exc}") from None
        except ValueError as exc:
            if isinstance(exc, MdsrError):
                raise
            raise MdsrError(f"{path} is damaged: {exc}") from None
    if atoms.n_atoms != n:
        raise MdsrError(f"{path} is damaged: {atoms.n_atoms} atom names for {n} atoms")
    run = MdsrRun(path=path, header=header, x0=x0, v0=v0, topology=topo, atoms=atoms,
                  device=_resolve_device(device if device is not None else header.get("device", "cpu")),
                  dtype=dtype, stride=int(stride))
    if load_model:
        run.load_model()
    return run
