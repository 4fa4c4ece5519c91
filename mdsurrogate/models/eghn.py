"""EGHN: Equivariant Graph Hierarchy-based Network (Han, Huang, Xu & Rong, NeurIPS 2022).

A propagator (x, v)(t) → (x, v)(t + Δ) in four stages, each E(n)-equivariant (rotate, reflect, translate or
permute the input and the output follows), written in the paper's order:

1. **EMMP** (eqs. 3–6), the low-level block: L layers of equivariant matrix message passing on the *global*
   (interaction) graph. Every node carries invariant scalars h_i ∈ R^H and a multi-channel matrix
   Z_i = [x_i, v_i] ∈ R^{3×2}; messages see the Frobenius-normalised Gram matrix of the edge matrix, and the
   update Z_i ← Z_i + mean_j Ẑ_ij Φ_Z(m_ij) mixes the edge's vector columns with a learned matrix.
2. **E-Pool** (eqs. 7–11): an internal EMMP on the *local* graph (bonds, bones, intra-complex pairs) scores
   every node against K clusters, S = softmax(MLP(h)) ∈ R^{ΣN×K}; cluster states are S-weighted means per
   graph. The clusters of one graph form a complete graph (with self loops) whose edge attribute is
   Sᵀ A_global S.
3. The high-level block: EMMP on the K clusters of every graph.
4. **E-UnPool** (eqs. 12–15): cluster updates go back to the nodes through S, and a node-wise equivariant
   matrix net decodes them together with the node's own displacement into the next position and velocity.

Training adds the connectivity loss (eq. 16, second term) λ·mean_g ‖rownorm(Sᵀ A_local S) − I_K‖_F, returned
as ``Prediction.aux_loss`` (already weighted by λ = ``cut_weight``).

Batching: graphs are concatenated flat (no padding; sizes may differ). Cluster k of graph g is row g·K + k of
every flat cluster array [B·K, …]; pooling is a segment sum over ``batch``, unpooling a gather, and Sᵀ A S is
computed from the edge list (Σ_edges S_ik S_jl), never from a dense ΣN×ΣN matrix. No Python loop runs over
graphs, nodes or clusters.

Smooth cutoff: with ``GraphBatch.edge_weight`` (w_ij ∈ [0, 1] on the global edges) the low-level block's messages
and matrix updates are multiplied by w_ij (means become w-weighted means, ``Aggregator.inv_degree``) and the
cluster graph's attribute is Sᵀ W S with W_ij = w_ij, so a step is continuous as an atom crosses the cutoff.
Local and cluster edges carry no weight.

Implementation: the EMMP layers run through the fused, chunked edge pipeline (``fused.edge_pipeline``) and
``Sᵀ A S`` through chunked neighbour sums (``fused.neighbour_sum``) unless ``fused.edge_impl()`` is
``"reference"``; both give the same numbers (tests/test_fused.py).

Shapes: ΣN nodes, B graphs, K clusters, H hidden, E / E_l / E_c global / local / cluster edges; a matrix of
m vector channels is [n, 3, m] (channels last). Units: whatever the dataset uses (Å, Å/ps for MD;
dimensionless for the synthetic systems); every scalar input is taken as invariant.

Equation numbers mark where each step sits in the paper's §3; the forms are the ones implemented here.

    (3)  m_ij  = φ_m([Ĝ_ij, ‖x_i − x_j‖², h_i, h_j, e_ij]),   Ĝ_ij = Ẑ_ijᵀẐ_ij / ‖Ẑ_ijᵀẐ_ij‖_F
         Ẑ_ij  = [x_i − x_j, V_i, V_j] ∈ R^{3×(2m−1)}           (V = the m−1 velocity-like channels of Z)
    (4)  M_ij  = Ẑ_ij Φ_Z(m_ij),                                Φ_Z(m_ij) ∈ R^{(2m−1)×m}
    (5)  h_i'  = h_i + φ_h([h_i, Σ_j m_ij])                      (sum over incoming edges)
    (6)  Z_i'  = Z_i + (1/|N(i)|) Σ_j M_ij                        (mean over incoming edges)
    (7)  (h^p, ·) = EMMP_pool(h, Z; local graph)                  (only the scalars leave it)
    (8)  S_i   = softmax(MLP(h^p_i)) ∈ R^K                       (each row sums to 1)
    (9)  c_gk  = Σ_{i∈g} S_ik,   Z_gk = Σ_{i∈g} S_ik Z_i / c_gk  (cluster position, velocity)
    (10) h_gk  = Σ_{i∈g} S_ik h_i / c_gk
    (11) A^c_g = S_gᵀ A_global S_g ∈ R^{K×K}: edge attribute of the cluster graph (complete, self loops);
         then the high-level EMMP (3)–(6) on the clusters: (h_gk, Z_gk) → (h'_gk, Z'_gk)
    (12) Δ_i   = Σ_k S_ik (Z'_gk − Z_gk)                          (cluster displacement and velocity change)
    (13) Z̃_i   = Σ_k S_ik Z_gk,   h̃_i = Σ_k S_ik h'_gk
    (14) C_i   = [Δ_i, Z_i − Z̃_i, Z_i − Z_i^in] ∈ R^{3×6}        (columns of the decoder)
    (15) Z_i^out = Z_i + C_i ρ(Ĉ_iᵀĈ_i, h_i, h̃_i),  ρ(…) ∈ R^{6×2}   (node-wise matrix net; D layers chain)
    (16) L = MSE + λ · mean_g ‖rownorm(S_gᵀ A_local S_g) − I_K‖_F

Variants (hyper-parameter ``variant``)
--------------------------------------
``"paper"`` (default) implements eqs. 3–16 with these choices where the text leaves room:

- Z_i = [x_i, v_i]: the velocity is a channel of Z, so every block (and the decoder) updates it and the model
  predicts v(t + Δ) as the second column of its output matrix; rollouts can chain steps.
- Translation: the paper makes the stacked pair (Z_i, Z_j) translation invariant by subtracting the mean Z̄
  from every column. Here the sender's position is the reference point instead (Ẑ_ij = [x_i − x_j, V_i, V_j],
  the "difference" matrix) and velocity-like channels are not shifted. Both are E(n)-equivariant; centring
  the velocities would erase the mean velocity, and with it the centre-of-mass drift x̄ + v̄Δ, from everything
  the network sees, and the graph centroid makes messages depend on where in a large protein an atom sits.
  This form contains EGNN's velocity layer as a special case (r_ij φ_x + v_i φ_v), which is the reduction
  the paper's Theorem 1 states.
- The normalised Gram is scale-blind (‖Ĝ‖_F = 1), so the raw squared distance ‖x_i − x_j‖² (the unnormalised
  Gram's first entry; EGNN's invariant) is an extra message input.
- h residual in every EMMP layer (eq. 5 as in EGNN); Φ_Z's last layer bias-free with Xavier gain 0.001 (EGNN's
  φ_x init) so each block starts near the identity; no coordinate clipping.
- Pooled and decoded states are the low-level block's outputs (x^L, v^L, h^L): each stage refines the last,
  and the prediction is x̂ = x^L + (C ρ)_{:,0}, v̂ = v^L + (C ρ)_{:,1}.
- The cluster graph uses the raw soft counts Sᵀ A_global S as edge attribute (as eq. 11 and the code do).

``"official"`` follows the authors' code (hanjq17/EGHN, see docs/protocols.md §5) where it differs from the paper:

- low- and high-level blocks are a Linear(H→H) embedding plus plain EGNN layers (``EGCL``) on the single
  vector r_ij with the block's input velocity, no h residual, the mean coordinate update clipped to ±100 after
  aggregation, default init;
- the pooling scorer is the cross-Gram matrix layer on Z_i = [x_i − x̄_g, x^L_i − x_i, v_i] (G_ij = Z_jᵀZ_i,
  Z_i ← Z_i + mean_j Z_j W_ij, h residual) with a Linear(H→8H)–tanh–Linear(8H→K) head;
- the input x, v and h^L are pooled; the high-level block leaves the cluster velocities unchanged;
- decoder columns [S(X' − X), x − x̃, v − ṽ, x^L − x] with scalars [h^L, h̃]; the prediction base is the
  unpooled new centroid, x̂ = S X' + (C ρ)_{:,0}.
  One addition: the code returns the input velocity, which cannot be chained; here the decoder has a second
  output column and v̂ = v + (C ρ)_{:,1}.

Shared by both (they are the code's choices too): K² cluster edges per graph incl. self loops; Frobenius/L2
normalisation of every Gram; cluster weights c_gk clamped at 1e-5; the cut loss uses the local graph only,
rows L2-normalised, unsquared Frobenius norm, mean over graphs. Positions are pooled relative to the graph
centroid (the same weighted mean, but exactly translation-equivariant even when a cluster's weight hits the
clamp). Layers whose output would be discarded are not built (the pooling net's last vector update, the
decoder's last scalar head), so every parameter gets a gradient (DistributedDataParallel needs this).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.graph import GraphBatch
from .base import Prediction, Propagator, register
from .fused import (
    CrossGram,
    DifferenceGram,
    EdgeNet,
    edge_pipeline,
    fused_active,
    fused_enabled,
    fused_mlp,
    neighbour_sum,
)
from .layers import EGCL, PairLinear, activation, mlp
from .scatter import Aggregator

VARIANTS = ("paper", "official")
GRAM_EPS = 1e-12  # added to ‖G‖²_F before the normalisation (smooth at G = 0)
COUNT_MIN = 1e-5  # lower clamp of the soft cluster sizes c_gk (as in the official code)


# ------------------------------------------------------------------------------------------------------------
# Helpers: Gram features, pooling by S, the coarsened adjacency Sᵀ A S, the cluster graph
# ------------------------------------------------------------------------------------------------------------
def normalised_gram(a: Tensor, b: Tensor | None = None) -> Tensor:
    """Entries of aᵀb (aᵀa when b is None) divided by its Frobenius norm: [n, 3, p], [n, 3, q] → [n, p·q].

    All p·q entries are kept, also for the symmetric aᵀa (a free view; picking the triangle costs a gather).
    """
    g = (a.transpose(-1, -2) @ (a if b is None else b)).flatten(-2)  # [n, p·q]
    return g * torch.rsqrt(g.square().sum(-1, keepdim=True) + GRAM_EPS)


def pool(S: Tensor, graphs: Aggregator, *values: Tensor) -> list[Tensor]:
    """Eqs. 9–10: S-weighted means per graph.

    S [ΣN, K]; ``graphs`` the node → graph plan (``Aggregator(batch, B)``); values [ΣN, …] → each [B·K, …],
    row g·K + k holding cluster k of graph g.
    """
    n, K = S.shape
    B = graphs.dim_size
    count = graphs.sum(S).clamp(min=COUNT_MIN)  # c_gk  [B, K]
    out = []
    for y in values:
        total = graphs.sum(S.unsqueeze(-1) * y.reshape(n, 1, -1))  # Σ_{i∈g} S_ik y_i  [B, K, f]
        out.append((total / count.unsqueeze(-1)).reshape((B * K,) + y.shape[1:]))
    return out


def unpool(S: Tensor, batch: Tensor, y: Tensor) -> Tensor:
    """Eqs. 12–13: (S Y)_i = Σ_k S_ik Y_{g(i)·K+k}. S [ΣN, K], batch [ΣN], y [B·K, …] → [ΣN, …]."""
    n, K = S.shape
    per_node = y.reshape(-1, K, y[0].numel()).index_select(0, batch)  # [ΣN, K, f]
    return (S.unsqueeze(1) @ per_node).reshape((n,) + y.shape[1:])


def coarsen_adjacency(S: Tensor, edge_index: Tensor, graphs: Aggregator,
                      edges: Aggregator | None = None, edge_weight: Tensor | None = None) -> Tensor:
    """Sᵀ A S per graph from the edge list: [B, K, K], entry (k, l) = Σ_{edges i←j in g} A_ij S_ik S_jl, with
    A_ij = 1, or the smooth-cutoff weight w_ij when ``edge_weight`` [E] is given.

    ``edges``: the edge set's receiver plan, built here when not given. Cost ΣN·K² + E·K, no dense ΣN×ΣN; the
    fused path (``fused.neighbour_sum``) never builds the [E, K] gather either.
    """
    if fused_active():
        AS = neighbour_sum(S, edge_index, S.shape[0], edge_weight)  # (A S)_i = Σ_{j→i} A_ij S_j  [ΣN, K]
    else:
        if edges is None:
            edges = Aggregator(edge_index[0], S.shape[0])
        rows = S.index_select(0, edge_index[1])
        AS = edges.sum(rows if edge_weight is None else rows * edge_weight.unsqueeze(-1))
    return graphs.sum(S.unsqueeze(-1) * AS.unsqueeze(1))  # [B, K, K]


def cluster_graph(num_graphs: int, K: int, device) -> Tensor:
    """Complete directed graph over the K clusters of each graph, self loops included: [2, B·K²].

    Edge (k ← l) of graph g is column g·K² + k·K + l, so ``Q.reshape(-1)`` of a [B, K, K] tensor lines up.
    """
    k = torch.arange(K, device=device)
    offset = (torch.arange(num_graphs, device=device) * K).view(-1, 1)
    receiver = (offset + k.repeat_interleave(K)).reshape(-1)
    sender = (offset + k.repeat(K)).reshape(-1)
    return torch.stack([receiver, sender])


def connectivity_loss(P: Tensor) -> Tensor:
    """Eq. 16, second term: mean over graphs of ‖rownorm(P) − I_K‖_F, P = Sᵀ A_local S [B, K, K] → scalar."""
    eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
    return torch.linalg.matrix_norm(F.normalize(P, dim=-1) - eye).mean()


# ------------------------------------------------------------------------------------------------------------
# EMMP (eqs. 3–6)
# ------------------------------------------------------------------------------------------------------------
class EMMP(nn.Module):
    """One equivariant matrix message-passing layer, eqs. 3–6.

    ``gram="difference"`` (the paper's layer): Z_i = [x_i, V_i] ∈ R^{3×m} with column 0 a position and the
    others translation-invariant vectors (velocities); edge matrix Ẑ_ij = [x_i − x_j, V_i, V_j] (q = 2m−1
    columns)::

        m_ij = φ_m([Ĝ(Ẑ_ij), ‖x_i − x_j‖², h_i, h_j, e_ij])        (3)
        M_ij = Ẑ_ij Φ_Z(m_ij)                                        (4)  Φ_Z: H → (2m−1)×m
        h_i ← h_i + φ_h([h_i, Σ_j m_ij])                             (5)
        Z_i ← Z_i + mean_j M_ij                                      (6)

    ``gram="cross"`` (the official code's pooling layer): every column of Z is already translation invariant;
    Ĝ_ij = normalised Z_jᵀZ_i (m² entries), M_ij = Z_j Φ_Z(m_ij) with Φ_Z: H → m×m, no distance input.

    Args: hidden H; edge_dim A; channels m; residual (h residual); update_vectors (False: skip eqs. 4 and 6,
        for a last layer whose vectors are discarded); coord_gain (Xavier gain of Φ_Z's bias-free last layer,
        None for PyTorch's default init with a bias).
    Forward: h [n, H], Z [n, 3, m], edge_index [2, E] (receiver first), edge_attr [E, A], agg: the edge set's
        ``Aggregator``, edge_weight [E] or None (smooth-cutoff weights w_ij: m_ij and M_ij are multiplied by
        them and the mean becomes the weighted mean, ``Aggregator.inv_degree``) → (h' [n, H], Z' [n, 3, m]).

    The edge computations run through ``fused.edge_pipeline`` (chunked, recomputing backward) unless
    ``fused.edge_impl()`` is ``"reference"`` or the activation is not SiLU; both give the same numbers.
    """

    def __init__(self, hidden: int, edge_dim: int, channels: int, act: str = "silu", *,
                 gram: str = "difference", residual: bool = True, update_vectors: bool = True,
                 coord_gain: float | None = 0.001):
        super().__init__()
        if gram not in ("difference", "cross"):
            raise ValueError(f"gram must be 'difference' or 'cross', not {gram!r}")
        self.difference, self.channels, self.residual, self.act = gram == "difference", channels, residual, act
        self.basis_dim = 2 * channels - 1 if self.difference else channels  # columns of Ẑ_ij
        self.geometry = DifferenceGram(channels, GRAM_EPS) if self.difference else CrossGram(channels, GRAM_EPS)
        n_scalars = self.basis_dim**2 + (1 if self.difference else 0) + edge_dim
        self.edge_in = PairLinear(hidden, n_scalars, hidden)  # first layer of φ_m, fused
        self.edge_out = nn.Sequential(activation(act), nn.Linear(hidden, hidden), activation(act))
        self.coef = None
        if update_vectors:
            last = nn.Linear(hidden, self.basis_dim * channels, bias=coord_gain is None)
            if coord_gain is not None:
                nn.init.xavier_uniform_(last.weight, gain=coord_gain)
            self.coef = nn.Sequential(nn.Linear(hidden, hidden), activation(act), last)  # Φ_Z
        self.node = mlp(2 * hidden, hidden, hidden, act)  # φ_h

    def message(self, h: Tensor, Z: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 3: the invariant message m_ij [E, H] and the edge's vector basis Ẑ_ij [E, 3, q]."""
        i, j = edge_index
        Zi, Zj = Z.index_select(0, i), Z.index_select(0, j)  # [E, 3, m]
        if self.difference:
            basis = torch.cat([Zi[..., :1] - Zj[..., :1], Zi[..., 1:], Zj[..., 1:]], dim=-1)  # Ẑ_ij [E, 3, q]
            d2 = basis[..., 0].square().sum(-1, keepdim=True)  # ‖x_i − x_j‖²  [E, 1]
            scalars = torch.cat([normalised_gram(basis), d2, edge_attr], dim=-1)
        else:
            basis = Zj  # [E, 3, m]
            scalars = torch.cat([normalised_gram(Zj, Zi), edge_attr], dim=-1)  # Ĝ(Z_jᵀZ_i)
        return self.edge_out(self.edge_in(h, edge_index, scalars)), basis  # (3) m_ij [E, H]

    def forward(self, h: Tensor, Z: Tensor, edge_index: Tensor, edge_attr: Tensor, agg: Aggregator,
                edge_weight: Tensor | None = None):
        if fused_enabled(self.act, edge_index.shape[1]):
            msum, dZ = self.edges_fused(h, Z, edge_index, edge_attr, edge_weight)
            if dZ is not None:
                dZ = dZ * agg.inv_degree(dZ.dtype, edge_weight)
        else:
            msum, dZ = self.edges_reference(h, Z, edge_index, edge_attr, agg, edge_weight)
        if dZ is not None:
            Z = Z + dZ.view_as(Z)  # (6)
        out = fused_mlp([self.node], h, msum)[0]  # (5)
        return (h + out if self.residual else out), Z

    def edges_reference(self, h, Z, edge_index, edge_attr, agg: Aggregator, edge_weight=None):
        """(Σ_j w_ij m_ij [n, H], the w-weighted mean of M_ij [n, 3·m] or None), every [E, H] tensor
        materialised."""
        E = edge_index.shape[1]
        m, basis = self.message(h, Z, edge_index, edge_attr)  # (3)
        w = None if edge_weight is None else edge_weight.unsqueeze(-1)
        dZ = None
        if self.coef is not None:
            W = self.coef(m).view(E, self.basis_dim, self.channels)  # Φ_Z(m_ij) [E, q, m]
            M = (basis @ W).flatten(1)  # (4) M_ij [E, 3·m] (flatten: also for E = 0, no edges)
            dZ = agg.mean(M, edge_weight)
        return agg.sum(m if w is None else m * w), dZ

    def edges_fused(self, h, Z, edge_index, edge_attr, edge_weight=None):
        """(Σ_j w_ij m_ij, Σ_j w_ij M_ij or None) by ``fused.edge_pipeline`` (a sum: divide for the mean)."""
        lin2 = self.edge_out[1]
        net = EdgeNet(self.edge_in.linear.weight, self.edge_in.linear.bias, lin2.weight, lin2.bias)
        if self.coef is not None:
            hid, last = self.coef[0], self.coef[2]
            net.w3, net.b3, net.w4, net.b4 = hid.weight, hid.bias, last.weight, last.bias
        return edge_pipeline(net, edge_index, h, nodes=Z.reshape(Z.shape[0], -1), geometry=self.geometry,
                             attr=edge_attr, edge_weight=edge_weight, n_out=self.channels)


class EGNNBlock(nn.Module):
    """The official code's block: Linear(H→H) embedding, then L EGNN layers (no h residual, clip ±100 after
    aggregation, default init) on positions x with the block's input velocity v.

    Forward: h [n, H], x [n, 3], v [n, 3], edge_index [2, E], edge_attr [E, A], agg (Aggregator) → (h', x').
    """

    def __init__(self, hidden: int, edge_dim: int, layers: int, act: str = "silu"):
        super().__init__()
        self.embed = nn.Linear(hidden, hidden)
        self.layers = nn.ModuleList(
            EGCL(hidden, edge_dim, act=act, residual=False, clip=100.0, clip_on="node", coord_gain=None)
            for _ in range(layers)
        )

    def forward(self, h, x, v, edge_index, edge_attr, agg, edge_weight=None):
        h = self.embed(h)
        for layer in self.layers:
            h, x = layer(h, x, v, edge_index, edge_attr, agg, edge_weight)
        return h, x


# ------------------------------------------------------------------------------------------------------------
# E-Pool (eqs. 7–10)
# ------------------------------------------------------------------------------------------------------------
class EPool(nn.Module):
    """Soft equivariant pooling of every graph into K clusters.

    Eq. 7: an internal EMMP (``layers`` layers) on the local graph updates the scalars; eq. 8: a head turns
    them into scores S = softmax(…) [ΣN, K]; eqs. 9–10: S-weighted means per graph of the pooled vectors and
    scalars. ``variant="paper"``: difference-EMMP with column 0 of ``Z_score`` a position, MLP(H→H→K) head.
    ``variant="official"``: cross-Gram layers (``Z_score`` all translation invariant), Linear–tanh–Linear
    head.

    Forward: h [ΣN, H], Z_score [ΣN, 3, m_s], Z_pool [ΣN, 3, m_p] (column 0 a position), edge_index and
        edge_attr of the local graph, graphs: ``Aggregator(batch, B)`` → S [ΣN, K], Z_k [B·K, 3, m_p],
        h_k [B·K, H].
    """

    def __init__(self, hidden: int, edge_dim: int, channels: int, n_clusters: int, layers: int,
                 act: str = "silu", variant: str = "paper"):
        super().__init__()
        paper = variant == "paper"
        self.layers = nn.ModuleList(
            EMMP(hidden, edge_dim, channels, act, gram="difference" if paper else "cross", residual=True,
                 update_vectors=layer < layers - 1, coord_gain=0.001 if paper else None)
            for layer in range(layers)
        )
        if paper:
            self.head = mlp(hidden, hidden, n_clusters, act)
        else:
            self.head = nn.Sequential(nn.Linear(hidden, 8 * hidden), nn.Tanh(),
                                      nn.Linear(8 * hidden, n_clusters))

    def scores(self, h: Tensor, Z: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        agg = Aggregator(edge_index[0], h.shape[0])
        for layer in self.layers:
            h, Z = layer(h, Z, edge_index, edge_attr, agg)  # (7) internal EMMP, local graph
        return torch.softmax(fused_mlp([self.head], h)[0], dim=-1)  # (8) S [ΣN, K]

    def forward(self, h, Z_score, Z_pool, edge_index, edge_attr, graphs: Aggregator):
        S = self.scores(h, Z_score, edge_index, edge_attr)
        # (9), (10). Positions are pooled relative to the graph centroid and shifted back: the same S-weighted
        # mean, but a (nearly) empty cluster, whose c_gk hits the clamp, sits at the centroid and not at the
        # origin, so translation equivariance is exact for every S.
        centroid = graphs.mean(Z_pool[..., 0])  # x̄_g [B, 3]
        shift = torch.zeros_like(Z_pool)
        shift[..., 0] = centroid.index_select(0, graphs.index)
        Z_k, h_k = pool(S, graphs, Z_pool - shift, h)
        K = S.shape[1]
        Z_k = Z_k + F.pad(centroid.repeat_interleave(K, dim=0).unsqueeze(-1), (0, Z_k.shape[-1] - 1))
        return S, Z_k, h_k


# ------------------------------------------------------------------------------------------------------------
# E-UnPool (eqs. 12–15)
# ------------------------------------------------------------------------------------------------------------
class MatrixNet(nn.Module):
    """Node-wise equivariant matrix net: out_i = C_i ρ_vec(s_i), s_i = ρ_in([Ĝ(C_i), scalars_i]).

    Forward: C [n, 3, c], scalars [n, S] → (out [n, 3, o], s_out [n, H] or None when ``scalar_out`` is False).
    """

    def __init__(self, n_vectors: int, scalar_dim: int, hidden: int, n_out: int, act: str = "silu",
                 scalar_out: bool = True):
        super().__init__()
        self.n_vectors, self.n_out = n_vectors, n_out
        self.inp = mlp(n_vectors**2 + scalar_dim, hidden, hidden, act, act_last=True)
        self.coef = mlp(hidden, hidden, n_vectors * n_out, act)
        self.scalar = mlp(hidden, hidden, hidden, act) if scalar_out else None

    def forward(self, C: Tensor, scalars: Tensor):
        s = fused_mlp([self.inp], normalised_gram(C), scalars)[0]
        heads = fused_mlp([self.coef] if self.scalar is None else [self.coef, self.scalar], s)  # one first matmul
        out = C @ heads[0].view(-1, self.n_vectors, self.n_out)  # [n, 3, o]
        return out, (heads[1] if self.scalar is not None else None)


class EUnPool(nn.Module):
    """Broadcast cluster updates back to the nodes with S and decode them node-wise.

        Δ_i = Σ_k S_ik δ_gk                       (12)  δ = cluster changes [B·K, 3, p]
        Z̃_i = Σ_k S_ik Z_gk,  h̃_i = Σ_k S_ik h_gk  (13)
        C_i = [Δ_i, Z_i − Z̃_i, extra_i]           (14)
        out_i = C_i ρ(Ĝ(C_i), h_i, h̃_i)           (15)

    With ``layers`` = D > 1 the matrix nets chain: layer d sees the columns plus all earlier outputs and, from
    d ≥ 1, the previous layer's scalars; the last layer's output is the result.

    Forward: S [ΣN, K], batch [ΣN], delta_k [B·K, 3, p], Z_k [B·K, 3, r], Z [ΣN, 3, r], extra [ΣN, 3, e],
        h [ΣN, H], h_k [B·K, H] → (out [ΣN, 3, n_out], Δ [ΣN, 3, p], Z̃ [ΣN, 3, r]).
    """

    def __init__(self, hidden: int, n_columns: int, n_out: int, layers: int, act: str = "silu"):
        super().__init__()
        if layers < 1:
            raise ValueError("decoder_layers must be at least 1")
        self.layers = nn.ModuleList(
            MatrixNet(n_columns + d * n_out, 2 * hidden if d == 0 else hidden, hidden, n_out, act,
                      scalar_out=d < layers - 1)
            for d in range(layers)
        )

    def forward(self, S, batch, delta_k, Z_k, Z, extra, h, h_k):
        delta = unpool(S, batch, delta_k)  # (12) Δ_i
        Z_tilde = unpool(S, batch, Z_k)  # (13) Z̃_i
        h_tilde = unpool(S, batch, h_k)  # (13) h̃_i
        C = torch.cat([delta, Z - Z_tilde, extra], dim=-1)  # (14) [ΣN, 3, c]
        s = torch.cat([h, h_tilde], dim=-1)
        for layer in self.layers:  # (15)
            out, s = layer(C, s)
            C = torch.cat([C, out], dim=-1)
        return out, delta, Z_tilde


# ------------------------------------------------------------------------------------------------------------
# The propagator
# ------------------------------------------------------------------------------------------------------------
@register
class EGHN(Propagator):
    """EGHN propagator. See the module docstring for the equations and the two variants.

    Args:
        node_dim F, edge_dim A, local_edge_dim A_l: from the dataset's featurizer.
        hidden: H (64). n_clusters: K (3; the paper sets K = number of complexes, 5 for mocap).
        layers: EMMP (or EGNN) layers per block, low and high level (3). pool_layers: layers of the pooling
            net (3). decoder_layers: chained matrix nets in E-UnPool (1).
        cut_weight: λ of the connectivity loss (1.0). act: activation name ("silu").
        variant: "paper" (default) or "official" (the authors' code, docs/protocols.md §5).
    Forward: GraphBatch → Prediction(x [ΣN, 3], v [ΣN, 3], aux_loss = λ·connectivity loss,
        extras = {"cluster_scores": S [ΣN, K], "clusters": argmax_k S [ΣN]}).
    """

    name = "eghn"
    uses_local_graph = True
    produces_clusters = True

    def __init__(self, *, node_dim: int, edge_dim: int, local_edge_dim: int, hidden: int = 64,
                 n_clusters: int = 3, layers: int = 3, pool_layers: int = 3, decoder_layers: int = 1,
                 cut_weight: float = 1.0, act: str = "silu", variant: str = "paper"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        if n_clusters < 1 or layers < 1 or pool_layers < 1:
            raise ValueError("n_clusters, layers and pool_layers must be at least 1")
        self.variant, self.n_clusters, self.cut_weight = variant, n_clusters, float(cut_weight)
        self.embed = nn.Linear(node_dim, hidden)
        if variant == "paper":
            self.low = nn.ModuleList(EMMP(hidden, edge_dim, 2, act) for _ in range(layers))
            self.high = nn.ModuleList(EMMP(hidden, 1, 2, act) for _ in range(layers))
            self.pool = EPool(hidden, local_edge_dim, 2, n_clusters, pool_layers, act, "paper")
            n_columns = 6  # [ΔX, ΔV, x^L − x̃, v^L − ṽ, x^L − x, v^L − v]
        else:
            self.low = EGNNBlock(hidden, edge_dim, layers, act)
            self.high = EGNNBlock(hidden, 1, layers, act)
            self.pool = EPool(hidden, local_edge_dim, 3, n_clusters, pool_layers, act, "official")
            n_columns = 4  # [ΔX, x − x̃, v − ṽ, x^L − x]
        self.unpool = EUnPool(hidden, n_columns, 2, decoder_layers, act)

    def forward(self, batch: GraphBatch) -> Prediction:
        x, v, node_graph = batch.x, batch.v, batch.batch
        n, B, K = x.shape[0], batch.num_graphs, self.n_clusters
        h = self.embed(batch.h)  # [ΣN, H]
        graphs = Aggregator(node_graph, B)  # node → graph reductions (per-graph sums and means)
        edges = Aggregator(batch.edge_index[0], n)  # global graph
        cluster_edges = cluster_graph(B, K, x.device)  # [2, B·K²]
        clusters = Aggregator(cluster_edges[0], B * K)
        w = batch.edge_weight  # smooth-cutoff weights of the global edges, or None

        if self.variant == "paper":
            # (3)–(6) low-level EMMP on the global graph, Z = [x, v]
            Z = torch.stack([x, v], dim=-1)  # [ΣN, 3, 2]
            for layer in self.low:
                h, Z = layer(h, Z, batch.edge_index, batch.edge_attr, edges, w)
            x_low, v_low = Z.unbind(-1)
            # (7)–(10) E-Pool on the local graph
            S, Z_k, h_k = self.pool(h, Z, Z, batch.local_edge_index, batch.local_edge_attr, graphs)
            # (11) cluster graph with attribute Sᵀ A_global S, then the high-level EMMP
            Q = coarsen_adjacency(S, batch.edge_index, graphs, edges, w).reshape(-1, 1)  # [B·K², 1]
            h_k2, Z_k2 = h_k, Z_k
            for layer in self.high:
                h_k2, Z_k2 = layer(h_k2, Z_k2, cluster_edges, Q, clusters)
            # (12)–(15) E-UnPool
            extra = torch.stack([x_low - x, v_low - v], dim=-1)  # [ΣN, 3, 2]
            out, _, _ = self.unpool(S, node_graph, Z_k2 - Z_k, Z_k, Z, extra, h, h_k2)
            x_new, v_new = x_low + out[..., 0], v_low + out[..., 1]
        else:
            h, x_low = self.low(h, x, v, batch.edge_index, batch.edge_attr, edges, w)
            disp = x_low - x  # nf_i
            x_c = x - graphs.mean(x).index_select(0, node_graph)  # x_i − x̄_g
            S, Z_k, h_k = self.pool(h, torch.stack([x_c, disp, v], dim=-1), torch.stack([x, v], dim=-1),
                                    batch.local_edge_index, batch.local_edge_attr, graphs)
            X_k, V_k = Z_k.unbind(-1)  # [B·K, 3] each
            Q = coarsen_adjacency(S, batch.edge_index, graphs, edges, w).reshape(-1, 1)
            h_k2, X_k2 = self.high(h_k, X_k, V_k, cluster_edges, Q, clusters)
            out, delta, Z_tilde = self.unpool(S, node_graph, (X_k2 - X_k).unsqueeze(-1), Z_k,
                                              torch.stack([x, v], dim=-1), disp.unsqueeze(-1), h, h_k2)
            x_new = Z_tilde[..., 0] + delta[..., 0] + out[..., 0]  # (S X')_i + decoder
            v_new = v + out[..., 1]

        # (16) connectivity loss on the local graph
        P = coarsen_adjacency(S, batch.local_edge_index, graphs)  # [B, K, K]
        aux = self.cut_weight * connectivity_loss(P)
        return Prediction(x=x_new, v=v_new, aux_loss=aux,
                          extras={"cluster_scores": S, "clusters": S.argmax(dim=-1)})
