"""M-complex simulator of the EGHN paper (charged particles bound in rigid complexes).

A system is a set of ``M`` rigid complexes of distinct sizes ``s_1..s_M`` (``N = sum(s_k)`` particles, unit
masses, charges +1/-1). Every particle feels the Coulomb-like force of all other particles (including the
members of its own complex), ``F_i = sum_j q_i q_j (x_i - x_j) / |x_i - x_j|^3``, each Cartesian component
clipped to ``+-max_force``. Each complex then moves as one rigid body. All quantities are dimensionless
(k = 1, unit mass, unit charge, ``dt = 1e-3``).

The physics reproduces the data of the official generator (see ``docs/protocols.md`` section 2), *including* its
quirks:

* translational acceleration of a complex is ``mean_i(f_i) / s_k`` (an extra ``1/s_k`` versus Newton);
* the moment of inertia is the scalar ``J = sum_i |r_perp_i|^2 / 3``, ``r_perp`` taken orthogonal to the
  angular velocity *before* the update; the angular velocity is updated by ``dt * torque / J``; the member
  offsets are then rotated by the angle ``|omega| dt`` about ``omega`` (Rodrigues rotation, so every complex
  stays exactly rigid);
* initial node velocities are ``omega x r`` without the (nonzero, internally stored) centroid velocity; they
  are never stored, since stored frame ``k`` is the state after ``k * sample_every + 1`` steps;
* a whole system (including its system-type draw) is regenerated when any stored velocity *component* exceeds
  ``+max_velocity`` (only the positive side is tested).

Implementation: NumPy, vectorised over all systems of one system type (systems are the innermost, contiguous
axis; the Coulomb sum runs over particle tiles, each unordered pair computed once). Independent chunks of
systems are integrated in threads (NumPy releases the GIL inside its loops). Random numbers are drawn only in
the calling thread, so results are deterministic given the seed and independent of the thread count. The
official worker RNGs are unseeded, so bit parity with the official data is impossible and not attempted; only
the system-type draw (legacy ``RandomState`` in the parent process) is reproduced exactly:
``draw_system_types(RandomState(43), ...)`` gives the official types (e.g. N = 25, 24, 21, 27, 22 for
(M, a) = (5, 5)).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MComplexInitialState",
    "MComplexRigidState",
    "MComplexTrajectories",
    "continue_mcomplex",
    "draw_system_types",
    "generate_mcomplex_splits",
    "integrate_mcomplex",
    "mcomplex_spread",
    "rigidity_drift",
    "sample_initial_states",
    "simulate_mcomplex",
    "size_weights",
]

#: minimum distance between complex centres before a candidate centre is rejected
CENTRE_MIN_DISTANCE = 1.6
#: number of rejected centre candidates after which the last candidate is accepted anyway
CENTRE_MAX_REJECTIONS = 20
#: speed of every particle's provisional velocity, before rigidification
INITIAL_SPEED = 0.5
#: tolerance of the official post-run rigidity check (sum over a complex of |centroid-distance change|)
RIGIDITY_TOLERANCE = 1e-6

# Pair-loop tiles: [3, t, t, B] blocks of about _TILE_ELEMENTS pair-systems keep the working set in cache
# while keeping the number of NumPy calls per step low when only a few systems are integrated together.
_TILE_ELEMENTS = 16384
_TILE_MIN, _TILE_MAX = 8, 32


# -----------------------------------------------------------------------------------------------------------
# system types
# -----------------------------------------------------------------------------------------------------------
def size_weights(avg_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Support ``{2, ..., 2a-2}`` and unnormalised weights of the complex-size law (``a = avg_size``).

    ``w(s) = 2a + 1`` for ``s in {2, 3, 4}`` and ``w(s) = 2a + 4 - s`` for ``s >= 5``.
    """
    a = int(avg_size)
    sizes = np.arange(2, 2 * a - 1)
    weights = np.where(sizes <= 4, 2 * a + 1, 2 * a + 4 - sizes).astype(np.float64)
    return sizes, weights


def draw_system_types(
    rng: np.random.RandomState | np.random.Generator | int,
    n_complexes: int,
    avg_size: int,
    n_types: int,
) -> list[list[int]]:
    """Draw ``n_types`` system types, each a list of ``n_complexes`` distinct complex sizes.

    Sizes are drawn without replacement from ``{2, ..., 2a-2}`` (``a = avg_size``) with the weights of
    :func:`size_weights`. ``rng`` may be a legacy ``RandomState`` (an ``int`` is turned into one): with it
    the draw matches the official generator exactly (``RandomState(43)`` reproduces the published types). A
    ``np.random.Generator`` also works (same law, different stream).

    Raises ``ValueError`` when ``n_complexes > 2a - 3`` (fewer distinct sizes exist than complexes requested).
    """
    n_complexes, avg_size, n_types = int(n_complexes), int(avg_size), int(n_types)
    if n_complexes < 1:
        raise ValueError(f"n_complexes must be >= 1, got {n_complexes}")
    if n_types < 1:
        raise ValueError(f"n_types must be >= 1, got {n_types}")
    sizes, weights = size_weights(avg_size)
    if n_complexes > sizes.size:
        raise ValueError(
            f"M-complex system infeasible: {n_complexes} complexes of distinct sizes need n_complexes <= "
            f"2*avg_size - 3 = {2 * avg_size - 3} (sizes are drawn from {{2, ..., {2 * avg_size - 2}}}); "
            f"got n_complexes={n_complexes}, avg_size={avg_size}"
        )
    if isinstance(rng, (int, np.integer)):
        rng = np.random.RandomState(int(rng))
    p = weights / weights.sum()
    return [[int(s) for s in rng.choice(sizes, n_complexes, replace=False, p=p)] for _ in range(n_types)]


