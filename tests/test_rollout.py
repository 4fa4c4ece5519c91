"""Autoregressive rollout: chaining, reference errors, the stability guard keeps what was produced."""

from __future__ import annotations

import numpy as np
import torch

from mdsurrogate.data.atoms import AtomTopology
from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.data.graph import sizes_to_ptr
from mdsurrogate.data.topology import BatchTopology
from mdsurrogate.io.writers import open_writer
from mdsurrogate.models.base import Prediction
from mdsurrogate.models.baselines import LinearDynamics
from mdsurrogate.simulation.initial_state import InitialState
from mdsurrogate.simulation.rollout import rollout
from mdsurrogate.simulation.surrogate import Surrogate

SPEC = {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": ["dist2"]}


def run(model, x0, v0, topo, steps, delta_time=1.0, reference=None, **kw):
    sur = Surrogate.from_model(model, Featurizer(SPEC), delta_time=delta_time)
    return rollout(sur, InitialState(x0, v0, topo, None, 0.0, reference, []), steps, **kw)


def setup(n=6):
    g = torch.Generator().manual_seed(0)
    topo = BatchTopology(sizes_to_ptr(torch.tensor([n])))
    return torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g), topo


def test_linear_rollout_is_analytic():
    x0, v0, topo = setup()
    model = LinearDynamics(tau=0.5)
    ref = lambda k: (x0 + 0.5 * k * v0).numpy()  # noqa: E731
    res = run(model, x0, v0, topo, 5, delta_time=0.5, reference=ref)
    assert res.steps_done == 5 and res.stopped is None
    np.testing.assert_allclose(res.positions[5], (x0 + 2.5 * v0).numpy(), atol=1e-5)
    np.testing.assert_allclose(res.times, [0, 0.5, 1, 1.5, 2, 2.5])
    assert np.all(res.errors[1:] < 1e-10)


class Exploding(torch.nn.Module):
    """Moves every node by +1 per call and returns NaN from the 4th call on."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, g):
        self.calls += 1
        x = g.x + 1 if self.calls < 4 else torch.full_like(g.x, float("nan"))
        return Prediction(x=x, v=g.v)


def test_guard_stops_on_nan_and_keeps_frames(tmp_path):
    x0, v0, topo = setup()
    out = tmp_path / "r.pdb"
    with open_writer(out, AtomTopology.generic(6)) as w:
        res = run(Exploding(), x0, v0, topo, 10,
                      on_frame=lambda k, x, v, t, c: w.write(x, time_ps=t))
    assert res.steps_done == 3 and "non-finite" in res.stopped
    import MDAnalysis as mda

    u = mda.Universe(str(out))
    assert len(u.trajectory) == 4
    np.testing.assert_allclose(u.trajectory[3].positions, (x0 + 3).numpy(), atol=1e-3)


def test_guard_stops_on_blow_up():
    x0, v0, topo = setup()

    class Runaway(torch.nn.Module):
        def forward(self, g):
            return Prediction(x=g.x * 10, v=g.v)

    res = run(Runaway(), x0, v0, topo, 10)
    assert res.stopped and "blew up" in res.stopped and 0 < res.steps_done < 10
