"""Baselines under the common propagator interface.

``linear``: x̂ = x + τ·v, v̂ = v with one learned scalar τ (the EGNN paper's "Linear" row; τ starts at
``tau`` — the data's Δ in its time unit is the physical choice). Equivariant by construction.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.graph import GraphBatch
from .base import Prediction, Propagator, register


@register
class LinearDynamics(Propagator):
    name = "linear"

    def __init__(self, *, node_dim: int = 0, edge_dim: int = 0, local_edge_dim: int = 0, tau: float = 1.0,
                 learn_tau: bool = True):
        super().__init__()
        self.tau = nn.Parameter(torch.tensor(float(tau)), requires_grad=learn_tau)

    def forward(self, batch: GraphBatch) -> Prediction:
        return Prediction(x=batch.x + self.tau * batch.v, v=batch.v)
