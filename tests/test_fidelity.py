"""Rollout fidelity: the metrics on synthetic trajectories with known answers, the null models, ensembles batched
in one chain, the measurement end to end (dataset split and trajectory file) and its bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mdsurrogate.analysis import baselines as nulls
from mdsurrogate.analysis import fidelity as fm
from mdsurrogate.config import recipe_from_dict
from mdsurrogate.data.dataset import EdgeSetData, write_dataset
from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.simulation.ensemble import ensemble_rollout
from mdsurrogate.simulation.fidelity import FidelityError, rollout_fidelity
from mdsurrogate.simulation.initial_state import InitialState
from mdsurrogate.simulation.rollout import rollout
from mdsurrogate.simulation.surrogate import Surrogate
from mdsurrogate.training.trainer import Trainer

from .conftest import FEATURES, invoke, last_json, orthogonal, perturbed_model, random_topology

RNG = np.random.default_rng(0)


def rotation(seed: int) -> np.ndarray:
    q = orthogonal(seed, reflect=False).numpy()
    return q if np.linalg.det(q) > 0 else -q


# ----------------------------------------------------------------------------------------------------------
# distances and superposition
# ----------------------------------------------------------------------------------------------------------


def test_rmsd_and_mse_of_a_shift():
    ref = RNG.normal(size=(4, 10, 3))
    x = ref + np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(fm.rmsd(x, ref), 1.0)
    np.testing.assert_allclose(fm.mse(x, ref), 1.0 / 3.0)
    np.testing.assert_allclose(fm.rmsd(x, ref, superpose=True), 0.0, atol=1e-12)


def test_kabsch_removes_rotation_and_translation_but_not_reflection():
    ref = RNG.normal(size=(12, 3))
    q = rotation(3)
    moved = ref @ q.T + np.array([3.0, -2.0, 1.0])
    rot, _ = fm.kabsch(moved, ref)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(fm.superpose_onto(moved, ref), ref, atol=1e-10)
    mirror = ref * np.array([-1.0, 1.0, 1.0])           # a chiral point cloud's mirror image
    assert fm.rmsd(mirror, ref, superpose=True) > 0.3
    # invariance: any rigid motion of x leaves the superposed RMSD unchanged, batched over leading dims
    x = ref + 0.3 * RNG.normal(size=(5, 12, 3))
    y = x @ rotation(7).T + np.array([0.5, 4.0, -1.0])
    np.testing.assert_allclose(fm.rmsd(y, ref, superpose=True), fm.rmsd(x, ref, superpose=True), rtol=1e-10)
    assert (fm.rmsd(x, ref, superpose=True) <= fm.rmsd(x, ref) + 1e-12).all()
    assert np.isnan(fm.rmsd(np.full((12, 3), np.nan), ref, superpose=True))


# ----------------------------------------------------------------------------------------------------------
# skill and the bootstrap
# ----------------------------------------------------------------------------------------------------------


def test_skill_score_and_seeded_bootstrap():
    null = RNG.uniform(1, 2, size=(30, 4))
    sk, lo, hi = fm.skill_interval(0.5 * null, null)
    np.testing.assert_allclose([sk, lo, hi], 0.5)                      # a constant ratio has no uncertainty
    model = null * RNG.uniform(0.3, 0.9, size=null.shape)
    a = fm.skill_interval(model, null, seed=4)
    b = fm.skill_interval(model, null, seed=4)
    c = fm.skill_interval(model, null, seed=5)
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))
    assert ((a[1] < a[0]) & (a[0] < a[2])).all() and (a[1] > 0).all()
    lo, hi = fm.bootstrap_ci(lambda v: v.mean(1), np.arange(100.0), level=0.9)
    assert 44 < lo < 49.5 < hi < 55                                     # ≈ mean ± 1.645 · σ/√n = 49.5 ± 4.7


# ----------------------------------------------------------------------------------------------------------
# geometry and envelopes
# ----------------------------------------------------------------------------------------------------------


def test_edges_rg_steps_and_envelope():
    edges = np.array([[0, 1], [1, 2]])
    x = np.array([[0, 0, 0], [1.1, 0, 0], [1.1, 0.9, 0]], float)
    np.testing.assert_allclose(fm.edge_lengths(x, edges), [1.1, 0.9])
    assert fm.edge_deviation(x, edges, [1.0, 1.0]) == pytest.approx(0.1)
    frames = np.stack([x, np.array([[0, 0, 0], [0.9, 0, 0], [0.9, 1.1, 0]], float)])
    mean, dev = fm.edge_statistics(frames, edges)
    np.testing.assert_allclose(mean, [1.0, 1.0])
    np.testing.assert_allclose(dev, [0.1, 0.1])
    np.testing.assert_allclose(fm.radius_of_gyration(np.array([[-1.0, 0, 0], [1.0, 0, 0]])), 1.0)
    traj = np.zeros((4, 3, 3))
    traj[:, :, 0] = 0.5 * np.arange(4)[:, None]                          # every node moves 0.5 per step
    np.testing.assert_allclose(fm.step_displacement(traj), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(fm.data_step_displacement(traj, 2), [1.0, 1.0])
    env = fm.Envelope.of([0.0, 1.0, 3.0])
    assert (env.lo, env.hi) == (0.0, 3.0)
    out = env.outside([[1, 2, 5, 2], [1, 1, 1, np.nan], [1, 1, 1, 1]])
    np.testing.assert_array_equal(fm.first_exit(out), [3, 4, 0])
    np.testing.assert_array_equal(fm.exited(out)[0], [False, False, True, True])
    assert fm.Envelope.of([1.0, 2.0], lower=False).outside([0.0]).tolist() == [False]


# ----------------------------------------------------------------------------------------------------------
# ensembles
# ----------------------------------------------------------------------------------------------------------


def test_spread_skill_of_a_calibrated_ensemble_is_one():
    r, s = 4, 4000
    mu = RNG.normal(size=(s, 5, 3))
    truth = mu + RNG.normal(size=(s, 5, 3))
    ens = mu + RNG.normal(size=(r, s, 5, 3))                             # replicas and truth exchangeable
    ratio = fm.spread_skill_ratio(fm.ensemble_variance(ens), fm.ensemble_mean_error(ens, truth), r)
    assert ratio == pytest.approx(1.0, abs=0.03)                          # uncorrected it would be √(4/5) = 0.89
    wide = mu + 2 * RNG.normal(size=(r, s, 5, 3))
    assert fm.spread_skill_ratio(fm.ensemble_variance(wide), fm.ensemble_mean_error(wide, truth), r) > 1.5


def test_energy_score_and_crps_known_values():
    y = np.zeros((1, 3))
    ens = np.array([[[0.0, 0, 0]], [[2.0, 0, 0]]])                       # R = 2, N = 1
    assert fm.energy_score(ens, y) == pytest.approx(0.0)                  # 1 − ½ · 2 (fair: one pair)
    assert fm.energy_score(ens, y, fair=False) == pytest.approx(0.5)      # 1 − ½ · 2·2/4
    assert fm.energy_score(ens[:1] + 3.0, y) == pytest.approx(math.sqrt(27))   # one replica: its RMSD
    e = RNG.normal(size=(7, 5))
    t = RNG.normal(size=5)
    brute = np.abs(e - t).mean(0) - 0.5 * np.abs(e[:, None] - e[None]).sum((0, 1)) / (7 * 6)
    np.testing.assert_allclose(fm.crps(e, t), brute, rtol=1e-12)
    np.testing.assert_allclose(fm.crps(e[:1], t), np.abs(e[0] - t))
    # a sharper ensemble around the truth scores better than a wide one
    truth = RNG.normal(size=(50, 6, 3))
    good = truth + 0.1 * RNG.normal(size=(8, 50, 6, 3))
    bad = truth + 1.0 * RNG.normal(size=(8, 50, 6, 3))
    assert fm.energy_score(good, truth).mean() < fm.energy_score(bad, truth).mean()
    assert fm.crps_positions(good, truth).mean() < fm.crps_positions(bad, truth).mean()


# ----------------------------------------------------------------------------------------------------------
# distributions
# ----------------------------------------------------------------------------------------------------------


def test_wasserstein_js_and_rmsf():
    a = RNG.normal(size=300)
    assert fm.wasserstein_1d(a, a + 0.7) == pytest.approx(0.7)
    assert fm.wasserstein_1d([0.0, 1.0], [0.0, 0.0, 1.0, 1.0]) == pytest.approx(0.0)
    assert fm.wasserstein_1d([0.0], [1.0, 3.0]) == pytest.approx(2.0)
    scipy_stats = pytest.importorskip("scipy.stats")
    b = RNG.normal(size=77) * 2 + 1
    assert fm.wasserstein_1d(a, b) == pytest.approx(scipy_stats.wasserstein_distance(a, b), rel=1e-10)
    assert fm.histogram_js(a, a) == pytest.approx(0.0)
    assert fm.histogram_js([0.1, 0.2], [5.0, 6.0], bins=4, value_range=(0, 1)) == pytest.approx(1.0)  # clipped
    # RMSF: one atom oscillating ±0.5 along x, the others still; a rigid rotation is not a fluctuation
    base = RNG.normal(size=(6, 3)) * 3
    frames = np.repeat(base[None], 4, axis=0)
    frames[:, 2, 0] += np.array([0.5, -0.5, 0.5, -0.5])
    np.testing.assert_allclose(fm.rmsf(frames), [0, 0, 0.5, 0, 0, 0], atol=1e-12)
    spun = np.stack([base @ rotation(s).T for s in range(5)])
    assert fm.rmsf(spun).max() > 0.5
    np.testing.assert_allclose(fm.rmsf(spun, superpose_to=base), 0.0, atol=1e-10)
    cmp = fm.profile_comparison([1, 2, 3], [2, 4, 6])
    assert cmp["correlation"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------------
# null models
# ----------------------------------------------------------------------------------------------------------


def test_null_models():
    x0, v0 = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3))
    still = nulls.stay_still(x0, 3)
    assert still.shape == (4, 5, 3) and (still == x0).all()
    cv = nulls.constant_velocity(x0, v0, 3, 5.0)
    np.testing.assert_allclose(cv[2], x0 + 10 * v0)
    md_units = {"velocity": "Å per frame (10 ps)"}
    assert nulls.velocity_step_scale(md_units, 10.0, 5) == 5.0
    assert nulls.velocity_step_scale({"velocity": "1"}, 0.1, 10) == pytest.approx(1.0)
    # drift: frames moving by u per frame; any window recovers x_k = x0 + k·Δ·u exactly
    u = RNG.normal(size=(5, 3))
    hist = x0[None] + np.arange(-30, 1)[:, None, None] * u
    for window in (1, 20, 100):
        np.testing.assert_allclose(nulls.drift_extrapolation(hist, 4, 3, window)[4], x0 + 12 * u, atol=1e-12)
    np.testing.assert_allclose(nulls.drift_extrapolation(hist[-1:], 2, 3), still[:3])    # no history: stay still
    batched = nulls.drift_extrapolation(np.stack([hist, hist]), 2, 3)
    assert batched.shape == (2, 3, 5, 3)


def test_trivial_ensembles_match_the_data_step_size():
    x0 = np.zeros((400, 3))
    d = 0.7
    rng = np.random.default_rng(1)
    rw = nulls.random_walk(x0, 6, nulls.noise_sigma(d, "random_walk"), 8, rng)
    th = nulls.tethered_noise(x0, 6, nulls.noise_sigma(d, "tethered"), 8, rng)
    assert rw.shape == th.shape == (8, 7, 400, 3)
    assert (rw[:, 0] == 0).all() and (th[:, 0] == 0).all()
    assert fm.step_displacement(rw).mean() == pytest.approx(d, rel=0.03)
    assert fm.step_displacement(th)[:, 1:].mean() == pytest.approx(d, rel=0.03)
    assert fm.rmsd(th[:, -1], x0).mean() == pytest.approx(d / math.sqrt(2), rel=0.03)   # tethered: no memory
    assert fm.rmsd(rw[:, -1], x0).mean() == pytest.approx(d * math.sqrt(6), rel=0.03)   # diffusion: √k
    with pytest.raises(ValueError):
        nulls.noise_sigma(d, "brownian")


# ----------------------------------------------------------------------------------------------------------
# ensembles in one chain
# ----------------------------------------------------------------------------------------------------------


def start_state(sizes=(6,), seed=2):
    topo = random_topology(sizes, seed=seed)
    g = torch.Generator().manual_seed(seed)
    n = int(topo.ptr[-1])
    x0 = torch.randn(n, 3, generator=g, dtype=torch.float64) * 2
    v0 = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.1
    return InitialState(x0, v0, topo, None, 0.0, None, [])


def test_replicas_batched_equal_replicas_alone():
    model = perturbed_model("eghn", hidden=16, n_clusters=3, layers=1, pool_layers=1)
    sur = Surrogate.from_model(model, Featurizer(FEATURES), dtype="float64")
    start = start_state(sizes=(6, 4))
    alone = rollout(sur, start, 5, guard=None).positions
    ens = ensemble_rollout(sur, start, 5, replicas=3, seed=0, guard=None)
    assert ens.positions.shape == (3, 6, 10, 3) and ens.steps_done == 5
    for r in range(3):
        np.testing.assert_allclose(ens.positions[r], alone, rtol=0, atol=1e-10)   # only the summation order differs
    assert np.abs(alone[5] - alone[0]).max() > 1e-3                      # it did move


def jitter(spec, sigma=0.3, tau=1.0):
    """A stochastic propagator: x + τv plus Gaussian noise σ per node (the scale network starts constant)."""
    from mdsurrogate.models.baselines import LinearDynamics
    from mdsurrogate.models.stochastic import StochasticPropagator

    f = Featurizer(spec).spec
    model = StochasticPropagator(LinearDynamics(tau=tau), node_dim=f.node_dim, edge_dim=f.edge_dim,
                                 local_edge_dim=f.local_edge_dim, noise="node", noise_init=sigma)
    return Surrogate.from_model(model, Featurizer(spec), dtype="float64")


def test_stochastic_replicas_differ_and_are_seeded():
    sur = jitter(FEATURES)
    sur.project = False                                                   # keep the raw Gaussian draws
    assert sur.stochastic
    start = start_state()
    a = ensemble_rollout(sur, start, 4, replicas=5, seed=11).positions
    b = ensemble_rollout(sur, start, 4, replicas=5, seed=11).positions
    c = ensemble_rollout(sur, start, 4, replicas=5, seed=12).positions
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    assert np.abs(a[0, 1:] - a[1, 1:]).min() > 0                          # replicas are different samples
    assert fm.ensemble_variance(a[:, 1:])[0] == pytest.approx(0.09, rel=0.6)
    with pytest.raises(Exception, match="replicas"):
        ensemble_rollout(sur, start, 2, replicas=0)


# ----------------------------------------------------------------------------------------------------------
# the measurement end to end
# ----------------------------------------------------------------------------------------------------------

SPEC = {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": ["dist2"]}
DELTA = 2


def chain_trajectory(rng, frames=40, n=8):
    """A bonded chain drifting, breathing and jittering (Å); velocities = backward difference (Å per frame)."""
    base = np.cumsum(rng.normal(size=(n, 3)), 0) * 1.5
    f = np.arange(frames)[:, None, None]
    x = (base[None] + f * rng.normal(size=(1, 1, 3)) * 0.1
         + 0.3 * np.sin(0.4 * f + rng.uniform(0, 6, size=(1, n, 1))) * rng.normal(size=(1, n, 3))
         + 0.05 * rng.normal(size=(frames, n, 3)))
    v = np.empty_like(x)
    v[1:], v[0] = x[1:] - x[:-1], x[1] - x[0]
    return x.astype(np.float32), v.astype(np.float32)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A dataset of two 40-frame chains (train/val: trajectory 0, test: trajectory 1; Δ = 2 frames) and a Linear run
    x + τv with τ = Δ (lr ≈ 0 keeps it there): in the MD velocity convention it *is* constant velocity."""
    root = tmp_path_factory.mktemp("fidelity")
    rng = np.random.default_rng(3)
    trajs = [chain_trajectory(rng) for _ in range(2)]
    n, frames = 8, 40
    samples, split = [], []
    for t in range(2):
        for f in range(1, frames - DELTA):
            samples.append((t, f, f + DELTA))
            split.append(2 if t == 1 else 0 if f < 25 else 1)
    chain = np.array([(i, i + 1) for i in range(n - 1)] + [(i + 1, i) for i in range(n - 1)])
    meta = {"name": "toy_chain", "source": "toy", "features": SPEC, "frame_dt": 1.0, "delta_frames": DELTA,
            "units": {"length": "Å", "time": "ps", "velocity": "Å per frame (1 ps)"}}
    path = write_dataset(root / "ds", positions=[p for p, _ in trajs], velocities=[v for _, v in trajs],
                         samples=np.array(samples), split=np.array(split), meta=meta,
                         edge_sets={"local": EdgeSetData([chain, chain], {})})
    run = root / "linear"
    rec = recipe_from_dict({"data": {"path": str(path)}, "model": {"name": "linear", "tau": float(DELTA)},
                            "train": {"epochs": 1, "batch_size": 16, "lr": 1e-12, "eval_every": 1}})
    Trainer(rec, run, device="cpu").run()
    return path, run, trajs


