"""A whole deterministic rollout is E(3)-equivariant: 100 float64 steps of the one step loop (radius graph rebuilt
every step with a smooth cutoff, atoms crossing it) from a rotated, reflected and translated start give the
rotated, reflected and translated trajectory to 1e-6 Å."""

from __future__ import annotations

import pytest
import torch

from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.simulation.rollout import Chain
from mdsurrogate.simulation.surrogate import Surrogate

from .conftest import FEATURES, orthogonal, perturbed_model, random_topology

STEPS = 100


class Damped(torch.nn.Module):
    """A stable propagator made from any model: the new state moves a fraction of the model's way (still
    equivariant: a convex combination of equivariant outputs)."""

    def __init__(self, model, rate):
        super().__init__()
        self.model, self.rate = model, rate

    def forward(self, batch):
        pred = self.model(batch)
        pred.x = batch.x + self.rate * (pred.x - batch.x)
        pred.v = batch.v + self.rate * (pred.v - batch.v)
        return pred


def trajectory(sur, x0, v0, topo):
    chain = Chain(sur, x0, v0, topo)
    frames, edges = [x0], []
    for _ in range(STEPS):
        edges.append(sur.featurizer(chain.x, chain.v, chain.topo).edge_index.shape[1])
        chain.advance()
        frames.append(chain.x.clone())
    return torch.stack(frames), edges


@pytest.mark.parametrize("name", ["egnn", "eghn"])
def test_100_step_rollout_reproduces_under_rotation_reflection_translation(name):
    hp = {"hidden": 16, "layers": 2} | ({"n_clusters": 3} if name == "eghn" else {})
    model = Damped(perturbed_model(name, **hp), 1.0 if name == "egnn" else 0.1)
    feat = Featurizer({**FEATURES, "global_graph": {"kind": "radius", "cutoff": 4.0, "envelope": 1.0}})
    sur = Surrogate.from_model(model, feat, dtype="float64")
    topo = random_topology((16,), seed=3)
    g = torch.Generator().manual_seed(9)
    x0 = torch.rand(16, 3, generator=g, dtype=torch.float64) * 8.0
    v0 = torch.randn(16, 3, generator=g, dtype=torch.float64) * 0.05
    q, t = orthogonal(4, True), torch.tensor([5.0, -2.0, 11.0], dtype=torch.float64)
    assert torch.det(q) < 0  # a reflection, not only a rotation
    plain, edges = trajectory(sur, x0, v0, topo)
    moved, _ = trajectory(sur, x0 @ q.T + t, v0 @ q.T, topo)
    assert torch.isfinite(plain).all()
    assert len(set(edges)) > 1, "atoms must cross the cutoff during the rollout for the test to mean something"
    assert (plain[-1] - plain[0]).norm(dim=-1).max() > 0.5  # the system moved
    assert (moved - (plain @ q.T + t)).abs().max() <= 1e-6
