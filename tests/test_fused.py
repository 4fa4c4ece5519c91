"""The fused, chunked edge pipeline (``mdsurrogate.models.fused``) against the reference layers and against
finite differences, in float64: forward and gradients (parameters, inputs, edge scalars, smooth-cutoff weights),
many chunks and one, stored and recomputed activations; and the smooth-cutoff weights of ``GraphBatch``."""

from __future__ import annotations

import pytest
import torch

from mdsurrogate.data.graph import GraphBatch
from mdsurrogate.models import fused
from mdsurrogate.models.eghn import GRAM_EPS, normalised_gram
from mdsurrogate.models.fused import (
    CrossGram,
    DifferenceGram,
    EdgeNet,
    RelativePosition,
    edge_pipeline,
    neighbour_sum,
    use_edge_impl,
)

from .conftest import make_batch, perturbed_model

DT = torch.float64
SMALL = {"egnn": {"hidden": 16, "layers": 2}, "gmn": {"hidden": 16, "layers": 2}, "gnn": {"hidden": 16, "layers": 2},
         "eghn": {"hidden": 16, "n_clusters": 3, "layers": 2}, "rf": {"hidden": 16, "layers": 2},
         "segnn": {"hidden": 8, "lmax_hidden": 1, "lmax_attr": 1, "layers": 2},
         "tfn": {"channels": 4, "lmax": 1, "layers": 3}}
CASES = [("egnn", {}), ("gmn", {}), ("gnn", {}), ("eghn", {}), ("eghn", {"variant": "official"}),
         ("egnn", {"predict_velocity": False})]
SETTINGS = [(5, 0), (5, 1 << 40), (4096, 0), (4096, 1 << 40)]  # (chunk size, store limit): many/one chunk(s)


@pytest.fixture
def chunking(monkeypatch):
    def set_(chunk, store):
        monkeypatch.setattr(fused, "CHUNK_SIZE", chunk)
        monkeypatch.setattr(fused, "STORE_LIMIT_BYTES", store)
    return set_


def run_both(model, batch, inputs_require_grad=True):
    """Forward + backward of a scalar loss with the reference and the fused path: {impl: (x, v, grads)}."""
    out = {}
    for impl in ("reference", "fused"):
        b = GraphBatch(**{k: (None if t is None else t.detach().clone()) for k, t in vars(batch).items()})
        leaves = {"x": b.x, "v": b.v, "edge_attr": b.edge_attr}
        if b.edge_weight is not None:
            leaves["edge_weight"] = b.edge_weight
        if inputs_require_grad:
            for t in leaves.values():
                t.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        with use_edge_impl(impl):
            p = model(b)
            loss = (p.x.square() * torch.linspace(0.5, 1.5, p.x.numel(), dtype=DT).view_as(p.x)).sum()
            loss = loss + (p.v ** 3).sum() + (0 if p.aux_loss is None else p.aux_loss)
            loss.backward()
        grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}
        grads.update({f"input.{k}": t.grad.clone() for k, t in leaves.items() if t.grad is not None})
        out[impl] = (p.x.detach(), p.v.detach(), grads)
    return out


def assert_close(res, rtol=1e-10):
    (xr, vr, gr), (xf, vf, gf) = res["reference"], res["fused"]
    scale = max(xr.abs().max().item(), 1.0)
    assert (xr - xf).abs().max().item() <= rtol * scale
    assert (vr - vf).abs().max().item() <= rtol * max(vr.abs().max().item(), 1.0)
    assert set(gr) == set(gf), set(gr) ^ set(gf)
    for name in gr:
        err = (gr[name] - gf[name]).abs().max().item()
        assert err <= rtol * max(gr[name].abs().max().item(), 1e-3), (name, err)


@pytest.mark.parametrize("name,hp", CASES, ids=[f"{n}-{h}" for n, h in CASES])
@pytest.mark.parametrize("chunk,store", SETTINGS, ids=[f"chunk{c}-store{int(s > 0)}" for c, s in SETTINGS])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "edge_weight"])
def test_fused_equals_reference(name, hp, chunk, store, weighted, chunking):
    chunking(chunk, store)
    model = perturbed_model(name, **SMALL[name], **hp).train()
    batch, _ = make_batch(sizes=(6, 9, 4), seed=2)
    if weighted:
        batch.edge_weight = torch.rand(batch.edge_index.shape[1], generator=torch.Generator().manual_seed(1),
                                       dtype=DT)
    res = run_both(model, batch)
    assert "input.x" in res["fused"][2] and "input.edge_attr" in res["fused"][2]
    if weighted:
        assert "input.edge_weight" in res["fused"][2]
    assert_close(res)


