"""Tests of the M-complex simulator (mdsurrogate.data.sources.mcomplex)."""

from __future__ import annotations

import numpy as np
import pytest

from mdsurrogate.data.sources.mcomplex import (
    MComplexTrajectories,
    continue_mcomplex,
    draw_system_types,
    generate_mcomplex_splits,
    integrate_mcomplex,
    rigidity_drift,
    sample_initial_states,
    simulate_mcomplex,
    size_weights,
)


# -----------------------------------------------------------------------------------------------------------
# straightforward per-system reference integrator (one system, loop over complexes, rotation matrices)
# -----------------------------------------------------------------------------------------------------------
def _reference_run(x0, q, cid, v_c0, omega0, n_steps, dt=1e-3, max_force=100.0):
    """(positions, velocities) after steps 1..n_steps, following docs/protocols.md §2.3 literally."""
    x = np.array(x0, dtype=np.float64)
    members = [np.flatnonzero(cid == k) for k in range(int(cid.max()) + 1)]
    x_c = [x[m].mean(axis=0) for m in members]
    v_c = [np.array(v) for v in v_c0]
    omega = [np.array(w) for w in omega0]
    out = []
    for _ in range(n_steps):
        diff = x[:, None, :] - x[None, :, :]
        r2 = (diff**2).sum(-1)
        np.fill_diagonal(r2, 1.0)
        coef = np.outer(q, q) / r2**1.5
        np.fill_diagonal(coef, 0.0)
        f = np.clip((coef[..., None] * diff).sum(axis=1), -max_force, max_force)
        x_new, v_new = np.empty_like(x), np.empty_like(x)
        for k, m in enumerate(members):
            s = len(m)
            r = x[m] - x_c[k]
            v_c[k] = v_c[k] + dt * f[m].mean(axis=0) / s  # extra 1/s (quirk)
            x_c[k] = x_c[k] + dt * v_c[k]
            wn = np.linalg.norm(omega[k])
            n_hat = omega[k] / wn if wn > 0 else np.zeros(3)
            r_perp = r - np.outer(r @ n_hat, n_hat)
            inertia = (r_perp**2).sum() / 3.0  # scalar inertia (quirk)
            torque = np.cross(r, f[m]).sum(axis=0)
            omega[k] = omega[k] + dt * torque / inertia
            wn = np.linalg.norm(omega[k])
            u = omega[k] / wn
            K = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
            R = np.eye(3) + np.sin(wn * dt) * K + (1.0 - np.cos(wn * dt)) * (K @ K)
            rr = r @ R.T
            x_new[m] = x_c[k] + rr
            v_new[m] = v_c[k] + np.cross(omega[k], rr)
        x = x_new
        out.append((x.copy(), v_new.copy()))
    return out


@pytest.mark.parametrize("sizes", [(2, 3, 4), (3, 9, 4, 5, 15)])
def test_matches_reference_and_frame_convention(sizes):
    rng = np.random.default_rng(7)
    state = sample_initial_states(rng, sizes, 3)
    n_steps, every = 301, 100  # frames after 1, 101, 201, 301 steps
    pos, vel = integrate_mcomplex(state, n_steps=n_steps, sample_every=every, n_threads=1)
    n_frames = len(range(0, n_steps, every))
    assert pos.shape == vel.shape == (3, n_frames, sum(sizes), 3)
    for b in range(2):
        ref = _reference_run(
            state.positions[b],
            state.charges[b],
            state.complex_id[b],
            state.centroid_velocity[b],
            state.angular_velocity[b],
            n_steps,
        )
        for k in range(n_frames):
            x_ref, v_ref = ref[k * every]  # state after k * every + 1 steps
            np.testing.assert_allclose(pos[b, k], x_ref, rtol=0, atol=1e-10)
            np.testing.assert_allclose(vel[b, k], v_ref, rtol=0, atol=1e-10)
        # the off-by-one alternative (after k * every steps) is clearly different
        assert np.abs(pos[b, 1] - ref[every - 1][0]).max() > 1e-6