def test_eval_rollout_end_to_end(toy, tmp_path):
    path, run, trajs = toy
    res = invoke("eval", run, "--rollout", 3, "--starts", 6, "--baseline", run, "--json", "--device", "cpu",
                 "--figure", tmp_path / "fid.png")
    assert res.exit_code == 0, res.output
    rec = last_json(res)
    assert rec["horizons"] == [1, 2, 3] and rec["starts"] == 6 and rec["replicas"] == 1
    assert rec["times"] == pytest.approx([2.0, 4.0, 6.0])
    m = rec["methods"]
    # x + Δ·v with v in Å per frame is the constant-velocity null model, and the baseline is the same run
    np.testing.assert_allclose(m["model"]["rmsd"], m["constant_velocity"]["rmsd"], rtol=1e-5)
    np.testing.assert_allclose(rec["skill"]["constant_velocity"]["rmsd"], 0.0, atol=1e-5)
    np.testing.assert_allclose(rec["skill"]["baseline"]["rmsd"], 0.0, atol=1e-6)
    # the starts: 6 test samples spread over input frames 1 … 40 − 1 − 3·Δ = 33, reference = later stored frames
    labels = rec["per_start"]["labels"]
    assert len(labels) == 6
    x, _ = trajs[1]
    f0 = np.array(labels) - labels[0] + 1                                # test samples are frames 1, 2, … in order
    assert f0[-1] == 33
    still = [fm.rmsd(x[f], x[f + DELTA * np.arange(1, 4)]) for f in f0]
    np.testing.assert_allclose(rec["per_start"]["rmsd"]["stay_still"], still, rtol=1e-5)
    np.testing.assert_allclose(m["stay_still"]["rmsd"], np.mean(still, 0), rtol=1e-5)
    # the data's statistics come from every frame of the test trajectory; the reference never leaves them
    edges = np.array([(i, i + 1) for i in range(7)])
    mean, dev = fm.edge_statistics(x, edges)
    assert rec["data"]["bond_spread"] == pytest.approx(float(np.sqrt(np.mean(dev ** 2))), rel=1e-5)
    assert rec["data"]["rg_envelope"] == pytest.approx([fm.radius_of_gyration(x).min(),
                                                        fm.radius_of_gyration(x).max()], rel=1e-5)
    assert m["stay_still"]["left_step"] == [1.0, 1.0, 1.0]                # it does not move: below the data's steps
    assert m["stay_still"]["left_bond"] == [0.0, 0.0, 0.0] and m["stay_still"]["left_rg"] == [0.0, 0.0, 0.0]
    assert rec["ensemble"]["spread_skill"] is None
    np.testing.assert_allclose(rec["ensemble"]["energy_score"], m["model"]["rmsd"], rtol=1e-6)  # point forecast
    for key in ("w1_rg", "w1_bond", "js_bond"):
        assert len(rec["distributions"][key]) == 3
    assert (tmp_path / "fid.png").stat().st_size > 10_000
    out = tmp_path / "again.png"
    rfile = tmp_path / "rec.json"
    rfile.write_text(res.stdout)
    res = invoke("plot", "fidelity", rfile, "--out", out)
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 10_000


