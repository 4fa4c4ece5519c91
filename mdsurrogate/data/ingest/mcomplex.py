"""M-complex ingest: the M-complex simulator's output as the EGHN paper's dataset (Table 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..dataset import SPLITS, EdgeSetData, write_dataset


def group_pairs(group: np.ndarray) -> np.ndarray:
    """[E, 2] all ordered pairs (i, j), i ≠ j, of nodes with the same group id, sorted by receiver i."""
    same = (group[:, None] == group[None, :]) & ~np.eye(len(group), dtype=bool)
    return np.argwhere(same).astype(np.int64)


def ingest_mcomplex(out: str | Path, *, n_complexes: int = 3, avg_size: int = 3, n_types: int = 1,
                    n_train: int = 1000, n_val: int = 2000, n_test: int = 2000, seed: int = 43,
                    input_frame: int = 10, target_frame: int = 25, overwrite: bool = False) -> Path:
    """Simulate the M-complex system (EGHN paper, Table 1) and write its dataset (docs/protocols.md §2.6).

    One trajectory per system (50 stored frames, frame k after 100k + 1 steps), one sample per system:
    frame 10 → frame 25 (Δ = 1500 steps = 1.5 time units). Node properties ``charge`` and ``complex``;
    local edges = all ordered pairs inside a complex; global graph complete; edge features
    [q_i q_j, same-complex indicator, ‖r_ij‖²] on both graphs; node feature ‖v‖.
    """
    from ..sources.mcomplex import generate_mcomplex_splits

    types, parts = generate_mcomplex_splits(n_complexes, avg_size, n_types, n_train, n_val, n_test, seed=seed)
    n_frames = parts["train"].positions[0].shape[0] if n_train else parts["test"].positions[0].shape[0]
    if not 0 <= input_frame < target_frame < n_frames:
        raise ValueError(f"need 0 ≤ input_frame < target_frame < {n_frames} stored frames, got input_frame = "
                         f"{input_frame} and target_frame = {target_frame}")
    pos, vel, charge, cid, codes, stype = [], [], [], [], [], []
    for s in SPLITS:
        p = parts[s]
        pos += p.positions
        vel += p.velocities
        charge += p.charges
        cid += p.complex_id
        stype.append(p.system_type)
        codes.append(np.full(len(p), SPLITS[s], np.int8))
    codes = np.concatenate(codes)
    n_traj = len(codes)
    local = [group_pairs(c) for c in cid]
    samples = np.stack([np.arange(n_traj), np.full(n_traj, input_frame), np.full(n_traj, target_frame)], axis=1)
    dt = parts["train"].dt
    edge_feats = ["charge_product", "same:complex", "dist2"]
    meta = {
        "name": f"mcomplex_{n_complexes}_{avg_size}_J{n_types}",
        "source": "mcomplex",
        "description": "M-complex (EGHN paper, Table 1): charged particles bound in rigid complexes",
        "units": {"length": "1", "time": "1", "velocity": "1", "note": "dimensionless simulator units"},
        "frame_dt": dt * 100,
        "delta_frames": target_frame - input_frame,
        "features": {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": edge_feats,
                     "local_edge": edge_feats},
        "system_types": [[int(s) for s in t] for t in types],
        "generator": {"simulator": "mcomplex", "n_complexes": n_complexes, "avg_size": avg_size,
                      "n_types": n_types, "n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed,
                      "dt": dt, "input_frame": input_frame, "target_frame": target_frame},
    }
    return write_dataset(out, positions=pos, velocities=vel, samples=samples, split=codes, meta=meta,
                         node_props={"charge": charge, "complex": cid, "system_type": [
                             np.full(len(c), t, np.int64) for c, t in zip(cid, np.concatenate(stype), strict=True)]},
                         edge_sets={"local": EdgeSetData(local, {})}, overwrite=overwrite)