def test_initial_state_quirks():
    state = sample_initial_states(np.random.default_rng(3), (2, 3, 4), 16)
    assert set(np.unique(state.charges)) <= {-1.0, 1.0}
    for b in range(4):
        cid = state.complex_id[b]
        assert sorted(np.bincount(cid)) == [2, 3, 4]
        for k in range(3):
            m = cid == k
            r = state.positions[b, m] - state.positions[b, m].mean(axis=0)
            # node velocities are omega x r, *without* the centroid velocity
            expected = np.cross(state.angular_velocity[b, k], r)
            np.testing.assert_allclose(state.velocities[b, m], expected, atol=1e-14)
            assert np.linalg.norm(state.centroid_velocity[b, k]) > 0


def test_rigid_complexes_full_length():
    traj = simulate_mcomplex(8, [[2, 3, 4]], np.random.default_rng(1))
    assert isinstance(traj, MComplexTrajectories)
    assert len(traj.positions) == 8 and traj.dt == 1e-3
    for pos, cid in zip(traj.positions, traj.complex_id, strict=True):
        assert pos.shape == (50, 9, 3)
        assert rigidity_drift(pos, cid) < 1e-6
    # the complexes do move (not a trivially rigid frozen system)
    assert np.abs(traj.positions[0][-1] - traj.positions[0][0]).max() > 1e-2


def test_rigidity_drift_detects_deformation():
    pos = np.zeros((2, 3, 3))
    pos[:, 1, 0] = 1.0
    pos[:, 2, 0] = 5.0
    pos[1, 1, 0] = 1.1
    assert rigidity_drift(pos, np.array([0, 0, 1])) == pytest.approx(0.1)
    assert rigidity_drift(pos, np.array([1, 0, 1])) == 0.0


def test_system_types_support_and_official_draws():
    for a, m in [(3, 3), (4, 2), (5, 5), (10, 5), (10, 10)]:
        support = set(range(2, 2 * a - 1))
        for seed in range(5):
            for types in (
                draw_system_types(np.random.RandomState(seed), m, a, 5),
                draw_system_types(np.random.default_rng(seed), m, a, 5),
            ):
                assert len(types) == 5
                for t in types:
                    assert len(t) == m and len(set(t)) == m and set(t) <= support
    for seed in range(10):
        assert all(sorted(t) == [2, 3, 4] for t in draw_system_types(seed, 3, 3, 5))
    # the official seed-43 types (docs/protocols.md §2.5)
    assert [sum(t) for t in draw_system_types(np.random.RandomState(43), 5, 5, 5)] == [25, 24, 21, 27, 22]
    assert [sum(t) for t in draw_system_types(np.random.RandomState(43), 5, 10, 5)] == [36, 37, 40, 45, 51]


def test_weight_law():
    sizes, w = size_weights(5)
    assert sizes.tolist() == list(range(2, 9))
    assert w.tolist() == [11, 11, 11, 9, 8, 7, 6]
    rng = np.random.RandomState(0)
    draws = np.array([t[0] for t in draw_system_types(rng, 1, 5, 6000)])
    freq = np.bincount(draws, minlength=9)[2:] / draws.size
    np.testing.assert_allclose(freq, w / w.sum(), atol=0.02)


@pytest.mark.parametrize("m,a", [(4, 3), (5, 3), (8, 5), (2, 2)])
def test_infeasible_raises(m, a):
    with pytest.raises(ValueError, match="infeasible"):
        draw_system_types(np.random.RandomState(0), m, a, 1)


def test_rejection_positive_side_only():
    rng = np.random.default_rng(5)
    traj = simulate_mcomplex(24, [[2, 3, 4], [4, 2, 3]], rng, n_steps=401, max_velocity=1.0)
    vel = np.stack(traj.velocities)
    assert vel.max() <= 1.0
    assert traj.n_rejected > 0
    assert vel.min() < -1.0  # only the positive side is tested
    assert set(np.unique(traj.system_type)) == {0, 1}