def test_stochastic_model_gets_ensemble_scores(toy):
    path, _, _ = toy
    from mdsurrogate.data.dataset import Dataset

    ds = Dataset(path)
    sur = jitter(ds.meta["features"], sigma=0.2, tau=float(DELTA))
    sur.dataset.delta_frames = DELTA
    rec = rollout_fidelity(sur, steps=2, dataset=ds, starts=4, replicas=6, seed=1, n_boot=200)
    assert rec["replicas"] == 6 and rec["stochastic"]
    ens = rec["ensemble"]
    assert all(v > 0 for v in ens["spread_skill"]) and len(ens["spread_skill_lo"]) == 2
    assert len(rec["methods"]["model"]["rmsd_replicas"]) == 2
    # the ensemble mean is a better point forecast than its replicas (Jensen)
    assert all(a <= b + 1e-9 for a, b in zip(rec["methods"]["model"]["rmsd"], rec["methods"]["model"]["rmsd_replicas"],
                                              strict=True))
    again = rollout_fidelity(sur, steps=2, dataset=ds, starts=4, replicas=6, seed=1, n_boot=200)
    assert again["ensemble"] == ens                                        # seeded
    from rich.console import Console

    from mdsurrogate.cli.evaluate import fidelity_tables

    console = Console(record=True, width=200)
    for table in fidelity_tables(rec):
        console.print(table)
    assert "spread/skill" in console.export_text()


