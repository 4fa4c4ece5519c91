"""A long stochastic rollout of alanine dipeptide against the MD it learned from (the issue-13 check).

    python benchmarks/ala2_long_rollout.py RUN MD_DIR [--ns 10] [--seed 11] [--openmm-ns X | --openmm-ns-per-day X]
                                                       [--noise-gain G] [--flow-steps S] [--kernel-starts 2000]

RUN: a propagator trained on heavy atoms of ``mdsurrogate simulate ala2 MD_DIR`` (e.g. recipe
``ala2_egnn_stochastic``). Rolls it out from the last MD frame for ``--ns`` of simulated time (guard on) and prints
one JSON line: steps done and why it stopped; the surrogate's simulated ns per wall second beside OpenMM's:
with ``--openmm-ns X`` measured in this run, just before the rollout, by ``mdsurrogate simulate ala2`` for X ns
(production only, same threads: a side-by-side figure), else read from MD_DIR/simulate.json (another run);
φ/ψ basin populations (αR / β / other), the Jensen–Shannon divergence (bits, 30° bins) of its Ramachandran histogram
to the MD's and, as the noise floor, between the MD's two halves; αR↔β transitions per ns (the MD's also counted on
every Δ-th frame, as the rollout is sampled); per heavy-atom bond, the RMS deviation of the rollout's lengths from
the MD's mean over the MD's own RMS spread (the largest over bonds; the target is ≤ 2), and the largest single
deviation beside the MD's own; the closest pair of atoms that are not bonded, in the rollout and in the MD. Beside
the long rollout it checks the learned law of one step, free of a long chain's sampling noise: from
``--kernel-starts`` MD frames spread over the run (4 draws each, batched in one model call per 128 starts) one step
Δ, whose φ/ψ histogram is compared with that of the MD's frames Δ after the same starts (``kernel_js_bits``: what the
long chain compounds, and a figure that varies far less between seeds). ``--kernel-starts 0`` skips it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def time_openmm(ns: float) -> float:
    """OpenMM's production throughput (simulated ns per day) for ``mdsurrogate simulate ala2 … --ns ns``, run now
    in a temporary folder with this process's environment (threads)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "mdsurrogate", "simulate", "ala2", f"{tmp}/md", "--ns", str(ns)],
                       check=True, capture_output=True)
        return json.loads(Path(tmp, "md", "simulate.json").read_text())["throughput"]["ns_per_day"]


