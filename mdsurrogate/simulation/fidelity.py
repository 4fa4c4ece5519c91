"""Rollout fidelity of a surrogate: K steps from many held-out starts, against the true later frames, the data's
own statistics and null models.

    from mdsurrogate.simulation import Surrogate
    from mdsurrogate.simulation.fidelity import rollout_fidelity

    sur = Surrogate.load("runs/adk_quick_eghn")
    rec = rollout_fidelity(sur, steps=10, starts=20, baseline=Surrogate.load("runs/adk_quick_linear"))
    rec["methods"]["model"]["rmsd"]          # [K] mean RMSD over starts at k = 1 … K
    rec["skill"]["stay_still"]["rmsd"]       # [K] skill against "stay still", with "rmsd_lo"/"rmsd_hi"

**Starts.** From a dataset split: the split's samples whose trajectory has at least K·Δ stored frames after the
input frame, ``starts`` of them spread evenly (the rollout starts at the input frame, exactly as
``rollout --data``); or from an MD trajectory file (``traj``, ``top``): frames spread evenly over the file, each
read by :func:`~mdsurrogate.simulation.initial_state.from_trajectory` (the model's selection and velocity
convention), the reference being the file's own later frames (the frame spacing must divide the model's Δ).

**Methods.** The surrogate (R replicas in one chain when it is stochastic; its point prediction is the ensemble
mean), an optional ``baseline`` surrogate (e.g. a trained ``linear`` run), and the null models of
:mod:`mdsurrogate.analysis.baselines`: stay still, constant velocity, drift extrapolation from the last
``history`` frames. Trivial ensembles (tethered noise, random walk; σ from the data's step size) for the
probabilistic scores.

**Data statistics and envelope.** Computed over every stored frame of the trajectories the starts come from (one
"group" per trajectory; for a file, all its frames): the mean length of every local edge and each frame's RMS
deviation from it, the radius of gyration, and the RMS displacement over Δ. The envelope of each quantity is its
[``quantiles``] range over those frames (default: the data's minimum and maximum); a rollout *leaves the envelope*
at the first step whose local-edge deviation exceeds the data's upper bound (being more regular than the data is
not counted), whose Rg leaves the data's range, or whose step size leaves the data's range (too small = damped
motion, too large = blow-up). A rollout identical to the reference never leaves.

**Guard.** By default only non-finite states stop a chain (``guard="finite"``), so that the measurement sees what
the model does; frames after a stop are NaN, and means over starts are then NaN too (honestly).

The result is a JSON-able dict (NaN → None), described in :func:`rollout_fidelity`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..analysis import baselines as nulls
from ..analysis import fidelity as fm
from ..errors import UserError

NULLS = ("stay_still", "constant_velocity", "drift")
TRIVIAL = ("tethered", "random_walk")


class FidelityError(UserError, ValueError):
    """A fidelity measurement that cannot be made (no start with a long enough reference, bad parameters …)."""


# ----------------------------------------------------------------------------------------------------------
# the reference data
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ReferenceData:
    """The stored frames a group of starts is judged against, and their statistics.

    Attributes:
        frames: [F, N, 3] every stored frame of the trajectory (length unit).
        delta: stored frames per model step.
        edges: [E, 2] undirected local edges (bonds, bones), possibly empty.
        quantiles: the envelope's quantiles over the frames.
        velocities: [F, N, 3] stored velocities (only needed for N-body energies), charges: [N] (N-body) or None.
    Derived: ``lengths0`` [E] mean edge lengths, ``bond_dev`` [F], ``rg`` [F], ``step`` [F − Δ] and the envelopes
    ``env_bond`` (upper bound only), ``env_rg``, ``env_step``.
    """

    frames: np.ndarray
    delta: int
    edges: np.ndarray
    quantiles: tuple[float, float] = (0.0, 1.0)
    velocities: np.ndarray | None = None
    charges: np.ndarray | None = None
    lengths0: np.ndarray = field(init=False)

    def __post_init__(self):
        self.frames = np.asarray(self.frames, np.float64)
        self.edges = np.asarray(self.edges, np.int64).reshape(-1, 2)
        self.lengths0, self.bond_dev = fm.edge_statistics(self.frames, self.edges)
        self.rg = fm.radius_of_gyration(self.frames)
        self.step = fm.data_step_displacement(self.frames, self.delta)
        self.env_bond = fm.Envelope.of(self.bond_dev, self.quantiles, lower=False)
        self.env_rg = fm.Envelope.of(self.rg, self.quantiles)
        self.env_step = fm.Envelope.of(self.step, self.quantiles)

    @property
    def bond_spread(self) -> float:
        """The data's RMS local-edge deviation from the mean lengths (length unit; NaN without edges)."""
        return float(np.sqrt(np.mean(self.bond_dev ** 2))) if len(self.edges) else float("nan")

    @property
    def step_rms(self) -> float:
        return float(np.sqrt(np.mean(self.step ** 2))) if len(self.step) else float("nan")