def test_bad_rollout_input_is_one_sentence(toy):
    _, run, _ = toy
    for args, phrase in ((["--rollout", 0], "--rollout must be ≥ 1"), (["--rollout", 2, "--replicas", 0],
                         "--replicas must be ≥ 1"), (["--rollout", 2, "--starts", 0], "--starts must be ≥ 1"),
                         (["--rollout", 50], "steps ≤ 19"), (["--rollout", 2, "--rotate"], "--rotate applies"),
                         (["--traj", "x.dcd"], "add --rollout"), (["--rollout", 2, "--figure", "f.xyz"], "extension")):
        res = invoke("eval", run, *args, "--device", "cpu")
        assert res.exit_code == 2, (args, res.output)
        assert phrase in " ".join(res.output.split()), (args, res.output)
        assert "Traceback" not in res.output
    with pytest.raises(FidelityError, match="steps ≤ 19"):
        rollout_fidelity(Surrogate.load(run, device="cpu"), steps=20)


def test_trajectory_file_starts_equal_dataset_starts(tmp_path):
    """AdK Cα (the demo's data): starts read from adk_dims2.dcd itself and from the dataset that holds it out as
    its test split are the same frames, so every number agrees."""
    pytest.importorskip("MDAnalysisTests")
    from MDAnalysisTests.datafiles import DCD, DCD2, PSF

    from mdsurrogate.data.ingest import ingest_md

    ds = ingest_md(tmp_path / "adk", PSF, [DCD], test_trajs=[DCD2], select="name CA", delta=5, cutoff=10.0,
                   ratios=(0.8, 0.2, 0.0))
    run = tmp_path / "linear"
    rec = recipe_from_dict({"data": {"path": str(ds)}, "model": {"name": "linear", "tau": 5.0},
                            "train": {"epochs": 1, "batch_size": 32, "lr": 1e-12, "eval_every": 1}})
    Trainer(rec, run, device="cpu").run()
    sur = Surrogate.load(run, device="cpu")
    a = rollout_fidelity(sur, steps=2, starts=4, n_boot=100)
    b = rollout_fidelity(sur, steps=2, starts=4, traj=DCD2, top=PSF, n_boot=100)
    assert b["source"]["kind"] == "trajectory" and a["source"]["split"] == "test"
    for m in ("stay_still", "constant_velocity", "drift", "model"):
        for key in ("rmsd", "rmsd_superposed", "bond_dev", "rg", "step"):
            np.testing.assert_allclose(a["methods"][m][key], b["methods"][m][key], rtol=1e-4, err_msg=f"{m} {key}")
    assert a["data"] == pytest.approx(b["data"])
    np.testing.assert_allclose(a["skill"]["constant_velocity"]["rmsd"], 0.0, atol=1e-5)
    assert a["methods"]["stay_still"]["rmsd_superposed"][0] < a["methods"]["stay_still"]["rmsd"][0]
    res = invoke("eval", run, "--rollout", 200, "--traj", DCD2, "--top", PSF, "--device", "cpu")
    assert res.exit_code == 2 and "no start with 200 steps" in " ".join(res.output.split())


