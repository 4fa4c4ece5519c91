"""The input speed limit: the largest per-atom speed a Surrogate gives its model, taken from the training data of an
MD dataset (1.25 × the fastest input), applied in ``predict`` only (the state keeps its velocity), equivariant, and
off for data sets that are not MD or when set to ``math.inf``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mdsurrogate.data.dataset import Dataset, EdgeSetData, write_dataset
from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.errors import ParameterError
from mdsurrogate.models.baselines import LinearDynamics
from mdsurrogate.simulation.surrogate import Surrogate, cap_speed
from mdsurrogate.training.limits import data_limits

from .conftest import FEATURES, orthogonal, random_topology


def walk_dataset(path, md: bool):
    """One 30-frame trajectory of 6 atoms; the velocity of frame f is (f + 1)·0.01 Å per frame along x for atom 0
    (the fastest input of the training frames 0 … 19 is 0.20), 0 elsewhere."""
    rng = np.random.default_rng(0)
    frames, n = 30, 6
    pos = (rng.normal(size=(frames, n, 3)) * 3).astype(np.float32)
    vel = np.zeros_like(pos)
    vel[:, 0, 0] = (np.arange(frames) + 1) * 0.01
    samples = np.array([(0, f, f + 1) for f in range(frames - 1)])
    split = np.array([0 if f < 20 else 1 if f < 25 else 2 for f in range(frames - 1)])
    meta = {"name": "walk", "source": "toy", "frame_dt": 1.0, "delta_frames": 1,
            "features": {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": ["dist2"]},
            "units": {"length": "Å", "time": "ps", "velocity": "Å per frame (1 ps)"}}
    if md:
        meta["md"] = {"selection": "all", "velocities": "lag"}
    empty = np.zeros((0, 2), dtype=np.int64)
    return Dataset(write_dataset(path, positions=[pos], velocities=[vel], samples=samples, split=split, meta=meta,
                                 edge_sets={"local": EdgeSetData([empty], {})}))


def test_md_data_store_the_limit_and_other_data_do_not(tmp_path):
    _, extra = data_limits(walk_dataset(tmp_path / "md", md=True))
    assert extra["input_speed_limit"] == pytest.approx(1.25 * 0.20, rel=1e-6)
    limits, extra = data_limits(walk_dataset(tmp_path / "toy", md=False))
    assert "input_speed_limit" not in extra and limits["data"]["input_speed_max"] == pytest.approx(0.20, rel=1e-6)


def test_cap_shortens_only_fast_rows_and_keeps_their_direction():
    v = torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.0, 0.4], [0.0, 0.0, 0.0]], dtype=torch.float64)
    out = cap_speed(v, 1.0)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64))
    assert torch.equal(out[1:], v[1:])


def surrogate(speed_limit):
    model = LinearDynamics(tau=2.0)
    return Surrogate(model.double().eval(), Featurizer(FEATURES), Surrogate.from_model(model, Featurizer(FEATURES))
                     .dataset, dtype=torch.float64, speed_limit=speed_limit)


def test_predict_caps_the_input_speed_equivariantly():
    topo = random_topology((4, 5), seed=1)
    n = int(topo.ptr[-1])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    v = torch.randn(n, 3, generator=g, dtype=torch.float64)
    v[0] *= 10.0
    capped = surrogate(0.5)
    pred = capped.predict(x, v, topo)
    assert torch.allclose(pred.x, x + 2.0 * cap_speed(v, 0.5))            # the model saw the capped velocity
    assert (pred.x - x).norm(dim=-1).max() <= 2.0 * 0.5 + 1e-12
    q = orthogonal(4, reflect=True)
    moved = capped.predict(x @ q.T + 1.0, v @ q.T, topo)
    assert torch.allclose(moved.x, pred.x @ q.T + 1.0, atol=1e-12)        # E(3)-equivariant
    free = surrogate(math.inf).predict(x, v, topo)
    assert torch.allclose(free.x, x + 2.0 * v)                            # math.inf: no cap


def test_a_chain_steps_with_the_capped_input_and_keeps_its_state():
    topo = random_topology((6,), seed=2)
    x = torch.randn(6, 3, dtype=torch.float64)
    v = torch.randn(6, 3, dtype=torch.float64)
    chain = surrogate(0.05).chain(x, v, topo, guard=None)
    assert torch.equal(chain.v, v)                                        # the state keeps its velocity
    chain.advance()
    assert torch.allclose(chain.x - x, 2.0 * cap_speed(v, 0.05))


def test_a_limit_that_is_not_positive_is_one_sentence():
    with pytest.raises(ParameterError, match="speed_limit must be > 0"):
        surrogate(0.0)
