"""The baselines of the model zoo (rf, gnn, gmn): their equations against dense references, the symmetries each
claims (and the ones the GNN lacks, also through `eval --rotate`), and their recipes."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mdsurrogate.cli import app
from mdsurrogate.config import load_recipe
from mdsurrogate.models.scatter import Aggregator

from .conftest import make_batch, orthogonal, perturbed_model

runner = CliRunner()


def build(name, **hp):
    return perturbed_model(name, **hp)


def dense_edge_attr(batch, n):
    """[n, n, A] edge scalars of a single complete graph."""
    e = torch.zeros(n, n, batch.edge_attr.shape[1], dtype=batch.edge_attr.dtype)
    e[batch.edge_index[0], batch.edge_index[1]] = batch.edge_attr
    return e


@torch.no_grad()
def test_radial_field_matches_a_dense_reference():
    model = build("rf", hidden=8, layers=3)
    batch, _ = make_batch(sizes=(6,), seed=2)
    n = 6
    e = dense_edge_attr(batch, n)
    x, v = batch.x.clone(), batch.v
    speed = v.norm(dim=-1, keepdim=True)
    for layer in model.layers:
        dx = torch.zeros_like(x)
        for i in range(n):
            for j in range(n):
                if i != j:
                    r = x[i] - x[j]
                    dx[i] += r * layer.phi(torch.cat([r.norm().view(1), e[i, j]]))
        x = x + dx / (n - 1) + layer.psi(speed) * v
    out = model(batch)
    assert (out.x - x).abs().max() < 1e-12
    assert out.v.shape == v.shape


@torch.no_grad()
def test_gmn_layer_is_emmp_with_gmn_kinematics():
    """x' = x + v', v' = φ_v(h) v + f, and the same update written as EMMP's Z + mean_j Ẑ_ij W_ij with the tied W
    of the module docstring (clip off, so the two forms agree exactly)."""
    model = build("gmn", hidden=8, layers=1, clip=None)
    layer = model.layers[0]
    batch, _ = make_batch(seed=4)
    h = model.embed(batch.h)
    agg = Aggregator(batch.edge_index[0], batch.x.shape[0])
    h1, x1, v1 = layer(h, batch.x, batch.v, batch.edge_index, batch.edge_attr, agg)
    assert (x1 - (batch.x + v1)).abs().max() < 1e-12
    m, basis = layer.message(h, torch.stack([batch.x, batch.v], -1), batch.edge_index, batch.edge_attr)
    w = layer.force(m)  # [E, 3]
    phi_v = layer.vel(h).index_select(0, batch.edge_index[0])  # φ_v(h_i) per edge
    e2 = torch.tensor([0.0, 1.0, 0.0], dtype=w.dtype)
    W = torch.stack([w + phi_v * e2, w + (phi_v - 1) * e2], dim=-1)  # [E, 3, 2]
    Z1 = torch.stack([batch.x, batch.v], -1) + agg.mean((basis @ W).flatten(1)).view(-1, 3, 2)
    assert (Z1[..., 0] - x1).abs().max() < 1e-12 and (Z1[..., 1] - v1).abs().max() < 1e-12
    # without forces a particle coasts: v' = φ_v(h) v
    layer.force[-1].weight.zero_()
    _, x2, v2 = layer(h, batch.x, batch.v, batch.edge_index, batch.edge_attr, agg)
    assert (v2 - layer.vel(h) * batch.v).abs().max() < 1e-12


@torch.no_grad()
@pytest.mark.parametrize("frame", ["absolute", "centred"])
def test_gnn_symmetries_per_frame(frame):
    model = build("gnn", hidden=16, layers=2, frame=frame)
    batch, topo = make_batch(seed=6)
    out = model(batch)
    t = torch.tensor([4.0, -3.0, 2.0], dtype=torch.float64)
    shifted = model(make_batch(topo=topo, x=batch.x + t, v=batch.v)[0])
    q = orthogonal(2, reflect=False)
    rotated = model(make_batch(topo=topo, x=batch.x @ q.T, v=batch.v @ q.T)[0])
    err_t = (shifted.x - (out.x + t)).abs().max().item()
    err_r = (rotated.x - out.x @ q.T).abs().max().item()
    assert err_r > 1e-3  # reads Cartesian coordinates: never rotation-equivariant
    if frame == "centred":
        assert err_t < 1e-12 and (shifted.v - out.v).abs().max() < 1e-12
    else:
        assert err_t > 1e-3


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="frame must be one of absolute, centred"):
        build("gnn", frame="polar")
    for name in ("rf", "gnn", "gmn"):
        with pytest.raises(ValueError, match="layers must be at least 1"):
            build(name, layers=0)


def test_eval_rotate_exposes_the_gnn(tiny_nbody, tmp_path):
    """`eval --rotate` leaves an equivariant model's MSE unchanged and changes the GNN's."""
    mse = {}
    for name in ("gnn", "rf"):
        run = tmp_path / name
        res = runner.invoke(app, ["train", f"recipes/nbody_{name}.toml", "--data", str(tiny_nbody), "--out", str(run),
                                  "--quiet", "--set", "train.epochs=2", "--set", "train.batch_size=20",
                                  "--set", "model.hidden=16"])
        assert res.exit_code == 0, res.output
        for rotate in (False, True):
            args = ["eval", str(run), "--json"] + (["--rotate"] if rotate else [])
            res = runner.invoke(app, args)
            mse[name, rotate] = json.loads(res.stdout.strip().splitlines()[-1])["mse"]
    assert mse["rf", True] == pytest.approx(mse["rf", False], rel=1e-4)
    assert abs(mse["gnn", True] - mse["gnn", False]) > 1e-3 * mse["gnn", False]


@pytest.mark.parametrize("task", ["nbody", "mcomplex_3_3_J1", "mocap_run"])
@pytest.mark.parametrize("model, lr", [("rf", 2e-4), ("gnn", 1e-3), ("gmn", 5e-4)])
def test_recipes(task, model, lr):
    rec, _ = load_recipe(f"{task}_{model}")
    assert rec.model.name == model and rec.train.lr == lr and rec.model.params["layers"] == 4
    assert rec.train.patience == (0 if task == "nbody" else 50)  # EGNN: fixed epochs; EGHN: early stopping


@torch.no_grad()
@pytest.mark.parametrize("name", ["eghn", "egnn", "gmn", "gnn", "linear", "rf"])
def test_models_run_on_a_batch_without_local_edges(name):
    """N-body and other datasets have no local graph; every model must still run (EGHN's pooling net then sees no
    edges: a regression test for EMMP with E = 0)."""
    import dataclasses

    batch, _ = make_batch(seed=8)
    batch = dataclasses.replace(batch, local_edge_index=batch.local_edge_index[:, :0],
                                local_edge_attr=batch.local_edge_attr[:0])
    out = build(name)(batch)
    assert torch.isfinite(out.x).all() and torch.isfinite(out.v).all()
