"""One step loop: `rollout`, the `.mdsr` reader and ASE's `SurrogateDynamics` all advance the same `Chain`, and
give the same frames for the same checkpoint and start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdsurrogate.config import recipe_from_dict
from mdsurrogate.data.atoms import AtomTopology
from mdsurrogate.data.dataset import Dataset
from mdsurrogate.simulation.initial_state import InitialState
from mdsurrogate.simulation.mdsr import read_mdsr, write_mdsr
from mdsurrogate.simulation.rollout import Chain, rollout
from mdsurrogate.simulation.surrogate import Surrogate
from mdsurrogate.training.trainer import Trainer

STEPS = 8


@pytest.fixture(scope="module")
def start(tiny_nbody, tmp_path_factory):
    """An EGNN trained briefly on the tiny N-body set, and the state it starts from (5 particles)."""
    run = tmp_path_factory.mktemp("loop") / "run"
    rec = recipe_from_dict({"data": {"path": str(tiny_nbody)}, "model": {"name": "egnn", "hidden": 16, "layers": 2},
                            "train": {"epochs": 2, "batch_size": 20, "lr": 1e-3, "eval_every": 1, "seed": 5,
                                      "velocity_weight": 0.1}})
    Trainer(rec, run, device="cpu").run()
    ds = Dataset(tiny_nbody)
    x0, v0 = ds.states([2], [0])
    return run, x0.double(), v0.double(), ds.topology([2])


@pytest.fixture
def spy(monkeypatch):
    """Counts calls of Chain.advance (the one step function)."""
    calls = []
    original = Chain.advance

    def advance(self):
        calls.append(self.k)
        return original(self)

    monkeypatch.setattr(Chain, "advance", advance)
    return calls


def test_rollout_mdsr_and_ase_give_the_same_frames(start, tmp_path, spy):
    ase = pytest.importorskip("ase")
    from mdsurrogate.integrations.ase import SurrogateDynamics

    run, x0, v0, topo = start
    sur = Surrogate.load(run, device="cpu", dtype="float64")
    ref = rollout(sur, InitialState(x0, v0, topo, None, 0.0, None, []), STEPS)
    assert ref.stopped is None and len(spy) == STEPS
    frames = ref.positions

    spy.clear()
    path = write_mdsr(tmp_path / "r.mdsr", run, x0, v0, topo, AtomTopology.generic(5), STEPS + 1, 0.0, 1.0,
                      dtype="float64", verify=False)
    mdsr = read_mdsr(path, device="cpu")
    got = np.stack([f.positions for f in mdsr.frames()])
    assert len(spy) == STEPS
    np.testing.assert_array_equal(got, frames)  # same arithmetic: bit for bit

    spy.clear()
    atoms = ase.Atoms("H5", positions=x0.numpy())
    atoms.set_velocities(v0.numpy() * (1.0 / (1000 * ase.units.fs)))  # Å/ps → ASE velocity units
    atoms.set_initial_charges(topo.node_props["charge"].numpy())
    dyn = SurrogateDynamics(atoms, run, dtype="float64", units={"length": "Å", "time": "ps"})
    seen = [atoms.get_positions().copy()]
    dyn.attach(lambda: seen.append(atoms.get_positions().copy()), interval=1)
    dyn.run(STEPS)
    assert len(spy) == STEPS
    # ASE stores momenta (amu·Å/ASE time), so velocities pass a unit conversion and back: round-off only
    np.testing.assert_allclose(np.stack(seen[-(STEPS + 1):]), frames, rtol=0, atol=1e-10)


def test_chain_snapshot_restores_the_same_continuation(start):
    run, x0, v0, topo = start
    sur = Surrogate.load(run, device="cpu", dtype="float64")
    chain = sur.chain(x0, v0, topo)
    for _ in range(3):
        chain.advance()
    snap = chain.snapshot()
    first = [chain.advance().prediction.x.clone() for _ in range(3)]
    chain.restore(snap)
    assert chain.k == 3
    again = [chain.advance().prediction.x.clone() for _ in range(3)]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
