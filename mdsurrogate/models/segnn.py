"""SEGNN: steerable E(3)-equivariant graph neural network (Brandstetter, Hesselink, van der Pol, Bekkers &
Welling, ICLR 2022), as a propagator.

Steerable attributes (spherical harmonics up to ``lmax_attr``, e3nn "integral" normalisation as the official
code, or "component"):

    a_ij = Y(x_i − x_j)                                         edge attribute          [E, A]
    a_i  = Y(v_i) + mean_j a_ij, with its 0e component set to 1   node attribute          [ΣN, A]

Inputs (translation invariant): f_i = [h_i (F × 0e), x_i − x̄_g (1o), v_i (1o)], x̄_g the centroid of i's graph;
message scalars s_ij = [‖x_i − x_j‖, edge features] (0e). Every layer W(·, a) below is a fully connected
Clebsch–Gordan tensor product of its input with the attribute (``AttrTensorProduct``), σ(·) is e3nn's gate.

    h_i  = W_emb(f_i, a_i)                                                  embedding
    m_ij = σ(W_m2(σ(W_m1([h_i, h_j, s_ij], a_ij)), a_ij))                   message (steerable MLP)
    m_i  = Σ_j m_ij                                                         aggregation (sum; ``aggregation``)
    h_i ← h_i + W_u2(σ(W_u1([h_i, m_i], a_i)), a_i)                         residual update
    [Δx_i, Δv_i] = W_o2(σ(W_o1(h_i, a_i)), a_i)     (2 × 1o)               readout
    x_i(t+Δ) = x_i + Δx_i,  v_i(t+Δ) = v_i + Δv_i

Defaults follow the paper's charged N-body model (official README command): hidden width 64 "weight balanced"
over l ≤ 1 (→ 32x0e + 32x1o), attributes l ≤ 1, 4 layers, no normalisation, sum aggregation; trained there with
Adam lr 5e-4, weight decay 1e-12, batch 100. The official code centres positions with a per-particle mean over
the three coordinates (not translation invariant); we subtract the graph centroid.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3

from ..data.graph import GraphBatch
from .base import Prediction, Propagator, register
from .e3layers import (
    AttrTensorProduct,
    GatedBlock,
    add_mixed,
    gather_mixed,
    input_irreps,
    sh_irreps,
    steerable_attributes,
    steerable_inputs,
    weight_balanced_irreps,
)
from .scatter import weighted_scatter


class SEGNNLayer(torch.nn.Module):
    """One SEGNN message-passing layer (eqs. of the module docstring).

    Forward: h [ΣN, hidden], s [E, S], a_edge [E, A], a_node [ΣN, A], edge_index [2, E], edge_weight [E] or None
    (smooth-cutoff weights w_ij: m_i = Σ_j w_ij m_ij, or the w-weighted mean) → h' [ΣN, hidden].
    """

    def __init__(self, hidden: o3.Irreps, scalars: int, attr: o3.Irreps, aggregation: str = "sum",
                 edge_y0: float = 1.0):
        super().__init__()
        s_irreps = o3.Irreps(f"{scalars}x0e") if scalars else o3.Irreps("")
        # the attributes' 0e components are constants: Y⁰ on edges, 1 on nodes (set so)
        self.message1 = GatedBlock([hidden, hidden, s_irreps], attr, hidden, scalar_attr=edge_y0)
        self.message2 = GatedBlock(hidden, attr, hidden, scalar_attr=edge_y0)
        self.update1 = GatedBlock([hidden, hidden], attr, hidden, scalar_attr=1.0)
        self.update2 = AttrTensorProduct(hidden, attr, hidden, scalar_attr=1.0)
        self.aggregation = aggregation

    def forward(self, h, s, a_edge, a_node, edge_index, edge_weight=None):
        i, j = edge_index
        # W([h_i, h_j, s_ij]) = W₁h_i + W₂h_j + W₃s_ij: mix per node, gather per edge, then couple with a_ij
        z = add_mixed(gather_mixed(self.message1.mix(h, 0), i), gather_mixed(self.message1.mix(h, 1), j))
        if s.shape[-1]:
            z = add_mixed(z, self.message1.mix(s, 2))
        m = self.message2(self.message1.couple(z, a_edge), a_edge)  # [E, hidden]
        # index_add (scatter_sum) beats segment_reduce on CPU for rows this wide
        m_i = weighted_scatter(m, i, h.shape[0], edge_weight, mean=self.aggregation == "mean")
        return h + self.update2(self.update1([h, m_i], a_node), a_node)


@register
class SEGNN(Propagator):
    """Args:
        node_dim F, edge_dim A (from the data).
        hidden: width of a scalar layer with the same number of weights (SEGNN's "weight balanced" irreps).
        hidden_irreps: explicit hidden irreps (e.g. "32x0e+32x1o"); overrides ``hidden``/``lmax_hidden``.
        lmax_hidden: highest degree l of the hidden features. lmax_attr: highest degree of the attributes Y.
        layers: message-passing layers. aggregation: "sum" (paper) or "mean" over incoming edges.
        centre: feed x − centroid of the graph as a 1o input. edge_distance: ‖r_ij‖ as a message scalar.
        attr_normalization: of the spherical harmonics, "integral" (official code: Y⁰ = 1/√(4π), which keeps the
            sum-aggregated messages small at initialisation) or "component" (Y⁰ = 1).
    """

    name = "segnn"

    def __init__(self, *, node_dim: int, edge_dim: int, local_edge_dim: int = 0, hidden: int = 64,
                 hidden_irreps: str = "", lmax_hidden: int = 1, lmax_attr: int = 1, layers: int = 4,
                 aggregation: str = "sum", centre: bool = True, edge_distance: bool = True,
                 attr_normalization: str = "integral"):
        super().__init__()
        if aggregation not in ("sum", "mean"):
            raise ValueError(f"aggregation must be sum or mean, not {aggregation!r}")
        if attr_normalization not in ("integral", "component"):
            raise ValueError(f"attr_normalization must be integral or component, not {attr_normalization!r}")
        if lmax_attr < 1:
            raise ValueError("lmax_attr must be ≥ 1 (the attributes carry the directions)")
        self.lmax_attr, self.centre, self.edge_distance = lmax_attr, centre, edge_distance
        self.attr_normalization = attr_normalization
        attr = sh_irreps(lmax_attr)
        hid = o3.Irreps(hidden_irreps) if hidden_irreps else weight_balanced_irreps(hidden, lmax_hidden, lmax_attr)
        self.hidden_irreps = hid
        self.embed = AttrTensorProduct(input_irreps(node_dim, centre), attr, hid, scalar_attr=1.0)
        scalars = edge_dim + int(edge_distance)
        edge_y0 = 1.0 if attr_normalization == "component" else 1.0 / math.sqrt(4 * math.pi)
        self.layers = torch.nn.ModuleList(SEGNNLayer(hid, scalars, attr, aggregation, edge_y0)
                                          for _ in range(layers))
        self.readout1 = GatedBlock(hid, attr, hid, scalar_attr=1.0)
        self.readout2 = AttrTensorProduct(hid, attr, "2x1o", scalar_attr=1.0)

    def forward(self, batch: GraphBatch) -> Prediction:
        f, rel, s = steerable_inputs(batch, self.centre, self.edge_distance)
        a_edge, a_node = steerable_attributes(rel, batch.v, batch.edge_index[0], self.lmax_attr,
                                              self.attr_normalization, batch.edge_weight)
        h = self.embed(f, a_node)
        for layer in self.layers:
            h = layer(h, s, a_edge, a_node, batch.edge_index, batch.edge_weight)
        out = self.readout2(self.readout1(h, a_node), a_node)  # [ΣN, 6] = [Δx, Δv]
        return Prediction(x=batch.x + out[:, :3], v=batch.v + out[:, 3:])
