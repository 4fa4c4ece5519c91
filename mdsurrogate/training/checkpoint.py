"""Checkpoints: atomic save, safe load.

A checkpoint carries everything a rollout needs: model name + hyper-parameters, state dict, the dataset's
feature spec, units and time step, Δ in frames and in physical time, and (for MD) the atom selection. It holds
only tensors, numbers, strings, lists and dicts, so it is loaded with ``torch.load(weights_only=True)``: an
untrusted checkpoint can never run code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..io.atomic import atomic_file

FORMAT = "mdsurrogate-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (plus format tags) to ``path`` atomically: temp file in the same directory, then rename."""
    path = Path(path)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    with atomic_file(path) as fh:
        torch.save(data, fh)
    return path


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


def load_checkpoint(path: str | os.PathLike, map_location="cpu", kind: str | None = None) -> dict:
    """Load safely (``weights_only=True``) and check it is an mdsurrogate checkpoint (of ``kind`` if given)."""
    path = resolve_checkpoint(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"{path} is not a loadable mdsurrogate checkpoint ({first[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mdsurrogate checkpoint")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {data.get('format_version')}, expected {FORMAT_VERSION}")
    if kind is not None and data.get("kind", "propagator") != kind:
        raise CheckpointError(f"{path} holds a {data.get('kind', 'propagator')} model, but a {kind} model is needed")
    return data


def model_from_checkpoint(data: dict, device="cpu", dtype: torch.dtype | None = None):
    """Rebuild (model in eval mode, Featurizer) from a loaded checkpoint dict."""
    from ..data.featurize import Featurizer
    from ..models.base import build_model

    spec = data["features"]
    feat = Featurizer(spec)
    m = data["model"]
    try:
        model = build_model(m["name"], node_dim=feat.spec.node_dim, edge_dim=feat.spec.edge_dim,
                            local_edge_dim=feat.spec.local_edge_dim, **m.get("hparams", {}))
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint names a model this version cannot build ({exc})") from None
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not fit model {m['name']!r} ({first})") from None
    model.to(device=device, dtype=dtype)
    model.eval()
    return model, feat