def mcomplex_spread(n_particles: int) -> float:
    """Spread sigma of the complex centres: ``(N / 5)^(1/3) + 0.5``."""
    return float((n_particles / 5.0) ** (1.0 / 3.0) + 0.5)


# -----------------------------------------------------------------------------------------------------------
# containers
# -----------------------------------------------------------------------------------------------------------
@dataclass
class MComplexTrajectories:
    """Stored trajectories of ``S`` systems (dimensionless units).

    positions:   per system ``[F, N_s, 3]`` float64; frame ``k`` is the state after ``k * sample_every + 1``
                 steps (``F = 50``, frame k after ``100 k + 1`` steps, with the defaults).
    velocities:  per system ``[F, N_s, 3]`` float64 (centroid velocity + omega x r at the stored step).
    charges:     per system ``[N_s]`` float64, +1 / -1.
    complex_id:  per system ``[N_s]`` int64, index ``0..M-1`` of the complex of each particle (complexes are
                 random particle subsets; complex ``k`` has size ``system_types[system_type[s]][k]``).
    system_type: ``[S]`` int64, which of the ``J`` system types each system is.
    dt:          integration time step (the time between stored frames is ``sample_every * dt``).
    n_rejected:  number of simulated candidates thrown away by the velocity test (bookkeeping only).
    final_state: per system the integrator's complete state at its last stored frame (a
                 :class:`MComplexRigidState` of one system), from which :func:`continue_mcomplex` continues it;
                 ``None`` when not kept.
    """

    positions: list[np.ndarray]
    velocities: list[np.ndarray]
    charges: list[np.ndarray]
    complex_id: list[np.ndarray]
    system_type: np.ndarray
    dt: float
    n_rejected: int = 0
    final_state: list[MComplexRigidState] | None = None

    def __len__(self) -> int:
        return len(self.positions)


@dataclass
class MComplexInitialState:
    """Initial conditions of ``B`` systems of one system type (``N`` particles, ``M`` complexes).

    sizes:             the type's complex sizes ``(s_1, ..., s_M)``.
    positions:         ``[B, N, 3]`` particle positions.
    velocities:        ``[B, N, 3]`` initial node velocities ``omega x r`` (the quirk: *without* the centroid
                       velocity). They do not enter the dynamics.
    charges:           ``[B, N]`` +1 / -1.
    complex_id:        ``[B, N]`` complex index of each particle.
    centroid_velocity: ``[B, M, 3]`` internal translational velocity of each complex.
    angular_velocity:  ``[B, M, 3]`` internal angular velocity of each complex.

    The centroid of complex k is the mean position of its members.
    """

    sizes: tuple[int, ...]
    positions: np.ndarray
    velocities: np.ndarray
    charges: np.ndarray
    complex_id: np.ndarray
    centroid_velocity: np.ndarray
    angular_velocity: np.ndarray

    def __len__(self) -> int:
        return int(self.positions.shape[0])


@dataclass
class MComplexRigidState:
    """The integrator's complete state of ``B`` systems of one type after some step: what continuing them needs.

    sizes:             the type's complex sizes ``(s_1, ..., s_M)``.
    centroids:         ``[B, M, 3]`` complex centroids ``x_c``.
    centroid_velocity: ``[B, M, 3]`` translational velocity of each complex.
    angular_velocity:  ``[B, M, 3]`` angular velocity of each complex.
    offsets:           ``[B, N, 3]`` particle offsets ``r`` from their complex centroid (particle order).
    charges:           ``[B, N]`` +1 / -1.
    complex_id:        ``[B, N]`` complex index of each particle.
    tile:              edge of the particle tiles of the batch that integrated these systems (it fixes the
                       summation order of the forces, so continuing with the same tile repeats the arithmetic of
                       one longer integration).

    Positions are ``centroids[complex_id] + offsets`` and node velocities ``centroid_velocity + angular_velocity x
    offsets`` (dimensionless units). The stored frames alone do not give this state bit for bit (``x_c`` and ``r``
    are rounded into their sum, ``omega`` is recovered from ``omega x r`` only to rounding), and this system is
    chaotic enough (clipped close encounters) to turn a 1e-15 difference into O(1) within tens of frames.
    """

    sizes: tuple[int, ...]
    centroids: np.ndarray
    centroid_velocity: np.ndarray
    angular_velocity: np.ndarray
    offsets: np.ndarray
    charges: np.ndarray
    complex_id: np.ndarray
    tile: int

    _BATCHED = ("centroids", "centroid_velocity", "angular_velocity", "offsets", "charges", "complex_id")

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def positions(self) -> np.ndarray:
        """``[B, N, 3]`` particle positions."""
        return np.take_along_axis(self.centroids, self.complex_id[..., None], axis=1) + self.offsets

    def select(self, index) -> MComplexRigidState:
        """The systems ``index`` (an int array, a slice or a boolean mask over the ``B`` systems)."""
        return MComplexRigidState(self.sizes, *(getattr(self, a)[index] for a in self._BATCHED), tile=self.tile)

    @staticmethod
    def concatenate(states: list[MComplexRigidState]) -> MComplexRigidState:
        """Systems of several states of the same sizes and tile, in order, as one state."""
        if not states or len({(tuple(s.sizes), int(s.tile)) for s in states}) != 1:
            raise ValueError("concatenate needs at least one state, all of the same sizes and tile")
        return MComplexRigidState(tuple(states[0].sizes),
                                  *(np.concatenate([getattr(s, a) for s in states]) for a in
                                    MComplexRigidState._BATCHED), tile=int(states[0].tile))


