"""Building blocks shared by the propagators: MLPs, the fused edge-input layer, the EGNN layer (EGCL),
and the equivariant velocity readout.

EGCL and the readout run their edge computations through ``fused.edge_pipeline`` (chunked, recomputing backward)
unless ``fused.edge_impl()`` is ``"reference"`` or the activation is not SiLU; both paths give the same numbers.
Global-edge messages are multiplied by the smooth-cutoff weight w_ij (``GraphBatch.edge_weight``) when given.

Shapes: ΣN nodes, E edges, H hidden width. Edge convention: ``edge_index[0] = i`` (receiver),
``edge_index[1] = j`` (sender), r_ij = x_i − x_j.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .fused import EdgeNet, RelativePosition, edge_pipeline, fused_enabled, fused_mlp
from .scatter import Aggregator, segment_count

RELATIVE_POSITION = RelativePosition()

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def mlp(d_in: int, d_hidden: int, d_out: int, act: str = "silu", act_last: bool = False, bias_last: bool = True):
    """Linear(d_in→d_hidden), act, Linear(d_hidden→d_out)[, act]."""
    layers = [nn.Linear(d_in, d_hidden), activation(act), nn.Linear(d_hidden, d_out, bias=bias_last)]
    if act_last:
        layers.append(activation(act))
    return nn.Sequential(*layers)


class PairLinear(nn.Module):
    """``Linear([h_i, h_j, s_ij])`` for every edge, computed as W₁h_i + W₂h_j + W₃s_ij + b.

    Mathematically one ``nn.Linear(2F + S → out)`` on the concatenation (and initialised like it), but the node
    parts are projected once per node and gathered, which costs ΣN·F·out instead of E·F·out multiply-adds.

    Args: h [ΣN, F], edge_index [2, E], s [E, S] edge scalars → [E, out].
    """

    def __init__(self, node_dim: int, scalar_dim: int, out_dim: int):
        super().__init__()
        self.node_dim, self.scalar_dim = node_dim, scalar_dim
        self.linear = nn.Linear(2 * node_dim + scalar_dim, out_dim)

    @property
    def node_weight(self) -> Tensor:
        """[2·out, F]: (W₁ | W₂) stacked, so that h @ node_weightᵀ = (W₁h | W₂h)."""
        f = self.node_dim
        w = self.linear.weight
        return torch.cat([w[:, :f], w[:, f : 2 * f]], dim=0)

    @property
    def scalar_weight(self) -> Tensor:
        """[out, S]: W₃, the block applied to the edge scalars."""
        return self.linear.weight[:, 2 * self.node_dim :]

    def node_projections(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(W₁h, W₂h), each [ΣN, out], from one matmul."""
        hij = h @ self.node_weight.t()  # [ΣN, 2·out]
        out_dim = self.linear.weight.shape[0]
        return hij[:, :out_dim], hij[:, out_dim:]

    def forward(self, h: Tensor, edge_index: Tensor, s: Tensor) -> Tensor:
        hi, hj = self.node_projections(h)
        es = torch.addmm(self.linear.bias, s, self.scalar_weight.t()) if self.scalar_dim else self.linear.bias
        return hi.index_select(0, edge_index[0]) + hj.index_select(0, edge_index[1]) + es


