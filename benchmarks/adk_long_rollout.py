"""Does a long rollout stay a protein? Geometry of an AdK Cα rollout against the MD it was trained on.

    python benchmarks/adk_long_rollout.py RUN [--steps 1000] [--seed 0] [--out rollout.dcd] [--project angles]
                                              [--noise-gain G] [--noise-memory RHO]

Rolls the model of RUN (a run directory or checkpoint trained on ``ingest adk --source embedded --select "name
CA"``) out from the last frame of MDAnalysisTests' ``adk_dims2.dcd`` with the guard on, then reports per step, and
prints as one JSON line: the RMS deviation of consecutive Cα–Cα distances and of the i,i+2 distances from the MD's
mean distances (over both DIMS trajectories), the closest non-bonded pair (|i − j| ≥ 3), the radius of gyration,
the RMS step, and the same quantities over the MD frames for comparison; where the guard stopped and why.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def pair_stats(x: np.ndarray, gap: int) -> np.ndarray:
    """[F, N − gap] distances between Cα i and i + gap."""
    return np.linalg.norm(x[:, gap:] - x[:, :-gap], axis=-1)


def min_nonbonded(x: np.ndarray, min_sep: int = 3) -> np.ndarray:
    """[F] closest pair with |i − j| ≥ min_sep."""
    n = x.shape[1]
    i, j = np.triu_indices(n, min_sep)
    out = np.empty(len(x))
    for f in range(len(x)):  # per frame: one [P] vector
        out[f] = np.linalg.norm(x[f, i] - x[f, j], axis=-1).min()
    return out


def radius_of_gyration(x: np.ndarray) -> np.ndarray:
    return np.sqrt(((x - x.mean(1, keepdims=True)) ** 2).sum(-1).mean(-1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the rollout (any writable format)")
    ap.add_argument("--project", default=None, choices=("none", "bonds", "angles"),
                    help="project every state (default: the model's own setting; a deterministic model projects "
                         "nothing unless asked, as `mdsurrogate demo` asks for angles)")
    ap.add_argument("--noise-gain", type=float, default=None,
                    help="sample a stochastic model with this noise gain instead of the checkpoint's calibrated one "
                         "(1: the likelihood's own noise)")
    ap.add_argument("--noise-memory", type=float, default=None,
                    help="and with this noise memory ρ instead of the checkpoint's")
    a = ap.parse_args()

    import MDAnalysis as mda

    from mdsurrogate.data.sources.adk import embedded_adk_files
    from mdsurrogate.simulation import initial_state
    from mdsurrogate.simulation.surrogate import Surrogate

    top, (dcd1, dcd2) = embedded_adk_files()
    md = []
    for dcd in (dcd1, dcd2):
        u = mda.Universe(top, dcd)
        ca = u.select_atoms("name CA")
        md.append(np.stack([ca.positions.astype(np.float64) for _ in u.trajectory]))
    md_all = np.concatenate(md)
    b1, b2 = pair_stats(md_all, 1).mean(0), pair_stats(md_all, 2).mean(0)

    sur = Surrogate.load(a.run, device="cpu")
    if a.project is not None:
        sur.project = a.project
    if a.noise_gain is not None:
        sur.noise_gain = a.noise_gain
    if a.noise_memory is not None:
        sur.noise_memory = a.noise_memory
    start = initial_state.from_trajectory(dcd2, sur, top=top, frame=-1)
    t0 = time.perf_counter()
    if a.out:
        from mdsurrogate.simulation.rollout import rollout_to_file

        rollout_to_file(sur, start, a.steps, a.out, seed=a.seed, overwrite=True)
        u = mda.Universe(top, a.out) if not a.out.endswith(".pdb") else mda.Universe(a.out)
        x = np.stack([u.atoms.positions.astype(np.float64) for _ in u.trajectory])
        stopped = None if len(x) == a.steps + 1 else "stopped (see the rollout command)"
    else:
        res = sur.rollout(start, a.steps, seed=a.seed)
        x, stopped = res.positions.astype(np.float64), res.stopped
    wall = time.perf_counter() - t0

    def describe(traj):
        d1 = np.sqrt(((pair_stats(traj, 1) - b1) ** 2).mean(1))
        d2 = np.sqrt(((pair_stats(traj, 2) - b2) ** 2).mean(1))
        nb, rg = min_nonbonded(traj), radius_of_gyration(traj)
        step = np.sqrt(((traj[1:] - traj[:-1]) ** 2).sum(-1).mean(-1)) if len(traj) > 1 else np.zeros(1)
        return {"ca_ca_rms_dev_max": float(d1.max()), "ca_ca_rms_dev_mean": float(d1.mean()),
                "i_i2_rms_dev_max": float(d2.max()), "i_i2_rms_dev_mean": float(d2.mean()),
                "min_nonbonded": float(nb.min()), "rg_min": float(rg.min()), "rg_max": float(rg.max()),
                "rg_last": float(rg[-1]), "step_rms_mean": float(step.mean()), "step_rms_max": float(step.max())}

    delta = int(sur.dataset.delta_frames)
    report = {"run": str(a.run), "steps_done": int(len(x) - 1), "steps": a.steps, "stopped": stopped,
              "seed": a.seed, "seconds": wall, "noise_gain": sur.noise_gain, "noise_memory": sur.noise_memory,
              "rollout": describe(x),
              "md": describe(np.concatenate([m[::delta] for m in md])),
              "md_note": "MD rows: every Δ-th frame of adk_dims.dcd and adk_dims2.dcd"}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
