"""Checkpoints: a typed, versioned record of a trained model, saved atomically and loaded safely.

A :class:`Checkpoint` carries everything a rollout, an evaluation or an integration needs: the model's name and
hyper-parameters, its weights, the dataset's feature spec, units and time step, Δ in frames and in physical
time, the MD atom selection, and (issue-13 additions) the stability-guard limits derived from the training data.
On disk it is a ``torch.save`` of plain tensors, numbers, strings, lists and dicts, loaded with
``torch.load(weights_only=True)``: an untrusted checkpoint can never run code.

Format ``mdsurrogate-checkpoint``, version 2 (version 1 files, whose keys were the same dict without
``versions``/``guard``, still load).
"""

from __future__ import annotations

import datetime
import os
import pickle
import zipfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..io.atomic import atomic_file

FORMAT = "mdsurrogate-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
KINDS = ("propagator", "potential")


def plain(obj: Any) -> Any:
    """Numbers, strings, lists, dicts and tensors only (NumPy scalars/arrays → Python/torch), for weights_only."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass
class DatasetInfo:
    """What a checkpoint keeps about the dataset it was trained on.

    Attributes:
        path: the dataset directory at training time (evaluation's default).
        units: ``{"length": "Å", "time": "ps", …}`` of positions, velocities and time (dimensionless: "1").
        frame_dt: time between stored frames (``units["time"]``); delta_frames: Δ in frames;
        delta_time: Δ in time units = frame_dt · delta_frames (one model step).
        md: for MD datasets, the atom selection, its signature, elements, charges and velocity convention.
        task: "propagator" or "potential"; elements: atomic numbers a potential was trained on.
    """

    path: str = ""
    name: str = ""
    source: str = ""
    units: dict = field(default_factory=dict)
    frame_dt: float = 1.0
    delta_frames: int = 1
    delta_time: float = 1.0
    selection: str | None = None
    md: dict | None = None
    generator: dict = field(default_factory=dict)
    task: str = "propagator"
    elements: list | None = None

    @classmethod
    def from_dataset(cls, ds) -> DatasetInfo:
        """The summary of a :class:`~mdsurrogate.data.dataset.Dataset`."""
        m = ds.meta
        return cls(path=str(ds.path), name=m.get("name", ""), source=m.get("source", ""), units=dict(ds.units),
                   frame_dt=float(ds.frame_dt), delta_frames=int(ds.delta_frames),
                   delta_time=float(ds.frame_dt) * int(ds.delta_frames), selection=m.get("selection"),
                   md=m.get("md"), generator=m.get("generator", {}), task=m.get("task", "propagator"))

    @classmethod
    def from_dict(cls, d: dict | None) -> DatasetInfo:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        info = cls(**{k: v for k, v in d.items() if k in known})
        if "delta_time" not in d:
            info.delta_time = float(info.frame_dt) * int(info.delta_frames)
        return info


def software_versions() -> dict:
    """mdsurrogate and torch versions and the UTC date, recorded in every checkpoint."""
    from .. import __version__

    return {"mdsurrogate": str(__version__), "torch": str(torch.__version__),
            "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


@dataclass
class Checkpoint:
    """A trained model and everything needed to use it.

    Attributes:
        kind: "propagator" (state → state one Δ later) or "potential" (energy and forces).
        model_name, hparams: the registered model and its constructor's hyper-parameters.
        state_dict: the weights (CPU tensors).
        features: the featurizer spec (``FeatureSpec.to_dict()``) the model's inputs are built with.
        dataset: :class:`DatasetInfo`.
        recipe: the resolved recipe (dict) it was trained with.
        train_state: epoch, best validation and the like at the time of saving.
        metrics: figures measured at saving time (validation/test).
        guard: limits of the rollout stability guard derived from the training data (or {} when none).
        extra: task-specific entries (e.g. a stochastic head's settings), plain data only.
        optimizer, rng: training state, only in ``last.pt`` (for ``--resume``).
        versions: mdsurrogate and torch versions and the creation date.
        path: where it was loaded from (not saved).
    """

    kind: str
    model_name: str
    hparams: dict
    state_dict: dict
    features: dict
    dataset: DatasetInfo = field(default_factory=DatasetInfo)
    recipe: dict = field(default_factory=dict)
    train_state: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    guard: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    n_parameters: int = 0
    optimizer: dict | None = None
    rng: dict | None = None
    versions: dict = field(default_factory=software_versions)
    path: Path | None = None

    # -- (de)serialisation ----------------------------------------------------------------------------------
    def to_payload(self) -> dict:
        """The plain dict written to disk (format tags included; ``path`` left out)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("path", "dataset")}
        d["dataset"] = asdict(self.dataset)
        d = {k: v for k, v in d.items() if v is not None}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **plain(d)}

    @classmethod
    def from_payload(cls, data: dict, path: Path | None = None) -> Checkpoint:
        """Build from a loaded dict (version 1 or 2)."""
        where = path or "checkpoint"
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{where} is not an mdsurrogate checkpoint")
        if data.get("format_version") not in READABLE_VERSIONS:
            raise CheckpointError(f"{where} has checkpoint version {data.get('format_version')}; this mdsurrogate "
                                  f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
        try:
            if data.get("format_version") == 1:  # model = {name, hparams}; optimizer/torch_rng in last.pt
                model = data["model"]
                data = {**data, "model_name": model["name"], "hparams": model.get("hparams", {}),
                        "rng": {"torch": data["torch_rng"]} if "torch_rng" in data else None,
                        "versions": {}, "kind": data.get("kind", "propagator")}
            kind = data["kind"]
            if kind not in KINDS:
                raise CheckpointError(f"{where} holds a model of unknown kind {kind!r}")
            names = {f.name for f in fields(cls)} - {"path", "dataset"}
            required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
            lacking = sorted(required - {"path", "dataset"} - set(data))
            if lacking:
                raise CheckpointError(f"{where} is an incomplete mdsurrogate checkpoint: it lacks "
                                      f"{', '.join(lacking)}")
            ck = cls(**{k: v for k, v in data.items() if k in names},
                     dataset=DatasetInfo.from_dict(data.get("dataset")), path=path)
        except KeyError as exc:
            raise CheckpointError(f"{where} is an incomplete mdsurrogate checkpoint: it lacks {exc}") from None
        except TypeError:
            raise CheckpointError(f"{where} is a damaged mdsurrogate checkpoint (an entry of the wrong type)") from None
        if not isinstance(ck.state_dict, dict) or not isinstance(ck.features, dict):
            raise CheckpointError(f"{where} is an incomplete mdsurrogate checkpoint (no weights or features)")
        return ck

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a temporary file in the same directory, then a rename (readable by the group)."""
        path = Path(path)
        with atomic_file(path) as fh:
            torch.save(self.to_payload(), fh)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, kind: str | None = None, map_location="cpu") -> Checkpoint:
        """Load a checkpoint file or run directory (its ``best.pt``) safely; ``kind`` checks what it holds."""
        path = resolve_checkpoint(path)
        try:
            data = torch.load(path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError,
                AttributeError, TypeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            if "Weights only load failed" in first:
                first = ("it is not a PyTorch file of tensors and plain data; checkpoints are loaded with "
                         "weights_only=True, so nothing in one can run code")
            raise CheckpointError(f"{path} is not a loadable mdsurrogate checkpoint ({first[:160]})") from None
        ck = cls.from_payload(data, path)
        if kind is not None and ck.kind != kind:
            raise CheckpointError(f"{path} holds a {ck.kind} model, but a {kind} model is needed")
        return ck

    # -- the model it describes -----------------------------------------------------------------------------
    def featurizer(self):
        """The :class:`~mdsurrogate.data.featurize.Featurizer` the model's inputs are built with."""
        from ..data.featurize import Featurizer

        try:
            return Featurizer(self.features)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.path or 'checkpoint'} has an invalid feature spec ({exc})") from None

    def build_model(self, device="cpu", dtype: torch.dtype | None = None) -> torch.nn.Module:
        """The model with its weights, in eval mode, on ``device`` in ``dtype``."""
        where = self.path or "checkpoint"
        try:
            if self.kind == "potential":
                from ..models.potential import build_potential

                model = build_potential(self.model_name, **self.hparams)
            else:
                from ..models.registry import build_model

                spec = self.featurizer().spec
                model = build_model(self.model_name, node_dim=spec.node_dim, edge_dim=spec.edge_dim,
                                    local_edge_dim=spec.local_edge_dim, **self.hparams)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where} names a model this version cannot build ({exc})") from None
        try:
            model.load_state_dict(self.state_dict)
        except (RuntimeError, KeyError) as exc:
            first = str(exc).splitlines()[0]
            raise CheckpointError(f"{where}: the weights do not fit model {self.model_name!r} ({first})") from None
        model.to(device=device, dtype=dtype)
        return model.eval()


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its ``best.pt``)."""
    path = Path(path)
    if path.is_dir():
        best = path / "best.pt"
        if not best.is_file():
            raise CheckpointError(f"{path} is a directory without best.pt; is it a finished run directory?")
        return best
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


# -- transitional helpers (dict-shaped API of format version 1); removed once every caller uses Checkpoint ------
def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Save a version-1-shaped payload dict as a :class:`Checkpoint`."""
    return Checkpoint.from_payload({"format": FORMAT, "format_version": 1, **payload}).save(path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu", kind: str | None = None) -> dict:
    """Load a :class:`Checkpoint` and return it as a version-1-shaped dict."""
    ck = Checkpoint.load(path, kind=kind, map_location=map_location)
    d = ck.to_payload()
    d["model"] = {"name": ck.model_name, "hparams": dict(ck.hparams)}
    if ck.rng and "torch" in ck.rng:
        d["torch_rng"] = ck.rng["torch"]
    return d


def model_from_checkpoint(data: dict, device="cpu", dtype: torch.dtype | None = None):
    """(model in eval mode, Featurizer) from a version-1-shaped dict."""
    ck = Checkpoint.from_payload({**data, "format_version": 1})
    return ck.build_model(device=device, dtype=dtype), ck.featurizer()