def test_nbody_energy_drift(tiny_nbody):
    """N-body (test systems continued 20 steps, `ingest nbody --horizon`): |E_k − E_0| of the reference frames
    computed by hand; velocities per time unit, so x + Δt·v is the constant-velocity null model."""
    from mdsurrogate.data.dataset import Dataset
    from mdsurrogate.data.sources.nbody import total_energy
    from mdsurrogate.models.baselines import LinearDynamics
    from mdsurrogate.training.checkpoint import DatasetInfo

    ds = Dataset(tiny_nbody)
    info = DatasetInfo.from_dataset(ds)
    sur = Surrogate(LinearDynamics(tau=info.delta_time).eval(), Featurizer(ds.meta["features"]), info)
    rec = rollout_fidelity(sur, steps=3, dataset=ds, starts=3, n_boot=50)
    assert rec["data"]["edges"] == 0 and rec["methods"]["model"]["bond_dev"] == [None] * 3
    np.testing.assert_allclose(rec["skill"]["constant_velocity"]["rmsd"], 0.0, atol=1e-5)
    ids = rec["per_start"]["labels"]
    t, f0, _ = ds.samples[ids].T
    q = np.stack([ds.node_property("charge", i) for i in t])

    def energy(k):
        x, v = ds.states(t, f0 + k * ds.delta_frames)
        return total_energy(x.numpy().reshape(3, 5, 3), v.numpy().reshape(3, 5, 3), q)

    drift = [np.abs(energy(k) - energy(0)).mean() for k in (1, 2, 3)]
    np.testing.assert_allclose(rec["energy"]["reference_abs_drift"], drift, rtol=1e-4)
    assert all(e > 0 for e in rec["energy"]["model_abs_drift"])
    with pytest.raises(FidelityError, match="steps ≤ 20"):
        rollout_fidelity(sur, steps=21, dataset=ds)


