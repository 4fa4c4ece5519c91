"""Where a rollout starts: a dataset sample, or a frame of any MD trajectory MDAnalysis reads.

Both give an :class:`InitialState`: the state (x0, v0) in the model's units, the static topology the featurizer
needs, the per-atom identity the writers keep (names, residues, chains), the start time and, where the source
has later frames, the reference positions after k model steps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import UserError


class StartError(UserError, ValueError):
    """The requested initial state cannot be built (frame out of range, model and atoms that do not match …)."""


@dataclass
class InitialState:
    """x0, v0: [N, 3] (Å and Å per frame for MD; dataset units otherwise); topo: data.topology.BatchTopology of the
    one system; atoms: data.atoms.AtomTopology; t0: start time (ps for MD); reference(k): true positions [N, 3]
    after k model steps, or None; warnings: notes for the user."""

    x0: torch.Tensor
    v0: torch.Tensor
    topo: object
    atoms: object
    t0: float
    reference: Callable[[int], np.ndarray | None] | None
    warnings: list[str]


def _frame_index(frame: int, n_frames: int) -> int:
    if not -n_frames <= frame < n_frames:
        raise StartError(f"frame {frame} is out of range: the trajectory has {n_frames} frames")
    return frame % n_frames


def _info(model):
    """The DatasetInfo of a Surrogate, a Checkpoint or a DatasetInfo."""
    return getattr(model, "dataset", model)


def from_dataset(ds, model, *, split: str = "test", sample: int = 0, frame: int | None = None):
    """The input frame of sample ``sample`` of ``split`` (or another stored frame of its trajectory) for ``model``
    (a Surrogate, Checkpoint or DatasetInfo: its Δ in frames gives the reference frames)."""
    from ..data.atoms import AtomTopology

    ids = ds.split_indices(split)
    if not 0 <= sample < len(ids):
        raise StartError(f"sample {sample} is out of range: split {split!r} has {len(ids)} samples")
    traj, f0, _ = (int(a) for a in ds.samples[ids[sample]])
    if frame is not None:
        f0 = _frame_index(frame, int(ds.traj_frames[traj]))
    x0, v0 = ds.states([traj], [f0])
    delta = int(_info(model).delta_frames)

    def reference(k: int):
        f = f0 + k * delta
        return ds.frame(traj, f)[0] if f < ds.traj_frames[traj] else None

    atoms = AtomTopology.generic(x0.shape[0], bonds=static_bonds(ds, traj))
    return InitialState(x0, v0, ds.topology([traj]), atoms, f0 * float(ds.frame_dt), reference, [])


def static_bonds(ds, traj: int):
    """Undirected local edges (bonds, bones, intra-complex pairs) of a trajectory as [E, 2] with i < j, or None;
    written as PDB CONECT records so that VMD/PyMOL draw the connectivity (e.g. a skeleton as sticks)."""
    if "local" not in ds.edge_set_names:
        return None
    edges, _ = ds.edge_set("local", traj)
    if len(edges) == 0:
        return None
    return np.unique(np.sort(edges, axis=1), axis=0)


def from_trajectory(traj: str | os.PathLike, model, *, top: str | os.PathLike | None = None,
                    frame: int = -1, select: str | None = None, dt: float | None = None) -> InitialState:
    """Frame ``frame`` of an MD trajectory (topology ``top``; a PDB/GRO can be both), for ``model`` (a Surrogate,
    Checkpoint or DatasetInfo) trained on an MD dataset (``mdsurrogate ingest md``): the same atoms, velocities as
    in training, molecules made whole and unwrapped in a periodic box as at ingest.

    ``select``: an MDAnalysis selection of the atoms (default: the model's); any string that selects the model's
    atoms works (``"protein and backbone"`` for a model trained on ``"backbone"``): the atoms are compared (number,
    names and residue names in order), not the strings. ``dt``: ps between the trajectory's saved frames where
    its file does not state it (Amber NetCDF with zero times, PDB, XYZ); needed for difference velocities.
    """
    from ..data.sources import md

    dinfo = _info(model)
    info = dinfo.md
    if not info:
        src = dinfo.source or "a non-MD"
        raise StartError(f"this model was trained on {src} data, not on an MD trajectory; roll it out from a "
                         "dataset directory instead")
    sel = info["selection"]
    (u,) = md.open_universe(top if top is not None else traj, [traj] if top is not None else [])
    ag = md.select_atoms(u, sel if select is None else select)
    if len(ag) != info["n_atoms"] or md.atom_signature(ag) != info["signature"]:
        given = "" if select is None or select == sel else f" (the model was trained on the selection {sel!r})"
        raise StartError(f"the selection {select if select is not None else sel!r} gives {len(ag)} atoms here that "
                         f"are not the {info['n_atoms']} atoms (names and residues, in order) the model was trained "
                         f"on{given}")
    n_frames = len(u.trajectory)
    model_dt = float(dinfo.frame_dt)
    delta = int(dinfo.delta_frames)
    try:
        system = md.MDSystem.from_atomgroup(ag, sel)
        reader = md.FrameReader(u, ag, system.bonds)
        st = md.frame_state(u, ag, frame, velocities=info["velocities"], frame_dt=model_dt, lag=delta, dt=dt,
                            reader=reader, align=bool(info.get("align", False)))
    except md.MDInputError as exc:
        raise StartError(str(exc)) from None
    f0, x0, v0, t0, user_dt = st.frame, st.positions, st.velocities, st.time, st.spacing
    notes = []
    if info["velocities"] == "difference" and user_dt is not None and abs(user_dt - model_dt) > 0.01 * model_dt:
        notes.append(f"this trajectory saves frames every {user_dt:g} ps, the model's data every {model_dt:g} ps: "
                     "the velocity was rescaled, but a difference over a shorter interval is noisier")
    # the node properties the model was trained with (a topology without charges, e.g. a PDB, still gets them)
    system = replace(system, element=np.asarray(info.get("element", system.element), np.int64),
                     charge=np.asarray(info.get("charge", system.charge), np.float32))
    topo = system.topology(x0)
    step_frames = delta * model_dt / user_dt if user_dt else math.nan
    k_frames = round(step_frames) if math.isfinite(step_frames) and step_frames >= 0.5 and \
        math.isclose(step_frames, round(step_frames), rel_tol=1e-3) else None
    unwrap_reference = md.reference_reader(reader)

    def reference(k: int):
        if k_frames is None or f0 + k * k_frames >= n_frames:
            return None
        return unwrap_reference(f0 + k * k_frames)

    return InitialState(torch.from_numpy(x0), torch.from_numpy(np.ascontiguousarray(v0, dtype=np.float32)), topo,
                        system.atoms, t0, reference, notes)
