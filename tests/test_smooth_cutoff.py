"""A smooth cutoff makes one step continuous in the positions: an atom crossing the radius-graph cutoff changes
every model's output by O(ε), where the hard cutoff jumps (``global_graph.envelope``, ``GraphBatch.edge_weight``)."""

from __future__ import annotations

import pytest
import torch

from mdsurrogate.data.featurize import FeatureError, Featurizer

from .conftest import FEATURES, perturbed_model, random_topology

CUTOFF, WIDTH = 3.0, 1.0
SMALL = {"egnn": {"hidden": 16, "layers": 2}, "gmn": {"hidden": 16, "layers": 2}, "gnn": {"hidden": 16, "layers": 2},
         "eghn": {"hidden": 16, "n_clusters": 2, "layers": 2}, "rf": {"hidden": 16, "layers": 2},
         "segnn": {"hidden": 8, "lmax_hidden": 1, "lmax_attr": 1, "layers": 2},
         "tfn": {"channels": 4, "lmax": 1, "layers": 3}}


def featurizer(envelope):
    graph = {"kind": "radius", "cutoff": CUTOFF}
    if envelope is not None:
        graph["envelope"] = envelope
    return Featurizer({**FEATURES, "global_graph": graph})


def crossing_states(eps):
    """One graph of 6 atoms; atom 5 sits on the x axis at CUTOFF ∓ eps from atom 0 (inside, then outside), every
    other pair well away from the cutoff."""
    topo = random_topology((6,), seed=4)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64) * 0.4
    x[0] = 0.0
    v = torch.randn(6, 3, generator=g, dtype=torch.float64)
    inside, outside = x.clone(), x.clone()
    inside[5] = torch.tensor([CUTOFF - eps, 0.0, 0.0], dtype=torch.float64)
    outside[5] = torch.tensor([CUTOFF + eps, 0.0, 0.0], dtype=torch.float64)
    return topo, inside, outside, v


def jump(name, envelope, eps=1e-7):
    model = perturbed_model(name, **SMALL[name])
    f = featurizer(envelope)
    topo, inside, outside, v = crossing_states(eps)
    with torch.no_grad():
        a, b = f(inside, v, topo), f(outside, v, topo)
        assert a.edge_index.shape[1] == b.edge_index.shape[1] + 2  # the pair (0, 5) is an edge only inside
        pa, pb = model(a), model(b)
    # the moved atom itself moves by 2 eps: compare the others, and the moved atom's displacement
    dx = (pa.x - a.x) - (pb.x - b.x)
    return max(float(dx.abs().max()), float((pa.v - pb.v).abs().max()))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_step_is_continuous_as_an_atom_crosses_the_cutoff(name):
    assert jump(name, WIDTH) < 1e-6


@pytest.mark.parametrize("name", ["egnn", "eghn", "segnn"])
def test_the_hard_cutoff_jumps(name):
    """The same crossing without the envelope moves the output by far more: the test above can fail."""
    assert jump(name, None) > 1e-4


def test_weights_are_one_inside_and_fall_smoothly_to_zero():
    from mdsurrogate.data.topology import EdgeSet

    f = featurizer(WIDTH)
    for d, want in [(0.5, 1.0), (CUTOFF - WIDTH, 1.0), (CUTOFF - WIDTH / 2, 0.5), (CUTOFF - 1e-9, 0.0)]:
        pos = torch.tensor([[0.0, 0, 0], [d, 0, 0]], dtype=torch.float64, requires_grad=True)
        w = f.edge_weights(pos, EdgeSet(torch.tensor([[0], [1]])))
        assert abs(float(w.detach()) - want) < 1e-8
        (grad,) = torch.autograd.grad(w.sum(), pos)
        if d != CUTOFF - WIDTH / 2:  # zero slope at both ends of the ramp
            assert grad.abs().max() < 1e-6


@pytest.mark.parametrize("graph", [{"kind": "complete", "envelope": 1.0},
                                   {"kind": "radius", "cutoff": 3.0, "envelope": 4.0},
                                   {"kind": "radius", "cutoff": 3.0, "envelope": float("nan")},
                                   {"kind": "radius", "cutoff": 3.0, "envelope": 0.0}])
def test_bad_envelopes_are_refused(graph):
    with pytest.raises(FeatureError, match="envelope|smooth cutoff"):
        Featurizer({**FEATURES, "global_graph": graph})
