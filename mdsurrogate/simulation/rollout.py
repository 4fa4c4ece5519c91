"""Autoregressive rollout: state ──model──▶ state ──model──▶ … with the interaction graph rebuilt every step.

:class:`Chain` is the one step-and-guard loop of the package: ``rollout`` (files and arrays), the ``.mdsr``
reader (frames on demand) and ASE's ``SurrogateDynamics`` all advance a Chain, so for the same checkpoint,
start and seed they produce the same frames. Each step advances the system by the model's Δ; the stability guard
checks every new state and a stopped rollout keeps what it produced (already written when a writer streams it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..data.constraints import project_bond_lengths, project_with_contacts, restore_handedness
from ..data.topology import BatchTopology
from ..models.base import Prediction
from ..models.stochastic import unwrap
from .guard import StabilityGuard


@dataclass
class ChainState:
    """A restorable point of a chain: ``k`` steps done, state (x, v) [ΣN, 3] and the random stream's state."""

    k: int
    x: Tensor
    v: Tensor
    rng: Tensor | None = None
    noise: tuple | None = None  # the last standard noise draws of a chain with noise memory (``Chain.noise``)


@dataclass
class Step:
    """What one :meth:`Chain.advance` did: the model's ``prediction`` made from the state before the step (its
    ``extras`` describe that state, e.g. EGHN's clusters), and ``stopped`` (the guard's sentence) when the new
    state was refused; the chain then stays where it was."""

    prediction: Prediction
    stopped: str | None = None


class Chain:
    """States (x, v) of one or more systems after k model steps from (x0, v0), advanced one Δ at a time.

    Args:
        surrogate: a :class:`~mdsurrogate.simulation.surrogate.Surrogate`.
        x0, v0: [ΣN, 3] initial state (any device/dtype; moved to the surrogate's).
        topo: the static topology of the systems (``BatchTopology``; several graphs = independent systems).
        guard: a :class:`StabilityGuard`, or None (never stop).
        seed: seed of the random stream of stochastic propagators (None: a fixed default, 0).
    Attributes: ``k`` (steps done), ``x``, ``v`` (current state, on the surrogate's device and dtype).
    """

    def __init__(self, surrogate, x0: Tensor, v0: Tensor, topo: BatchTopology, *,
                 guard: StabilityGuard | None = None, seed: int | None = None):
        self.surrogate = surrogate
        self.topo = topo.to(surrogate.device)
        self.guard = guard
        self.generator = torch.Generator(device=surrogate.device)
        self.generator.manual_seed(0 if seed is None else int(seed))
        self.k = 0
        self.noise = None  # the last accepted step's standard noise draws (for the noise memory ρ)
        self._drawn = None
        self.x = x0.to(device=surrogate.device, dtype=surrogate.dtype)
        self.v = v0.to(device=surrogate.device, dtype=surrogate.dtype)
        self.bonds = surrogate.bond_reference(self.topo, self.x) if surrogate.projects else None
        self.stereo = surrogate.stereo_reference(self.topo, self.x)
        self.contacts = surrogate.contact_reference(self.topo) if self.bonds is not None else None
        reference = surrogate.bond_reference(self.topo, self.x, angles=False)
        self._guard_start = guard.start(self.x, self.topo, reference) if guard is not None else None

    def predict(self) -> Prediction:
        """The model's prediction from the current state (no step taken)."""
        return self.surrogate.predict(self.x, self.v, self.topo)

    def next_state(self, pred: Prediction) -> tuple[Tensor, Tensor]:
        """The state one Δ later: the prediction's mean, or a draw for a stochastic propagator (from this chain's
        random stream), projected onto the bond lengths when asked, with the start's handedness kept at every stereo
        centre the training data has (``Surrogate.stereo_reference``); the velocity follows the positions when the
        dataset defines it as the displacement over one step."""
        sur = self.surrogate
        x_new, v_new = pred.x, pred.v
        if sur.stochastic:
            x_new, self._drawn = unwrap(sur.model).draw(pred, self.topo.batch, self.topo.num_graphs, self.generator,
                                                        gain=sur.noise_gain, memory=sur.noise_memory,
                                                        previous=self.noise, flow_steps=sur.flow_steps)
        if self.contacts is not None:
            floor, excluded = self.contacts
            x_new, _ = project_with_contacts(x_new, *self.bonds, floor=floor, batch=self.topo.batch,
                                             excluded=excluded)
        elif self.bonds is not None:
            x_new, _ = project_bond_lengths(x_new, *self.bonds, tol=1e-5)
        if self.stereo is not None:
            x_new, _ = restore_handedness(x_new, *self.stereo)
        if sur.velocity_from_positions:
            v_new = (x_new - self.x) / float(sur.dataset.delta_frames)
        return x_new, v_new

    def advance(self) -> Step:
        """One Δ: predict, draw the next state, check it, and move to it unless the guard refuses it."""
        pred = self.predict()
        x_new, v_new = self.next_state(pred)
        if self.guard is not None:
            reason = self.guard.check(self._guard_start, self.x, x_new, v_new, self.topo)
            if reason:
                return Step(pred, reason)
        self.x, self.v, self.k = x_new, v_new, self.k + 1
        if self.surrogate.noise_memory:
            self.noise = self._drawn
        return Step(pred)

    def set_state(self, x: Tensor, v: Tensor) -> None:
        """Continue from another state of the same systems (e.g. after an ASE constraint moved the atoms)."""
        self.x = x.to(device=self.surrogate.device, dtype=self.surrogate.dtype)
        self.v = v.to(device=self.surrogate.device, dtype=self.surrogate.dtype)

    def snapshot(self, device="cpu") -> ChainState:
        """The current point (tensors copied to ``device``), restorable with :meth:`restore`."""
        noise = None if self.noise is None else tuple(None if t is None else t.to(device) for t in self.noise)
        return ChainState(self.k, self.x.to(device), self.v.to(device), self.generator.get_state(), noise)

    def restore(self, state: ChainState) -> None:
        self.k = state.k
        self.set_state(state.x, state.v)
        if state.rng is not None:
            self.generator.set_state(state.rng)
        self.noise = None if state.noise is None else tuple(
            None if t is None else t.to(self.surrogate.device) for t in state.noise)


