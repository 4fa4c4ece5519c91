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
