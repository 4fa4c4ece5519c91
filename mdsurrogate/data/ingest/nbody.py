"""N-body ingest: the charged N-body simulator's output as the EGNN paper's dataset.

N-body (docs/protocols.md §1): one trajectory per simulation (49 stored frames, 5 particles), one sample per
simulation: input frame 30 (step 3100) → target frame 40 (step 4100), Δ = 1000 steps = 1.0 time unit;
node property ``charge``; node feature ‖v‖; edge features [q_i q_j, ‖r_ij‖²]; complete graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..dataset import SPLITS, write_dataset


def horizon_steps(n_steps: int, sample_every: int, input_frame: int, delta: int, horizon: int) -> int:
    """Integration steps that store the frames up to ``input_frame + horizon·delta`` (never fewer than
    ``n_steps``): stored frame k is step ``sample_every·(k + 1)``."""
    return max(n_steps, sample_every * (input_frame + horizon * delta + 2))


def ingest_nbody(out: str | Path, *, n_train: int = 3000, n_val: int = 2000, n_test: int = 2000, seed: int = 43,
                 stream_train: int = 10000, input_frame: int = 30, target_frame: int = 40, n_steps: int = 5000,
                 sample_every: int = 100, horizon: int = 20, train_horizon: int = 1,
                 overwrite: bool = False) -> Path:
    """Simulate the charged N-body system and write the ``nbody_small`` dataset of the EGNN paper.

    The samples (frame ``input_frame`` → ``target_frame`` of every system) and the systems are the paper's;
    ``horizon`` continues the validation and test systems so that their trajectories hold ``horizon`` model steps
    (Δ = target − input frames) after the input frame (rollout references), ``train_horizon`` the training
    systems likewise (for training on rollouts); both continue the same simulations and change no sample.
    """
    from ..sources.nbody import generate_nbody_splits

    n_frames = n_steps // sample_every - 1
    if not 0 <= input_frame < target_frame < n_frames:
        raise ValueError(f"need 0 ≤ input_frame < target_frame < {n_frames} stored frames, got input_frame = "
                         f"{input_frame} and target_frame = {target_frame}")
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise ValueError("n_train, n_val and n_test must be ≥ 0 and not all 0")
    if horizon < 1 or train_horizon < 1:
        raise ValueError(f"horizon and train_horizon must be ≥ 1 model step, got {horizon} and {train_horizon}")
    delta = target_frame - input_frame
    long_steps = {"train": horizon_steps(n_steps, sample_every, input_frame, delta, train_horizon),
                  **{k: horizon_steps(n_steps, sample_every, input_frame, delta, horizon) for k in ("val", "test")}}
    parts = generate_nbody_splits(n_train, n_val, n_test, seed=seed, stream_train=stream_train, n_steps=n_steps,
                                  sample_every=sample_every, split_steps=long_steps)
    codes = np.concatenate([np.full(len(parts[s].positions), SPLITS[s], np.int8) for s in SPLITS])
    arrays = {a: [t for s in SPLITS for t in getattr(parts[s], a)] for a in ("positions", "velocities", "charges")}
    n_traj = len(codes)
    samples = np.stack([np.arange(n_traj), np.full(n_traj, input_frame), np.full(n_traj, target_frame)], axis=1)
    dt = parts["train"].dt
    meta = {
        "name": "nbody_small" if (n_train, seed, n_steps, sample_every) == (3000, 43, 5000, 100) else "nbody",
        "source": "nbody",
        "description": "charged N-body (EGNN paper, Table 2): 5 particles, Coulomb-like force, symplectic Euler",
        "units": {"length": "1", "time": "1", "velocity": "1", "note": "dimensionless simulator units"},
        "frame_dt": dt * sample_every,
        "delta_frames": target_frame - input_frame,
        "frame_steps": [int(s) for s in max((parts[k] for k in SPLITS), key=lambda p: p.n_frames).frame_steps],
        "features": {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": ["charge_product", "dist2"]},
        "generator": {"simulator": "charged_nbody", "n_train": n_train, "n_val": n_val, "n_test": n_test,
                      "seed": seed, "stream_train": stream_train, "n_steps": n_steps, "sample_every": sample_every,
                      "dt": dt, "input_frame": input_frame, "target_frame": target_frame, "horizon": horizon,
                      "train_horizon": train_horizon},
    }
    return write_dataset(out, positions=arrays["positions"], velocities=arrays["velocities"], samples=samples,
                         split=codes, meta=meta, node_props={"charge": arrays["charges"]}, overwrite=overwrite)
