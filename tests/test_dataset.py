"""The on-disk dataset: exact round trip, lazy access, batching of mixed sizes, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mdsurrogate.data.dataset import Dataset, DatasetError, EdgeSetData, segment_arange, write_dataset
from mdsurrogate.data.featurize import FeatureError, Featurizer

META = {"units": {"length": "Å", "time": "ps"}, "frame_dt": 2.0, "delta_frames": 1,
        "features": {"global_graph": {"kind": "complete"}, "node": ["speed", "charge"],
                     "edge": ["charge_product", "dist2"], "local_edge": ["length0"]}}


def make(tmp_path, name="ds"):
    rng = np.random.default_rng(0)
    sizes, frames = [3, 5, 4], [4, 2, 3]
    pos = [rng.normal(size=(f, n, 3)).astype(np.float32) for f, n in zip(frames, sizes, strict=True)]
    vel = [rng.normal(size=(f, n, 3)).astype(np.float32) for f, n in zip(frames, sizes, strict=True)]
    charge = [rng.choice([-1.0, 1.0], n) for n in sizes]
    edges = [np.array([[0, 1], [1, 0]]), np.array([[0, 4], [4, 0], [2, 3]]), np.zeros((0, 2), int)]
    length0 = [np.array([1.5, 1.5]), np.array([2.0, 2.0, 3.0]), np.zeros(0)]
    samples = np.array([[0, 0, 1], [0, 2, 3], [1, 0, 1], [2, 1, 2]])
    split = np.array([0, 0, 1, 2])
    path = write_dataset(tmp_path / name, positions=pos, velocities=vel, samples=samples, split=split, meta=META,
                         node_props={"charge": charge},
                         edge_sets={"local": EdgeSetData(edges, {"length0": length0})})
    return path, pos, vel, charge, edges


def test_round_trip_is_exact(tmp_path):
    path, pos, vel, charge, edges = make(tmp_path)
    ds = Dataset(path, in_memory=False)
    assert isinstance(ds._arrays["positions"], np.memmap)  # lazy
    for t in range(3):
        for f in range(pos[t].shape[0]):
            x, v = ds.frame(t, f)
            np.testing.assert_array_equal(x, pos[t][f])
            np.testing.assert_array_equal(v, vel[t][f])
        np.testing.assert_array_equal(ds.node_property("charge", t), charge[t])
        e, props = ds.edge_set("local", t)
        np.testing.assert_array_equal(e, edges[t].reshape(-1, 2))
    assert ds.meta["n_samples"] == {"train": 2, "val": 1, "test": 1}
    assert ds.frame_dt == 2.0 and ds.delta_frames == 1
    # plain NumPy reads it too
    assert np.load(path / "positions.npy").shape == (sum(p.shape[0] * p.shape[1] for p in pos), 3)


def test_gather_mixed_sizes(tmp_path):
    path, pos, vel, charge, edges = make(tmp_path)
    ds = Dataset(path)
    x0, v0, x1, v1, topo = ds.gather(np.array([1, 2, 3]))  # trajectories 0, 1, 2
    assert topo.ptr.tolist() == [0, 3, 8, 12]
    assert torch.equal(x0[:3], torch.from_numpy(pos[0][2]))
    assert torch.equal(x1[3:8], torch.from_numpy(pos[1][1]))
    assert torch.equal(x0[8:], torch.from_numpy(pos[2][1]))
    # local edges shifted by each graph's node offset
    assert topo.edge_sets["local"].index.T.tolist() == [[0, 1], [1, 0], [3, 7], [7, 3], [5, 6]]
    g = Featurizer(ds.features)(x0, v0, topo)
    assert g.h.shape == (12, 2) and g.edge_attr.shape == (3 * 2 + 5 * 4 + 4 * 3, 2)
    assert g.local_edge_attr[:, 0].tolist() == [1.5, 1.5, 2.0, 2.0, 3.0]


def test_segment_arange():
    assert segment_arange(np.array([5, 0, 10]), np.array([2, 0, 3])).tolist() == [5, 6, 10, 11, 12]


def test_errors(tmp_path):
    with pytest.raises(DatasetError, match="no dataset"):
        Dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="meta.json is missing"):
        Dataset(tmp_path / "empty")
    path, *_ = make(tmp_path)
    with pytest.raises(DatasetError, match="already exists"):
        make(tmp_path)
    (path / "positions.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="corrupt"):
        Dataset(path)
    path2, *_ = make(tmp_path, "ds2")
    meta = json.loads((path2 / "meta.json").read_text())
    meta["format_version"] = 99
    (path2 / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="version 99"):
        Dataset(path2)
    (path2 / "meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match="corrupt"):
        Dataset(path2)
    with pytest.raises(FeatureError):
        Featurizer({"node": ["speed"], "global_graph": {"kind": "nonsense"}})


def test_overwrite_keeps_old_until_complete(tmp_path):
    path, *_ = make(tmp_path)
    before = (path / "positions.npy").read_bytes()
    with pytest.raises(DatasetError):  # a failing write must leave the old dataset intact
        write_dataset(path, positions=[np.zeros((2, 3, 3))], velocities=[np.zeros((2, 4, 3))], samples=[[0, 0, 1]],
                      split=[0], meta=META, overwrite=True)
    assert (path / "positions.npy").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