@pytest.mark.parametrize("name,hp", CASES[:5], ids=[f"{n}-{h}" for n, h in CASES[:5]])
def test_fused_equals_reference_in_eval_without_grad(name, hp):
    model = perturbed_model(name, **SMALL[name], **hp)
    batch, _ = make_batch(sizes=(7, 5), seed=4)
    with torch.no_grad():
        with use_edge_impl("reference"):
            ref = model(batch)
        with use_edge_impl("fused"):
            fus = model(batch)
    assert torch.allclose(ref.x, fus.x, rtol=0, atol=1e-12) and torch.allclose(ref.v, fus.v, rtol=0, atol=1e-12)


def test_an_edge_set_without_edges():
    model = perturbed_model("egnn", **SMALL["egnn"])
    batch, _ = make_batch(sizes=(1, 1), seed=0)  # single-node graphs: no edges at all
    assert batch.edge_index.shape[1] == 0
    with torch.no_grad():
        with use_edge_impl("reference"):
            ref = model(batch)
        fus = model(batch)
    assert torch.equal(ref.x, fus.x) and torch.equal(ref.v, fus.v)


# ------------------------------------------------------------------------------------------------------------
# edge_pipeline itself: a dense per-edge reference and finite differences
# ------------------------------------------------------------------------------------------------------------
def random_net(f, h, s, q, o, gen, message=True, hidden_head=True, head=True, bias4=True):
    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=DT) * 0.4
    return EdgeNet(r(h, 2 * f + s), r(h), *(r(h, h), r(h)) if message else (None, None),
                   *(r(h, h), r(h)) if hidden_head else (None, None),
                   r(q * o, h) if head else None, r(q * o) if (head and bias4) else None)


def dense_pipeline(net, edge_index, hn, nodes, geometry, attr, weight, n_out, clip):
    """The module docstring's formulas edge by edge (all [E, …] tensors materialised)."""
    n = hn.shape[0]
    i, j = edge_index
    s, basis = None, None
    if geometry is not None:  # geometries work component-major: [G, E] → ([S, E], [q, 3, E])
        s_t, basis_t = geometry(nodes[i].t(), nodes[j].t())
        s, basis = s_t.t(), basis_t.permute(2, 1, 0)  # [E, S], [E, 3, q]
    s = attr if s is None else (s if attr is None else torch.cat([s, attr], -1))
    parts = [hn[i], hn[j]] + ([s] if s is not None else [])
    act = torch.nn.functional.silu
    u = act(torch.cat(parts, -1) @ net.w1.t() + net.b1)
    m = act(u @ net.w2.t() + net.b2) if net.w2 is not None else None
    u = m if m is not None else u
    w = torch.ones(i.shape[0], dtype=DT) if weight is None else weight
    msum = torch.zeros(n, net.w1.shape[0], dtype=DT).index_add(0, i, m * w[:, None]) if m is not None else None
    vsum = None
    if net.w4 is not None:
        if net.w3 is not None:
            u = act(u @ net.w3.t() + net.b3)
        c = u @ net.w4.t() + (net.b4 if net.b4 is not None else 0)
        q = basis.shape[-1]
        vec = (basis @ c.view(-1, q, n_out)).reshape(-1, 3 * n_out)
        if clip is not None:
            vec = vec.clamp(-clip, clip)
        vsum = torch.zeros(n, 3 * n_out, dtype=DT).index_add(0, i, vec * w[:, None])
    return msum, vsum


def random_graph(n, e, gen):
    i = torch.randint(0, n, (e,), generator=gen)
    j = torch.randint(0, n, (e,), generator=gen)
    keep = i != j
    ei = torch.stack([i[keep], j[keep]])
    return ei[:, torch.argsort(ei[0], stable=True)]


GEOMETRIES = {"relative": (RelativePosition(), 3, 1),
              "difference": (DifferenceGram(2, GRAM_EPS), 6, 2),
              "difference3": (DifferenceGram(3, GRAM_EPS), 9, 3),
              "cross": (CrossGram(3, GRAM_EPS), 9, 3), "none": (None, 0, 1)}


@pytest.mark.parametrize("geo", ["difference", "difference3", "cross"])
def test_geometry_is_the_reference_layers_geometry(geo):
    """The component-major geometries compute EMMP.message's scalars and basis (eghn.normalised_gram)."""
    geometry, width, _ = GEOMETRIES[geo]
    m = geometry.m
    gen = torch.Generator().manual_seed(6)
    zi, zj = (torch.randn(13, 3, m, generator=gen, dtype=DT) for _ in range(2))
    s_t, b_t = geometry(zi.reshape(13, -1).t(), zj.reshape(13, -1).t())
    if geo == "cross":
        want_s, want_b = normalised_gram(zj, zi), zj
    else:
        want_b = torch.cat([zi[..., :1] - zj[..., :1], zi[..., 1:], zj[..., 1:]], dim=-1)
        want_s = torch.cat([normalised_gram(want_b), want_b[..., 0].square().sum(-1, keepdim=True)], dim=-1)
    assert torch.allclose(s_t.t(), want_s, rtol=1e-12, atol=1e-14)
    assert torch.allclose(b_t.permute(2, 1, 0), want_b, rtol=0, atol=0)


@pytest.mark.parametrize("geo", ["relative", "difference", "difference3", "cross"])
def test_geometry_vjp_matches_autograd(geo):
    geometry = GEOMETRIES[geo][0]
    gen = torch.Generator().manual_seed(4)
    width = GEOMETRIES[geo][1]
    zi, zj = (torch.randn(width, 11, generator=gen, dtype=DT) for _ in range(2))  # component-major [G, C]
    s, b = geometry(zi, zj)
    gs, gb = torch.randn(s.shape, generator=gen, dtype=DT), torch.randn(b.shape, generator=gen, dtype=DT)
    for g_b in (gb, None):
        want = fused.Geometry.vjp(geometry, zi, zj, gs, g_b)  # autograd on __call__
        got = geometry.vjp(zi, zj, gs, g_b)
        for a_, b_ in zip(want, got, strict=True):
            assert torch.allclose(a_, b_, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("geo", list(GEOMETRIES))
@pytest.mark.parametrize("variant", ["full", "no_message", "no_hidden_head", "no_head", "clip"])
def test_edge_pipeline_matches_dense_formulas(geo, variant):
    geometry, width, n_out = GEOMETRIES[geo]
    if geometry is None and variant != "no_head":
        pytest.skip("a vector head needs a basis")
    gen = torch.Generator().manual_seed(3)
    n, f, h, a = 9, 5, 6, 2
    ei = random_graph(n, 40, gen)
    q = geometry.n_basis if geometry is not None else 1
    s = (geometry.n_scalars if geometry is not None else 0) + a
    net = random_net(f, h, s, q, n_out, gen, message=variant != "no_message",
                     hidden_head=variant != "no_hidden_head", head=variant != "no_head", bias4=geo != "relative")
    hn = torch.randn(n, f, generator=gen, dtype=DT)
    nodes = torch.randn(n, width, generator=gen, dtype=DT) if width else None
    attr = torch.randn(ei.shape[1], a, generator=gen, dtype=DT)
    weight = torch.rand(ei.shape[1], generator=gen, dtype=DT)
    clip = 0.05 if variant == "clip" else None
    want = dense_pipeline(net, ei, hn, nodes, geometry, attr, weight, n_out, clip)
    for chunk in (3, 1000):
        got = edge_pipeline(net, ei, hn, nodes=nodes, geometry=geometry, attr=attr, edge_weight=weight,
                            n_out=n_out, clip=clip, chunk_size=chunk)
        for a_, b_ in zip(want, got, strict=True):
            assert (a_ is None) == (b_ is None)
            if a_ is not None:
                assert torch.allclose(a_, b_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geo", ["relative", "difference", "difference3", "cross"])
@pytest.mark.parametrize("store", [0, 1 << 40])
def test_edge_pipeline_gradcheck(geo, store, monkeypatch):
    monkeypatch.setattr(fused, "STORE_LIMIT_BYTES", store)
    geometry, width, n_out = GEOMETRIES[geo]
    gen = torch.Generator().manual_seed(5)
    n, f, h, a = 6, 3, 4, 1
    ei = random_graph(n, 20, gen)
    net = random_net(f, h, geometry.n_scalars + a, geometry.n_basis, n_out, gen)
    tensors = [torch.randn(n, f, generator=gen, dtype=DT),
               torch.randn(n, width, generator=gen, dtype=DT), torch.randn(ei.shape[1], a, generator=gen, dtype=DT),
               torch.rand(ei.shape[1], generator=gen, dtype=DT) + 0.1,
               net.w1, net.b1, net.w2, net.b2, net.w3, net.b3, net.w4, net.b4]
    tensors = [t.clone().requires_grad_() for t in tensors]

    def fn(hn, nodes, attr, weight, *w):
        msum, vsum = edge_pipeline(EdgeNet(*w), ei, hn, nodes=nodes, geometry=geometry, attr=attr,
                                   edge_weight=weight, n_out=n_out, clip=None, chunk_size=7)
        return msum, vsum

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-7)


def test_edge_pipeline_clip_gradient_matches_clamp():
    gen = torch.Generator().manual_seed(8)
    geometry, width, _ = GEOMETRIES["relative"]
    n, f, h = 7, 4, 5
    ei = random_graph(n, 30, gen)
    net = random_net(f, h, 1, 1, 1, gen, bias4=False)
    hn = torch.randn(n, f, generator=gen, dtype=DT, requires_grad=True)
    nodes = torch.randn(n, 3, generator=gen, dtype=DT, requires_grad=True)
    grads = []
    for impl in ("dense", "fused"):
        if impl == "dense":
            _, vsum = dense_pipeline(net, ei, hn, nodes, geometry, None, None, 1, 0.02)
        else:
            _, vsum = edge_pipeline(net, ei, hn, nodes=nodes, geometry=geometry, clip=0.02, chunk_size=4)
        grads.append(torch.autograd.grad(vsum.square().sum(), (hn, nodes)))
    for a_, b_ in zip(*grads, strict=True):
        assert torch.allclose(a_, b_, rtol=1e-12, atol=1e-14)


def test_neighbour_sum_matches_gather_and_gradcheck():
    gen = torch.Generator().manual_seed(2)
    ei = random_graph(8, 30, gen)
    src = torch.randn(8, 4, generator=gen, dtype=DT, requires_grad=True)
    w = torch.rand(ei.shape[1], generator=gen, dtype=DT, requires_grad=True)
    want = torch.zeros(8, 4, dtype=DT).index_add(0, ei[0], src[ei[1]] * w[:, None])
    assert torch.allclose(neighbour_sum(src, ei, 8, w, chunk_size=5), want, rtol=1e-13, atol=1e-13)
    assert torch.autograd.gradcheck(lambda s, ww: neighbour_sum(s, ei, 8, ww, chunk_size=5), (src, w))


# ------------------------------------------------------------------------------------------------------------
# Smooth-cutoff weights (GraphBatch.edge_weight)
# ------------------------------------------------------------------------------------------------------------
WEIGHTED_MODELS = ["egnn", "gmn", "gnn", "eghn", "rf", "segnn", "tfn"]  # every model with edges


@pytest.mark.parametrize("name", WEIGHTED_MODELS)
@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_unit_weights_change_nothing(name, impl):
    model = perturbed_model(name, **SMALL[name])
    batch, _ = make_batch(seed=6)
    with torch.no_grad(), use_edge_impl(impl):
        plain = model(batch)
        batch.edge_weight = torch.ones(batch.edge_index.shape[1], dtype=DT)
        ones = model(batch)
    assert torch.allclose(plain.x, ones.x, rtol=0, atol=1e-12) and torch.allclose(plain.v, ones.v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", WEIGHTED_MODELS)
@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_a_zero_weight_edge_is_a_missing_edge(name, impl):
    """An edge whose weight went to 0 contributes nothing, so removing it from the graph (the atom crossed the
    cutoff) changes nothing: the step is continuous."""
    model = perturbed_model(name, **SMALL[name])
    batch, _ = make_batch(seed=7)
    E = batch.edge_index.shape[1]
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(E, generator=gen, dtype=DT) * 0.5 + 0.5
    # drop both directions of a few pairs (the global graph is symmetric)
    drop = torch.zeros(E, dtype=torch.bool)
    for e in (0, 5, 11):
        i, j = batch.edge_index[:, e]
        drop |= ((batch.edge_index[0] == i) & (batch.edge_index[1] == j)) | (
            (batch.edge_index[0] == j) & (batch.edge_index[1] == i))
    w_zero = w.masked_fill(drop, 0.0)
    with torch.no_grad(), use_edge_impl(impl):
        batch.edge_weight = w_zero
        zeroed = model(batch)
        keep = ~drop
        pruned = GraphBatch(**{**vars(batch), "edge_index": batch.edge_index[:, keep],
                               "edge_attr": batch.edge_attr[keep], "edge_weight": w[keep]})
        removed = model(pruned)
    assert torch.allclose(zeroed.x, removed.x, rtol=0, atol=1e-12)
    assert torch.allclose(zeroed.v, removed.v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", WEIGHTED_MODELS)
def test_weighted_model_stays_equivariant(name):
    from .conftest import orthogonal
    model = perturbed_model(name, **SMALL[name])
    batch, topo = make_batch(seed=8)
    w = torch.rand(batch.edge_index.shape[1], generator=torch.Generator().manual_seed(3), dtype=DT)
    q = orthogonal(2, True)
    t = torch.tensor([1.0, -4.0, 2.5], dtype=DT)
    with torch.no_grad():
        batch.edge_weight = w
        out = model(batch)
        moved, _ = make_batch(topo=topo, x=batch.x @ q.T + t, v=batch.v @ q.T)
        moved.edge_weight = w
        got = model(moved)
    if name == "gnn":
        return  # not equivariant by design (test_equivariance asserts it)
    assert (got.x - (out.x @ q.T + t)).abs().max() < 1e-9 and (got.v - out.v @ q.T).abs().max() < 1e-9


def test_graph_batch_to_keeps_a_missing_edge_weight():
    batch, _ = make_batch()
    assert batch.edge_weight is None and batch.to(dtype=torch.float32).edge_weight is None
    batch.edge_weight = torch.rand(batch.edge_index.shape[1], dtype=DT)
    moved = batch.to(dtype=torch.float32)
    assert moved.edge_weight.dtype == torch.float32 and moved.with_state(moved.x, moved.v).edge_weight is not None


# ------------------------------------------------------------------------------------------------------------
# fused_mlp: node MLPs with a hand-written backward
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("act_last", [False, True])
@pytest.mark.parametrize("n_heads", [1, 2])
def test_fused_mlp_matches_the_modules(act_last, n_heads):
    from mdsurrogate.models.layers import mlp

    torch.manual_seed(0)
    heads = [mlp(7, 5 + k, 3 - k, act_last=act_last).double() for k in range(n_heads)]
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(6, 4, generator=gen, dtype=DT, requires_grad=True),
          torch.randn(6, 3, generator=gen, dtype=DT, requires_grad=True)]
    with use_edge_impl("fused"):
        got = fused.fused_mlp(heads, *xs)
    want = [hd(torch.cat(xs, -1)) for hd in heads]
    for a_, b_ in zip(want, got, strict=True):
        assert torch.allclose(a_, b_, rtol=1e-13, atol=1e-13)
    params = [p for hd in heads for p in hd.parameters()]

    def fn(*t):
        return fused.fused_mlp(heads, *t[:2])

    assert torch.autograd.gradcheck(fn, (*xs,))
    loss = sum((o * (k + 1)).square().sum() for k, o in enumerate(fused.fused_mlp(heads, *xs)))
    g_fused = torch.autograd.grad(loss, params + xs)
    loss = sum((o * (k + 1)).square().sum() for k, o in enumerate(hd(torch.cat(xs, -1)) for hd in heads))
    g_ref = torch.autograd.grad(loss, params + xs)
    for a_, b_ in zip(g_ref, g_fused, strict=True):
        assert torch.allclose(a_, b_, rtol=1e-12, atol=1e-13)


def test_fused_mlp_falls_back_for_other_modules():
    from mdsurrogate.models.layers import mlp

    relu = mlp(4, 5, 2, act="relu").double()
    x = torch.randn(3, 4, dtype=DT)
    assert torch.equal(fused.fused_mlp([relu], x)[0], relu(x))
