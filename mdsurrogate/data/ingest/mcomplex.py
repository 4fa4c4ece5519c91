"""M-complex ingest: the M-complex simulator's output as the EGHN paper's dataset (Table 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..dataset import SPLITS, EdgeSetData, write_dataset

#: integration steps and stored-frame cadence of the paper's data: 50 stored frames, frame k after 100k + 1 steps
N_STEPS, SAMPLE_EVERY = 5000, 100


def group_pairs(group: np.ndarray) -> np.ndarray:
    """[E, 2] all ordered pairs (i, j), i ≠ j, of nodes with the same group id, sorted by receiver i."""
    same = (group[:, None] == group[None, :]) & ~np.eye(len(group), dtype=bool)
    return np.argwhere(same).astype(np.int64)


def horizon_frame_steps(input_frame: int, delta: int, horizon: int) -> int:
    """Integration steps that store the frames up to ``input_frame + horizon·delta`` (never fewer than the
    paper's 5000): stored frame k is the state after ``100·k + 1`` steps."""
    return max(N_STEPS, SAMPLE_EVERY * (input_frame + horizon * delta) + 1)


def ingest_mcomplex(out: str | Path, *, n_complexes: int = 3, avg_size: int = 3, n_types: int = 1,
                    n_train: int = 1000, n_val: int = 2000, n_test: int = 2000, seed: int = 43,
                    input_frame: int = 10, target_frame: int = 25, horizon: int = 20, train_horizon: int = 1,
                    overwrite: bool = False) -> Path:
    """Simulate the M-complex system (EGHN paper, Table 1) and write its dataset (docs/protocols.md §2.6).

    One trajectory per system (50 stored frames, frame k after 100k + 1 steps), one sample per system:
    frame 10 → frame 25 (Δ = 1500 steps = 1.5 time units). Node properties ``charge`` and ``complex``;
    local edges = all ordered pairs inside a complex; global graph complete; edge features
    [q_i q_j, same-complex indicator, ‖r_ij‖²] on both graphs; node feature ‖v‖.

    ``horizon`` continues the validation and test systems so that their trajectories hold ``horizon`` model steps
    (Δ = target − input frames) after the input frame, i.e. at least ``input_frame + horizon·Δ + 1`` frames
    (rollout references), ``train_horizon`` the training systems likewise; the continuation starts from each
    accepted system's exact state at frame 49, at the same cadence and without the velocity test, so the systems,
    their first 50 frames and the samples stay the paper's.
    """
    from ..sources.mcomplex import generate_mcomplex_splits

    n_frames = -(-N_STEPS // SAMPLE_EVERY)
    if not 0 <= input_frame < target_frame < n_frames:
        raise ValueError(f"need 0 ≤ input_frame < target_frame < {n_frames} stored frames, got input_frame = "
                         f"{input_frame} and target_frame = {target_frame}")
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise ValueError("n_train, n_val and n_test must be ≥ 0 and not all 0")
    if horizon < 1 or train_horizon < 1:
        raise ValueError(f"horizon and train_horizon must be ≥ 1 model step, got {horizon} and {train_horizon}")
    delta = target_frame - input_frame
    long_steps = {"train": horizon_frame_steps(input_frame, delta, train_horizon),
                  **{k: horizon_frame_steps(input_frame, delta, horizon) for k in ("val", "test")}}
    types, parts = generate_mcomplex_splits(n_complexes, avg_size, n_types, n_train, n_val, n_test, seed=seed,
                                            n_steps=N_STEPS, sample_every=SAMPLE_EVERY, split_steps=long_steps)
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
        "frame_dt": dt * SAMPLE_EVERY,
        "delta_frames": delta,
        "frame_steps": [SAMPLE_EVERY * k + 1 for k in range(max(len(p) for p in pos))],
        "features": {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": edge_feats,
                     "local_edge": edge_feats},
        "system_types": [[int(s) for s in t] for t in types],
        "generator": {"simulator": "mcomplex", "n_complexes": n_complexes, "avg_size": avg_size,
                      "n_types": n_types, "n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed,
                      "n_steps": N_STEPS, "sample_every": SAMPLE_EVERY, "dt": dt, "input_frame": input_frame,
                      "target_frame": target_frame, "horizon": horizon, "train_horizon": train_horizon},
    }
    return write_dataset(out, positions=pos, velocities=vel, samples=samples, split=codes, meta=meta,
                         node_props={"charge": charge, "complex": cid, "system_type": [
                             np.full(len(c), t, np.int64) for c, t in zip(cid, np.concatenate(stype), strict=True)]},
                         edge_sets={"local": EdgeSetData(local, {})}, overwrite=overwrite)
