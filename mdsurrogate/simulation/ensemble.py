"""Ensembles of rollouts: R replicas of one start advanced together, as R copies of its graph in one Chain.

Every step is one model call on the R copies (``BatchTopology.repeat``), so a stochastic propagator samples R
different trajectories from one random stream (the chain's seed fixes all of them), and a deterministic one gives
R identical copies of the trajectory it gives alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError


@dataclass
class EnsembleResult:
    """positions, velocities: [R, steps_done + 1, N, 3] (frame 0 = the start; the start's units); times:
    [steps_done + 1] (dataset time unit); stopped: the guard's sentence or None."""

    positions: np.ndarray
    velocities: np.ndarray
    times: np.ndarray
    stopped: str | None = None

    @property
    def steps_done(self) -> int:
        return len(self.times) - 1

    @property
    def replicas(self) -> int:
        return self.positions.shape[0]


def ensemble_rollout(surrogate, start, steps: int, replicas: int, seed: int | None = None, *,
                     guard="default") -> EnsembleResult:
    """Roll ``replicas`` copies of ``start`` out for ``steps`` steps in one chain (one model call per step).

    Args:
        surrogate: a :class:`~mdsurrogate.simulation.surrogate.Surrogate` (deterministic or stochastic).
        start: an :class:`~mdsurrogate.simulation.initial_state.InitialState` of one or more systems.
        replicas: R ≥ 1.
        seed: seed of the chain's random stream (stochastic propagators).
        guard: "default" (the checkpoint's limits), a StabilityGuard, or None. The guard sees the R copies as one
            batch: a replica it refuses stops them all, and the result keeps the frames before.
    """
    if int(replicas) < 1:
        raise UserError(f"replicas must be ≥ 1, not {replicas}")
    if int(steps) < 0:
        raise UserError(f"steps must be ≥ 0, not {steps}")
    r, n = int(replicas), start.x0.shape[0]
    chain = surrogate.chain(start.x0.repeat(r, 1), start.v0.repeat(r, 1), start.topo.repeat(r), guard=guard,
                            seed=seed)
    xs, vs = [chain.x.cpu().numpy()], [chain.v.cpu().numpy()]
    stopped = None
    for k in range(1, int(steps) + 1):
        step = chain.advance()
        if step.stopped:
            stopped = f"rollout stopped before step {k}: {step.stopped}"
            break
        xs.append(chain.x.cpu().numpy())
        vs.append(chain.v.cpu().numpy())
    pos = np.stack(xs).reshape(len(xs), r, n, 3).swapaxes(0, 1)
    vel = np.stack(vs).reshape(len(vs), r, n, 3).swapaxes(0, 1)
    times = float(getattr(start, "t0", 0.0)) + surrogate.delta_time * np.arange(len(xs))
    return EnsembleResult(np.ascontiguousarray(pos), np.ascontiguousarray(vel), times, stopped)


def replica_paths(path, replicas: int) -> list:
    """``run.dcd`` → ``run_r00.dcd`` … ``run_r{R-1}.dcd`` (one file per replica, the format unchanged)."""
    from pathlib import Path

    path = Path(path)
    width = max(2, len(str(int(replicas) - 1)))
    return [path.with_name(f"{path.stem}_r{r:0{width}d}{path.suffix}") for r in range(int(replicas))]


def ensemble_to_files(surrogate, start, steps: int, replicas: int, path, *, seed: int | None = None,
                      guard="default", overwrite: bool = False) -> tuple[EnsembleResult, list]:
    """:func:`ensemble_rollout` (R replicas in one model call per step), then one trajectory file per replica
    (:func:`replica_paths`), each written as :func:`~mdsurrogate.simulation.rollout.rollout_to_file` writes one.
    Existing files are replaced only with ``overwrite`` (checked before any step). Returns (result, paths)."""
    from .rollout import open_frame_writer, write_frame

    paths = replica_paths(path, replicas)
    if not overwrite:
        taken = [p for p in paths if p.exists()]
        if taken:
            raise UserError(f"{taken[0]} exists; pass `overwrite` to replace the replica files")
    res = ensemble_rollout(surrogate, start, steps, replicas, seed, guard=guard)
    for r, p in enumerate(paths):
        with open_frame_writer(surrogate, start.atoms, p, overwrite=overwrite) as writer:
            for k in range(len(res.times)):
                write_frame(writer, surrogate, res.positions[r, k], res.velocities[r, k], float(res.times[k]))
    return res, paths