class EGCL(nn.Module):
    """E(n)-equivariant graph convolutional layer with the velocity term (Satorras et al. 2021, eqs. 3–7).

        m_ij = φ_e(h_i, h_j, ‖r_ij‖², a_ij)
        x_i ← x_i + C Σ_j r_ij φ_x(m_ij) + φ_v(h_i) v_i        (C = 1/deg(i): mean over incoming edges)
        h_i ← h_i + φ_h(h_i, Σ_j m_ij)                          (residual optional)

    Args:
        hidden: H. edge_dim: A, width of a_ij. act: activation name.
        residual: h residual (EGNN: True; the official EGHN blocks: False).
        clip: clamp of the coordinate update (±clip); ``clip_on`` = "edge" clamps each r_ij φ_x(m_ij) (EGNN),
            "node" clamps the aggregated update (official EGHN), "none" disables it.
        coord_gain: Xavier gain of φ_x's bias-free last layer (0.001 in EGNN so updates start near zero);
            None keeps PyTorch's default init and a bias.
        velocity: include the φ_v(h_i) v_i term.
    Forward: h [ΣN, H], x [ΣN, 3], v [ΣN, 3], edge_index [2, E], edge_attr [E, A], agg: the edge set's
        ``Aggregator``, edge_weight [E] or None (w_ij: m_ij and r_ij φ_x(m_ij) are multiplied by it and the mean
        becomes the weighted mean, ``Aggregator.inv_degree``) → (h', x') of the same shapes.
    """

    def __init__(self, hidden: int, edge_dim: int, act: str = "silu", residual: bool = True, clip: float = 100.0,
                 clip_on: str = "edge", coord_gain: float | None = 0.001, velocity: bool = True):
        super().__init__()
        if clip_on not in ("edge", "node", "none"):
            raise ValueError(f"clip_on must be edge, node or none, not {clip_on!r}")
        self.residual, self.clip, self.clip_on, self.act = residual, clip, clip_on, act
        self.edge_in = PairLinear(hidden, 1 + edge_dim, hidden)
        self.edge_out = nn.Sequential(activation(act), nn.Linear(hidden, hidden), activation(act))
        last = nn.Linear(hidden, 1, bias=coord_gain is None)
        if coord_gain is not None:
            nn.init.xavier_uniform_(last.weight, gain=coord_gain)
        self.coord = nn.Sequential(nn.Linear(hidden, hidden), activation(act), last)
        self.vel = mlp(hidden, hidden, 1, act) if velocity else None
        self.node = mlp(2 * hidden, hidden, hidden, act)

    def forward(self, h, x, v, edge_index, edge_attr, agg: Aggregator, edge_weight: Tensor | None = None):
        if fused_enabled(self.act, edge_index.shape[1]):
            msum, dx = self.edges_fused(h, x, edge_index, edge_attr, edge_weight)
            dx = dx * agg.inv_degree(dx.dtype, edge_weight)
        else:
            msum, dx = self.edges_reference(h, x, edge_index, edge_attr, agg, edge_weight)
        return self.update(h, x, v, msum, dx)

    def edges_reference(self, h, x, edge_index, edge_attr, agg: Aggregator, edge_weight=None):
        """(Σ_j w_ij m_ij [ΣN, H], the w-weighted mean of clamp(r_ij φ_x(m_ij)) [ΣN, 3]), every [E, H] tensor
        materialised."""
        i, j = edge_index
        rel = x.index_select(0, i) - x.index_select(0, j)
        d2 = (rel * rel).sum(-1, keepdim=True)
        m = self.edge_out(self.edge_in(h, edge_index, torch.cat([d2, edge_attr], dim=-1)))
        trans = rel * self.coord(m)
        if self.clip_on == "edge":
            trans = trans.clamp(-self.clip, self.clip)
        if edge_weight is not None:
            m = m * edge_weight.unsqueeze(-1)
        return agg.sum(m), agg.mean(trans, edge_weight)

    def edges_fused(self, h, x, edge_index, edge_attr, edge_weight=None):
        """(Σ_j w_ij m_ij, Σ_j w_ij clamp(r_ij φ_x(m_ij))) by ``fused.edge_pipeline`` (a sum: divide for the mean)."""
        lin2, hid, last = self.edge_out[1], self.coord[0], self.coord[2]
        net = EdgeNet(self.edge_in.linear.weight, self.edge_in.linear.bias, lin2.weight, lin2.bias,
                      hid.weight, hid.bias, last.weight, last.bias)
        return edge_pipeline(net, edge_index, h, nodes=x, geometry=RELATIVE_POSITION, attr=edge_attr,
                             edge_weight=edge_weight, n_out=1, clip=self.clip if self.clip_on == "edge" else None)

    def update(self, h, x, v, msum, dx):
        """Node update from the aggregated message Σ_j m_ij and coordinate update dx (eqs. 5–7)."""
        if self.clip_on == "node":
            dx = dx.clamp(-self.clip, self.clip)
        x = x + dx
        if self.vel is not None:
            x = x + fused_mlp([self.vel], h)[0] * v
        out = fused_mlp([self.node], h, msum)[0]
        h = h + out if self.residual else out
        return h, x


def inverse_degree(edge_index: Tensor, num_nodes: int, dtype: torch.dtype) -> Tensor:
    """[ΣN, 1] 1/(number of incoming edges), 0 for isolated nodes (their mean update is then 0)."""
    deg = segment_count(edge_index[0], num_nodes, dtype)
    return torch.where(deg > 0, 1.0 / deg.clamp(min=1), torch.zeros_like(deg)).unsqueeze(-1)


class VelocityReadout(nn.Module):
    """Equivariant next-velocity head from the final node scalars and the predicted positions.

        v̂_i = α(h_i) v_i + β(h_i) (x̂_i − x_i) + mean_j (x̂_i − x̂_j) γ(h_i, h_j, ‖x̂_i − x̂_j‖²)

    Every term is a vector times an invariant scalar, so v̂ rotates with the input and ignores translations.
    The last γ layer starts at zero, so the head starts as a learned mix of v and the displacement. With
    smooth-cutoff weights w_ij the pair term is the w-weighted mean (``Aggregator.mean``).
    Forward: h [ΣN, H], x [ΣN, 3], x_new [ΣN, 3], v [ΣN, 3], edge_index [2, E], agg (Aggregator),
        edge_weight [E] or None → [ΣN, 3].
    """

    def __init__(self, hidden: int, act: str = "silu"):
        super().__init__()
        self.act = act
        self.alpha = mlp(hidden, hidden, 1, act)
        self.beta = mlp(hidden, hidden, 1, act)
        self.pair = PairLinear(hidden, 1, hidden)
        self.gamma = nn.Sequential(activation(act), nn.Linear(hidden, 1))
        nn.init.zeros_(self.gamma[-1].weight)
        nn.init.zeros_(self.gamma[-1].bias)

    def forward(self, h, x, x_new, v, edge_index, agg: Aggregator, edge_weight: Tensor | None = None):
        if fused_enabled(self.act, edge_index.shape[1]):
            last = self.gamma[-1]
            net = EdgeNet(self.pair.linear.weight, self.pair.linear.bias, w4=last.weight, b4=last.bias)
            _, pair_sum = edge_pipeline(net, edge_index, h, nodes=x_new, geometry=RELATIVE_POSITION,
                                        edge_weight=edge_weight)
            pair_term = pair_sum * agg.inv_degree(pair_sum.dtype, edge_weight)
        else:
            i, j = edge_index
            rel = x_new.index_select(0, i) - x_new.index_select(0, j)
            d2 = (rel * rel).sum(-1, keepdim=True)
            pair_term = agg.mean(rel * self.gamma(self.pair(h, edge_index, d2)), edge_weight)
        alpha, beta = fused_mlp([self.alpha, self.beta], h)
        return alpha * v + beta * (x_new - x) + pair_term