@dataclass
class RolloutResult:
    """positions / velocities: [steps_done + 1, ΣN, 3] (frame 0 = initial state; only the last frame, [1, ΣN, 3],
    for ``keep=False``); times: [steps_done + 1] in the dataset's time unit; errors: [steps_done + 1] position MSE
    against the reference where one exists (else NaN); clusters: [frames kept, ΣN] hard cluster ids of
    hierarchical models; stopped: the guard's reason or None."""

    positions: np.ndarray
    velocities: np.ndarray
    times: np.ndarray
    errors: np.ndarray
    clusters: np.ndarray | None = None
    stopped: str | None = None
    extras: dict = field(default_factory=dict)

    @property
    def steps_done(self) -> int:
        return len(self.times) - 1


FrameCallback = Callable[[int, np.ndarray, np.ndarray, float, "np.ndarray | None"], None]


def rollout(surrogate, start, steps: int, *, on_frame: FrameCallback | None = None, guard="default",
            seed: int | None = None, keep: bool = True) -> RolloutResult:
    """Chain ``steps`` steps of ``surrogate`` from ``start``.

    Args:
        start: an :class:`~mdsurrogate.simulation.initial_state.InitialState` (x0, v0, topo, t0 and optionally
            ``reference(k)``, the true positions [ΣN, 3] after k steps, or None).
        on_frame: ``on_frame(k, x, v, time, clusters)`` for k = 0 … steps_done (e.g. to stream frames to a
            writer); ``clusters`` is the hard cluster assignment the model gives frame k (hierarchical models).
        guard: "default" (the checkpoint's limits), a :class:`StabilityGuard`, or None.
        seed: seed of a stochastic propagator's random stream.
        keep: keep every frame in the result (False: only the last one, for long rollouts streamed to a file).
    """
    chain = surrogate.chain(start.x0, start.v0, start.topo, guard=guard, seed=seed)
    reference = getattr(start, "reference", None)
    dt, t0 = surrogate.delta_time, float(getattr(start, "t0", 0.0))
    xs, vs, times, errs, cls = [], [], [], [], []

    def emit(k: int, x: Tensor, v: Tensor, pred: Prediction | None):
        xn, vn = x.cpu().numpy(), v.cpu().numpy()
        c = pred.extras.get("clusters") if pred is not None else None
        cn = c.cpu().numpy() if c is not None else None
        ref = reference(k) if (reference is not None and k > 0) else None
        t = t0 + k * dt
        if not keep:
            xs.clear()
            vs.clear()
            cls.clear()
        xs.append(xn)
        vs.append(vn)
        times.append(t)
        errs.append(float(((xn - ref) ** 2).mean()) if ref is not None else (0.0 if k == 0 else math.nan))
        if cn is not None:
            cls.append(cn)
        if on_frame is not None:
            on_frame(k, xn, vn, t, cn)

    stopped = None
    for k in range(1, steps + 1):
        x_prev, v_prev = chain.x, chain.v
        step = chain.advance()
        emit(k - 1, x_prev, v_prev, step.prediction)
        if step.stopped:
            stopped = f"rollout stopped before step {k}: {step.stopped}"
            break
    if not stopped:
        emit(chain.k, chain.x, chain.v, chain.predict() if surrogate.produces_clusters else None)
    clusters = np.stack(cls) if cls else None
    return RolloutResult(np.stack(xs), np.stack(vs), np.asarray(times), np.asarray(errs), clusters, stopped)