# -----------------------------------------------------------------------------------------------------------
# initial conditions
# -----------------------------------------------------------------------------------------------------------
def _unit_vectors(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    g = rng.standard_normal((*shape, 3))
    return g / np.linalg.norm(g, axis=-1, keepdims=True)


def sample_initial_states(rng: np.random.Generator, sizes, n_systems: int) -> MComplexInitialState:
    """Build ``n_systems`` initial states of the system type ``sizes`` (all draws vectorised over systems).

    Per system, in the official order: charges +-1 uniformly; centres ``c_k`` uniform in ``[-sigma,
    sigma]^3``, a candidate rejected when closer than 1.6 to an earlier centre, the last candidate kept after
    20 rejections; ``r_min`` = smallest centre distance / 1.6 (1.0 when M = 1); provisional velocities of
    speed 0.5 in Gaussian directions; complex k gets ``s_k`` particles drawn uniformly without replacement
    from the unassigned ones, each placed at ``c_k + d u`` (``u`` random unit vector, ``d = (U(0,1)/2 + 0.6)
    r_min``); the complex's centroid velocity is the mean provisional velocity of its members and its angular
    velocity ``omega = mean_i r_i x (v_i - v_c) / |r_i|^2`` (``r_i`` relative to the members' centroid); node
    velocities are ``omega x r_i``. (The official provisional positions are overwritten before use; they are
    not drawn here.)
    """
    sizes = tuple(int(s) for s in sizes)
    if not sizes or min(sizes) < 2:
        raise ValueError(f"invalid complex sizes {sizes}: every complex needs at least 2 particles")
    B, M, N = int(n_systems), len(sizes), int(sum(sizes))
    sigma = mcomplex_spread(N)

    # 1. charges (particle order)
    charges = np.where(rng.random((B, N)) < 0.5, -1.0, 1.0)

    # 2. complex centres with rejection
    centres = np.empty((B, M, 3))
    for k in range(M):
        cand = rng.uniform(-sigma, sigma, (B, 3))
        if k > 0:
            todo = np.arange(B)
            for _ in range(CENTRE_MAX_REJECTIONS - 1):
                dist = np.linalg.norm(cand[todo, None, :] - centres[todo, :k, :], axis=-1).min(axis=1)
                todo = todo[dist < CENTRE_MIN_DISTANCE]
                if todo.size == 0:
                    break
                cand[todo] = rng.uniform(-sigma, sigma, (todo.size, 3))
        centres[:, k] = cand

    # 3. r_min
    if M > 1:
        iu, ju = np.triu_indices(M, 1)
        r_min = np.linalg.norm(centres[:, iu] - centres[:, ju], axis=-1).min(axis=1) / CENTRE_MIN_DISTANCE
    else:
        r_min = np.ones(B)

    # 4. provisional velocities (speed 0.5, Gaussian directions), particle order
    v_prov = INITIAL_SPEED * _unit_vectors(rng, (B, N))

    # 5. random assignment of particles to complexes: slot j of the block order holds particle order[b, j]
    order = np.argsort(rng.random((B, N)), axis=1, kind="stable")
    block_cid = np.repeat(np.arange(M), sizes)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    dist = (rng.random((B, N)) / 2.0 + 0.6) * r_min[:, None]
    x_blk = centres[:, block_cid] + dist[..., None] * _unit_vectors(rng, (B, N))
    v_blk = np.take_along_axis(v_prov, order[..., None], axis=1)
    cnt = np.asarray(sizes, dtype=np.float64)[None, :, None]
    x_c = np.add.reduceat(x_blk, starts, axis=1) / cnt
    v_c = np.add.reduceat(v_blk, starts, axis=1) / cnt
    r = x_blk - x_c[:, block_cid]
    w_i = np.cross(r, v_blk - v_c[:, block_cid]) / np.einsum("bnc,bnc->bn", r, r)[..., None]
    omega = np.add.reduceat(w_i, starts, axis=1) / cnt
    vel_blk = np.cross(omega[:, block_cid], r)  # quirk: v_c not added

    inv = np.argsort(order, axis=1)
    return MComplexInitialState(
        sizes=sizes,
        positions=np.take_along_axis(x_blk, inv[..., None], axis=1),
        velocities=np.take_along_axis(vel_blk, inv[..., None], axis=1),
        charges=charges,
        complex_id=block_cid[inv],
        centroid_velocity=v_c,
        angular_velocity=omega,
    )


# -----------------------------------------------------------------------------------------------------------
# integrator (internal layout: particle axis in block order, systems innermost: [3, N, B] and [3, M, B])
# -----------------------------------------------------------------------------------------------------------
def _tile_size(n_systems: int) -> int:
    """Tile edge for a batch of ``n_systems`` (depends on the whole batch, not on chunking or threads)."""
    t = int(np.sqrt(_TILE_ELEMENTS / max(1, int(n_systems))))
    return min(_TILE_MAX, max(_TILE_MIN, t))


def _tiles(n: int, tile: int = _TILE_MIN) -> list[tuple[int, int]]:
    n_tiles = -(-n // int(tile))
    edges = np.linspace(0, n, n_tiles + 1).round().astype(int)
    return [(int(edges[t]), int(edges[t + 1])) for t in range(n_tiles)]


def _coulomb(X: np.ndarray, qq: np.ndarray, tiles, max_force: float, out: np.ndarray) -> np.ndarray:
    """Clipped Coulomb forces. X [3, N, B]; qq [N, N, B] = q_i q_j (diagonal 0); out [3, N, B]."""
    out.fill(0.0)
    for a, (a0, a1) in enumerate(tiles):
        xa = X[:, a0:a1, None, :]
        for b0, b1 in tiles[a:]:
            d = xa - X[:, None, b0:b1, :]  # [3, ta, tb, B], x_i - x_j
            d2 = d[0] * d[0]
            d2 += d[1] * d[1]
            d2 += d[2] * d[2]
            if a0 == b0:
                for i in range(a1 - a0):
                    d2[i, i] = 1.0  # self pair: qq is 0 there
            s = np.sqrt(d2)
            s *= d2
            np.divide(qq[a0:a1, b0:b1], s, out=s)
            d *= s
            out[:, a0:a1] += d.sum(axis=2)
            if a0 != b0:
                out[:, b0:b1] -= d.sum(axis=1)
    np.clip(out, -max_force, max_force, out=out)
    return out


def _cross_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Cross product along axis 0 of [3, ...] arrays, written into ``out``."""
    np.multiply(a[1], b[2], out=out[0])
    out[0] -= a[2] * b[1]
    np.multiply(a[2], b[0], out=out[1])
    out[1] -= a[0] * b[2]
    np.multiply(a[0], b[1], out=out[2])
    out[2] -= a[1] * b[0]
    return out


def _segment_sum(a: np.ndarray, bounds, out: np.ndarray) -> np.ndarray:
    """Sum ``a[..., N, B]`` over the particle blocks ``bounds`` into ``out[..., M, B]``."""
    for k, (s0, s1) in enumerate(bounds):
        a[..., s0:s1, :].sum(axis=-2, out=out[..., k, :])
    return out


def _rotation_matrices(omega: np.ndarray, dt: float) -> np.ndarray:
    """Rodrigues matrices ``R[a, b, M, B]`` of the rotations by ``|omega| dt`` about ``omega`` ([3, M, B])."""
    wn = np.sqrt(np.einsum("cmb,cmb->mb", omega, omega))
    k = omega / np.where(wn > 0.0, wn, 1.0)
    theta = dt * wn
    c, s = np.cos(theta), np.sin(theta)
    one_c = 1.0 - c
    R = k[:, None] * (k[None, :] * one_c)  # (1 - cos) k k^T
    for a in range(3):
        R[a, a] += c
    R[0, 1] -= s * k[2]
    R[1, 0] += s * k[2]
    R[0, 2] += s * k[1]
    R[2, 0] -= s * k[1]
    R[1, 2] -= s * k[0]
    R[2, 1] += s * k[0]
    return R


def _integrate_block(
    x_c: np.ndarray,
    v_c: np.ndarray,
    omega: np.ndarray,
    r: np.ndarray,
    q: np.ndarray,
    sizes: tuple[int, ...],
    store_steps: np.ndarray,
    dt: float,
    max_force: float,
    pos_out: np.ndarray,
    vel_out: np.ndarray,
    reject_above: float | None = None,
    tile: int = _TILE_MIN,
    state_out: tuple[np.ndarray, ...] | None = None,
) -> np.ndarray:
    """Integrate one chunk in block layout, writing frames into pos_out / vel_out [F, 3, N, B] (in place).

    x_c, v_c, omega: [3, M, B]; r: [3, N, B] member offsets from the centroid; q: [N, B]. With
    ``reject_above``, a system is dropped from the batch as soon as a stored velocity component exceeds it
    (its remaining frames are left unwritten). ``state_out`` (x_c, v_c, omega, r in the same layout) receives the
    state after the last step of the accepted systems. Returns the accepted mask [B].
    """
    N = r.shape[1]
    cid = np.repeat(np.arange(len(sizes)), sizes)
    ends = np.cumsum(sizes)
    bounds = [(int(e - n), int(e)) for e, n in zip(ends, sizes, strict=True)]
    sz = np.asarray(sizes, dtype=np.float64)[:, None]
    trans_gain = dt / (sz * sz)  # a_c = mean(f) / s = sum(f) / s^2 (official quirk)
    qq = q[:, None, :] * q[None, :, :]
    qq[np.arange(N), np.arange(N)] = 0.0
    tiles = _tiles(N, tile)
    F = np.empty_like(r)
    tmp = np.empty_like(r)
    seg3 = np.empty_like(x_c)
    seg1 = np.empty_like(x_c[0])
    x_c, v_c, omega, r = x_c.copy(), v_c.copy(), omega.copy(), r.copy()
    X = x_c[:, cid] + r
    n_total = r.shape[-1]
    active = np.arange(n_total)
    frame = 0
    n_steps = int(store_steps[-1]) + 1 if store_steps.size else 0
    for t in range(n_steps):
        _coulomb(X, qq, tiles, max_force, F)
        # translation
        _segment_sum(F, bounds, seg3)
        seg3 *= trans_gain
        v_c += seg3
        x_c += dt * v_c
        # rotation: scalar inertia J = sum |r_perp|^2 / 3, r_perp orthogonal to the current omega
        wn = np.sqrt(np.einsum("cmb,cmb->mb", omega, omega))
        w_hat = (omega / np.where(wn > 0.0, wn, 1.0))[:, cid]
        proj = np.einsum("cnb,cnb->nb", r, w_hat)
        r_perp2 = np.einsum("cnb,cnb->nb", r, r)
        r_perp2 -= proj * proj
        inertia = _segment_sum(r_perp2, bounds, seg1)
        inertia *= 1.0 / 3.0
        torque = _segment_sum(_cross_into(r, F, tmp), bounds, seg3)
        torque *= dt
        torque /= inertia
        omega += torque
        # rigid rotation of the member offsets (Rodrigues matrix of the new omega)
        R = _rotation_matrices(omega, dt)[:, :, cid]  # [3, 3, N, B]
        for a in range(3):
            np.multiply(R[a, 0], r[0], out=tmp[a])
            tmp[a] += R[a, 1] * r[1]
            tmp[a] += R[a, 2] * r[2]
        r, tmp = tmp, r
        np.add(x_c[:, cid], r, out=X)
        if frame < store_steps.size and t == store_steps[frame]:
            vel = _cross_into(omega[:, cid], r, F)  # F is free until the next force evaluation
            vel += v_c[:, cid]
            if active.size == n_total:
                pos_out[frame] = X
                vel_out[frame] = vel
            else:
                pos_out[frame][..., active] = X
                vel_out[frame][..., active] = vel
            frame += 1
            if reject_above is not None:
                bad = (vel > reject_above).any(axis=(0, 1))
                if bad.any():
                    keep = ~bad
                    active = active[keep]
                    if active.size == 0:
                        break
                    x_c, v_c, omega, r, X, qq = (a[..., keep].copy() for a in (x_c, v_c, omega, r, X, qq))
                    F, tmp = np.empty_like(r), np.empty_like(r)
                    seg3, seg1 = np.empty_like(x_c), np.empty_like(x_c[0])
    if state_out is not None:
        for dst, src in zip(state_out, (x_c, v_c, omega, r), strict=True):
            dst[..., active] = src
    ok = np.zeros(n_total, dtype=bool)
    ok[active] = True
    return ok


def _default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    return max(1, n)


class _Batch:
    """All systems of one type prepared for integration: chunk jobs (any order, any thread) + assembly.

    ``state`` is an :class:`MComplexInitialState` (integrated from step 0, tile from the batch size) or an
    :class:`MComplexRigidState` (continued, with its own tile). The state after step ``t`` is stored for ``t`` in
    ``range(first_step, n_steps, sample_every)``; ``keep_state`` keeps the final state (``self.final_state``).
    """

    def __init__(self, state, n_steps, sample_every, dt, max_force, reject_above, n_threads, chunk_size,
                 first_step=0, keep_state=False):
        sizes = tuple(int(v) for v in state.sizes)
        B, N = state.complex_id.shape
        M = len(sizes)
        self.sizes = sizes
        self.store_steps = np.arange(int(first_step), int(n_steps), int(sample_every))
        # block order: particles sorted by complex (stable), identical block structure for every system
        order = np.argsort(state.complex_id, axis=1, kind="stable")
        cid_sorted = np.take_along_axis(state.complex_id, order, axis=1)
        block_cid = np.repeat(np.arange(M), sizes)
        if cid_sorted.shape[1] != block_cid.size or not np.array_equal(
            cid_sorted, np.broadcast_to(block_cid, (B, N))
        ):
            raise ValueError("complex_id does not match the system type's sizes")
        self.inverse = np.argsort(order, axis=1)
        q_blk = np.take_along_axis(state.charges, order, axis=1)
        if isinstance(state, MComplexRigidState):
            x_c = state.centroids
            r = np.take_along_axis(state.offsets, order[..., None], axis=1)
            tile = int(state.tile)
        else:
            cnt = np.asarray(sizes, np.float64)[None, :, None]
            x_blk = np.take_along_axis(state.positions, order[..., None], axis=1)
            x_c = np.add.reduceat(x_blk, np.concatenate(([0], np.cumsum(sizes)[:-1])), axis=1) / cnt
            r = x_blk - x_c[:, block_cid]
            tile = _tile_size(B)
        self.tile = tile
        self.charges, self.complex_id = state.charges, state.complex_id
        self.keep_state = bool(keep_state)
        # [3, ., B] layout (systems innermost)
        layout = [
            np.ascontiguousarray(a.transpose(2, 1, 0))
            for a in (x_c, state.centroid_velocity, state.angular_velocity, r)
        ]
        layout.append(np.ascontiguousarray(q_blk.T))
        n_frames = self.store_steps.size
        n_chunks = max(-(-B // int(chunk_size)), min(int(n_threads), max(1, B // 64)))
        edges = np.linspace(0, B, n_chunks + 1).round().astype(int)
        self.shape = (B, n_frames, N)
        self.jobs = []
        self.chunks = []
        for c in range(n_chunks):
            sl = slice(int(edges[c]), int(edges[c + 1]))
            if sl.start == sl.stop:
                continue
            pos_c = np.empty((n_frames, 3, N, sl.stop - sl.start))
            vel_c = np.empty_like(pos_c)
            args = [np.ascontiguousarray(a[..., sl]) for a in layout]
            state_c = tuple(np.empty_like(a) for a in args[:4]) if self.keep_state else None
            args += [sizes, self.store_steps, float(dt), float(max_force), pos_c, vel_c, reject_above, tile, state_c]
            self.jobs.append((len(self.chunks), args))
            self.chunks.append([sl, pos_c, vel_c, None, state_c])

    def run_job(self, i: int, args) -> None:
        self.chunks[i][3] = _integrate_block(*args)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(positions, velocities, accepted)``: ``[B, F, N, 3]``, ``[B, F, N, 3]``, ``[B]``; with
        ``keep_state``, ``self.final_state`` is then the :class:`MComplexRigidState` after the last step (valid
        for the accepted systems)."""
        B, n_frames, N = self.shape
        pos_l = np.empty((n_frames, 3, N, B))
        vel_l = np.empty((n_frames, 3, N, B))
        ok = np.empty(B, dtype=bool)
        M = len(self.sizes)
        state_l = (np.empty((3, M, B)), np.empty((3, M, B)), np.empty((3, M, B)), np.empty((3, N, B)))
        for sl, pos_c, vel_c, ok_c, state_c in self.chunks:
            pos_l[..., sl] = pos_c
            vel_l[..., sl] = vel_c
            ok[sl] = ok_c
            if state_c is not None:
                for dst, src in zip(state_l, state_c, strict=True):
                    dst[..., sl] = src
        self.chunks = []
        inv = self.inverse[:, None, :, None]
        pos = np.take_along_axis(pos_l.transpose(3, 0, 2, 1), inv, axis=2)
        vel = np.take_along_axis(vel_l.transpose(3, 0, 2, 1), inv, axis=2)
        if self.keep_state:
            x_c, v_c, omega, r = (a.transpose(2, 1, 0) for a in state_l)
            self.final_state = MComplexRigidState(
                self.sizes, np.ascontiguousarray(x_c), np.ascontiguousarray(v_c), np.ascontiguousarray(omega),
                np.take_along_axis(r, self.inverse[..., None], axis=1), self.charges, self.complex_id, self.tile)
        return pos, vel, ok


def _run_batches(batches: list[_Batch], n_threads: int) -> None:
    jobs = [(b, i, args) for b in batches for i, args in b.jobs]
    # largest chunks first for load balance
    jobs.sort(key=lambda j: -j[2][3].size * j[2][3].shape[1])
    if n_threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=min(n_threads, len(jobs))) as pool:
            for f in [pool.submit(b.run_job, i, args) for b, i, args in jobs]:
                f.result()
    else:
        for b, i, args in jobs:
            b.run_job(i, args)
    for b in batches:
        b.jobs = []


def integrate_mcomplex(
    state: MComplexInitialState,
    *,
    n_steps: int = 5000,
    sample_every: int = 100,
    dt: float = 1e-3,
    max_force: float = 100.0,
    n_threads: int | None = None,
    chunk_size: int = 1024,
    return_state: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, MComplexRigidState]:
    """Integrate ``B`` systems of one type; returns ``(positions, velocities)``, each ``[B, F, N, 3]``.

    Step ``t`` (``t = 0 .. n_steps-1``): forces on all particles from the current positions, then every
    complex is advanced as a rigid body (see the module docstring); the state after step ``t`` is stored when
    ``t % sample_every == 0``, so stored frame ``k`` is the state after ``k * sample_every + 1`` steps and
    ``F = ceil(n_steps / sample_every)``. Steps after the last stored frame have no observable effect and are
    skipped. Particle order and dimensionless units as in ``state``. No rejection here. Systems are
    independent: the result does not depend on ``n_threads`` or ``chunk_size`` (chunks of systems integrated
    in threads). ``return_state`` also returns the :class:`MComplexRigidState` at the last stored frame, from
    which :func:`continue_mcomplex` continues exactly.
    """
    n_threads = _default_threads() if n_threads is None else max(1, int(n_threads))
    batch = _Batch(state, n_steps, sample_every, dt, max_force, None, n_threads, chunk_size,
                   keep_state=return_state)
    _run_batches([batch], n_threads)
    pos, vel, _ = batch.finish()
    return (pos, vel, batch.final_state) if return_state else (pos, vel)


def continue_mcomplex(
    state: MComplexRigidState,
    n_frames: int,
    *,
    sample_every: int = 100,
    dt: float = 1e-3,
    max_force: float = 100.0,
    n_threads: int | None = None,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray, MComplexRigidState]:
    """Continue ``B`` systems of one type from their state at a stored frame for ``n_frames`` more stored frames.

    ``state`` is the integrator's state at a stored frame (``final_state`` of :func:`simulate_mcomplex`, or
    ``return_state`` of :func:`integrate_mcomplex`); the systems are integrated ``n_frames * sample_every``
    further steps, without any rejection, storing every ``sample_every``-th: new frame ``j`` (``j = 1 ..
    n_frames``) is the state ``j * sample_every`` steps after ``state``. Continuing the last stored frame ``k``
    (after ``k * sample_every + 1`` steps) thus gives frames ``k + 1 ..`` of one longer run, with the same
    arithmetic (same tile, same operations), so the frames are those that run stores (``sample_every``, ``dt``
    and ``max_force`` must be that run's). Returns ``(positions,
    velocities, final_state)``: ``[B, n_frames, N, 3]`` twice (particle order, dimensionless units) and the state
    at the last new frame.
    """
    n_frames, sample_every = int(n_frames), int(sample_every)
    if n_frames < 1 or sample_every < 1:
        raise ValueError(f"n_frames and sample_every must be >= 1, got {n_frames} and {sample_every}")
    n_threads = _default_threads() if n_threads is None else max(1, int(n_threads))
    batch = _Batch(state, n_frames * sample_every, sample_every, dt, max_force, None, n_threads, chunk_size,
                   first_step=sample_every - 1, keep_state=True)
    _run_batches([batch], n_threads)
    pos, vel, _ = batch.finish()
    return pos, vel, batch.final_state


# -----------------------------------------------------------------------------------------------------------
# rigidity
# -----------------------------------------------------------------------------------------------------------
def rigidity_drift(positions: np.ndarray, complex_id: np.ndarray) -> float:
    """Largest relative drift of any intra-complex pair distance along a trajectory.

    positions: ``[F, N, 3]`` (or ``[S, F, N, 3]`` for S equal-sized systems); complex_id: ``[N]`` (or ``[S,
    N]``). Returns ``max_{t, i<j same complex} |d_ij(t) - d_ij(0)| / d_ij(0)`` (0.0 when no complex has 2
    members).
    """
    pos = np.asarray(positions, dtype=np.float64)
    cid = np.asarray(complex_id)
    if pos.ndim == 3:
        pos, cid = pos[None], cid[None]
    if cid.ndim == 1:
        cid = np.broadcast_to(cid, (pos.shape[0], cid.size))
    drift = 0.0
    for p, c in zip(pos, cid, strict=True):
        i, j = np.triu_indices(p.shape[1], 1)
        same = c[i] == c[j]
        if not same.any():
            continue
        i, j = i[same], j[same]
        d = np.linalg.norm(p[:, i] - p[:, j], axis=-1)  # [F, P]
        drift = max(drift, float((np.abs(d - d[:1]) / d[:1]).max()))
    return drift


def _centroid_distance_error(pos: np.ndarray, complex_id: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Official-style rigidity check: per system, the largest over complexes and frames of the summed absolute
    change of the members' distances to the complex centroid. pos [B, F, N, 3], complex_id [B, N] -> [B]."""
    B, F, N, _ = pos.shape
    order = np.argsort(complex_id, axis=1, kind="stable")
    p = np.take_along_axis(pos, order[:, None, :, None], axis=2)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    cnt = np.asarray(sizes, np.float64)[None, None, :, None]
    cent = np.add.reduceat(p, starts, axis=2) / cnt
    dist = np.linalg.norm(p - np.repeat(cent, sizes, axis=2), axis=-1)  # [B, F, N]
    err = np.add.reduceat(np.abs(dist - dist[:, :1]), starts, axis=2)  # [B, F, M]
    return err.max(axis=(1, 2))


# -----------------------------------------------------------------------------------------------------------
# full generation with rejection
# -----------------------------------------------------------------------------------------------------------
def simulate_mcomplex(
    n_systems: int,
    system_types,
    rng: np.random.Generator | int,
    *,
    n_steps: int = 5000,
    sample_every: int = 100,
    dt: float = 1e-3,
    max_force: float = 100.0,
    max_velocity: float = 5.0,
    n_threads: int | None = None,
    chunk_size: int = 1024,
    max_rounds: int = 1000,
    extend_steps: int | None = None,
) -> MComplexTrajectories:
    """Simulate ``n_systems`` accepted M-complex trajectories (dimensionless units).

    Each system picks one of the ``J = len(system_types)`` types uniformly. After the run every complex must
    have stayed rigid (``RuntimeError`` otherwise, as the official job aborts), and a system is rejected when
    any stored velocity component exceeds ``+max_velocity``; a rejected system is regenerated from scratch,
    type draw included. Generation runs in rounds of i.i.d. candidates (all candidates of one type simulated
    together); accepted candidates fill the empty slots in candidate order. Round 1 simulates ``n_systems``
    candidates, later rounds oversample by the observed acceptance rate (surplus accepted candidates are
    dropped, which does not bias the accepted distribution), so only 2-3 rounds are needed even at high
    rejection rates. A candidate is dropped from its batch at the first stored frame that fails the velocity
    test (later frames cannot save it), which does not change the accepted systems.

    Determinism: all randomness comes from ``rng`` (a ``np.random.Generator``; an ``int`` seeds
    ``np.random.default_rng``) and is drawn in the calling thread in a fixed order (per round: the type of
    every candidate, then the initial states type by type), so the result depends only on the seed and the
    arguments, not on ``n_threads`` or ``chunk_size``.

    ``extend_steps`` (> ``n_steps``) then continues every accepted system from its exact integrator state at its
    last stored frame (:func:`continue_mcomplex`, systems of one type and batch tile together) to ``F =
    ceil(extend_steps / sample_every)`` stored frames, at the same cadence, with the rigidity check but *without*
    the velocity test: which systems are accepted, and their first ``ceil(n_steps / sample_every)`` frames, do
    not depend on ``extend_steps``, and the later frames are those one longer run of the same batch stores.

    Returns :class:`MComplexTrajectories` with per-system arrays ``[F, N_s, 3]``, ``F = ceil(n_steps /
    sample_every)`` (50 by default; frame k = state after ``k * sample_every + 1`` steps), or ``ceil(extend_steps
    / sample_every)`` with ``extend_steps``; ``final_state`` holds each system's state at its last frame.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    n_threads = _default_threads() if n_threads is None else max(1, int(n_threads))
    types = [tuple(int(s) for s in t) for t in system_types]
    if not types:
        raise ValueError("system_types is empty")
    n_systems = int(n_systems)
    positions: list = [None] * n_systems
    velocities: list = [None] * n_systems
    charges: list = [None] * n_systems
    complex_id: list = [None] * n_systems
    final_state: list = [None] * n_systems
    system_type = np.zeros(n_systems, dtype=np.int64)

    pending = np.arange(n_systems)  # empty slots, filled in increasing order
    n_rejected = n_simulated = 0
    for _ in range(max_rounds):
        if pending.size == 0:
            break
        n_cand = pending.size
        if n_simulated:  # oversample by the observed acceptance rate so that few rounds are needed
            p_acc = max((n_simulated - n_rejected) / n_simulated, 0.02)
            n_cand = min(int(np.ceil(1.1 * pending.size / p_acc)) + 2, 50 * pending.size + 8)
        drawn = rng.integers(len(types), size=n_cand)
        work = []
        for j, sizes in enumerate(types):
            cand = np.flatnonzero(drawn == j)
            if cand.size:
                state = sample_initial_states(rng, sizes, cand.size)
                batch = _Batch(
                    state, n_steps, sample_every, dt, max_force, max_velocity, n_threads, chunk_size,
                    keep_state=True,
                )
                work.append((j, sizes, cand, state, batch))
        _run_batches([w[-1] for w in work], n_threads)
        accepted = []
        for j, sizes, cand, state, batch in work:
            pos, vel, ok = batch.finish()
            if pos.shape[1] > 1 and ok.any():
                err = _centroid_distance_error(pos[ok], state.complex_id[ok], sizes)
                if (err > RIGIDITY_TOLERANCE).any():
                    raise RuntimeError(
                        f"rigidity check failed: centroid distances changed by up to {err.max():.3e} "
                        f"(tolerance {RIGIDITY_TOLERANCE})"
                    )
            accepted += [(int(cand[b]), j, batch.final_state, b, pos, vel) for b in np.flatnonzero(ok)]
            n_rejected += int((~ok).sum())
            n_simulated += int(cand.size)
        accepted.sort(key=lambda a: a[0])  # candidate order; surplus accepted candidates are dropped
        take = accepted[: pending.size]
        for slot, (_, j, state, b, pos, vel) in zip(pending[: len(take)], take, strict=True):
            positions[slot] = pos[b].copy()  # copies: do not keep whole batches alive
            velocities[slot] = vel[b].copy()
            charges[slot] = state.charges[b].copy()
            complex_id[slot] = state.complex_id[b].astype(np.int64)
            final_state[slot] = state.select(np.array([b]))
            system_type[slot] = j
        pending = pending[len(take) :]
        del accepted, take, work
    if pending.size:
        raise RuntimeError(f"{pending.size} systems still rejected after {max_rounds} rounds")
    if extend_steps is not None:
        n_more = -(-int(extend_steps) // int(sample_every)) - -(-int(n_steps) // int(sample_every))
        if n_more > 0:
            _extend(positions, velocities, final_state, n_more, dict(
                sample_every=sample_every, dt=dt, max_force=max_force, n_threads=n_threads, chunk_size=chunk_size))
    return MComplexTrajectories(
        positions=positions,
        velocities=velocities,
        charges=charges,
        complex_id=complex_id,
        system_type=system_type,
        dt=float(dt),
        n_rejected=n_rejected,
        final_state=final_state,
    )


def _extend(positions: list, velocities: list, final_state: list, n_more: int, kwargs: dict) -> None:
    """Append ``n_more`` continued frames to every system (in place), systems of the same sizes and tile
    continued together, one group after the other (bounded memory), with the rigidity check."""
    groups: dict[tuple, list[int]] = {}
    for i, st in enumerate(final_state):
        groups.setdefault((tuple(st.sizes), int(st.tile)), []).append(i)
    for (sizes, _), idx in sorted(groups.items()):
        state = MComplexRigidState.concatenate([final_state[i] for i in idx])
        pos, vel, end = continue_mcomplex(state, n_more, **kwargs)
        last = np.stack([positions[i][-1] for i in idx])[:, None]
        err = _centroid_distance_error(np.concatenate([last, pos], axis=1), state.complex_id, sizes)
        if (err > RIGIDITY_TOLERANCE).any():
            raise RuntimeError(f"rigidity check failed in the continuation: centroid distances changed by up to "
                               f"{err.max():.3e} (tolerance {RIGIDITY_TOLERANCE})")
        for k, i in enumerate(idx):
            positions[i] = np.concatenate([positions[i], pos[k]])
            velocities[i] = np.concatenate([velocities[i], vel[k]])
            final_state[i] = end.select(np.array([k]))


def generate_mcomplex_splits(
    n_complexes: int = 3,
    avg_size: int = 3,
    n_types: int = 1,
    n_train: int = 1000,
    n_val: int = 2000,
    n_test: int = 2000,
    *,
    seed: int = 43,
    split_steps: dict[str, int] | None = None,
    **sim_kwargs,
) -> tuple[list[list[int]], dict[str, MComplexTrajectories]]:
    """Generate train / val / test trajectories of the (M, N/M, J) = (n_complexes, avg_size, n_types) task.

    The system types are drawn once with ``np.random.RandomState(seed)`` (exactly the official types for the
    same seed) and shared by all splits. Each split is simulated from its own ``np.random.default_rng``
    stream, spawned from ``np.random.SeedSequence(seed)`` (train, val, test), so a split does not depend on
    the others' sizes. ``split_steps`` continues some splits' accepted systems to that many steps (e.g.
    ``{"test": 31001}``, see ``extend_steps`` of :func:`simulate_mcomplex`) without changing which systems are
    accepted or their first frames. Extra keyword arguments go to :func:`simulate_mcomplex`. Returns
    ``(system_types, {"train", "val", "test"})``.
    """
    unknown = set(split_steps or {}) - {"train", "val", "test"}
    if unknown:
        raise ValueError(f"split_steps names unknown splits {sorted(unknown)} (splits: train, val, test)")
    types = draw_system_types(np.random.RandomState(seed), n_complexes, avg_size, n_types)
    streams = np.random.SeedSequence(seed).spawn(3)
    splits = {}
    for name, n, ss in zip(("train", "val", "test"), (n_train, n_val, n_test), streams, strict=True):
        splits[name] = simulate_mcomplex(n, types, np.random.default_rng(ss),
                                         extend_steps=(split_steps or {}).get(name), **sim_kwargs)
    return types, splits
