"""CMU mocap → datasets (docs/protocols.md §3): the published Run split, forward-difference velocities, the skeleton
graphs, a height feature that is a dataset constant, AMC ingest at 30 Hz, bad input, and the symmetry the
height feature leaves (rotations about y, horizontal translations) versus full E(3) without it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mdsurrogate.data.dataset import Dataset
from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.data.ingest.mocap import (
    WALK30_DELTA,
    WALK30_SPLIT,
    WALK30_TRIALS,
    ingest_mocap_amc,
    ingest_mocap_positions,
)
from mdsurrogate.data.sources.asfamc import MocapFormatError, read_asf
from mdsurrogate.models.registry import build_model

from .conftest import SHARED, orthogonal


@pytest.fixture(scope="module")
def run_npz() -> tuple[dict[str, np.ndarray], Path]:
    """The EGHN Run file (module scope, so the same skip as ``shared_dir`` is done here)."""
    path = SHARED / "data" / "mocap" / "cmu_subject09_run.npz"
    if not path.is_file():
        pytest.skip("../shared is not beside the repository")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}, path


@pytest.fixture(scope="module")
def run_ds(run_npz, tmp_path_factory) -> Dataset:
    return Dataset(ingest_mocap_positions(tmp_path_factory.mktemp("mocap") / "run", run_npz[1]))


@pytest.fixture(scope="module")
def run_ds_noheight(run_npz, tmp_path_factory) -> Dataset:
    path = tmp_path_factory.mktemp("mocap") / "run_noheight"
    return Dataset(ingest_mocap_positions(path, run_npz[1], height_feature=False))


def test_run_published_split(run_ds, run_npz):
    data, _ = run_npz
    ds = run_ds
    assert ds.meta["n_samples"] == {"train": 400, "val": 240, "test": 240}
    assert ds.n_trajectories == 11 and set(ds.traj_nodes) == {31}
    assert ds.delta_frames == 30 and ds.frame_dt == 1.0 and ds.meta["frame_seconds"] == pytest.approx(1 / 120)
    for s in ("train", "val", "test"):
        rows = ds.samples[ds.split_indices(s)]
        trials, starts = data[f"split_{s}_trials"], data[f"split_{s}_starts"]
        np.testing.assert_array_equal(np.unique(rows[:, 0]), np.sort(trials))
        np.testing.assert_array_equal(rows[:, 0], np.repeat(trials, starts.shape[1]))  # 80 per trial, as shipped
        np.testing.assert_array_equal(rows[:, 1], starts.reshape(-1))
        np.testing.assert_array_equal(rows[:, 2], rows[:, 1] + 30)
    # skeleton graphs: 130 global edges (60 at one hop, 70 at two), 60 local bone edges with hops = 1
    glob, gp = ds.edge_set("global", 0)
    local, lp = ds.edge_set("local", 0)
    assert glob.shape == (130, 2) and np.bincount(gp["hops"]).tolist() == [0, 60, 70]
    assert local.shape == (60, 2) and set(lp["hops"]) == {1}
    bones = {tuple(e) for e in data["edges"].tolist()}
    assert {tuple(e) for e in local.tolist()} == bones | {(b, a) for a, b in bones}
    assert {tuple(e) for e in glob[gp["hops"] == 1].tolist()} == {tuple(e) for e in local.tolist()}
    assert ds.features.to_dict()["node"] == ["speed", "height"] and ds.features.edge == ["hops", "dist2"]
    assert ds.features.local_edge == ["hops", "dist2"] and ds.features.global_graph == {"kind": "static"}


def test_run_velocities_are_forward_differences(run_ds, run_npz):
    data, _ = run_npz
    for t in (0, 5, 10):
        raw = data[f"trial_{t:02d}"]
        assert run_ds.traj_frames[t] == raw.shape[0] - 1  # the last frame only serves v(T-2)
        for f in (0, 17, raw.shape[0] - 2):
            x, v = run_ds.frame(t, f)
            np.testing.assert_array_equal(x, raw[f])
            np.testing.assert_allclose(v, raw[f + 1].astype(np.float64) - raw[f], atol=1e-5)


def test_height_feature_is_a_dataset_constant(run_ds, run_npz):
    data, _ = run_npz
    train = data["split_train_trials"]
    top = max(float(data[f"trial_{t:02d}"][:-1, :, 1].max()) for t in train)
    assert run_ds.features.scales["height"] == pytest.approx(1 / top)
    feat = Featurizer(run_ds.features)
    ids = run_ds.split_indices("test")
    alone = run_ds.gather(ids[:1])
    mixed = run_ds.gather(np.array([ids[0], run_ds.split_indices("train")[7], ids[-1]]))
    h_alone = feat(alone[0], alone[1], alone[4]).h
    h_mixed = feat(mixed[0], mixed[1], mixed[4]).h
    torch.testing.assert_close(h_mixed[:31], h_alone, rtol=0, atol=0)
    torch.testing.assert_close(h_alone[:, 1], alone[0][:, 1] / top)


def test_amc_walk30_small(shared_dir, tmp_path):
    mocap = shared_dir / "data" / "mocap"
    asf, amcs = mocap / "raw" / "35.asf", [mocap / "subject35_30hz" / f"35_0{i}.amc" for i in (1, 2, 3)]
    split = {"train": {"trials": ["35_01"], "starts": None}, "val": {"trials": [1], "starts": [[0, 5, 10]]},
             "test": ["35_03"]}
    ds = Dataset(ingest_mocap_amc(tmp_path / "w", asf, amcs, delta=WALK30_DELTA, split=split, fps=30.0))
    frames = ds.traj_frames.tolist()
    assert frames == [89, 101, 106]  # 90 / 102 / 107 frames at 30 Hz, minus the last
    assert ds.meta["n_samples"] == {"train": frames[0] - 8, "val": 3, "test": frames[2] - 8}
    assert ds.meta["trials"] == ["35_01", "35_02", "35_03"] and ds.meta["units"]["time"] == "frame (1/30 s)"
    assert ds.edge_set("global", 2)[0].shape == (130, 2) and ds.edge_set("local", 1)[0].shape == (60, 2)
    # forward kinematics keeps every bone at its ASF length in every stored frame (float32 storage)
    skel = read_asf(asf)
    child, parent = skel.edges.T
    for t in range(3):
        for f in (0, frames[t] // 2, frames[t] - 1):
            x, _ = ds.frame(t, f)
            np.testing.assert_allclose(np.linalg.norm(x[child] - x[parent], axis=1), skel.lengths[child],
                                       rtol=1e-4, atol=1e-4)


def test_walk30_split_is_trial_disjoint():
    parts = [set(WALK30_SPLIT[s]["trials"]) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [11, 6, 6] and set.union(*parts) == set(WALK30_TRIALS)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_bad_input(shared_dir, run_npz, tmp_path):
    mocap = shared_dir / "data" / "mocap"
    asf, amc = mocap / "raw" / "35.asf", mocap / "subject35_30hz" / "35_01.amc"
    one = {"train": ["35_01"]}
    with pytest.raises(ValueError, match="too short"):
        ingest_mocap_amc(tmp_path / "a", asf, [amc], delta=89, split=one, fps=30.0)
    for bad in ("35_99", 3, True):
        with pytest.raises(ValueError, match="unknown trial id"):
            ingest_mocap_amc(tmp_path / "b", asf, [amc], delta=8, split={"train": [bad]}, fps=30.0)
    with pytest.raises(ValueError, match="trial-disjoint"):
        ingest_mocap_amc(tmp_path / "c", asf, [amc], delta=8, split={"train": [0], "test": ["35_01"]}, fps=30.0)
    with pytest.raises(ValueError, match="outside 0 … 80"):
        ingest_mocap_amc(tmp_path / "d", asf, [amc], delta=8, split={"train": {"trials": [0], "starts": [[81]]}},
                         fps=30.0)
    data, _ = run_npz
    broken = {k: v for k, v in data.items()}
    broken["trial_04"] = broken["trial_04"][:, :30]
    np.savez(tmp_path / "broken.npz", **broken)
    with pytest.raises(MocapFormatError, match="trial_04 has 30 joints"):
        ingest_mocap_positions(tmp_path / "e", tmp_path / "broken.npz")
    assert {p.name for p in tmp_path.iterdir()} == {"broken.npz"}  # nothing half-written


def _model(spec, seed=0):
    torch.manual_seed(seed)
    model = build_model("egnn", node_dim=spec.node_dim, edge_dim=spec.edge_dim, local_edge_dim=spec.local_edge_dim,
                        hidden=8).double()
    with torch.no_grad():  # perturb so that the gain-0.001 coordinate head does not hide broken symmetry
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _errors(ds, q, t):
    """Max |f(gx + t) − g f(x) − t| (positions) and velocity error for the orthogonal q and translation t."""
    feat = Featurizer(ds.features)
    model = _model(ds.features)
    x, v, _, _, topo = ds.gather(ds.split_indices("val")[[0, 100, 200]])
    x, v = x.double(), v.double()
    with torch.no_grad():
        out = model(feat(x, v, topo))
        moved = model(feat(x @ q.T + t, v @ q.T, topo))
    return ((moved.x - (out.x @ q.T + t)).abs().max().item(), (moved.v - out.v @ q.T).abs().max().item())


def _about_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)


def test_height_feature_symmetry(run_ds):
    horizontal = torch.tensor([7.0, 0.0, -4.0], dtype=torch.float64)
    mirror_x = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))  # reflection in a vertical plane
    for q in (_about_y(0.7), _about_y(2.9) @ mirror_x):
        err_x, err_v = _errors(run_ds, q, horizontal)
        assert err_x < 1e-9 and err_v < 1e-9, (err_x, err_v)
    # a general rotation moves the vertical, a vertical shift changes the height: not symmetries any more
    err_x, _ = _errors(run_ds, orthogonal(3, reflect=False), torch.zeros(3, dtype=torch.float64))
    assert err_x > 1e-6, err_x
    err_x, _ = _errors(run_ds, torch.eye(3, dtype=torch.float64), torch.tensor([0.0, 5.0, 0.0], dtype=torch.float64))
    assert err_x > 1e-6, err_x


def test_without_height_full_e3(run_ds_noheight):
    ds = run_ds_noheight
    assert ds.features.node == ["speed", "ones"] and ds.features.is_e3_invariant
    t = torch.tensor([3.0, -8.0, 5.0], dtype=torch.float64)
    for reflect in (False, True):
        err_x, err_v = _errors(ds, orthogonal(5, reflect=reflect), t)
        assert err_x < 1e-9 and err_v < 1e-9, (err_x, err_v)
