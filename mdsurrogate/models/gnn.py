"""A plain message-passing network (Gilmer et al. 2017), the "GNN" of the EGNN paper's Table 2 and the "MPNN" of
the EGHN paper's tables. It is *not* equivariant: it reads Cartesian coordinates as ordinary features.

    h⁰_i  = W_in [x_i, v_i, s_i]                     (s_i: the dataset's node scalars, e.g. ‖v_i‖)
    m_ij  = φ_e([h_i, h_j, e_ij])                     φ_e = MLP(2H + A → H → H), activation after both layers
    h_i  ← h_i + φ_h([h_i, Σ_j m_ij])                 φ_h = MLP(2H → H → H) (sum over incoming edges, residual)
    [x̂_i, v̂_i] = φ_out(h^L_i)                        φ_out = MLP(H → H → 6)

The reference model (EGNN repository, ``n_body_system/model.py``) uses the same layers on [x, v] with the charge
product as edge attribute and decodes x̂ directly; here the node input also carries the dataset's node scalars
and the edge input the dataset's edge scalars (N-body: [q_i q_j, ‖r_ij(t)‖²]), and the decoder has three more
outputs for the next velocity (trained only when ``train.velocity_weight`` > 0).

Symmetries, stated plainly (``frame``):

- ``"absolute"`` (default, the papers' baseline): raw lab-frame coordinates in, lab-frame positions out. The
  model is neither rotation- nor translation-equivariant; ``mdsurrogate eval --rotate`` or ``--translate``
  shows it. It is permutation-equivariant and treats every graph of a batch independently.
- ``"centred"``: positions relative to their graph's centroid x̄_g in, x̂_i = x̄_g + φ_out(h_i)[:3] out. This
  makes the model translation-equivariant (and leaves v̂ translation-invariant) but it is still not
  rotation-equivariant.

Shapes: ΣN nodes, E edges, F node scalars, A edge scalars, H hidden width. Units: the dataset's.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.graph import GraphBatch
from .base import Prediction, Propagator, register
from .fused import EdgeNet, edge_pipeline, fused_enabled, fused_mlp
from .layers import PairLinear, activation, mlp
from .scatter import Aggregator

FRAMES = ("absolute", "centred")


class MPNNLayer(nn.Module):
    """m_ij = φ_e([h_i, h_j, e_ij]); h_i ← h_i + φ_h([h_i, Σ_j w_ij m_ij]).

    Forward: h [ΣN, H], edge_index [2, E], edge_attr [E, A], agg (Aggregator), edge_weight [E] or None (w_ij,
    1 when None) → h' [ΣN, H]. The messages run through ``fused.edge_pipeline`` unless the reference path is
    selected or the activation is not SiLU.
    """

    def __init__(self, hidden: int, edge_dim: int, act: str = "silu", residual: bool = True):
        super().__init__()
        self.residual, self.act = residual, act
        self.edge_in = PairLinear(hidden, edge_dim, hidden)  # φ_e's first layer, node parts projected per node
        self.edge_out = nn.Sequential(activation(act), nn.Linear(hidden, hidden), activation(act))
        self.node = mlp(2 * hidden, hidden, hidden, act)

    def forward(self, h, edge_index, edge_attr, agg: Aggregator, edge_weight=None):
        if fused_enabled(self.act, edge_index.shape[1]):
            lin2 = self.edge_out[1]
            net = EdgeNet(self.edge_in.linear.weight, self.edge_in.linear.bias, lin2.weight, lin2.bias)
            msum, _ = edge_pipeline(net, edge_index, h, attr=edge_attr, edge_weight=edge_weight)
        else:
            m = self.edge_out(self.edge_in(h, edge_index, edge_attr))
            msum = agg.sum(m if edge_weight is None else m * edge_weight.unsqueeze(-1))
        out = fused_mlp([self.node], h, msum)[0]
        return h + out if self.residual else out


@register
class GNN(Propagator):
    """Non-equivariant MPNN baseline.

    Args:
        node_dim F, edge_dim A: from the dataset's featurizer. hidden: H (64). layers: L (4). act ("silu").
        residual: h residual in every layer (the reference's ``recurrent=True``).
        frame: "absolute" (lab-frame coordinates, the papers' baseline) or "centred" (relative to the graph
            centroid: translation-equivariant); see the module docstring.
    Forward: GraphBatch → Prediction(x [ΣN, 3], v [ΣN, 3]).
    """

    name = "gnn"

    def __init__(self, *, node_dim: int, edge_dim: int, local_edge_dim: int = 0, hidden: int = 64, layers: int = 4,
                 act: str = "silu", residual: bool = True, frame: str = "absolute"):
        super().__init__()
        if frame not in FRAMES:
            raise ValueError(f"frame must be one of {', '.join(FRAMES)}, not {frame!r}")
        if layers < 1:
            raise ValueError("layers must be at least 1")
        self.frame = frame
        self.embed = nn.Linear(6 + node_dim, hidden)
        self.layers = nn.ModuleList(MPNNLayer(hidden, edge_dim, act, residual) for _ in range(layers))
        self.decode = mlp(hidden, hidden, 6, act)

    def forward(self, batch: GraphBatch) -> Prediction:
        x, v = batch.x, batch.v
        origin = None
        if self.frame == "centred":
            graphs = Aggregator(batch.batch, batch.num_graphs)
            origin = graphs.mean(x).index_select(0, batch.batch)  # x̄_g of every node [ΣN, 3]
            x = x - origin
        agg = Aggregator(batch.edge_index[0], x.shape[0])
        h = self.embed(torch.cat([x, v, batch.h], dim=-1))
        for layer in self.layers:
            h = layer(h, batch.edge_index, batch.edge_attr, agg, batch.edge_weight)
        out = self.decode(h)
        x_new, v_new = out[:, :3], out[:, 3:]
        if origin is not None:
            x_new = x_new + origin
        return Prediction(x=x_new, v=v_new)