def one_step_divergence(sur, topo, md: np.ndarray, lag: int, starts: int, seed: int, phipsi, histogram,
                        divergence, draws: int = 4, chunk: int = 128) -> float:
    """JS divergence (bits) between the φ/ψ histogram of one-step draws from ``starts`` MD frames [F, N, 3] (each
    ``draws`` times) and that of the MD frames ``lag`` frames after the same starts."""
    import torch

    first = np.unique(np.linspace(0, len(md) - lag - 1, starts).round().astype(np.int64))
    out = []
    for c in range(0, len(first), chunk):
        idx = first[c:c + chunk]
        x0 = torch.from_numpy(md[idx].astype(np.float32)).repeat(draws, 1, 1).reshape(-1, 3)
        chain = sur.chain(x0, torch.zeros_like(x0), topo.repeat(len(idx) * draws), guard=None, seed=seed + c)
        chain.advance()
        out.append(chain.x.reshape(len(idx) * draws, -1, 3).cpu().numpy().astype(np.float64))
    phi, psi = phipsi(np.concatenate(out))
    phi_md, psi_md = phipsi(md[first + lag])
    return divergence(histogram(phi, psi), histogram(phi_md, psi_md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("md_dir")
    ap.add_argument("--ns", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--openmm-ns", type=float, default=None,
                    help="time OpenMM in this run: `mdsurrogate simulate ala2` for this many ns before the rollout")
    ap.add_argument("--openmm-ns-per-day", type=float, default=None)
    ap.add_argument("--noise-gain", type=float, default=None,
                    help="multiply the noise by this instead of the checkpoint's calibrated gain")
    ap.add_argument("--flow-steps", type=int, default=None,
                    help="midpoint steps of a flow propagator's transport (default: the recipe's model.flow_steps)")
    ap.add_argument("--kernel-starts", type=int, default=2000,
                    help="MD frames the one-step check starts from (0: skip it)")
    a = ap.parse_args()

    import MDAnalysis as mda

    from mdsurrogate.analysis.dihedrals import backbone_quadruples, dihedral_angles
    from mdsurrogate.analysis.ramachandran import basin_populations, jensen_shannon, ramachandran_histogram, transitions
    from mdsurrogate.models.stochastic import unwrap
    from mdsurrogate.simulation import initial_state
    from mdsurrogate.simulation.surrogate import Surrogate

    md_dir = Path(a.md_dir)
    top, traj = md_dir / "topology.pdb", md_dir / "trajectory.dcd"
    sur = Surrogate.load(a.run, device="cpu")
    if a.noise_gain is not None:
        sur.noise_gain = a.noise_gain
    if a.flow_steps is not None:
        if not sur.has_flow or a.flow_steps < 1:
            ap.error("--flow-steps needs a propagator with model.flow = true and a value ≥ 1")
        sur.flow_steps = a.flow_steps
    start = initial_state.from_trajectory(traj, sur, top=top, frame=-1)
    steps = int(round(a.ns * 1000.0 / sur.delta_time))
    openmm, openmm_source = a.openmm_ns_per_day, "given"
    if a.openmm_ns:
        openmm, openmm_source = time_openmm(a.openmm_ns), f"mdsurrogate simulate ala2 --ns {a.openmm_ns:g}, this run"
    elif openmm is None and (md_dir / "simulate.json").is_file():
        openmm, openmm_source = (json.loads((md_dir / "simulate.json").read_text())["throughput"]["ns_per_day"],
                                 f"{md_dir / 'simulate.json'} (another run)")
    t0 = time.perf_counter()
    res = sur.rollout(start, steps, seed=a.seed)
    wall = time.perf_counter() - t0

    u = mda.Universe(str(top), str(traj))
    ag = u.select_atoms(sur.md["selection"])
    md = np.stack([ag.positions.astype(np.float64) for _ in u.trajectory])
    rollout = res.positions.astype(np.float64)
    phi_q, psi_q, _ = backbone_quadruples(ag.names, ag.resindices, None)

    def phipsi(x):
        return dihedral_angles(x, phi_q), dihedral_angles(x, psi_q)

    (phi_md, psi_md), (phi, psi) = phipsi(md), phipsi(rollout)
    half = len(md) // 2
    frame_ps = float(sur.dataset.frame_dt)
    bonds = np.asarray(sorted({tuple(sorted(b)) for b in start.topo.edge_sets["local"].index.T.tolist()}))
    length = lambda x: np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)  # noqa: E731
    md_len = length(md)
    md_mean, md_std = md_len.mean(0), md_len.std(0)
    roll_len = length(rollout[1:])
    every = max(1, int(round(sur.delta_time / frame_ps)))  # the MD seen at the surrogate's Δ, for transitions
    n = md.shape[1]
    i, j = np.triu_indices(n, 1)
    bonded = {tuple(b) for b in bonds.tolist()}
    free = np.array([(p, q) not in bonded for p, q in zip(i, j, strict=True)])

    def closest(x):
        return float(np.linalg.norm(x[:, i[free]] - x[:, j[free]], axis=-1).min())

    kernel = one_step_divergence(sur, start.topo, md, every, a.kernel_starts, a.seed, phipsi,
                                 ramachandran_histogram, jensen_shannon) if a.kernel_starts > 0 else None

    report = {
        "run": a.run, "md": str(md_dir), "seed": a.seed, "steps": steps, "steps_done": res.steps_done,
        "stopped": res.stopped, "wall_s": wall, "noise_gain": sur.noise_gain,
        "flow_steps": (sur.flow_steps or unwrap(sur.model).flow_steps) if sur.has_flow else None,
        "surrogate_ns_per_s": res.steps_done * sur.delta_time / 1000.0 / wall,
        "openmm_ns_per_s": openmm / 86400.0 if openmm else None, "openmm_source": openmm_source if openmm else None,
        "populations": {"md": basin_populations(phi_md, psi_md), "surrogate": basin_populations(phi, psi)},
        "js_bits": jensen_shannon(ramachandran_histogram(phi, psi), ramachandran_histogram(phi_md, psi_md)),
        "js_md_halves_bits": jensen_shannon(ramachandran_histogram(phi_md[:half], psi_md[:half]),
                                            ramachandran_histogram(phi_md[half:], psi_md[half:])),
        "transitions_per_ns": {"md": transitions(phi_md, psi_md, frame_ps).as_dict()["per_ns"],
                               "md_every_delta": transitions(phi_md[::every], psi_md[::every],
                                                             frame_ps * every).as_dict()["per_ns"],
                               "surrogate": transitions(phi, psi, sur.delta_time).as_dict()["per_ns"]},
        # bonds of the rollout's own frames (the start, an MD frame, left out) against the MD's mean lengths: the
        # RMS deviation of each bond over time ÷ the MD's RMS spread of that bond (≤ 2 is the target), and the
        # largest single deviation beside the MD's own
        "bond_rms_dev_over_md_spread_max": float((np.sqrt(((roll_len - md_mean) ** 2).mean(0)) / md_std).max())
        if len(roll_len) else None,  # None: the rollout stopped before its first step
        "bond_dev_max": float(np.abs(roll_len - md_mean).max()) if len(roll_len) else None,
        "md_bond_dev_max": float(np.abs(md_len - md_mean).max()),
        "md_bond_rms_spread": md_std.round(4).tolist(),
        "closest_not_bonded": {"md": closest(md), "surrogate": closest(rollout)},
        "kernel_js_bits": kernel,
        "kernel_starts": a.kernel_starts,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
