"""BatchTopology.repeat: r copies of a batch with the right node offsets, equal to batching the copies by hand."""

from __future__ import annotations

import pytest
import torch

from mdsurrogate.data.topology import BatchTopology, EdgeSet

from .conftest import random_topology


def test_repeat_matches_concatenated_copies():
    topo = random_topology((5, 7, 4), seed=3)
    topo.edge_sets["local"].props["w"] = torch.arange(topo.edge_sets["local"].index.shape[1]).double()
    topo.node_props["vec"] = torch.randn(16, 2)
    rep = topo.repeat(3)
    n, e = 16, topo.edge_sets["local"].index.shape[1]
    assert rep.num_graphs == 9 and int(rep.ptr[-1]) == 48
    assert rep.ptr.tolist() == [0, 5, 12, 16, 21, 28, 32, 37, 44, 48]
    assert rep.batch.tolist() == sum(([b + 3 * c for b in topo.batch.tolist()] for c in range(3)), [])
    idx = rep.edge_sets["local"].index
    for c in range(3):
        assert torch.equal(idx[:, c * e:(c + 1) * e], topo.edge_sets["local"].index + c * n)
        assert torch.equal(rep.edge_sets["local"].props["w"][c * e:(c + 1) * e], topo.edge_sets["local"].props["w"])
        for k, t in topo.node_props.items():
            assert torch.equal(rep.node_props[k][c * n:(c + 1) * n], t)
    # every edge stays inside one graph
    assert torch.equal(rep.batch[idx[0]], rep.batch[idx[1]])
    assert torch.equal(topo.repeat(1).ptr, topo.ptr)


def test_repeat_without_edges_and_bad_count():
    topo = BatchTopology(torch.tensor([0, 4]), {}, {"local": EdgeSet(torch.zeros(2, 0, dtype=torch.long))})
    rep = topo.repeat(2)
    assert rep.ptr.tolist() == [0, 4, 8] and rep.edge_sets["local"].index.shape == (2, 0)
    with pytest.raises(ValueError):
        topo.repeat(0)
