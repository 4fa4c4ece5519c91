"""One generic test for every registered propagator: E(3) equivariance (rotation, reflection, translation),
permutation equivariance, and batch independence (a mixed-size batch equals each graph alone), in float64."""

from __future__ import annotations

import pytest
import torch

from mdsurrogate.models import registry  # noqa: F401
from mdsurrogate.models.base import MODELS

from .conftest import make_batch, orthogonal, perturbed_model, random_topology

# small widths keep the suite fast; every other hyper-parameter is the model's default
SMALL = {"egnn": {"hidden": 16, "layers": 2}, "eghn": {"hidden": 16, "n_clusters": 3, "layers": 2},
         "rf": {"hidden": 16, "layers": 2}, "gnn": {"hidden": 16, "layers": 2}, "gmn": {"hidden": 16, "layers": 2},
         "segnn": {"hidden": 8, "lmax_hidden": 2, "lmax_attr": 2, "layers": 2},
         "tfn": {"channels": 4, "lmax": 2, "layers": 3}}
NOT_EQUIVARIANT = {"gnn"}  # a plain MPNN baseline: asserted NOT rotation-equivariant
TOL = 1e-9


def build(name):
    return perturbed_model(name, **SMALL.get(name, {}))


def run(model, batch):
    with torch.no_grad():
        return model(batch)


@pytest.fixture(params=sorted(MODELS))
def model_name(request):
    return request.param


@pytest.mark.parametrize("reflect", [False, True])
def test_rotation_reflection_translation(model_name, reflect):
    model = build(model_name)
    batch, topo = make_batch()
    q = orthogonal(1, reflect)
    t = torch.tensor([3.0, -2.0, 5.0], dtype=torch.float64)
    out = run(model, batch)
    moved_batch, _ = make_batch(topo=topo, x=batch.x @ q.T + t, v=batch.v @ q.T)
    moved = run(model, moved_batch)
    err_x = (moved.x - (out.x @ q.T + t)).abs().max().item()
    err_v = (moved.v - out.v @ q.T).abs().max().item()
    if model_name in NOT_EQUIVARIANT:
        assert err_x > 1e-4, "a non-equivariant baseline should not be rotation-equivariant"
        return
    assert err_x < TOL and err_v < TOL, (err_x, err_v)
    if "cluster_scores" in out.extras:
        assert (moved.extras["cluster_scores"] - out.extras["cluster_scores"]).abs().max() < TOL


def test_translation_only(model_name):
    model = build(model_name)
    batch, topo = make_batch(seed=3)
    t = torch.tensor([-7.0, 0.5, 11.0], dtype=torch.float64)
    out = run(model, batch)
    moved = run(model, make_batch(topo=topo, x=batch.x + t, v=batch.v)[0])
    if model_name in NOT_EQUIVARIANT:  # the MPNN reads lab-frame coordinates (its default frame = "absolute")
        assert (moved.x - (out.x + t)).abs().max() > 1e-4
        return
    assert (moved.x - (out.x + t)).abs().max() < TOL
    assert (moved.v - out.v).abs().max() < TOL


def test_permutation(model_name):
    model = build(model_name)
    batch, topo = make_batch(seed=5)
    g = torch.Generator().manual_seed(9)
    # a random permutation of the nodes inside each graph
    perm = torch.cat([topo.ptr[k] + torch.randperm(int(topo.ptr[k + 1] - topo.ptr[k]), generator=g)
                      for k in range(topo.num_graphs)])
    out = run(model, batch)
    p_batch, _ = make_batch(topo=topo.permuted(perm), x=batch.x[perm], v=batch.v[perm])
    p_out = run(model, p_batch)
    assert (p_out.x - out.x[perm]).abs().max() < TOL
    assert (p_out.v - out.v[perm]).abs().max() < TOL


def test_mixed_size_batch_equals_each_graph_alone(model_name):
    model = build(model_name)
    sizes = (6, 3, 9)
    batch, topo = make_batch(sizes=sizes, seed=11)
    out = run(model, batch)
    for k, n in enumerate(sizes):
        lo, hi = int(topo.ptr[k]), int(topo.ptr[k + 1])
        single_topo = random_topology([n], seed=0)
        # the same graph alone: take its slice of the batch topology
        single_topo.node_props = {name: t[lo:hi] for name, t in topo.node_props.items()}
        li = topo.edge_sets["local"].index
        keep = (li[0] >= lo) & (li[0] < hi)
        single_topo.edge_sets["local"].index = li[:, keep] - lo
        alone = run(model, make_batch(topo=single_topo, x=batch.x[lo:hi], v=batch.v[lo:hi])[0])
        assert (alone.x - out.x[lo:hi]).abs().max() < 1e-10
        assert (alone.v - out.v[lo:hi]).abs().max() < 1e-10