def test_early_rejection_keeps_accepted_systems_exact():
    # simulate_mcomplex drops a system at its first failing frame; the accepted ones must equal a plain run
    n, sizes, kw = 24, (2, 3, 4), dict(n_steps=401, sample_every=100)
    traj = simulate_mcomplex(n, [sizes], np.random.default_rng(5), max_velocity=1.0, **kw)
    rng = np.random.default_rng(5)
    rng.integers(1, size=n)  # the round-1 type draw
    pos, vel = integrate_mcomplex(sample_initial_states(rng, sizes, n), **kw)
    first_round = np.flatnonzero(~(vel > 1.0).any(axis=(1, 2, 3)))
    assert 0 < first_round.size < n
    # accepted candidates fill the slots in candidate order
    for slot, b in enumerate(first_round):
        np.testing.assert_array_equal(traj.positions[slot], pos[b])
        np.testing.assert_array_equal(traj.velocities[slot], vel[b])


def test_determinism():
    kw = dict(n_steps=201, sample_every=100)
    a = simulate_mcomplex(6, [[2, 3, 4], [3, 2]], np.random.default_rng(11), n_threads=1, **kw)
    b = simulate_mcomplex(6, [[2, 3, 4], [3, 2]], 11, n_threads=2, **kw)
    c = simulate_mcomplex(6, [[2, 3, 4], [3, 2]], 12, **kw)
    np.testing.assert_array_equal(a.system_type, b.system_type)
    for name in ("positions", "velocities", "charges", "complex_id"):
        for x, y in zip(getattr(a, name), getattr(b, name), strict=True):
            np.testing.assert_array_equal(x, y)
    assert not all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a.positions, c.positions, strict=True)
    )


def test_generate_splits():
    types, splits = generate_mcomplex_splits(3, 3, 5, n_train=3, n_val=2, n_test=2, n_steps=101)
    assert len(types) == 5 and all(sorted(t) == [2, 3, 4] for t in types)
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "val": 2, "test": 2}
    for split in splits.values():
        for pos, vel, q, cid, j in zip(
            split.positions, split.velocities, split.charges, split.complex_id, split.system_type, strict=True
        ):
            assert pos.shape == vel.shape == (2, 9, 3)
            assert q.shape == cid.shape == (9,)
            assert np.bincount(cid).tolist() == types[j]
    # same seed, same data
    _, again = generate_mcomplex_splits(3, 3, 5, n_train=3, n_val=2, n_test=2, n_steps=101)
    np.testing.assert_array_equal(again["val"].positions[1], splits["val"].positions[1])