def test_replicas_to_files_one_file_each_read_back(tmp_path):
    """ensemble_to_files writes R trajectories (one chain), each equal to its replica, refusing to replace files."""
    import MDAnalysis as mda

    from mdsurrogate.data.atoms import AtomTopology
    from mdsurrogate.simulation.ensemble import ensemble_to_files, replica_paths

    sur = jitter(FEATURES)
    base = start_state()
    atoms = AtomTopology.generic(base.x0.shape[0])
    start = InitialState(base.x0, base.v0, base.topo, atoms, 0.0, None, [])
    out = tmp_path / "ens.pdb"
    res, paths = ensemble_to_files(sur, start, 3, 4, out, seed=5)
    assert paths == replica_paths(out, 4)
    assert [p.name for p in paths] == ["ens_r00.pdb", "ens_r01.pdb", "ens_r02.pdb", "ens_r03.pdb"]
    for r, p in enumerate(paths):
        u = mda.Universe(str(p))
        got = np.stack([u.atoms.positions.copy() for _ in u.trajectory])
        np.testing.assert_allclose(got, res.positions[r], atol=1e-3)   # PDB keeps 3 decimals
    assert np.abs(res.positions[0, -1] - res.positions[1, -1]).max() > 1e-3
    with pytest.raises(Exception, match="exists"):
        ensemble_to_files(sur, start, 3, 4, out, seed=5)