def open_frame_writer(surrogate, atoms, path, *, overwrite: bool = False):
    """A streaming writer for ``path`` (its class decides what it stores) set up for the surrogate's frames: CONECT
    records when ``atoms`` has bonds, the hard clusters of hierarchical models as B-factors."""
    from ..io.writers import open_writer

    return open_writer(path, atoms, overwrite=overwrite, conect=atoms.bonds is not None,
                       bfactors="cluster" if surrogate.produces_clusters else None)


def write_frame(writer, surrogate, x, v, t, clusters=None) -> None:
    """One frame of a rollout: velocities converted from the dataset's length per frame to length per time unit
    (Å/ps for MD), times in ps when the dataset's time unit is ps (dimensionless simulators such as N-body and
    M-complex state none: the writer's own frame numbering), clusters as a per-atom column where the format has
    one."""
    frame_dt = float(surrogate.dataset.frame_dt) or 1.0
    extra = {"cluster": clusters} if clusters is not None and writer.per_atom_columns else {}
    velocities = v / frame_dt if writer.velocities else None
    in_ps = surrogate.dataset.units.get("time") == "ps"
    writer.write(x, time_ps=t if in_ps else None, velocities=velocities, **extra)


def rollout_to_file(surrogate, start, steps: int, path, *, on_step: Callable[[int], None] | None = None,
                    guard="default", seed: int | None = None, overwrite: bool = False,
                    keep: bool = False) -> RolloutResult:
    """Roll out from ``start`` (an InitialState with ``atoms``) and stream every frame to ``path`` (``keep``: also
    return every frame, not only the last).

    The writer class the path names decides what it stores (asked, never guessed from the extension; see
    :func:`open_frame_writer` and :func:`write_frame`). ``on_step(k)`` runs after frame k is written (e.g. a
    progress bar). An existing file is replaced only with ``overwrite``; a stopped rollout keeps the frames before
    the stop in a complete file.
    """
    with open_frame_writer(surrogate, start.atoms, path, overwrite=overwrite) as writer:

        def on_frame(k, x, v, t, clusters):
            write_frame(writer, surrogate, x, v, t, clusters)
            if on_step is not None:
                on_step(k)

        return rollout(surrogate, start, steps, on_frame=on_frame, guard=guard, seed=seed, keep=keep)
