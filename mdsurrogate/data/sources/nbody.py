"""Charged N-body simulator of the EGNN paper (Satorras et al., ICML 2021), vectorised across simulations.

This reproduces the data-generation protocol of the official ``nbody_small`` dataset (see
``docs/protocols.md`` §1.1-1.2): ``n`` unit-mass particles in free 3-D space with charges ``q_i = ±1`` interacting
through a Coulomb-like pair force

    F_i = sum_{j != i} k q_i q_j (x_i - x_j) / |x_i - x_j|^3        (like charges repel),

where every Cartesian component of ``F_i`` is clipped to ``[-max_force, +max_force]``. The equations of motion
are integrated with symplectic Euler (one full kick before the loop, then drift / store / kick each step); the
state after step ``sample_every * (k + 1)`` is stored as frame ``k`` (the initial state is never stored).

Everything is dimensionless: unit masses, unit charges, Coulomb constant ``interaction_strength = 1``, lengths
in units of the initial position spread (``loc_std = (n / 5)^(1/3)``, 1 for n = 5), and time in the resulting
natural unit (``dt = 1e-3``, so the dataset's gap of 1000 steps is 1.0 time unit).

Details reproduced from the official generator:

* the squared pair distance is evaluated as ``(|x_i|^2 + |x_j|^2) - 2 x_i . x_j`` (slightly imprecise for
  close pairs) and raised to the power ``3/2``;
* random numbers come from one legacy ``np.random.RandomState`` stream, drawn simulation by simulation with
  the same calls in the same order (charges, positions, velocities, then two unused observation-noise arrays);
* an initial reflection at the walls of a box of half-width 5 (practically never active); no walls afterwards.

Floating-point note: the official code computes the dot products ``x_i . x_j`` with a BLAS matrix product,
whose rounding (FMA use, summation order) depends on the BLAS build; here they are summed explicitly over the
three components. Results therefore agree with the official files to rounding only, and - the dynamics being
chaotic during close encounters - individual trajectories may drift apart from them late in the run, exactly
as the official generator does across machines.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CHARGE_PROBS",
    "CHARGE_VALUES",
    "NBodyInitialConditions",
    "NBodyTrajectories",
    "draw_initial_conditions",
    "generate_nbody_splits",
    "simulate_charged_nbody",
    "total_energy",
]

#: Charge values and their probabilities in the official generator (0 is listed but never drawn).
CHARGE_VALUES = np.array([-1.0, 0.0, 1.0])
CHARGE_PROBS = (0.5, 0.0, 0.5)

#: Half-width of the official (initial-state-only) reflecting box.
DEFAULT_BOX_SIZE = 5.0

# Largest number of simulations integrated together by one worker. Each NumPy call of a step then works on
# ~1e5 contiguous numbers, which amortises the Python overhead per call and keeps the threads mostly outside
# the GIL; the per-chunk working set stays ~10 MB.
_DEFAULT_CHUNK = 4096


@dataclass
class NBodyInitialConditions:
    """Initial states of ``S`` independent charged N-body systems (dimensionless units).

    Attributes:
        positions: ``[S, N, 3]`` float64 initial positions.
        velocities: ``[S, N, 3]`` float64 initial velocities (speed ``vel_norm`` per particle when drawn by
            :func:`draw_initial_conditions`).
        charges: ``[S, N]`` float64 charges, each ``+1`` or ``-1``.
    """

    positions: np.ndarray
    velocities: np.ndarray
    charges: np.ndarray

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64)
        self.velocities = np.asarray(self.velocities, dtype=np.float64)
        self.charges = np.asarray(self.charges, dtype=np.float64)
        if self.positions.ndim != 3 or self.positions.shape[-1] != 3:
            raise ValueError(f"positions must be [S, N, 3], got {self.positions.shape}")
        if self.velocities.shape != self.positions.shape:
            raise ValueError(f"velocities {self.velocities.shape} != positions {self.positions.shape}")
        if self.charges.shape != self.positions.shape[:2]:
            raise ValueError(f"charges must be [S, N] = {self.positions.shape[:2]}, got {self.charges.shape}")

    @property
    def n_sims(self) -> int:
        return self.positions.shape[0]

    @property
    def n_particles(self) -> int:
        return self.positions.shape[1]

    def __len__(self) -> int:
        return self.n_sims

    def subset(self, index: slice | np.ndarray) -> NBodyInitialConditions:
        """Initial conditions of the simulations selected by ``index`` (a slice or an index array)."""
        return NBodyInitialConditions(self.positions[index], self.velocities[index], self.charges[index])

    @staticmethod
    def concatenate(parts: list[NBodyInitialConditions]) -> NBodyInitialConditions:
        """Stack several sets of initial conditions (same ``N``) along the simulation axis."""
        return NBodyInitialConditions(
            np.concatenate([p.positions for p in parts]),
            np.concatenate([p.velocities for p in parts]),
            np.concatenate([p.charges for p in parts]),
        )


@dataclass
class NBodyTrajectories:
    """Stored frames of ``S`` charged N-body simulations (dimensionless units).

    Attributes:
        positions: ``[S, F, N, 3]`` float64 positions at the stored frames.
        velocities: ``[S, F, N, 3]`` float64 stored velocities: the drift velocity that moved the particles
            from step ``i - 1`` to the stored step ``i`` (the simulator's velocity, not a finite difference).
        charges: ``[S, N]`` float64 charges, each ``+1`` or ``-1``.
        frame_steps: ``[F]`` int simulation step of each stored frame, ``sample_every * (k + 1)``.
        dt: integrator time step; the time of frame ``k`` is ``frame_steps[k] * dt``.
        max_abs_force: optional ``[S]`` float64, the largest unclipped force component seen in any force
            evaluation that influenced the stored frames; the clip was active in simulation ``s`` iff
            ``max_abs_force[s] > max_force``.
    """

    positions: np.ndarray
    velocities: np.ndarray
    charges: np.ndarray
    frame_steps: np.ndarray
    dt: float
    max_abs_force: np.ndarray | None = None

    @property
    def n_sims(self) -> int:
        return self.positions.shape[0]

    @property
    def n_frames(self) -> int:
        return self.positions.shape[1]

    @property
    def n_particles(self) -> int:
        return self.positions.shape[2]

    @property
    def times(self) -> np.ndarray:
        """``[F]`` simulated time of each stored frame (``frame_steps * dt``)."""
        return self.frame_steps * self.dt

    def __len__(self) -> int:
        return self.n_sims

    def subset(self, index: slice | np.ndarray) -> NBodyTrajectories:
        """Trajectories of the simulations selected by ``index`` (a slice or an index array)."""
        return NBodyTrajectories(
            positions=self.positions[index],
            velocities=self.velocities[index],
            charges=self.charges[index],
            frame_steps=self.frame_steps,
            dt=self.dt,
            max_abs_force=None if self.max_abs_force is None else self.max_abs_force[index],
        )


# ----------------------------------------------------------------------------------------------------------
# Initial conditions (legacy RNG stream, simulation by simulation)
# ----------------------------------------------------------------------------------------------------------


def _reflect_into_box(loc: np.ndarray, vel: np.ndarray, box_size: float) -> None:
    """Official wall reflection, in place, on one ``[3, n]`` state: mirror coordinates beyond ``±box_size``
    back inside and point the corresponding velocity component inwards."""
    over = loc > box_size
    loc[over] = 2.0 * box_size - loc[over]
    vel[over] = -np.abs(vel[over])
    under = loc < -box_size
    loc[under] = -2.0 * box_size - loc[under]
    vel[under] = np.abs(vel[under])


def draw_initial_conditions(
    rng: np.random.RandomState,
    n_sims: int,
    n_particles: int = 5,
    vel_norm: float = 0.5,
    n_frames_noise: int = 49,
    *,
    loc_std: float = 1.0,
    box_size: float | None = DEFAULT_BOX_SIZE,
) -> NBodyInitialConditions:
    """Draw ``n_sims`` initial states, consuming ``rng`` exactly as the official generator does.

    Per simulation, in order: charges (``rng.choice`` over ``[-1, 0, +1]`` with ``p = [.5, 0, .5]``, i.e.
    ``n_particles`` uniform draws), positions ``rng.randn(3, n) * loc_std * (n / 5)^(1/3)``, velocities
    ``rng.randn(3, n)`` rescaled to speed ``vel_norm`` per particle, then the two unused observation-noise
    arrays ``rng.randn(n_frames_noise, 3, n)`` (the official noise variance is 0, but the draws still advance
    the stream; ``n_frames_noise`` must equal the number of stored frames of the run being reproduced).
    Positions outside ``±box_size`` are reflected once (official initial clamp; ``None`` disables it).

    Args:
        rng: legacy NumPy random state, advanced in place.
        n_sims: number of simulations ``S``.
        n_particles: particles per system ``N``.
        vel_norm: initial speed of every particle (dimensionless).
        n_frames_noise: first dimension of the two dummy noise arrays.
        loc_std: base spread of the initial positions (scaled by ``(N / 5)^(1/3)``).
        box_size: half-width of the initial reflecting box, or ``None``.

    Returns:
        :class:`NBodyInitialConditions` with positions/velocities ``[S, N, 3]`` and charges ``[S, N]``.
    """
    n = int(n_particles)
    spread = loc_std * (float(n) / 5.0) ** (1.0 / 3.0)
    positions = np.empty((n_sims, n, 3))
    velocities = np.empty((n_sims, n, 3))
    charges = np.empty((n_sims, n))
    for s in range(n_sims):
        q = rng.choice(CHARGE_VALUES, size=(n, 1), p=CHARGE_PROBS)
        loc = rng.randn(3, n) * spread
        vel = rng.randn(3, n)
        speed = np.sqrt((vel**2).sum(axis=0)).reshape(1, -1)
        vel = vel * vel_norm / speed
        if box_size is not None:
            _reflect_into_box(loc, vel, box_size)
        # observation noise on positions, then on velocities: variance 0, but the draws advance the stream
        rng.randn(n_frames_noise, 3, n)
        rng.randn(n_frames_noise, 3, n)
        positions[s] = loc.T
        velocities[s] = vel.T
        charges[s] = q[:, 0]
    return NBodyInitialConditions(positions, velocities, charges)


# ----------------------------------------------------------------------------------------------------------
# Integrator
# ----------------------------------------------------------------------------------------------------------


class _ForceKernel:
    """Clipped Coulomb forces for a chunk of ``C`` systems in the internal layout (simulations last, so that
    every NumPy call works on long contiguous rows), with preallocated buffers.

    Internal shapes: positions/velocities/forces ``[3, n, C]``, pair quantities ``[n, n, C]`` or
    ``[3, n, n, C]`` with pair index ``[i, j]`` meaning "force on i due to j".
    """

    def __init__(self, charges_nc: np.ndarray, interaction_strength: float, max_force: float) -> None:
        n, c = charges_nc.shape
        self.max_force = float(max_force)
        # k * q_i * q_j, with a zero diagonal (the official code zeroes the self-interaction after dividing).
        kqq = interaction_strength * (charges_nc[:, None, :] * charges_nc[None, :, :])
        kqq[np.arange(n), np.arange(n)] = 0.0
        self.kqq = kqq
        self.diag = np.arange(n)
        self.diff = np.empty((3, n, n, c))  # x_i - x_j, later the pair force terms
        self.prod = np.empty((3, n, n, c))  # x_i * x_j per component
        self.pair = np.empty((n, n, c))  # squared distance -> |r|^3 -> force size
        self.dot = np.empty((n, n, c))
        self.sq = np.empty((3, n, c))
        self.norm2 = np.empty((n, c))
        self.force = np.empty((3, n, c))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Forces ``[3, n, C]`` (clipped per component) at positions ``x`` ``[3, n, C]``; the returned buffer
        is overwritten by the next call. ``self.max_abs`` holds the per-system max unclipped |component|."""
        d, p, pair, dot = self.diff, self.prod, self.pair, self.dot
        xi, xj = x[:, :, None, :], x[:, None, :, :]
        np.subtract(xi, xj, out=d)
        # squared distances as in the official code, (|x_i|^2 + |x_j|^2) - 2 x_i . x_j, components in order
        np.multiply(xi, xj, out=p)
        np.add(p[0], p[1], out=dot)
        np.add(dot, p[2], out=dot)
        np.multiply(x, x, out=self.sq)
        np.add(self.sq[0], self.sq[1], out=self.norm2)
        np.add(self.norm2, self.sq[2], out=self.norm2)
        np.add(self.norm2[:, None, :], self.norm2[None, :, :], out=pair)
        np.multiply(dot, 2.0, out=dot)
        np.subtract(pair, dot, out=pair)
        pair[self.diag, self.diag] = 1.0  # self pairs: any finite value, their coefficient is 0
        np.power(pair, 1.5, out=pair)
        np.divide(self.kqq, pair, out=pair)  # force size up to the unnormalised r_ij
        np.multiply(d, pair[None], out=d)
        np.add.reduce(d, axis=2, out=self.force)  # sum over j = 0 .. n-1 in order
        f = self.force
        self.max_abs = np.abs(f).max(axis=(0, 1))
        np.clip(f, -self.max_force, self.max_force, out=f)
        return f


def _integrate_chunk(
    pos0: np.ndarray,
    vel0: np.ndarray,
    charges: np.ndarray,
    out_pos: np.ndarray,
    out_vel: np.ndarray,
    out_max_force: np.ndarray,
    n_frames: int,
    sample_every: int,
    dt: float,
    interaction_strength: float,
    max_force: float,
) -> None:
    """Integrate one chunk; inputs ``[C, n, 3]`` / ``[C, n]``, outputs written into ``out_*`` views
    ``[C, F, n, 3]`` and ``[C]``."""
    x = np.ascontiguousarray(pos0.transpose(2, 1, 0))  # [3, n, C]
    v = np.ascontiguousarray(vel0.transpose(2, 1, 0))
    forces = _ForceKernel(np.ascontiguousarray(charges.T), interaction_strength, max_force)
    step_buf = np.empty_like(x)
    max_seen = np.zeros(x.shape[2])

    def kick() -> None:
        f = forces(x)
        np.maximum(max_seen, forces.max_abs, out=max_seen)
        np.multiply(f, dt, out=step_buf)
        np.add(v, step_buf, out=v)

    kick()  # official "half step": a full kick from the initial state
    last_step = n_frames * sample_every  # later steps cannot influence any stored frame
    frame = 0
    for i in range(1, last_step + 1):
        np.multiply(v, dt, out=step_buf)
        np.add(x, step_buf, out=x)
        if i % sample_every == 0:
            out_pos[:, frame] = x.transpose(2, 1, 0)
            out_vel[:, frame] = v.transpose(2, 1, 0)
            frame += 1
            if i == last_step:
                break
        kick()
    out_max_force[:] = max_seen


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def simulate_charged_nbody(
    initial: NBodyInitialConditions,
    *,
    n_steps: int = 5000,
    sample_every: int = 100,
    dt: float = 1e-3,
    interaction_strength: float = 1.0,
    max_force: float = 100.0,
    chunk_size: int | None = None,
    n_workers: int | None = None,
) -> NBodyTrajectories:
    """Integrate all ``S`` systems of ``initial`` together and return the stored frames.

    Symplectic Euler exactly as the official generator: ``v += dt F(x0)`` once, then for steps
    ``i = 1 .. n_steps - 1``: ``x += dt v``; store ``(x, v)`` when ``i % sample_every == 0``;
    ``v += dt F(x)``. Stored frame ``k`` is step ``sample_every * (k + 1)``; there are
    ``F = n_steps // sample_every - 1`` frames (the initial state is not stored). Forces are clipped per
    Cartesian component to ``±max_force``. Steps after the last stored frame cannot affect the output and are
    skipped. Units are dimensionless (unit masses).

    Systems are independent; they are integrated in chunks of at most ``chunk_size`` (default 4096) spread
    over ``n_workers`` threads (default: the CPUs available to this process). Results do not depend on either.

    Args:
        initial: initial conditions, positions/velocities ``[S, N, 3]``, charges ``[S, N]``.
        n_steps: number of integration steps ``T`` (must be a multiple of ``sample_every``).
        sample_every: sampling period in steps.
        dt: time step.
        interaction_strength: Coulomb constant ``k``.
        max_force: per-component force clip.
        chunk_size: systems per vectorised chunk.
        n_workers: number of threads.

    Returns:
        :class:`NBodyTrajectories` with positions/velocities ``[S, F, N, 3]``.
    """
    if n_steps % sample_every != 0:
        raise ValueError(f"n_steps ({n_steps}) must be a multiple of sample_every ({sample_every})")
    n_frames = n_steps // sample_every - 1
    if n_frames < 1:
        raise ValueError("n_steps must be at least 2 * sample_every (no frame would be stored)")
    s, n = initial.n_sims, initial.n_particles
    positions = np.empty((s, n_frames, n, 3))
    velocities = np.empty((s, n_frames, n, 3))
    max_abs_force = np.empty(s)
    frame_steps = sample_every * np.arange(1, n_frames + 1)

    chunk = int(chunk_size or _DEFAULT_CHUNK)
    workers = int(n_workers or _default_workers())
    if s > 0:
        # Equal chunks, a multiple of the number of workers, none larger than `chunk`.
        n_chunks = min(s, workers * -(-s // (workers * chunk)))
        bounds = np.linspace(0, s, n_chunks + 1).round().astype(int)
        jobs = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]

        def run(job: tuple[int, int]) -> None:
            a, b = job
            _integrate_chunk(
                initial.positions[a:b], initial.velocities[a:b], initial.charges[a:b],
                positions[a:b], velocities[a:b], max_abs_force[a:b],
                n_frames, sample_every, dt, interaction_strength, max_force,
            )  # fmt: skip

        if workers == 1 or len(jobs) == 1:
            for job in jobs:
                run(job)
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                list(pool.map(run, jobs))  # NumPy releases the GIL inside its loops

    return NBodyTrajectories(
        positions=positions,
        velocities=velocities,
        charges=initial.charges.copy(),
        frame_steps=frame_steps,
        dt=float(dt),
        max_abs_force=max_abs_force,
    )


# ----------------------------------------------------------------------------------------------------------
# Dataset splits
# ----------------------------------------------------------------------------------------------------------


def generate_nbody_splits(
    n_train: int = 3000,
    n_val: int = 2000,
    n_test: int = 2000,
    *,
    seed: int = 43,
    stream_train: int = 10000,
    n_steps: int = 5000,
    sample_every: int = 100,
    n_particles: int = 5,
    split_steps: dict[str, int] | None = None,
) -> dict[str, NBodyTrajectories]:
    """Generate the ``nbody_small`` train/val/test trajectories from one seeded legacy RNG stream.

    The stream is consumed as by the official generation run (seed 43, 10 000 train, 2 000 valid, 2 000 test):
    initial conditions of ``stream_train`` training simulations (only the first ``n_train`` are simulated, the
    official loader keeps only those; the rest are drawn to keep the stream identical), then ``n_val``
    validation, then ``n_test`` test simulations. If ``n_train > stream_train``, ``stream_train = n_train``.
    At fixed ``stream_train`` the validation and test data therefore do not depend on ``n_train``. The number
    of stored frames (``n_steps // sample_every - 1``) sizes the official dummy noise draws, so it changes the
    stream too. ``split_steps`` integrates some splits longer (e.g. ``{"test": 23200}``) without touching the
    stream: the same systems, continued (their first frames are bit for bit the same).

    Returns:
        ``{"train": ..., "val": ..., "test": ...}`` :class:`NBodyTrajectories`, positions ``[S, F, N, 3]``
        with ``F = n_steps // sample_every - 1`` (49 by default; frame ``k`` = step
        ``sample_every * (k + 1)``).
    """
    stream_train = max(int(stream_train), int(n_train))
    n_noise = n_steps // sample_every - 1
    rng = np.random.RandomState(seed)
    draws = {}
    for name, count in (("train", stream_train), ("val", n_val), ("test", n_test)):
        draws[name] = draw_initial_conditions(rng, count, n_particles, n_frames_noise=n_noise)
    draws["train"] = draws["train"].subset(slice(0, n_train))
    steps = {name: int((split_steps or {}).get(name, n_steps)) for name in ("train", "val", "test")}
    out = {}
    # One integration call for all splits of one length keeps every worker busy; systems are independent.
    for length in sorted(set(steps.values())):
        names = [k for k in ("train", "val", "test") if steps[k] == length]
        sizes = [len(draws[k]) for k in names]
        traj = simulate_charged_nbody(NBodyInitialConditions.concatenate([draws[k] for k in names]),
                                      n_steps=length, sample_every=sample_every)
        bounds = np.cumsum([0, *sizes])
        out.update({name: traj.subset(slice(a, b)) for name, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)})
    return {k: out[k] for k in ("train", "val", "test")}


# ----------------------------------------------------------------------------------------------------------
# Diagnostics
# ----------------------------------------------------------------------------------------------------------


def total_energy(
    positions: np.ndarray,
    velocities: np.ndarray,
    charges: np.ndarray,
    interaction_strength: float = 1.0,
) -> np.ndarray:
    """Total energy ``sum_i |v_i|^2 / 2 + sum_{i<j} k q_i q_j / |x_i - x_j|`` (unit masses, dimensionless).

    Args:
        positions: ``[..., N, 3]``.
        velocities: ``[..., N, 3]``.
        charges: ``[..., N]`` or a prefix of the leading dimensions, e.g. ``[S, N]`` with positions
            ``[S, F, N, 3]``: missing middle dimensions are inserted (leading dimensions align from the left).
        interaction_strength: Coulomb constant ``k``.

    Returns:
        ``[...]`` energies. With the official integrator the stored velocity lags the position by half a step;
        ``velocities + dt/2 * F(positions)`` gives the velocity-Verlet estimate, conserved to ``O(dt^2)``.
    """
    x = np.asarray(positions, dtype=np.float64)
    v = np.asarray(velocities, dtype=np.float64)
    q = np.asarray(charges, dtype=np.float64)
    lead = x.ndim - 2
    if q.ndim - 1 < lead:
        q = q.reshape(q.shape[:-1] + (1,) * (lead - (q.ndim - 1)) + q.shape[-1:])
    kinetic = 0.5 * (v * v).sum(axis=(-1, -2))
    n = x.shape[-2]
    i, j = np.triu_indices(n, k=1)
    r = np.sqrt(((x[..., i, :] - x[..., j, :]) ** 2).sum(axis=-1))
    potential = (interaction_strength * q[..., i] * q[..., j] / r).sum(axis=-1)
    return kinetic + potential
