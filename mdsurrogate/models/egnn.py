"""EGNN with the velocity extension (Satorras, Hoogeboom & Welling, ICML 2021, §3.2).

Defaults follow the paper's N-body model (docs/protocols.md §1.4): 4 layers × 64, SiLU, h residual, mean
aggregation for x and sum for h, per-edge clip ±100, φ_x's last layer bias-free with Xavier gain 0.001, and the
input velocity v(t) in every layer. Output: the positions after the last layer, plus a next-velocity readout
(``VelocityReadout``) so that rollouts can chain steps. Messages of the global edges are multiplied by the
smooth-cutoff weights ``GraphBatch.edge_weight`` when the batch has them.
"""

from __future__ import annotations

from torch import nn

from ..data.graph import GraphBatch
from .base import Prediction, Propagator, register
from .layers import EGCL, VelocityReadout
from .scatter import Aggregator


@register
class EGNN(Propagator):
    """Args: node_dim F, edge_dim A (from the data); hidden H, layers L, act, residual, clip, predict_velocity."""

    name = "egnn"

    def __init__(self, *, node_dim: int, edge_dim: int, local_edge_dim: int = 0, hidden: int = 64, layers: int = 4,
                 act: str = "silu", residual: bool = True, clip: float = 100.0, coord_gain: float = 0.001,
                 predict_velocity: bool = True):
        super().__init__()
        self.embed = nn.Linear(node_dim, hidden)
        self.layers = nn.ModuleList(
            EGCL(hidden, edge_dim, act=act, residual=residual, clip=clip, clip_on="edge", coord_gain=coord_gain)
            for _ in range(layers)
        )
        self.readout = VelocityReadout(hidden, act) if predict_velocity else None

    def forward(self, batch: GraphBatch) -> Prediction:
        x0, v = batch.x, batch.v
        agg = Aggregator(batch.edge_index[0], x0.shape[0])
        h = self.embed(batch.h)
        x = x0
        w = batch.edge_weight  # smooth-cutoff weights of the global edges, or None
        for layer in self.layers:
            h, x = layer(h, x, v, batch.edge_index, batch.edge_attr, agg, w)
        v_new = self.readout(h, x0, x, v, batch.edge_index, agg, w) if self.readout is not None else v
        return Prediction(x=x, v=v_new)
