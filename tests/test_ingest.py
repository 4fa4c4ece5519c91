"""Simulators → datasets with the papers' sample construction; cluster output of hierarchical models."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from mdsurrogate.cli import app
from mdsurrogate.data.dataset import Dataset
from mdsurrogate.data.ingest import group_pairs, ingest_mcomplex


def test_nbody_dataset_protocol(tiny_nbody):
    ds = Dataset(tiny_nbody)
    assert ds.meta["frame_steps"][30] == 3100 and ds.meta["frame_steps"][40] == 4100
    assert ds.frame_dt == pytest.approx(0.1) and ds.delta_frames == 10
    assert set(ds.samples[:, 1]) == {30} and set(ds.samples[:, 2]) == {40}
    assert ds.meta["n_samples"] == {"train": 60, "val": 20, "test": 20}
    q = ds.node_property("charge", 0)
    assert set(np.abs(q)) == {1.0}


@pytest.fixture(scope="module")
def tiny_mcomplex(tmp_path_factory):
    path = tmp_path_factory.mktemp("mc") / "mc"
    return ingest_mcomplex(path, n_complexes=3, avg_size=3, n_types=1, n_train=30, n_val=10, n_test=10, seed=5,
                           horizon=1)


def test_mcomplex_dataset_protocol(tiny_mcomplex):
    ds = Dataset(tiny_mcomplex)
    assert set(ds.traj_nodes) == {9} and ds.delta_frames == 15
    assert set(ds.samples[:, 1]) == {10} and set(ds.samples[:, 2]) == {25}
    for t in range(3):
        cid = ds.node_property("complex", t)
        assert sorted(np.bincount(cid)) == [2, 3, 4]
        edges, _ = ds.edge_set("local", t)
        np.testing.assert_array_equal(edges, group_pairs(cid))
        assert len(edges) == 2 * 1 + 3 * 2 + 4 * 3
        # complexes are rigid along the stored trajectory
        x0, _ = ds.frame(t, 0)
        x1, _ = ds.frame(t, 40)
        d0 = np.linalg.norm(x0[edges[:, 0]] - x0[edges[:, 1]], axis=1)
        d1 = np.linalg.norm(x1[edges[:, 0]] - x1[edges[:, 1]], axis=1)
        np.testing.assert_allclose(d0, d1, rtol=1e-5)  # float32 storage
    assert ds.features.edge_dim == 3 and ds.features.local_edge_dim == 3


def test_eghn_cluster_outputs(tiny_mcomplex, tmp_path):
    runner = CliRunner()
    run = tmp_path / "eghn"
    res = runner.invoke(app, ["train", "mcomplex_3_3_J1_eghn", "--data", str(tiny_mcomplex), "--out",
                              str(run), "--quiet", "--set", "train.epochs=1", "--set", "model.hidden=16",
                              "--set", "train.batch_size=10"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    pdb = tmp_path / "clusters.pdb"
    res = runner.invoke(app, ["eval", str(run), "--clusters", str(pdb)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    import MDAnalysis as mda

    u = mda.Universe(str(pdb))
    b = u.atoms.tempfactors
    assert len(b) == 9 and set(b) <= {0.0, 1.0, 2.0}
    out = tmp_path / "roll.pdb"
    res = runner.invoke(app, ["rollout", str(tiny_mcomplex), "--model", str(run), "--steps", "2", "--out", str(out)],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    u = mda.Universe(str(out))
    assert len(u.trajectory) == 3
    assert len(u.bonds) == 1 + 3 + 6  # CONECT: the intra-complex pairs of complexes of 2, 3 and 4 particles
    from ase.io import read

    out_xyz = tmp_path / "roll.xyz"
    runner.invoke(app, ["rollout", str(tiny_mcomplex), "--model", str(run), "--steps", "2", "--out", str(out_xyz)])
    frames = read(out_xyz, index=":")
    assert len(frames) == 3 and set(frames[0].arrays["cluster"]) <= {0, 1, 2}
    # a model without clusters gives a clear error
    egnn = tmp_path / "egnn"
    runner.invoke(app, ["train", "mcomplex_3_3_J1_egnn", "--data", str(tiny_mcomplex), "--out",
                        str(egnn), "--quiet", "--set", "train.epochs=1", "--set", "model.hidden=8",
                        "--set", "train.batch_size=10"])
    res = runner.invoke(app, ["eval", str(egnn), "--clusters", str(tmp_path / "c.pdb")])
    assert res.exit_code == 2 and "no cluster assignment" in res.output


def test_nbody_horizon_continues_the_same_systems(tmp_path):
    """Longer val/test (and train) trajectories for rollout references change no sample and no stored frame."""
    import numpy as np

    from mdsurrogate.data.dataset import Dataset
    from mdsurrogate.data.ingest import ingest_nbody

    kw = {"n_train": 20, "n_val": 6, "n_test": 6, "stream_train": 20}
    short = Dataset(ingest_nbody(tmp_path / "a", horizon=1, **kw))
    long = Dataset(ingest_nbody(tmp_path / "b", horizon=20, train_horizon=3, **kw))
    assert (short.samples == long.samples).all() and (short.split_codes == long.split_codes).all()
    assert set(short.traj_frames) == {49} and long.traj_frames[0] == 30 + 3 * 10 + 1
    assert (long.traj_frames[20:] == 30 + 20 * 10 + 1).all()
    for t in (0, 19, 22, 31):
        for f in (0, 30, 40, 48):
            assert np.array_equal(short.frame(t, f)[0], long.frame(t, f)[0])