def test_rollout_cli_replicas(toy, tmp_path):
    path, run, _ = toy
    out = tmp_path / "r.xyz"
    r = invoke("rollout", path, "--model", run, "--steps", "3", "--out", out, "--replicas", "3", "--json")
    assert r.exit_code == 0, r.output
    assert "deterministic" in r.output                      # a deterministic model's replicas are copies
    assert last_json(r)["out"] == [str(tmp_path / f"r_r0{i}.xyz") for i in range(3)]
    assert all((tmp_path / f"r_r0{i}.xyz").is_file() for i in range(3))
    again = invoke("rollout", path, "--model", run, "--steps", "3", "--out", out, "--replicas", "3")
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = invoke("rollout", path, "--model", run, "--out", tmp_path / "r.mdsr", "--replicas", "2")
    assert bad.exit_code == 2 and "--replicas" in bad.output


def test_demo_summary_geometry_and_table(toy):
    """The demo's figures: fidelity_summary picks the record's numbers per horizon, chain_geometry measures a
    rollout against known answers, and the CLI table shows them."""
    from rich.console import Console

    from mdsurrogate.apps.demo import chain_geometry, fidelity_summary
    from mdsurrogate.cli.info import demo_fidelity_table
    from mdsurrogate.data.topology import BatchTopology, EdgeSet

    _, run, _ = toy
    sur = Surrogate.load(run, device="cpu")
    rec = rollout_fidelity(sur, steps=3, starts=4, baseline=sur, n_boot=50)
    summary = fidelity_summary(rec, horizons=(1, 3, 9))
    assert sorted(summary) == [1, 3]                                      # k = 9 is beyond the record
    assert summary[3]["rmsd"]["stay_still"] == rec["methods"]["stay_still"]["rmsd"][2]
    assert summary[1]["skill"]["stay_still"] == [rec["skill"]["stay_still"][k][0] for k in ("rmsd", "rmsd_lo",
                                                                                            "rmsd_hi")]
    assert summary[1]["spread_skill"] is None                             # deterministic: no ensemble
    res = {"fidelity": summary, "stochastic": False, "fidelity_starts": 4, "fidelity_replicas": 1,
           "delta_ps": 2.0}
    console = Console(record=True, width=200)
    console.print(demo_fidelity_table(res))
    text = console.export_text()
    assert "3 (6)" in text and f"{summary[3]['rmsd']['model']:.3f}" in text and "spread/err" not in text
    # a straight 6-atom chain, 1.5 Å bonds; frame 1 stretches the last bond by 0.3 Å
    n = 6
    x0 = np.zeros((n, 3))
    x0[:, 0] = 1.5 * np.arange(n)
    x1 = x0.copy()
    x1[-1, 0] += 0.3
    bonds = torch.tensor([[i, i + 1] for i in range(n - 1)]).T
    topo = BatchTopology(torch.tensor([0, n]), {}, {"local": EdgeSet(bonds, {})})
    bare = Surrogate.from_model(sur.model, sur.featurizer)                # no checkpoint: frame 0 is the reference
    g = chain_geometry(np.stack([x0, x1]), bare, topo)
    assert g["bond_rms_dev_max"] == pytest.approx(0.3 / math.sqrt(n - 1))
    assert g["closest_contact"] == pytest.approx(3 * 1.5)                 # i, i + 3: the nearest pair not 1-2 or 1-3
    rg0 = float(np.sqrt(((x0 - x0.mean(0)) ** 2).sum(-1).mean()))
    assert g["rg_min"] == pytest.approx(rg0)
