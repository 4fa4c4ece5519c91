"""Shared fixtures: random flat-batched graphs in float64, rigid motions, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.data.graph import sizes_to_ptr
from mdsurrogate.data.topology import BatchTopology, EdgeSet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside the repository")
    return SHARED


def random_topology(sizes, n_groups=3, seed=0) -> BatchTopology:
    """Graphs of the given sizes with random ±1 charges and a random partition into groups whose
    intra-group ordered pairs form the local edge set (like M-complex complexes)."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(sizes)
    ptr = sizes_to_ptr(sizes)
    n = int(sizes.sum())
    charge = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
    group = torch.cat([torch.randint(0, n_groups, (int(s),), generator=g) for s in sizes])
    graph = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    key = graph * n_groups + group
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    mask = (key[i] == key[j]) & (i != j)
    local = torch.stack([i[mask], j[mask]])
    return BatchTopology(ptr, {"charge": charge, "group": group}, {"local": EdgeSet(local, {})})


FEATURES = {"global_graph": {"kind": "complete"}, "node": ["speed", "charge"],
            "edge": ["charge_product", "dist2"], "local_edge": ["same:group", "dist2"]}


def make_batch(sizes=(5, 7, 4), seed=0, topo=None, x=None, v=None):
    """A float64 GraphBatch with random states on random topologies (features as in FEATURES)."""
    topo = topo or random_topology(sizes, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    n = int(topo.ptr[-1])
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) * 2 if x is None else x
    v = torch.randn(n, 3, generator=g, dtype=torch.float64) if v is None else v
    return Featurizer(FEATURES)(x, v, topo), topo


def orthogonal(seed: int, reflect: bool) -> torch.Tensor:
    from mdsurrogate.training.metrics import random_rigid_motion

    q, _ = random_rigid_motion(torch.Generator().manual_seed(seed), reflect=reflect)
    return q


@pytest.fixture(scope="session")
def tiny_nbody(tmp_path_factory) -> Path:
    """A small charged N-body dataset (60 / 20 / 20 simulations), made once per test session."""
    from mdsurrogate.data.ingest import ingest_nbody

    path = tmp_path_factory.mktemp("data") / "nbody"
    return ingest_nbody(path, n_train=60, n_val=20, n_test=20, stream_train=60)


# -- helpers shared by the test modules ---------------------------------------------------------------------
def invoke(*args):
    """Run the CLI in-process (exceptions propagate, so a traceback fails the test loudly)."""
    from typer.testing import CliRunner

    from mdsurrogate.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def last_json(result):
    """The JSON object a ``--json`` command prints as its last line of stdout."""
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def perturbed_model(name, **hparams):
    """A registered model in float64, eval mode, every parameter perturbed (so that zero-initialised heads do
    not hide symmetry bugs)."""
    from mdsurrogate.data.featurize import Featurizer
    from mdsurrogate.models import registry  # noqa: F401
    from mdsurrogate.models.registry import build_model

    spec = Featurizer(FEATURES).spec
    torch.manual_seed(0)
    model = build_model(name, node_dim=spec.node_dim, edge_dim=spec.edge_dim, local_edge_dim=spec.local_edge_dim,
                        **hparams).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()
