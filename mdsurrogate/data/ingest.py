"""Turn the shipped simulators' output into datasets, with the papers' sample construction.

N-body (protocols.md §1): one trajectory per simulation (49 stored frames, 5 particles), one sample per
simulation: input frame 30 (step 3100) → target frame 40 (step 4100), Δ = 1000 steps = 1.0 time unit;
node property ``charge``; node feature ‖v‖; edge features [q_i q_j, ‖r_ij‖²]; complete graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import SPLITS, write_dataset

SPLIT_ORDER = ("train", "val", "test")


def _concat_splits(parts: dict, attrs: tuple[str, ...]):
    """Concatenate per-split simulator outputs (train, val, test order) and the matching split codes."""
    out = {a: np.concatenate([getattr(parts[s], a) for s in SPLIT_ORDER]) for a in attrs}
    codes = np.concatenate([np.full(len(getattr(parts[s], attrs[0])), SPLITS[s], np.int8) for s in SPLIT_ORDER])
    return out, codes


def ingest_nbody(out: str | Path, *, n_train: int = 3000, n_val: int = 2000, n_test: int = 2000, seed: int = 43,
                 stream_train: int = 10000, input_frame: int = 30, target_frame: int = 40, n_steps: int = 5000,
                 sample_every: int = 100, overwrite: bool = False) -> Path:
    """Simulate the charged N-body system and write the ``nbody_small`` dataset of the EGNN paper."""
    from .sources.nbody import generate_nbody_splits

    n_frames = n_steps // sample_every - 1
    if not 0 <= input_frame < target_frame < n_frames:
        raise ValueError(f"need 0 ≤ input frame < target frame < {n_frames} stored frames")
    parts = generate_nbody_splits(n_train, n_val, n_test, seed=seed, stream_train=stream_train, n_steps=n_steps,
                                  sample_every=sample_every)
    arrays, codes = _concat_splits(parts, ("positions", "velocities", "charges"))
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
        "frame_steps": [int(s) for s in parts["train"].frame_steps],
        "features": {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": ["charge_product", "dist2"]},
        "generator": {"simulator": "charged_nbody", "n_train": n_train, "n_val": n_val, "n_test": n_test,
                      "seed": seed, "stream_train": stream_train, "n_steps": n_steps, "sample_every": sample_every,
                      "dt": dt, "input_frame": input_frame, "target_frame": target_frame},
    }
    return write_dataset(out, positions=arrays["positions"], velocities=arrays["velocities"], samples=samples,
                         split=codes, meta=meta, node_props={"charge": arrays["charges"]}, overwrite=overwrite)


def group_pairs(group: np.ndarray) -> np.ndarray:
    """[E, 2] all ordered pairs (i, j), i ≠ j, of nodes with the same group id, sorted by receiver i."""
    same = (group[:, None] == group[None, :]) & ~np.eye(len(group), dtype=bool)
    return np.argwhere(same).astype(np.int64)


def ingest_mcomplex(out: str | Path, *, n_complexes: int = 3, avg_size: int = 3, n_types: int = 1,
                    n_train: int = 1000, n_val: int = 2000, n_test: int = 2000, seed: int = 43,
                    input_frame: int = 10, target_frame: int = 25, overwrite: bool = False) -> Path:
    """Simulate the M-complex system (EGHN paper, Table 1) and write its dataset (protocols.md §2.6).

    One trajectory per system (50 stored frames, frame k after 100k + 1 steps), one sample per system:
    frame 10 → frame 25 (Δ = 1500 steps = 1.5 time units). Node properties ``charge`` and ``complex``;
    local edges = all ordered pairs inside a complex; global graph complete; edge features
    [q_i q_j, same-complex indicator, ‖r_ij‖²] on both graphs; node feature ‖v‖.
    """
    from .dataset import EdgeSetData
    from .sources.mcomplex import generate_mcomplex_splits

    types, parts = generate_mcomplex_splits(n_complexes, avg_size, n_types, n_train, n_val, n_test, seed=seed)
    n_frames = parts["train"].positions[0].shape[0] if n_train else parts["test"].positions[0].shape[0]
    if not 0 <= input_frame < target_frame < n_frames:
        raise ValueError(f"need 0 ≤ input frame < target frame < {n_frames} stored frames")
    pos, vel, charge, cid, codes, stype = [], [], [], [], [], []
    for s in SPLIT_ORDER:
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


def ingest_md(out: str | Path, top: str | Path, trajs, *, select: str = "backbone", delta: int = 15,
              cutoff: float = 10.0, velocities: str = "auto", ratios=(0.6, 0.2, 0.2), test_trajs=(),
              name: str | None = None, overwrite: bool = False, warn=None) -> Path:
    """Any MD trajectory MDAnalysis reads → a dataset of (frame i → frame i + Δ) samples of one atom selection.

    Several trajectories of one system become one dataset; each is split chronologically on its own
    (``ratios`` train/val/test) and no sample straddles two files or two splits (see
    :func:`sources.md.chronological_samples`). Global graph: atoms within ``cutoff`` Å, rebuilt for every state;
    edge features [‖r_ij‖, ‖r_ij‖²]; local graph: bonds with [length0, ‖r_ij‖²]; node features
    [‖v‖ / v_rms, q / max|q|, one-hot element]. Velocities: ``"auto"`` (the trajectory's when it has them, else
    the backward difference), ``"trajectory"`` or ``"difference"``; in Å per frame (sources/md.py).
    ``test_trajs``: further trajectories held out whole as test data (independent runs of the same system: the
    strictest test); the ``ratios`` then split the other trajectories (their test fraction may be 0).
    ``warn(message)`` receives non-fatal notes (e.g. guessed bonds).
    """
    from .dataset import EdgeSetData
    from .sources import md

    warn = warn or (lambda message: None)
    trajs = list(trajs)
    if not trajs:
        raise md.MDInputError("give at least one trajectory (--traj)")
    if delta < 1:
        raise md.MDInputError(f"--delta must be ≥ 1 frame, got {delta}")
    if cutoff <= 0:
        raise md.MDInputError(f"--cutoff must be positive, got {cutoff}")
    if velocities not in ("auto", "trajectory", "difference"):
        raise md.MDInputError(f"--velocities must be auto, trajectory or difference, not {velocities!r}")
    test_trajs = list(test_trajs)
    held_out = set(range(len(trajs), len(trajs) + len(test_trajs)))
    trajs = trajs + test_trajs
    universes = md.open_universe(top, trajs)
    system = md.MDSystem.from_atomgroup(md.select_atoms(universes[0], select), select)  # one topology for all
    if system.bonds_guessed:
        warn(f"the topology has no bonds for {select!r}: {len(system.bonds)} bonds were guessed from "
             "covalent radii at the first frame")
    pos, vel, samples, codes, spacings, vel_kind = [], [], [], [], [], set()
    for t, (u, path) in enumerate(zip(universes, trajs, strict=True)):
        ag = md.select_atoms(u, select)
        use_traj_v = velocities == "trajectory" or (velocities == "auto" and md.has_velocities(u))
        if velocities == "trajectory" and not md.has_velocities(u):
            raise md.MDInputError(f"{path} has no velocities; use --velocities difference")
        x, v_traj, times = md.read_frames(u, ag, velocities=use_traj_v)
        n = len(x)
        first = 0 if use_traj_v else 1
        if n < delta + 1 + first:
            raise md.MDInputError(f"{path} has {n} frames, too few for Δ = {delta} frames "
                                  f"(need at least {delta + 1 + first})")
        dt = md.frame_spacing(u, times)
        spacings.append(dt)
        vel_kind.add("trajectory" if use_traj_v else "difference")
        pos.append(x)
        vel.append(md.state_velocities(x, v_traj, dt))
        if t in held_out:
            starts = np.arange(first, n - delta)
            code = np.full(len(starts), 2, np.int8)
        else:
            starts, code = md.chronological_samples(n, delta, ratios, first=first)
        samples.append(np.stack([np.full(len(starts), t), starts, starts + delta], axis=1))
        codes.append(code)
    if len(vel_kind) > 1:
        raise md.MDInputError("some trajectories have velocities and others not; pass --velocities difference")
    if max(spacings) > 1.01 * min(spacings):
        raise md.MDInputError(f"the trajectories save frames at different intervals ({min(spacings):g} to "
                              f"{max(spacings):g} ps); one dataset needs one frame spacing")
    samples, codes = np.concatenate(samples), np.concatenate(codes)
    train = samples[codes == 0]
    if len(train) == 0 or not (codes == 1).any() or not (codes == 2).any():
        raise md.MDInputError(f"too few frames for Δ = {delta}: some split (train/val/test) gets no sample; "
                              "use a smaller --delta or longer trajectories")
    v_train = np.concatenate([vel[t][train[train[:, 0] == t, 1]] for t in np.unique(train[:, 0])])
    v_rms = float(np.sqrt((v_train.astype(np.float64) ** 2).sum(-1).mean())) or 1.0
    q_max = float(np.abs(system.charge).max()) or 1.0
    frame_dt = float(np.median(spacings))
    topo0 = system.topology(pos[0][0])
    local = topo0.edge_sets["local"]
    e_idx, length0 = local.index.numpy().T, local.props["length0"].numpy()
    meta = {
        "name": name or f"md_{Path(top).stem}",
        "source": "md",
        "description": f"MD trajectory {Path(top).name} + {', '.join(Path(p).name for p in trajs)}, "
                       f"selection {select!r}",
        "units": {"length": "Å", "time": "ps", "velocity": f"Å per frame ({frame_dt:g} ps)"},
        "frame_dt": frame_dt,
        "delta_frames": int(delta),
        "selection": select,
        "features": {
            "global_graph": {"kind": "radius", "cutoff": float(cutoff)},
            "node": ["speed", "charge", "one_hot:element"],
            "edge": ["dist", "dist2"],
            "local_edge": ["length0", "dist2"],
            "scales": {"speed": 1.0 / v_rms, "charge": 1.0 / q_max},
            "classes": {"element": len(md.ELEMENTS)},
        },
        "md": {"selection": select, "n_atoms": system.n_atoms, "signature": system.signature,
               "elements": list(md.ELEMENTS), "velocities": vel_kind.pop(), "bonds_guessed": system.bonds_guessed,
               "n_bonds": int(len(system.bonds)), "split_ratios": list(ratios), "cutoff": float(cutoff),
               "test_trajectories": [str(p) for p in test_trajs],
               "element": system.element.tolist(), "charge": [round(float(q), 6) for q in system.charge],
               "files": {"topology": str(top), "trajectories": [str(p) for p in trajs]}},
        "generator": {"kind": "md", "topology": str(top),
                      "trajectories": [str(p) for p in trajs[:len(trajs) - len(test_trajs)]],
                      "test_trajectories": [str(p) for p in test_trajs], "select": select,
                      "delta": int(delta), "cutoff": float(cutoff), "velocities": velocities},
    }
    n_t = len(pos)
    return write_dataset(
        out, positions=pos, velocities=vel, samples=samples, split=codes, meta=meta,
        node_props={"element": [system.element] * n_t, "charge": [system.charge] * n_t},
        edge_sets={"local": EdgeSetData([e_idx] * n_t, {"length0": [length0] * n_t})},
        overwrite=overwrite)


def ingest_adk(out: str | Path, *, source: str = "equilibrium", select: str = "backbone", delta: int | None = None,
               cutoff: float = 10.0, data_home=None, overwrite: bool = False, warn=None) -> Path:
    """Adenylate kinase (sources/adk.py). ``equilibrium``: MDAnalysisData's adk_equilibrium (downloaded once),
    chronological 0.6/0.2/0.2 split, Δ = 15 frames by default. ``embedded``: MDAnalysisTests' two DIMS
    transitions, train/val (0.8/0.2) on ``adk_dims.dcd`` and the whole of ``adk_dims2.dcd`` as test, Δ = 5."""
    from .sources.adk import embedded_adk_files, fetch_adk_equilibrium

    if source == "embedded":
        top, (first, second) = embedded_adk_files()
        trajs, test_trajs, ratios = [first], [second], (0.8, 0.2, 0.0)
    elif source == "equilibrium":
        top, trajs = fetch_adk_equilibrium(data_home)
        test_trajs, ratios = [], (0.6, 0.2, 0.2)
    else:
        raise ValueError(f"--source must be equilibrium or embedded, not {source!r}")
    delta = delta if delta is not None else (15 if source == "equilibrium" else 5)
    return ingest_md(out, top, trajs, select=select, delta=delta, cutoff=cutoff, ratios=ratios, test_trajs=test_trajs,
                     overwrite=overwrite, name=f"adk_{source}", warn=warn)