def test_chunking_and_threads_do_not_change_results():
    state = sample_initial_states(np.random.default_rng(2), (2, 3, 4), 40)
    a = integrate_mcomplex(state, n_steps=201, n_threads=1, chunk_size=1024)
    b = integrate_mcomplex(state, n_steps=201, n_threads=2, chunk_size=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# -----------------------------------------------------------------------------------------------------------
# continuation beyond the stored frames (rollout references)
# -----------------------------------------------------------------------------------------------------------
def test_continuation_equals_one_longer_run():
    # frames 0..20 (after 1 .. 2001 steps) + state, continued by 40 frames == one run storing 61 frames
    state = sample_initial_states(np.random.default_rng(0), (2, 3, 4), 5)
    ref_pos, ref_vel = integrate_mcomplex(state, n_steps=6001, n_threads=1)
    pos, vel, end = integrate_mcomplex(state, n_steps=2001, n_threads=1, return_state=True)
    np.testing.assert_array_equal(pos, ref_pos[:, :21])
    np.testing.assert_allclose(end.positions, pos[:, -1], rtol=0, atol=1e-13)
    more_pos, more_vel, end2 = continue_mcomplex(end, 40, n_threads=1)
    assert more_pos.shape == more_vel.shape == (5, 40, 9, 3)
    np.testing.assert_allclose(more_pos, ref_pos[:, 21:], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(more_vel, ref_vel[:, 21:], rtol=1e-9, atol=1e-12)
    # the continuation is not a restart from the stored frame: the off-by-one frame would differ
    assert np.abs(more_pos[:, 0] - ref_pos[:, 20]).max() > 1e-3
    # continuing again from the new end state still follows the long run (chunked, 2 threads: same numbers)
    last_pos, _, _ = continue_mcomplex(end2.select(np.array([1, 3])), 1, n_threads=2, chunk_size=1)
    ref_last, _ = integrate_mcomplex(state, n_steps=6101, n_threads=1)
    np.testing.assert_allclose(last_pos[:, 0], ref_last[[1, 3], -1], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="n_frames and sample_every must be >= 1"):
        continue_mcomplex(end, 0)


def test_extension_keeps_rejection_to_the_first_frames():
    # the velocity test sees only the first 5 frames: same accepted systems and frames with or without extension,
    # and the round-1 systems (integrated in one batch of 24) continue exactly as one long run of that batch
    n, sizes, kw = 24, (2, 3, 4), dict(n_steps=401, sample_every=100, max_velocity=1.0)
    short = simulate_mcomplex(n, [sizes], np.random.default_rng(5), **kw)
    long = simulate_mcomplex(n, [sizes], np.random.default_rng(5), extend_steps=1801, **kw)
    assert long.n_rejected == short.n_rejected > 0
    np.testing.assert_array_equal(long.system_type, short.system_type)
    for a, b, va, vb in zip(long.positions, short.positions, long.velocities, short.velocities, strict=True):
        assert a.shape == va.shape == (19, 9, 3)
        np.testing.assert_array_equal(a[:5], b)
        np.testing.assert_array_equal(va[:5], vb)
    assert max(v[5:].max() for v in long.velocities) > 1.0  # no velocity test on the continuation
    rng = np.random.default_rng(5)
    rng.integers(1, size=n)  # the round-1 type draw
    pos, vel = integrate_mcomplex(sample_initial_states(rng, sizes, n), n_steps=1801)
    first_round = np.flatnonzero(~(vel[:, :5] > 1.0).any(axis=(1, 2, 3)))
    for slot, b in enumerate(first_round):
        np.testing.assert_allclose(long.positions[slot], pos[b], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(long.velocities[slot], vel[b], rtol=1e-9, atol=1e-12)
    for traj, cid in zip(long.positions, long.complex_id, strict=True):
        assert rigidity_drift(traj, cid) < 1e-6


def test_ingest_horizon_keeps_the_paper_samples(tmp_path):
    from mdsurrogate.data.dataset import Dataset
    from mdsurrogate.data.ingest import ingest_mcomplex

    kw = dict(n_train=4, n_val=3, n_test=3, seed=5)
    base = Dataset(ingest_mcomplex(tmp_path / "h1", horizon=1, **kw))
    long = Dataset(ingest_mcomplex(tmp_path / "h4", horizon=4, train_horizon=3, **kw))
    np.testing.assert_array_equal(long.samples, base.samples)
    np.testing.assert_array_equal(long.split_codes, base.split_codes)
    need, need_train = 10 + 4 * 15 + 1, 10 + 3 * 15 + 1
    for t in range(base.n_trajectories):
        val_or_test = int(base.split_codes[t]) != 0  # one sample per trajectory
        assert base.traj_frames[t] == 50
        assert long.traj_frames[t] == (need if val_or_test else need_train)
        for f in range(50):  # the paper's frames, bit for bit (float32 storage)
            for a, b in zip(long.frame(t, f), base.frame(t, f), strict=True):
                np.testing.assert_array_equal(a, b)
        for name in ("charge", "complex"):
            np.testing.assert_array_equal(long.node_property(name, t), base.node_property(name, t))
    gen = long.meta["generator"]
    assert (gen["horizon"], gen["train_horizon"], base.meta["generator"]["horizon"]) == (4, 3, 1)
    assert long.meta["frame_steps"][50] == 5001 and len(long.meta["frame_steps"]) == need
    with pytest.raises(ValueError, match="horizon and train_horizon must be ≥ 1 model step"):
        ingest_mcomplex(tmp_path / "bad", horizon=0, **kw)


@pytest.mark.parametrize("flag", ["--horizon", "--train-horizon"])
def test_ingest_cli_rejects_horizon_below_one(flag, tmp_path):
    from typer.testing import CliRunner

    from mdsurrogate.cli import app

    res = CliRunner().invoke(app, ["ingest", "mcomplex", str(tmp_path / "mc"), flag, "0"])
    assert res.exit_code == 2, res.output
    assert "--horizon and --train-horizon must be ≥ 1" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "mc").exists()
