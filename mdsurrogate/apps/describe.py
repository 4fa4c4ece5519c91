"""What ``mdsurrogate info`` shows: a checkpoint's or dataset's record as (field, value) rows for a person, and the
machine summary (``--json``).

The rows are plain strings; the CLI lays them out as a table.
"""

from __future__ import annotations

import math
from numbers import Number

from ..training.checkpoint import Checkpoint

__all__ = ["checkpoint_rows", "checkpoint_summary", "dataset_rows"]


def checkpoint_summary(ck: Checkpoint) -> dict:
    """The JSON record of ``mdsurrogate info --json`` for a checkpoint."""
    d = ck.to_payload()
    return {"kind": ck.kind, "model": {"name": ck.model_name, "hparams": ck.hparams},
            **{k: d[k] for k in ("features", "dataset", "train_state", "n_parameters", "guard", "versions") if k in d}}


def _num(v) -> str:
    if isinstance(v, bool) or not isinstance(v, Number):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}"


def _pairs(d: dict, skip=()) -> str:
    return ", ".join(f"{k} {_num(v)}" if isinstance(v, Number) else f"{k} {v}" for k, v in d.items()
                     if k not in skip and v is not None and v != {} and v != [])


def _units(units: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in (units or {}).items()) or "–"


def _elements(numbers) -> str:
    try:
        from ase.data import chemical_symbols

        return ", ".join(chemical_symbols[int(z)] for z in numbers)
    except (ImportError, IndexError):
        return ", ".join(f"Z={int(z)}" for z in numbers)


def _time_unit(unit) -> str:
    return "" if unit in (None, "", "1") else str(unit)


def _delta(delta_time, frames, frame_dt, unit) -> str:
    """'3600 ps = 15 frames × 240 ps', or '1 = 10 frames × 0.1 (dimensionless time)'."""
    u = _time_unit(unit)
    if u:
        return f"{_num(delta_time)} {u} = {frames} frames × {_num(frame_dt)} {u}"
    return f"{_num(delta_time)} = {frames} frames × {_num(frame_dt)} (dimensionless time)"


def _graph(g: dict) -> str:
    kind = g.get("kind", "?")
    return f"radius, cutoff {_num(g['cutoff'])}" if kind == "radius" and "cutoff" in g else str(kind)


def checkpoint_rows(ck: Checkpoint) -> list[tuple[str, str]]:
    """(field, value) rows describing a checkpoint: kind, model, parameters, units, Δ, features, training, versions."""
    ds = ck.dataset
    units = ds.units or {}
    rows = [("kind", ck.kind), ("model", ck.model_name)]
    if ck.hparams:
        hp = {k: v for k, v in ck.hparams.items() if k != "elements"}
        if hp:
            rows.append(("hyper-parameters", _pairs(hp)))
    if ck.n_parameters:
        rows.append(("parameters", f"{ck.n_parameters:,}"))
    name = ds.name or "–"
    rows.append(("dataset", f"{name} ({ds.source})" if ds.source else name))
    if ds.path:
        rows.append(("dataset path", ds.path))
    rows.append(("units", _units(units)))
    if ck.kind == "potential":
        elements = ds.elements or ck.hparams.get("elements") or []
        if elements:
            rows.append(("elements", _elements(elements)))
        if "cutoff" in ck.hparams:
            rows.append(("cutoff", f"{_num(ck.hparams['cutoff'])} {units.get('length', 'Å')}"))
    else:
        rows.append(("Δ (one step)", _delta(ds.delta_time, ds.delta_frames, ds.frame_dt, units.get("time"))))
    feats = ck.features or {}
    if feats:
        rows.append(("graph", _graph(feats.get("global_graph", {}))))
        for key, label in (("node", "node features"), ("edge", "edge features"), ("local_edge", "local edge features")):
            if feats.get(key):
                rows.append((label, ", ".join(feats[key])))
    if ds.selection:
        rows.append(("atom selection", str(ds.selection)))
    if ds.md:
        md = ds.md
        n = len(md.get("names", []) or md.get("elements", []) or [])
        rows.append(("MD", _pairs({"atoms": n or None, "velocities": md.get("velocities")})))
    if ck.train_state:
        rows.append(("training", _pairs(ck.train_state)))
    if ck.metrics:
        flat = {}
        for k, v in ck.metrics.items():
            if isinstance(v, dict):
                flat.update({f"{k}.{kk}": vv for kk, vv in v.items() if isinstance(vv, Number)})
            elif isinstance(v, Number):
                flat[k] = v
        if flat:
            rows.append(("metrics", _pairs(flat)))
    if ck.guard:
        rows.append(("stability guard", _pairs({k: v for k, v in ck.guard.items() if isinstance(v, Number)})))
    versions = dict(ck.versions or {})
    created = versions.pop("created", None)
    rows.append(("versions", _pairs(versions) if versions else "not recorded (a checkpoint from before versions)"))
    rows.append(("created", str(created) if created else "not recorded"))
    if ck.path is not None:
        rows.append(("file", str(ck.path)))
    return rows


def dataset_rows(desc: dict) -> list[tuple[str, str]]:
    """(field, value) rows of a dataset's ``describe()`` record."""
    units = desc.get("units") or {}
    t = units.get("time", "")
    rows = [("dataset", str(desc.get("name") or "–")), ("source", str(desc.get("source") or "–")),
            ("path", str(desc.get("path"))), ("trajectories", _num(desc.get("trajectories"))),
            ("nodes per system", ", ".join(map(str, desc.get("nodes") or [])) or "–")]
    samples = desc.get("samples") or {}
    if samples:
        rows.append(("samples", _pairs(samples)))
    rows.append(("units", _units(units)))
    rows.append(("frame spacing", f"{_num(desc.get('frame_dt'))} {_time_unit(t)}".strip()))
    dt = desc.get("frame_dt") or 0
    frames = int(desc.get("delta_frames") or 0)
    rows.append(("Δ (one step)", _delta(dt * frames, frames, dt, units.get("time"))))
    feats = desc.get("features") or {}
    if feats:
        rows.append(("graph", _graph(feats.get("global_graph", {}))))
        for key, label in (("node", "node features"), ("edge", "edge features"), ("local_edge", "local edge features")):
            if feats.get(key):
                rows.append((label, ", ".join(feats[key])))
    return rows
