"""Radial Field (Köhler, Klein & Noé 2019), in the velocity form the EGNN paper compares against (Table 2).

Positions are the only state the layers carry: there are no hidden node features. Layer l (l = 1 … L, separate
weights; v is the *input* velocity v(t) in every layer):

    φ_ij = tanh(W₂ σ(W₁[‖x_i − x_j‖, e_ij] + b₁))          (W₂ bias-free, Xavier gain 0.001: updates start ≈ 0)
    x_i ← x_i + mean_j (x_i − x_j) φ_ij                     (mean over the incoming edges of i)
    x_i ← x_i + ψ(‖v_i‖) v_i                                 (ψ = MLP(1 → H → 1))

The distance ‖x_i − x_j‖ is recomputed from the current positions in every layer; the edge scalars e_ij are
the dataset's (N-body: [q_i q_j, ‖r_ij(t)‖²] of the input state). The node scalar is ‖v_i‖ computed from the
velocity, as in the reference model, so the dataset's node features are not used (``node_dim`` is accepted
for the common constructor and ignored). Every update is an invariant scalar times r_ij or v_i, so the model is
E(3)-equivariant (translations leave r_ij and v unchanged) and permutation-equivariant.

Next velocity (our addition; the reference returns positions only, which a rollout cannot chain): a radial
head of the same kind on the predicted positions x̂,

    v̂_i = α(‖v_i‖) v_i + β(‖v_i‖) (x̂_i − x_i) + mean_j (x̂_i − x̂_j) γ([‖x̂_i − x̂_j‖, e_ij])

with γ's last layer zero-initialised. It is trained only when ``train.velocity_weight`` > 0.

Smooth-cutoff weights w_ij (``GraphBatch.edge_weight``) turn every mean over edges into the w-weighted mean
Σ_j w_ij (…) / max(Σ_j w_ij, 1).

Shapes: ΣN nodes, E edges, A edge scalars, H hidden width. Units: the dataset's (Å and Å/ps for MD,
dimensionless for the synthetic systems).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.graph import GraphBatch
from .base import Prediction, Propagator, register
from .layers import activation, mlp
from .scatter import Aggregator


def edge_distance(x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """r_ij = x_i − x_j [E, 3] and ‖r_ij‖ [E, 1] (clamped at 1e-12 inside the root: finite gradients)."""
    rel = x.index_select(0, edge_index[0]) - x.index_select(0, edge_index[1])
    return rel, rel.square().sum(-1, keepdim=True).clamp_min(1e-12).sqrt()


class RadialFieldLayer(nn.Module):
    """One Radial Field layer (see the module docstring).

    Args: hidden H, edge_dim A, act (activation name), gain (Xavier gain of the bias-free last layer of φ).
    Forward: x [ΣN, 3], v [ΣN, 3], speed ‖v‖ [ΣN, 1], edge_index [2, E], edge_attr [E, A], agg (Aggregator of
        the edge set), edge_weight [E] or None (smooth-cutoff weights: the w-weighted mean, see
        ``Aggregator.mean``) → x' [ΣN, 3].
    """

    def __init__(self, hidden: int, edge_dim: int, act: str = "silu", gain: float = 0.001):
        super().__init__()
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=gain)
        self.phi = nn.Sequential(nn.Linear(1 + edge_dim, hidden), activation(act), last, nn.Tanh())
        self.psi = mlp(1, hidden, 1, act)

    def forward(self, x, v, speed, edge_index, edge_attr, agg: Aggregator, edge_weight=None):
        rel, dist = edge_distance(x, edge_index)
        x = x + agg.mean(rel * self.phi(torch.cat([dist, edge_attr], dim=-1)), edge_weight)
        return x + self.psi(speed) * v


class RadialVelocityReadout(nn.Module):
    """Equivariant next-velocity head for models without hidden node features (see the module docstring).

    Forward: x [ΣN, 3], x_new [ΣN, 3], v [ΣN, 3], speed [ΣN, 1], edge_index, edge_attr [E, A], agg → [ΣN, 3].
    """

    def __init__(self, hidden: int, edge_dim: int, act: str = "silu"):
        super().__init__()
        self.alpha = mlp(1, hidden, 1, act)
        self.beta = mlp(1, hidden, 1, act)
        self.gamma = mlp(1 + edge_dim, hidden, 1, act)
        nn.init.zeros_(self.gamma[-1].weight)
        nn.init.zeros_(self.gamma[-1].bias)

    def forward(self, x, x_new, v, speed, edge_index, edge_attr, agg: Aggregator, edge_weight=None):
        rel, dist = edge_distance(x_new, edge_index)
        pair = agg.mean(rel * self.gamma(torch.cat([dist, edge_attr], dim=-1)), edge_weight)
        return self.alpha(speed) * v + self.beta(speed) * (x_new - x) + pair


@register
class RadialField(Propagator):
    """Radial Field propagator.

    Args:
        node_dim: ignored (the node scalar is ‖v‖); edge_dim A: width of the dataset's edge scalars.
        hidden: H of the per-layer MLPs (64). layers: L (4). act: activation ("silu").
        predict_velocity: build the next-velocity head (else v̂ = v, the input velocity).
    Forward: GraphBatch → Prediction(x [ΣN, 3], v [ΣN, 3]).
    """

    name = "rf"

    def __init__(self, *, node_dim: int = 0, edge_dim: int, local_edge_dim: int = 0, hidden: int = 64,
                 layers: int = 4, act: str = "silu", predict_velocity: bool = True):
        super().__init__()
        if layers < 1:
            raise ValueError("layers must be at least 1")
        self.layers = nn.ModuleList(RadialFieldLayer(hidden, edge_dim, act) for _ in range(layers))
        self.readout = RadialVelocityReadout(hidden, edge_dim, act) if predict_velocity else None

    def forward(self, batch: GraphBatch) -> Prediction:
        x0, v = batch.x, batch.v
        agg = Aggregator(batch.edge_index[0], x0.shape[0])
        speed = v.norm(dim=-1, keepdim=True)
        x = x0
        for layer in self.layers:
            x = layer(x, v, speed, batch.edge_index, batch.edge_attr, agg, batch.edge_weight)
        v_new = v if self.readout is None else self.readout(x0, x, v, speed, batch.edge_index, batch.edge_attr, agg,
                                                            batch.edge_weight)
        return Prediction(x=x, v=v_new)