@dataclass
class FidelityStart:
    """One start: ``state`` (an InitialState: x0, v0 in the model's units, topo), ``reference`` [K+1, N, 3] the true
    frames k·Δ later (frame 0 = x0), ``ref_velocities`` [K+1, N, 3] or None, ``history`` [H, N, 3] the stored
    frames up to and including the start, ``group`` (index of its ReferenceData) and ``label`` (sample id in the
    split, or frame number in the file)."""

    state: object
    reference: np.ndarray
    ref_velocities: np.ndarray | None
    history: np.ndarray
    group: int
    label: int


def spread_indices(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n) (all of them when k ≥ n)."""
    return np.unique(np.round(np.linspace(0, n - 1, min(k, n))).astype(np.int64))


def _too_long(what: str, steps: int, delta: int, kmax: int) -> FidelityError:
    if kmax < 1:
        return FidelityError(f"{what} has no start with even one step (Δ = {delta} frames) of reference after it, "
                             f"so no rollout of {steps} steps can be judged")
    return FidelityError(f"{what} has no start with {steps} steps × Δ = {steps * delta} frames of reference after "
                         f"it; the longest reference allows steps ≤ {kmax}")


def dataset_starts(ds, surrogate, *, split: str, steps: int, starts: int, history: int = 20,
                   quantiles=(0.0, 1.0)) -> tuple[list[FidelityStart], list[ReferenceData]]:
    """Starts from the samples of ``split`` of ``ds`` whose trajectory holds K·Δ frames after the input frame."""
    from ..simulation.evaluation import check_features
    from ..simulation.initial_state import from_dataset, static_bonds

    check_features(surrogate, ds)
    delta = int(surrogate.dataset.delta_frames)
    ids = ds.split_indices(split)
    if len(ids) == 0:
        raise FidelityError(f"split {split!r} of {ds.path} has no samples")
    s = ds.samples[ids]
    room = (ds.traj_frames[s[:, 0]] - 1 - s[:, 1]) // delta
    ok = np.flatnonzero(room >= steps)
    if len(ok) == 0:
        raise _too_long(f"split {split!r} of {ds.path}", steps, delta, int(room.max()))
    nbody = ds.meta.get("source") == "nbody"
    groups: dict[int, int] = {}
    refs: list[ReferenceData] = []
    out = []
    for i in ok[spread_indices(len(ok), starts)]:
        traj, f0 = int(s[i, 0]), int(s[i, 1])
        if traj not in groups:
            nf = int(ds.traj_frames[traj])
            x, v = ds.states(np.full(nf, traj), np.arange(nf))
            n = int(ds.traj_nodes[traj])
            bonds = static_bonds(ds, traj)
            charges = ds.node_property("charge", traj) if nbody and ds.has("node.charge") else None
            groups[traj] = len(refs)
            refs.append(ReferenceData(x.numpy().reshape(nf, n, 3), delta,
                                      bonds if bonds is not None else np.zeros((0, 2), np.int64), quantiles,
                                      v.numpy().reshape(nf, n, 3), charges))
        ref = refs[groups[traj]]
        frames = f0 + delta * np.arange(steps + 1)
        start = from_dataset(ds, surrogate, split=split, sample=int(i))
        out.append(FidelityStart(start, ref.frames[frames], ref.velocities[frames] if ref.velocities is not None
                                 else None, ref.frames[max(0, f0 - history):f0 + 1], groups[traj], int(ids[i])))
    return out, refs


def trajectory_starts(traj: str | os.PathLike, surrogate, *, top: str | os.PathLike | None = None, steps: int,
                      starts: int, history: int = 20,
                      quantiles=(0.0, 1.0)) -> tuple[list[FidelityStart], list[ReferenceData]]:
    """Starts spread over the frames of an MD trajectory file that have K·Δ frames after them."""
    from ..data.sources import md
    from ..simulation.initial_state import from_trajectory

    probe = from_trajectory(traj, surrogate, top=top, frame=-1)  # checks model, selection and atoms
    info = surrogate.dataset.md
    (u,) = md.open_universe(top if top is not None else traj, [traj] if top is not None else [])
    ag = md.select_atoms(u, info["selection"])
    from ..data.periodic import Unwrapper

    bonds = md.MDSystem.from_atomgroup(ag, info["selection"]).bonds
    frames_read = md.read_frames(u, ag, unwrap=Unwrapper(len(ag), bonds), path=traj)  # as ingest reads them
    pos = frames_read.positions
    n_frames = len(pos)
    user_dt = md.frame_spacing(u, frames_read.times, path=traj)
    model_dt, delta = float(surrogate.dataset.frame_dt), int(surrogate.dataset.delta_frames)
    ratio = delta * model_dt / user_dt
    if not math.isclose(ratio, round(ratio), rel_tol=1e-3) or round(ratio) < 1:
        raise FidelityError(f"{traj} saves frames every {user_dt:g} ps, which does not divide the model's step of "
                            f"{delta * model_dt:g} ps, so no stored frame is a reference")
    kf = int(round(ratio))
    first = {"trajectory": 0, "difference": 1}.get(info.get("velocities"), kf)   # "lag": one Δ back
    last = n_frames - 1 - steps * kf
    if last < first:
        raise _too_long(str(traj), steps, kf, (n_frames - 1 - first) // kf)
    local = probe.topo.edge_sets.get("local")
    edges = (np.unique(np.sort(local.index.T.cpu().numpy(), axis=1), axis=0) if local is not None
             and local.index.shape[1] else np.zeros((0, 2), np.int64))
    ref = ReferenceData(pos, kf, edges, quantiles)
    out = []
    for f in first + spread_indices(last - first + 1, starts):
        f = int(f)
        state = from_trajectory(traj, surrogate, top=top, frame=f)
        out.append(FidelityStart(state, ref.frames[f + kf * np.arange(steps + 1)], None,
                                 ref.frames[max(0, f - history):f + 1], 0, f))
    return out, [ref]


# ----------------------------------------------------------------------------------------------------------
# per-start measurements
# ----------------------------------------------------------------------------------------------------------


def _pad(a: np.ndarray, frames: int) -> np.ndarray:
    """[R, k+1, N, 3] → [R, frames, N, 3] with NaN frames after a stopped chain."""
    if a.shape[1] >= frames:
        return a
    pad = np.full((a.shape[0], frames - a.shape[1]) + a.shape[2:], np.nan)
    return np.concatenate([a.astype(np.float64), pad], axis=1)


def _geometry(traj: np.ndarray, ref: ReferenceData) -> dict:
    """Per-step geometry of trajectories [R, K+1, N, 3]: means over the R replicas, [K] each."""
    bond = fm.edge_deviation(traj[:, 1:], ref.edges, ref.lengths0)
    rg = fm.radius_of_gyration(traj[:, 1:])
    step = fm.step_displacement(traj)
    ob, orr, ost = ref.env_bond.outside(bond), ref.env_rg.outside(rg), ref.env_step.outside(step)
    if not len(ref.edges):
        ob = np.zeros_like(ob)
    return {"bond_dev": bond.mean(0), "bond_dev_rel": bond.mean(0) / ref.bond_spread, "rg": rg.mean(0),
            "step": step.mean(0), "step_ratio": step.mean(0) / ref.step_rms,
            "left_bond": fm.exited(ob).mean(0), "left_rg": fm.exited(orr).mean(0),
            "left_step": fm.exited(ost).mean(0), "left_any": fm.exited(ob | orr | ost).mean(0),
            "first_exit": fm.first_exit(ob | orr | ost)}


def _accuracy(point: np.ndarray, reference: np.ndarray) -> dict:
    """RMSD (plain and superposed) and MSE [K] of a point trajectory [K+1, N, 3] against the reference."""
    return {"rmsd": fm.rmsd(point[1:], reference[1:]),
            "rmsd_superposed": fm.rmsd(point[1:], reference[1:], superpose=True),
            "mse": fm.mse(point[1:], reference[1:])}


def _nbody_energy(x: np.ndarray, v: np.ndarray, charges: np.ndarray, strength: float) -> np.ndarray:
    from ..data.sources.nbody import total_energy

    return total_energy(x, v, charges, strength)


def _run(surrogate, fs: FidelityStart, steps: int, replicas: int, seed: int, guard):
    from .ensemble import ensemble_rollout

    res = ensemble_rollout(surrogate, fs.state, steps, replicas, seed, guard=guard)
    return _pad(res.positions, steps + 1), _pad(res.velocities, steps + 1), res.stopped


def resolve_guard(guard):
    """A guard as a chain takes it: ``"finite"`` → a StabilityGuard that stops only on non-finite states; any
    other value (``"default"``, a StabilityGuard, None) unchanged."""
    if guard == "finite":
        from .guard import StabilityGuard

        return StabilityGuard(max_expansion=math.inf)
    return guard


# ----------------------------------------------------------------------------------------------------------
# the measurement
# ----------------------------------------------------------------------------------------------------------


def rollout_fidelity(surrogate, *, steps: int, dataset=None, split: str = "test", traj=None, top=None,
                     starts: int = 20, replicas: int = 16, seed: int = 0, baseline=None, history: int = 20,
                     n_boot: int = 2000, level: float = 0.9, quantiles: tuple[float, float] = (0.0, 1.0),
                     bins: int = 30, guard="finite", progress: Callable[[int, int], None] | None = None) -> dict:
    """Roll ``surrogate`` (and ``baseline``, and the null models) out for ``steps`` steps from many starts and
    measure it against the reference frames and the data.

    Args:
        surrogate: a Surrogate. A stochastic one (``surrogate.stochastic``) runs ``replicas`` replicas per start
            in one chain; a deterministic one runs once (its replicas would be identical).
        steps: K ≥ 1 model steps.
        dataset: a Dataset or its path (default: the one the model was trained on) and ``split``; or ``traj``
            (an MD trajectory file MDAnalysis reads, with ``top`` its topology) instead.
        starts: how many starts, spread evenly over the eligible ones.
        replicas: R for stochastic models and for the trivial ensembles (at least 2 there).
        seed: seeds the replicas (start s gets the stream SeedSequence([seed, s])), the trivial ensembles and the
            bootstrap.
        baseline: another Surrogate with the same Δ (e.g. the Linear baseline), measured like the model.
        history: m, frames before the start for drift extrapolation.
        n_boot, level: bootstrap resamples over the starts and the interval's coverage (percentile method).
        quantiles: the envelope's quantiles over the data; bins: histogram bins of the Jensen–Shannon divergence.
        guard: "finite" (stop only on non-finite states), "default" (the checkpoint's guard), a StabilityGuard or
            None.
        progress: ``progress(done, total)`` after each start.

    Returns a JSON-able dict (NaN → None): ``horizons`` [K] (k), ``times`` [K] (k·Δ in the time unit); ``methods``
    name → metric → [K] means over starts (``model``, ``baseline``, ``stay_still``, ``constant_velocity``,
    ``drift``; metrics ``rmsd``, ``rmsd_superposed``, ``mse`` (length²), ``bond_dev`` (RMS local-edge deviation
    from the data's mean lengths), ``bond_dev_rel`` (÷ the data's spread), ``rg``, ``step`` (RMS displacement of
    step k), ``step_ratio`` (÷ the data's RMS step), ``left_any`` / ``left_bond`` / ``left_rg`` / ``left_step``
    (fraction of rollouts that have left the data's envelope by step k), and for a stochastic model
    ``rmsd_replicas`` (mean RMSD of single replicas)); ``reference`` (the true frames' ``rg``, ``bond_dev``,
    ``step``); ``skill`` null → {``rmsd``, ``rmsd_lo``, ``rmsd_hi``, ``mse``, ``mse_lo``, ``mse_hi``} of the model
    (its ensemble mean) against each null model and the baseline; ``first_exit`` per method (median over rollouts
    of the first step outside the envelope, 0 = never within K, and the fraction that never left); ``ensemble``
    (``spread``, ``rmse``, ``spread_skill`` with interval, ``energy_score``, ``crps`` for the model and the trivial
    ensembles, ``energy_score_skill`` against the best trivial one); ``distributions`` (per k: W₁ of Rg and of
    local-edge lengths, JS of the edge-length histograms, model vs the reference frames at k; pooled over k:
    model and reference vs all data frames; RMSF comparison); ``energy`` (N-body: mean |E_k − E_0| of the model
    and of the reference); ``data`` (the statistics the rollout is compared against); ``per_start`` (labels and
    per-start RMSD [S][K] of every method).
    """
    with np.errstate(divide="ignore", invalid="ignore"):   # a null model that is exact gives skill NaN (→ None)
        return _rollout_fidelity(surrogate, steps=steps, dataset=dataset, split=split, traj=traj, top=top,
                                 starts=starts, replicas=replicas, seed=seed, baseline=baseline, history=history,
                                 n_boot=n_boot, level=level, quantiles=quantiles, bins=bins, guard=guard,
                                 progress=progress)


def _rollout_fidelity(surrogate, *, steps, dataset, split, traj, top, starts, replicas, seed, baseline, history,
                      n_boot, level, quantiles, bins, guard, progress) -> dict:
    from ..data.dataset import Dataset

    steps, starts, replicas = int(steps), int(starts), int(replicas)
    if steps < 1:
        raise FidelityError(f"the number of rollout steps must be ≥ 1, not {steps}")
    if starts < 1:
        raise FidelityError(f"the number of starts must be ≥ 1, not {starts}")
    if replicas < 1:
        raise FidelityError(f"the number of replicas must be ≥ 1, not {replicas}")
    if n_boot < 1 or not 0 < level < 1:
        raise FidelityError("the bootstrap needs n_boot ≥ 1 resamples and a level in (0, 1)")
    if history < 1:
        raise FidelityError(f"the drift history must be ≥ 1 frame, not {history}")
    if baseline is not None:
        a, b = surrogate.dataset, baseline.dataset
        if int(a.delta_frames) != int(b.delta_frames) or not math.isclose(a.frame_dt, b.frame_dt, rel_tol=1e-6):
            raise FidelityError(f"the baseline steps {b.delta_frames} × {b.frame_dt:g} but the model "
                                f"{a.delta_frames} × {a.frame_dt:g}; both must have the same Δ")

    notes: list[str] = []
    if traj is not None:
        fstarts, refs = trajectory_starts(traj, surrogate, top=top, steps=steps, starts=starts, history=history,
                                          quantiles=quantiles)
        source = {"kind": "trajectory", "traj": str(traj), "top": None if top is None else str(top)}
        ds = None
    else:
        ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset or surrogate.dataset.path)
        fstarts, refs = dataset_starts(ds, surrogate, split=split, steps=steps, starts=starts, history=history,
                                       quantiles=quantiles)
        source = {"kind": "dataset", "path": str(ds.path), "split": split}
        if baseline is not None:
            from ..simulation.evaluation import check_features

            check_features(baseline, ds)
    if len(fstarts) < starts:
        notes.append(f"only {len(fstarts)} starts have {steps} steps of reference after them")
    r_model = replicas if surrogate.stochastic else 1
    r_base = replicas if baseline is not None and baseline.stochastic else 1
    if replicas > 1 and not surrogate.stochastic:
        notes.append("the model is deterministic: one rollout per start (replicas would be identical); ensemble "
                     "scores are those of a point forecast")
    r_triv = replicas if replicas >= 2 else 16
    info = surrogate.dataset
    scale = nulls.velocity_step_scale(surrogate.units, info.frame_dt, info.delta_frames)
    strength = float((ds.meta.get("generator") or {}).get("interaction_strength", 1.0)) if ds is not None else 1.0
    guard_obj = resolve_guard(guard)
    rng_triv = np.random.default_rng([int(seed), 1])

    names = ["model"] + (["baseline"] if baseline is not None else []) + list(NULLS)
    per: dict[str, dict[str, list]] = {m: {} for m in names + ["reference"]}
    ens: dict[str, list] = {}
    dist_model: dict[str, list] = {"rg": [], "bond": []}
    dist_ref: dict[str, list] = {"rg": [], "bond": []}
    rmsf_cmp, energy_m, energy_r, stopped = [], [], [], []

    def add(store: dict, key: str, value):
        store.setdefault(key, []).append(np.asarray(value, np.float64))

    for s, fs in enumerate(fstarts):
        ref = refs[fs.group]
        y = fs.reference.astype(np.float64)
        x0 = y[0]
        sseed = int(np.random.SeedSequence([int(seed), s]).generate_state(1)[0])
        pos, vel, stop = _run(surrogate, fs, steps, r_model, sseed, guard_obj)
        if stop:
            stopped.append({"start": fs.label, "model": "model", "reason": stop})
        trajs = {"model": pos}
        if baseline is not None:
            bpos, _, bstop = _run(baseline, fs, steps, r_base, sseed, guard_obj)
            trajs["baseline"] = bpos
            if bstop:
                stopped.append({"start": fs.label, "model": "baseline", "reason": bstop})
        v0 = fs.state.v0.double().numpy()
        trajs["stay_still"] = nulls.stay_still(x0, steps)[None]
        trajs["constant_velocity"] = nulls.constant_velocity(x0, v0, steps, scale)[None]
        trajs["drift"] = nulls.drift_extrapolation(fs.history, steps, ref.delta, history)[None]
        for name, t in trajs.items():
            for key, val in {**_accuracy(t.mean(0), y), **_geometry(t, ref)}.items():
                add(per[name], key, val)
        if r_model > 1:
            add(per["model"], "rmsd_replicas", fm.rmsd(pos[:, 1:], y[1:]).mean(0))
        for key, val in _geometry(y[None], ref).items():
            if key in ("bond_dev", "rg", "step"):
                add(per["reference"], key, val)

        # ensembles: the model's and the trivial ones
        add(ens, "variance", fm.ensemble_variance(pos[:, 1:]))
        add(ens, "sqerr", fm.ensemble_mean_error(pos[:, 1:], y[1:]))
        add(ens, "es_model", fm.energy_score(pos[:, 1:], y[1:]))
        add(ens, "crps_model", fm.crps_positions(pos[:, 1:], y[1:]))
        for kind in TRIVIAL:
            sigma = nulls.noise_sigma(ref.step_rms, kind)
            gen = nulls.tethered_noise if kind == "tethered" else nulls.random_walk
            t = gen(x0, steps, sigma, r_triv, rng_triv)
            add(ens, f"es_{kind}", fm.energy_score(t[:, 1:], y[1:]))
            add(ens, f"crps_{kind}", fm.crps_positions(t[:, 1:], y[1:]))

        # distributions
        dist_model["rg"].append(fm.radius_of_gyration(pos[:, 1:]))           # [R, K]
        dist_ref["rg"].append(fm.radius_of_gyration(y[1:]))                  # [K]
        dist_model["bond"].append(fm.edge_lengths(pos[:, 1:], ref.edges))    # [R, K, E]
        dist_ref["bond"].append(fm.edge_lengths(y[1:], ref.edges))           # [K, E]
        frames_m = pos[:, 1:].reshape(-1, *pos.shape[2:])
        if np.isfinite(frames_m).all():
            rmsf_cmp.append((fm.rmsf(frames_m, superpose_to=x0), fm.rmsf(y[1:], superpose_to=x0)))

        if ref.charges is not None and fs.ref_velocities is not None:
            em = _nbody_energy(pos, vel, ref.charges, strength)                    # [R, K+1]
            er = _nbody_energy(y, fs.ref_velocities, ref.charges, strength)        # [K+1]
            energy_m.append(np.abs(em[:, 1:] - em[:, :1]).mean(0))
            energy_r.append(np.abs(er[1:] - er[0]))
        if progress is not None:
            progress(s + 1, len(fstarts))

    stack = {m: {k: np.stack(v) for k, v in d.items()} for m, d in per.items()}   # [S, K] (first_exit: [S, R])
    es = {k: np.stack(v) for k, v in ens.items()}
    boot = {"n_boot": int(n_boot), "level": float(level), "seed": int(seed)}

    methods = {m: {k: v.mean(0) for k, v in d.items() if k != "first_exit"} for m, d in stack.items()
               if m != "reference"}
    reference = {k: v.mean(0) for k, v in stack["reference"].items()}
    first_exit = {}
    for m in names:
        fe = stack[m]["first_exit"].ravel()
        never = fe == 0
        first_exit[m] = {"median_step": float(np.median(fe[~never])) if (~never).any() else None,
                         "never_fraction": float(never.mean())}

    skill = {}
    for null in names[1:]:
        entry = {}
        for metric in ("rmsd", "mse"):
            sk, lo, hi = fm.skill_interval(stack["model"][metric], stack[null][metric], **boot)
            entry.update({metric: sk, f"{metric}_lo": lo, f"{metric}_hi": hi})
        skill[null] = entry

    # ensemble summary
    es_mean = {k: v.mean(0) for k, v in es.items()}
    best = np.where(es_mean["es_tethered"] <= es_mean["es_random_walk"], 0, 1)          # per k
    es_best = np.where(best[None, :] == 0, es["es_tethered"], es["es_random_walk"])
    es_skill, es_lo, es_hi = fm.skill_interval(es["es_model"], es_best, **boot)
    ensemble = {
        "replicas": r_model, "trivial_replicas": r_triv,
        "energy_score": es_mean["es_model"], "crps": es_mean["crps_model"],
        "trivial": {kind: {"sigma_rule": ("d/√6" if kind == "tethered" else "d/√3") + ", d = the data's RMS step",
                           "energy_score": es_mean[f"es_{kind}"], "crps": es_mean[f"crps_{kind}"]}
                    for kind in TRIVIAL},
        "best_trivial": [TRIVIAL[b] for b in best],
        "energy_score_skill": es_skill, "energy_score_skill_lo": es_lo, "energy_score_skill_hi": es_hi,
        "rmse": np.sqrt(es_mean["sqerr"]),
    }
    if r_model > 1:
        ratio = fm.spread_skill_ratio(es["variance"], es["sqerr"], r_model, axis=0)
        corr = (r_model + 1) / r_model
        lo, hi = fm.bootstrap_ci(lambda v, e: np.sqrt(corr * v.mean(1) / e.mean(1)), es["variance"], es["sqerr"],
                                 **boot)
        ensemble.update(spread=np.sqrt(es_mean["variance"]), spread_skill=ratio, spread_skill_lo=lo,
                        spread_skill_hi=hi)
    else:
        ensemble.update(spread=None, spread_skill=None, spread_skill_lo=None, spread_skill_hi=None)

    distributions = _distributions(dist_model, dist_ref, refs, steps, bins)
    if rmsf_cmp:
        cmp = [fm.profile_comparison(a, b) for a, b in rmsf_cmp]
        distributions["rmsf"] = {
            "model_mean": float(np.mean([a.mean() for a, _ in rmsf_cmp])),
            "reference_mean": float(np.mean([b.mean() for _, b in rmsf_cmp])),
            "rms_difference": float(np.mean([c["rms_difference"] for c in cmp])),
            "correlation": float(np.nanmean([c["correlation"] for c in cmp])) if any(
                np.isfinite(c["correlation"]) for c in cmp) else None,
            "starts": len(rmsf_cmp),
            "note": "per start over frames 1…K (and replicas), each superposed onto the start frame",
        }

    labels = {"model": surrogate.name}
    if baseline is not None:
        labels["baseline"] = f"{baseline.name} (baseline)"
    result = {
        "model": surrogate.name, "run": None if surrogate.path is None else str(surrogate.path),
        "labels": {**labels, "stay_still": "stay still", "constant_velocity": "constant velocity",
                   "drift": f"drift (last {history} frames)"},
        "baseline_run": None if baseline is None or baseline.path is None else str(baseline.path),
        "source": source, "steps": steps, "starts": len(fstarts), "replicas": r_model,
        "stochastic": bool(surrogate.stochastic), "seed": int(seed),
        "delta_time": surrogate.delta_time, "units": surrogate.units,
        "horizons": np.arange(1, steps + 1), "times": surrogate.delta_time * np.arange(1, steps + 1),
        "bootstrap": {**boot, "method": "percentile, starts resampled with replacement"},
        "envelope": {"quantiles": list(quantiles),
                     "rule": "left at the first step whose local-edge RMS deviation exceeds the data's upper "
                             "quantile, or whose Rg or RMS step size leaves the data's quantile range"},
        "methods": methods, "reference": reference, "skill": skill, "first_exit": first_exit,
        "ensemble": ensemble, "distributions": distributions,
        "energy": ({"model_abs_drift": np.mean(energy_m, 0), "reference_abs_drift": np.mean(energy_r, 0),
                    "note": "mean |E_k − E_0| (unit masses, Coulomb k from the generator); the stored velocity lags "
                            "half a step, so the reference drifts too"} if energy_m else None),
        "data": _data_summary(refs, quantiles),
        "stopped": stopped, "guard": guard if isinstance(guard, str) or guard is None else "custom",
        "notes": notes,
        "per_start": {"labels": [fs.label for fs in fstarts],
                      "rmsd": {m: stack[m]["rmsd"] for m in names}},
    }
    return jsonable(result)


def _distributions(dist_model, dist_ref, refs, steps: int, bins: int) -> dict:
    """Per-horizon and pooled distribution distances between the model's frames and the reference / the data."""
    data_rg = np.concatenate([r.rg for r in refs])
    data_bond = np.concatenate([fm.edge_lengths(r.frames, r.edges).ravel() for r in refs])
    has_bonds = data_bond.size > 0
    brange = (float(data_bond.min()), float(data_bond.max())) if has_bonds else None
    w_rg, w_bond, js_bond = [], [], []
    for k in range(steps):
        m_rg = np.concatenate([a[:, k] for a in dist_model["rg"]])
        r_rg = np.array([a[k] for a in dist_ref["rg"]])
        w_rg.append(fm.wasserstein_1d(m_rg, r_rg))
        if has_bonds:
            m_b = np.concatenate([a[:, k].ravel() for a in dist_model["bond"]])
            r_b = np.concatenate([a[k].ravel() for a in dist_ref["bond"]])
            w_bond.append(fm.wasserstein_1d(m_b, r_b))
            js_bond.append(fm.histogram_js(m_b, r_b, bins=bins, value_range=brange))
    pooled_m_rg = np.concatenate([a.ravel() for a in dist_model["rg"]])
    pooled_r_rg = np.concatenate([a.ravel() for a in dist_ref["rg"]])
    out = {"w1_rg": w_rg, "w1_bond": w_bond if has_bonds else None, "js_bond": js_bond if has_bonds else None,
           "js_bins": bins,
           "pooled": {"w1_rg_model_data": fm.wasserstein_1d(pooled_m_rg, data_rg),
                      "w1_rg_reference_data": fm.wasserstein_1d(pooled_r_rg, data_rg)}}
    if has_bonds:
        pm = np.concatenate([a.ravel() for a in dist_model["bond"]])
        pr = np.concatenate([a.ravel() for a in dist_ref["bond"]])
        out["pooled"].update(w1_bond_model_data=fm.wasserstein_1d(pm, data_bond),
                             w1_bond_reference_data=fm.wasserstein_1d(pr, data_bond),
                             js_bond_model_data=fm.histogram_js(pm, data_bond, bins=bins, value_range=brange),
                             js_bond_reference_data=fm.histogram_js(pr, data_bond, bins=bins, value_range=brange))
    return out


def _data_summary(refs: list[ReferenceData], quantiles) -> dict:
    """The data-side statistics pooled over the groups (ranges: the envelope's bounds, widest over groups)."""
    bond_dev = np.concatenate([r.bond_dev for r in refs if len(r.edges)]) if any(len(r.edges) for r in refs) \
        else np.zeros(0)
    step = np.concatenate([r.step for r in refs])
    rg = np.concatenate([r.rg for r in refs])

    def bounds(envs):
        lo = [e.lo for e in envs if e.lo is not None]
        hi = [e.hi for e in envs if e.hi is not None]
        return [min(lo) if lo else None, max(hi) if hi else None]

    return {
        "groups": len(refs), "frames": int(sum(len(r.frames) for r in refs)),
        "edges": int(sum(len(r.edges) for r in refs)),
        "bond_spread": float(np.sqrt(np.mean(bond_dev ** 2))) if bond_dev.size else None,
        "bond_dev_envelope": bounds([r.env_bond for r in refs if len(r.edges)]),
        "rg_mean": float(rg.mean()), "rg_envelope": bounds([r.env_rg for r in refs]),
        "step_rms": float(np.sqrt(np.mean(step ** 2))) if step.size else None,
        "step_mean": float(step.mean()) if step.size else None,
        "step_envelope": bounds([r.env_step for r in refs]),
        "quantiles": list(quantiles),
    }


def jsonable(obj):
    """Numpy arrays and scalars → lists and floats, NaN and ±inf → None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj
