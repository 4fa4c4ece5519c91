"""EGHN: equivariance of EMMP, E-Pool, E-UnPool and the whole model (both variants), pooling algebra, the
connectivity loss, mixed-size batches and gradient coverage. Float64 throughout; a speed check is printed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from mdsurrogate.data.graph import GraphBatch, ptr_to_batch, sizes_to_ptr
from mdsurrogate.models.eghn import (
    EGHN,
    EMMP,
    EPool,
    EUnPool,
    coarsen_adjacency,
    connectivity_loss,
    pool,
    unpool,
)
from mdsurrogate.models.scatter import Aggregator

DT = torch.float64
TOL = 1e-9
SIZES = (7, 9, 12)
F_NODE, A_GLOBAL, A_LOCAL, HID, K = 2, 3, 2, 16, 3


# ------------------------------------------------------------------------------------------------------------
# Random graphs
# ------------------------------------------------------------------------------------------------------------
def complete_edges(n: int, offset: int) -> torch.Tensor:
    idx = torch.arange(n)
    i, j = idx.repeat_interleave(n), idx.repeat(n)
    keep = i != j
    return torch.stack([i[keep], j[keep]]) + offset


def partition(n: int, n_parts: int, gen: torch.Generator) -> torch.Tensor:
    """Random assignment of n nodes to n_parts non-empty parts of at least 2 nodes: [n] part ids."""
    labels = torch.arange(n_parts).repeat(2)
    labels = torch.cat([labels, torch.randint(n_parts, (n - 2 * n_parts,), generator=gen)])
    return labels[torch.randperm(n, generator=gen)]


def block_edges(labels: torch.Tensor, offset: int) -> torch.Tensor:
    """All ordered intra-part pairs (i ≠ j)."""
    n = labels.numel()
    idx = torch.arange(n)
    i, j = idx.repeat_interleave(n), idx.repeat(n)
    keep = (i != j) & (labels[i] == labels[j])
    return torch.stack([i[keep], j[keep]]) + offset


def make_batch(sizes=SIZES, seed: int = 0, n_parts=None, dtype=DT):
    """A batch of complete global graphs with local graphs from random partitions into complexes.

    Returns the batch and the [ΣN] complex label of each node (local to its graph)."""
    gen = torch.Generator().manual_seed(seed)
    ptr = sizes_to_ptr(torch.tensor(sizes))
    edges, local, labels = [], [], []
    for g, n in enumerate(sizes):
        parts = n_parts or int(torch.randint(2, 4, (1,), generator=gen))
        lab = partition(n, parts, gen)
        labels.append(lab)
        edges.append(complete_edges(n, int(ptr[g])))
        local.append(block_edges(lab, int(ptr[g])))
    edge_index, local_edge_index = torch.cat(edges, 1), torch.cat(local, 1)
    n = int(ptr[-1])
    batch = GraphBatch(
        x=torch.randn(n, 3, generator=gen, dtype=dtype),
        v=torch.randn(n, 3, generator=gen, dtype=dtype),
        h=torch.randn(n, F_NODE, generator=gen, dtype=dtype),
        edge_index=edge_index,
        edge_attr=torch.randn(edge_index.shape[1], A_GLOBAL, generator=gen, dtype=dtype),
        local_edge_index=local_edge_index,
        local_edge_attr=torch.randn(local_edge_index.shape[1], A_LOCAL, generator=gen, dtype=dtype),
        batch=ptr_to_batch(ptr),
        ptr=ptr,
    )
    return batch, torch.cat(labels)


def randomise(module: torch.nn.Module, seed: int = 1, std: float = 0.3) -> torch.nn.Module:
    """Replace every parameter by noise, so that no term is hidden by a near-zero init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


# ------------------------------------------------------------------------------------------------------------
# Group elements: rotation, reflection (det −1), translation, permutation within graphs
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Transform:
    R: torch.Tensor  # [3, 3] orthogonal
    t: torch.Tensor  # [3]
    perm: torch.Tensor  # [ΣN] new node p is old node perm[p]; keeps every node in its graph

    @property
    def inverse_perm(self) -> torch.Tensor:
        inv = torch.empty_like(self.perm)
        inv[self.perm] = torch.arange(self.perm.numel())
        return inv

    def point(self, x):  # [n, 3]
        return x @ self.R.T + self.t

    def vec(self, v):  # [n, 3]
        return v @ self.R.T

    def mat(self, Z, n_points: int):  # [n, 3, m], the first n_points columns are positions
        Z = torch.einsum("ab,nbm->nam", self.R, Z)
        shift = torch.zeros_like(Z)
        shift[..., :n_points] = self.t.view(1, 3, 1)
        return Z + shift

    def nodes(self, a):
        return a[self.perm]

    def edges(self, edge_index):
        return self.inverse_perm[edge_index]

    def graph(self, b: GraphBatch) -> GraphBatch:
        return GraphBatch(x=self.nodes(self.point(b.x)), v=self.nodes(self.vec(b.v)), h=self.nodes(b.h),
                          edge_index=self.edges(b.edge_index), edge_attr=b.edge_attr,
                          local_edge_index=self.edges(b.local_edge_index), local_edge_attr=b.local_edge_attr,
                          batch=b.batch, ptr=b.ptr)


def random_orthogonal(gen, det: float) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=DT))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q


def within_graph_perm(ptr: torch.Tensor, gen) -> torch.Tensor:
    return torch.cat([int(ptr[g]) + torch.randperm(int(ptr[g + 1] - ptr[g]), generator=gen)
                      for g in range(ptr.numel() - 1)])


def transform(kind: str, ptr: torch.Tensor, seed: int = 5) -> Transform:
    gen = torch.Generator().manual_seed(seed)
    n = int(ptr[-1])
    eye, zero, ident = torch.eye(3, dtype=DT), torch.zeros(3, dtype=DT), torch.arange(n)
    if kind == "rotation":
        return Transform(random_orthogonal(gen, 1.0), zero, ident)
    if kind == "reflection":
        return Transform(random_orthogonal(gen, -1.0), zero, ident)
    if kind == "translation":
        return Transform(eye, 5.0 * torch.randn(3, generator=gen, dtype=DT), ident)
    if kind == "permutation":
        return Transform(eye, zero, within_graph_perm(ptr, gen))
    if kind == "all":
        return Transform(random_orthogonal(gen, -1.0), 3.0 * torch.randn(3, generator=gen, dtype=DT),
                         within_graph_perm(ptr, gen))
    raise ValueError(kind)


KINDS = ["rotation", "reflection", "translation", "permutation", "all"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny graphs gain nothing from more, and on a busy machine OpenMP barriers stall
    them (seconds per step); the speed report is then a per-core figure that load barely moves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def close(a, b, tol=TOL):
    err = (a - b).abs().max().item()
    assert err < tol, f"max error {err:.3e}"


# ------------------------------------------------------------------------------------------------------------
# Equivariance of the parts
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gram", ["difference", "cross"])
def test_emmp_equivariant(kind, gram):
    b, _ = make_batch()
    T = transform(kind, b.ptr)
    n = b.num_nodes
    layer = randomise(EMMP(HID, A_GLOBAL, 3, gram=gram).to(DT))
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(n, HID, generator=gen, dtype=DT)
    Z = torch.randn(n, 3, 3, generator=gen, dtype=DT)
    points = 1 if gram == "difference" else 0  # the cross-Gram layer takes translation-invariant columns only
    ei2 = T.edges(b.edge_index)
    h1, Z1 = layer(h, Z, b.edge_index, b.edge_attr, Aggregator(b.edge_index[0], n))
    h2, Z2 = layer(T.nodes(h), T.nodes(T.mat(Z, points)), ei2, b.edge_attr, Aggregator(ei2[0], n))
    assert (Z1 - Z).abs().max() > 1e-3  # the vectors really move
    close(h2, T.nodes(h1))
    close(Z2, T.nodes(T.mat(Z1, points)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_epool_equivariant(kind, variant):
    b, _ = make_batch()
    T = transform(kind, b.ptr)
    n, B = b.num_nodes, b.num_graphs
    m_score = 2 if variant == "paper" else 3
    net = randomise(EPool(HID, A_LOCAL, m_score, K, 2, variant=variant).to(DT))
    h = torch.randn(n, HID, generator=torch.Generator().manual_seed(4), dtype=DT)
    Zp = torch.stack([b.x, b.v], -1)  # [x, v]: column 0 a position
    if variant == "paper":
        Zs, s_points = Zp, 1
    else:
        xc = b.x - Aggregator(b.batch, B).mean(b.x)[b.batch]
        Zs, s_points = torch.stack([xc, b.v, b.v * xc.square().sum(-1, keepdim=True)], -1), 0
    graphs = Aggregator(b.batch, B)
    S1, Zk1, hk1 = net(h, Zs, Zp, b.local_edge_index, b.local_edge_attr, graphs)
    S2, Zk2, hk2 = net(T.nodes(h), T.nodes(T.mat(Zs, s_points)), T.nodes(T.mat(Zp, 1)),
                       T.edges(b.local_edge_index), b.local_edge_attr, graphs)
    close(S1.sum(-1), torch.ones(n, dtype=DT))
    assert S1.std() > 1e-3  # scores are not uniform
    close(S2, T.nodes(S1))
    close(Zk2, T.mat(Zk1, 1))  # clusters are not permuted
    close(hk2, hk1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layers", [1, 2])
def test_eunpool_equivariant(kind, layers):
    b, _ = make_batch()
    T = transform(kind, b.ptr)
    n, B = b.num_nodes, b.num_graphs
    gen = torch.Generator().manual_seed(6)
    S = torch.softmax(torch.randn(n, K, generator=gen, dtype=DT), -1)
    delta_k = torch.randn(B * K, 3, 2, generator=gen, dtype=DT)
    Z_k = torch.randn(B * K, 3, 2, generator=gen, dtype=DT)
    Z = torch.randn(n, 3, 2, generator=gen, dtype=DT)
    extra = torch.randn(n, 3, 2, generator=gen, dtype=DT)
    h = torch.randn(n, HID, generator=gen, dtype=DT)
    h_k = torch.randn(B * K, HID, generator=gen, dtype=DT)
    net = randomise(EUnPool(HID, 6, 2, layers).to(DT))
    out1, d1, zt1 = net(S, b.batch, delta_k, Z_k, Z, extra, h, h_k)
    out2, d2, zt2 = net(T.nodes(S), b.batch, T.mat(delta_k, 0), T.mat(Z_k, 1), T.nodes(T.mat(Z, 1)),
                        T.nodes(T.mat(extra, 0)), T.nodes(h), h_k)
    close(out2, T.nodes(T.mat(out1, 0)))
    close(d2, T.nodes(T.mat(d1, 0)))
    close(zt2, T.nodes(T.mat(zt1, 1)))


# ------------------------------------------------------------------------------------------------------------
# The whole model
# ------------------------------------------------------------------------------------------------------------
def make_model(variant: str, seed: int = 1, **kw) -> EGHN:
    torch.manual_seed(seed)
    kw = {"hidden": HID, "n_clusters": K, "layers": 2, "pool_layers": 2, **kw}
    model = EGHN(node_dim=F_NODE, edge_dim=A_GLOBAL, local_edge_dim=A_LOCAL, variant=variant, **kw).to(DT)
    return randomise(model, seed, std=0.2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_eghn_equivariant(kind, variant):
    b, _ = make_batch()
    T = transform(kind, b.ptr)
    model = make_model(variant, decoder_layers=2)
    p1, p2 = model(b), model(T.graph(b))
    S1 = p1.extras["cluster_scores"]
    assert S1.shape == (b.num_nodes, K)
    close(S1.sum(-1), torch.ones(b.num_nodes, dtype=DT))
    assert (p1.x - b.x).abs().max() > 1e-3 and (p1.v - b.v).abs().max() > 1e-3
    close(p2.x, T.nodes(T.point(p1.x)))
    close(p2.v, T.nodes(T.vec(p1.v)))
    close(p2.extras["cluster_scores"], T.nodes(S1))
    close(p2.aux_loss, p1.aux_loss)
    assert torch.equal(p1.extras["clusters"], S1.argmax(-1))


def subgraph(b: GraphBatch, g: int) -> GraphBatch:
    lo, hi = int(b.ptr[g]), int(b.ptr[g + 1])

    def pick(ei, ea):
        keep = b.batch[ei[0]] == g
        return ei[:, keep] - lo, ea[keep]

    ei, ea = pick(b.edge_index, b.edge_attr)
    li, la = pick(b.local_edge_index, b.local_edge_attr)
    ptr = torch.tensor([0, hi - lo])
    return GraphBatch(x=b.x[lo:hi], v=b.v[lo:hi], h=b.h[lo:hi], edge_index=ei, edge_attr=ea,
                      local_edge_index=li, local_edge_attr=la, batch=ptr_to_batch(ptr), ptr=ptr)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_mixed_sizes_match_single_graphs(variant):
    b, _ = make_batch()
    model = make_model(variant)
    full = model(b)
    losses = []
    for g in range(b.num_graphs):
        lo, hi = int(b.ptr[g]), int(b.ptr[g + 1])
        one = model(subgraph(b, g))
        close(one.x, full.x[lo:hi], 1e-10)
        close(one.v, full.v[lo:hi], 1e-10)
        close(one.extras["cluster_scores"], full.extras["cluster_scores"][lo:hi], 1e-10)
        losses.append(one.aux_loss)
    close(torch.stack(losses).mean(), full.aux_loss, 1e-10)


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("decoder_layers", [1, 2])
def test_every_parameter_gets_a_gradient(variant, decoder_layers):
    b, _ = make_batch()
    torch.manual_seed(0)
    model = EGHN(node_dim=F_NODE, edge_dim=A_GLOBAL, local_edge_dim=A_LOCAL, hidden=HID, n_clusters=K,
                 decoder_layers=decoder_layers, variant=variant).to(DT)  # default init, default depths
    pred = model(b)
    loss = (pred.x - b.x - b.v).square().mean() + (pred.v - b.v).square().mean() + pred.aux_loss
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


# ------------------------------------------------------------------------------------------------------------
# Pooling algebra and the connectivity loss
# ------------------------------------------------------------------------------------------------------------
def one_hot_scores(labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, K).to(DT)


def test_pool_then_unpool_reproduces_clustered_configuration():
    b, labels = make_batch(n_parts=K)
    B = b.num_graphs
    S = one_hot_scores(labels)
    gen = torch.Generator().manual_seed(7)
    centres = torch.randn(B * K, 3, 2, generator=gen, dtype=DT)  # cluster position and velocity
    feats = torch.randn(B * K, HID, generator=gen, dtype=DT)
    row = b.batch * K + labels  # each node sits exactly on its cluster's centre
    Z, h = centres[row], feats[row]
    Z_k, h_k = pool(S, Aggregator(b.batch, B), Z, h)
    close(Z_k, centres)
    close(h_k, feats)
    close(unpool(S, b.batch, Z_k), Z)
    close(unpool(S, b.batch, h_k), h)


def test_pool_is_a_weighted_mean_per_graph():
    b, _ = make_batch()
    B, n = b.num_graphs, b.num_nodes
    S = torch.softmax(torch.randn(n, K, generator=torch.Generator().manual_seed(8), dtype=DT), -1)
    (X,) = pool(S, Aggregator(b.batch, B), b.x)
    for g in range(B):
        lo, hi = int(b.ptr[g]), int(b.ptr[g + 1])
        w = S[lo:hi]
        close(X[g * K:(g + 1) * K], (w.T @ b.x[lo:hi]) / w.sum(0, keepdim=True).T, 1e-12)


def dense_coarsen(S, edge_index, b: GraphBatch):
    out = []
    for g in range(b.num_graphs):
        lo, hi = int(b.ptr[g]), int(b.ptr[g + 1])
        A = torch.zeros(hi - lo, hi - lo, dtype=DT)
        keep = b.batch[edge_index[0]] == g
        A[edge_index[0, keep] - lo, edge_index[1, keep] - lo] = 1.0
        out.append(S[lo:hi].T @ A @ S[lo:hi])
    return torch.stack(out)


def test_coarsened_adjacency_matches_dense():
    b, _ = make_batch()
    S = torch.softmax(torch.randn(b.num_nodes, K, generator=torch.Generator().manual_seed(9), dtype=DT), -1)
    for ei in (b.edge_index, b.local_edge_index):
        close(coarsen_adjacency(S, ei, Aggregator(b.batch, b.num_graphs)), dense_coarsen(S, ei, b), 1e-12)


def test_connectivity_loss_zero_only_for_perfect_partition():
    b, labels = make_batch(n_parts=K)
    B, n = b.num_graphs, b.num_nodes
    graphs = Aggregator(b.batch, B)
    S = one_hot_scores(labels)
    perfect = connectivity_loss(coarsen_adjacency(S, b.local_edge_index, graphs))
    assert perfect.item() < 1e-12
    # soft scores
    noise = torch.randn(n, K, generator=torch.Generator().manual_seed(1), dtype=DT)
    soft = torch.softmax(3 * S + 0.1 * noise, -1)
    assert connectivity_loss(coarsen_adjacency(soft, b.local_edge_index, graphs)).item() > 1e-3
    # hard scores that split a complex
    wrong = labels.clone()
    first = int((labels[: int(b.ptr[1])] == 0).nonzero()[0])
    wrong[first] = 1
    assert connectivity_loss(coarsen_adjacency(one_hot_scores(wrong), b.local_edge_index, graphs)) > 1e-3
    # a local graph with an edge across complexes
    j = int((labels[: int(b.ptr[1])] == 1).nonzero()[0])
    extra = torch.tensor([[first, j], [j, first]])
    crossed = torch.cat([b.local_edge_index, extra], 1)
    assert connectivity_loss(coarsen_adjacency(S, crossed, graphs)) > 1e-3


def test_model_aux_loss_is_weighted_connectivity_loss():
    b, _ = make_batch()
    model = make_model("paper", cut_weight=2.5)
    pred = model(b)
    S = pred.extras["cluster_scores"]
    expected = 2.5 * connectivity_loss(dense_coarsen(S, b.local_edge_index, b))
    close(pred.aux_loss, expected, 1e-12)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="variant"):
        EGHN(node_dim=1, edge_dim=1, local_edge_dim=1, variant="nope")
    with pytest.raises(ValueError, match="decoder_layers"):
        EGHN(node_dim=1, edge_dim=1, local_edge_dim=1, decoder_layers=0)


def test_registered():
    from mdsurrogate.models.base import MODELS

    assert MODELS["eghn"] is EGHN and EGHN.uses_local_graph


# ------------------------------------------------------------------------------------------------------------
# Speed (printed, not asserted): 100 graphs × 25 nodes, complete global graph, 5 cliques of 5 as local graph
# ------------------------------------------------------------------------------------------------------------
def speed_batch(n_graphs=100, n_nodes=25, clique=5):
    ptr = sizes_to_ptr(torch.full((n_graphs,), n_nodes))
    lab = torch.arange(n_nodes) // clique
    edges = torch.cat([complete_edges(n_nodes, g * n_nodes) for g in range(n_graphs)], 1)
    local = torch.cat([block_edges(lab, g * n_nodes) for g in range(n_graphs)], 1)
    n = n_graphs * n_nodes
    return GraphBatch(x=2 * torch.randn(n, 3), v=0.5 * torch.randn(n, 3), h=torch.randn(n, 1),
                      edge_index=edges, edge_attr=torch.randn(edges.shape[1], 3), local_edge_index=local,
                      local_edge_attr=torch.randn(local.shape[1], 3), batch=ptr_to_batch(ptr), ptr=ptr)

