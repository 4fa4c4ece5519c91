"""A conditional flow-matching step: a learned, equivariant transport from a stochastic propagator's Gaussian draw
to the data's distribution of next states.

A Gaussian around the mean next state has the right size but the wrong shape wherever the next state is
multimodal (a torsion that may cross its barrier within Δ or stay): its draws fill the gap between the basins
and cross too rarely. The flow keeps the Gaussian as its prior and learns a velocity field u(x_s, s | state) on
the straight paths x_s = (1 − s) x⁰ + s x¹ from a prior draw x⁰ to the true next positions x¹ (conditional flow
matching, Lipman et al. 2023; Liu et al. 2023):

    L_flow = E_{s ~ U(0, 1), x⁰ ~ prior, x¹ ~ data} ‖u(x_s, s | state) − (x¹ − x⁰)‖²     (per coordinate)

and samples by integrating dx/ds = u(x, s | state) from s = 0 (a prior draw) to s = 1 with the midpoint rule.

The field is an invariant message-passing network on the base model's graphs (global and local edges) whose
output is a sum of relative vectors with invariant weights: of the moving positions x_s, of the current state x
and of the mean μ, plus μ_i − x_s,i. It is therefore translation invariant and rotation / reflection
equivariant, and a prior draw that is equivariant in distribution stays so after the transport. Shapes:
positions [ΣN, 3] in the dataset's length unit (Å), s [B] per graph (dimensionless flow time).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..data.graph import GraphBatch
from .layers import mlp
from .scatter import Aggregator

#: dimension of the flow-time embedding: s and sin / cos of π k s, k = 1 … 3
TIME_FEATURES = 7


def time_features(s: Tensor) -> Tensor:
    """s [N] → [N, TIME_FEATURES]."""
    k = torch.arange(1, 4, device=s.device, dtype=s.dtype) * math.pi
    angle = s.unsqueeze(-1) * k
    return torch.cat([s.unsqueeze(-1), angle.sin(), angle.cos()], dim=-1)


class FlowField(nn.Module):
    """u(x_s, s | state): [ΣN, 3], equivariant (see the module docstring).

    Args: node_dim, edge_dim, local_edge_dim (the dataset's feature sizes); hidden, layers (network size);
    length_scale (Å): distances enter as d / length_scale and squared distances as d² / length_scale².
    """

    #: vectors per edge i ← j: x_s,i − x_s,j, x_i − x_j, μ_i − μ_j, and the displacements so far x_s,i − x_i and
    #: x_s,j − x_j; their invariants are the 15 entries of the Gram matrix on and above the diagonal
    EDGE_VECTORS = 5
    EDGE_SCALARS = EDGE_VECTORS * (EDGE_VECTORS + 1) // 2

    def __init__(self, node_dim: int, edge_dim: int, local_edge_dim: int, hidden: int = 64, layers: int = 3,
                 length_scale: float = 5.0):
        super().__init__()
        self.length_scale = float(length_scale)
        self.embed = mlp(node_dim + TIME_FEATURES + 2, hidden, hidden)
        self.glob = nn.ModuleList(mlp(2 * hidden + self.EDGE_SCALARS + edge_dim, hidden, hidden, act_last=True)
                                  for _ in range(layers))
        self.local = nn.ModuleList(mlp(2 * hidden + self.EDGE_SCALARS + local_edge_dim, hidden, hidden,
                                       act_last=True) for _ in range(layers))
        self.node = nn.ModuleList(mlp(3 * hidden, hidden, hidden) for _ in range(layers))
        # weights of the edge vectors on global and on local edges, and of μ_i − x_s,i
        self.glob_vec = mlp(2 * hidden + self.EDGE_SCALARS + edge_dim, hidden, self.EDGE_VECTORS)
        self.local_vec = mlp(2 * hidden + self.EDGE_SCALARS + local_edge_dim, hidden, self.EDGE_VECTORS)
        rows, cols = torch.triu_indices(self.EDGE_VECTORS, self.EDGE_VECTORS)
        self.register_buffer("gram_rows", rows, persistent=False)
        self.register_buffer("gram_cols", cols, persistent=False)
        self.self_vec = mlp(hidden, hidden, 1)
        for head in (self.glob_vec, self.local_vec, self.self_vec):  # u = 0 at initialisation: the identity
            nn.init.zeros_(head[-1].weight)                           # transport, the Gaussian draw unchanged
            nn.init.zeros_(head[-1].bias)

    def _edge_geometry(self, xs, x, mu, edge_index):
        """The edge vectors rel [E, 5, 3] (``EDGE_VECTORS``) and their Gram invariants [E, 15] over length_scale²:
        fixed within one evaluation of the field, so computed once per edge set and shared by every layer."""
        i, j = edge_index
        moved = xs - x
        rel = torch.stack([xs[i] - xs[j], x[i] - x[j], mu[i] - mu[j], moved[i], moved[j]], dim=1)
        gram = (rel @ rel.transpose(1, 2))[:, self.gram_rows, self.gram_cols] / self.length_scale ** 2
        return rel, gram

    def forward(self, batch: GraphBatch, xs: Tensor, s: Tensor, mu: Tensor) -> Tensor:
        """batch: the state's GraphBatch (x [ΣN, 3] its positions); xs [ΣN, 3] the moving positions; s [B] the flow
        time of each graph; mu [ΣN, 3] the propagator's mean next positions (no gradient flows into it)."""
        x, mu = batch.x, mu.detach()
        scale2 = self.length_scale ** 2
        node_scalars = torch.stack([(mu - xs).square().sum(-1), (xs - x).square().sum(-1)], dim=-1) / scale2
        h = self.embed(torch.cat([batch.h, time_features(s.to(x.dtype))[batch.batch], node_scalars], dim=-1))
        glob = Aggregator(batch.edge_index[0], x.shape[0])
        loc = Aggregator(batch.local_edge_index[0], x.shape[0])
        w = batch.edge_weight
        g_rel, g_gram = self._edge_geometry(xs, x, mu, batch.edge_index)
        l_rel, l_gram = self._edge_geometry(xs, x, mu, batch.local_edge_index)
        gi, gj = batch.edge_index
        li, lj = batch.local_edge_index

        def g_in(h):
            return torch.cat([h[gi], h[gj], g_gram, batch.edge_attr], dim=-1)

        def l_in(h):
            return torch.cat([h[li], h[lj], l_gram, batch.local_edge_attr], dim=-1)

        for g_net, l_net, n_net in zip(self.glob, self.local, self.node, strict=True):
            mg = glob.mean(g_net(g_in(h)), w)
            ml = loc.mean(l_net(l_in(h)), None)
            h = h + n_net(torch.cat([h, mg, ml], dim=-1))
        g_vec = (self.glob_vec(g_in(h)).unsqueeze(-1) * g_rel).sum(1)  # [E, 3]
        l_vec = (self.local_vec(l_in(h)).unsqueeze(-1) * l_rel).sum(1)
        return glob.mean(g_vec, w) + loc.mean(l_vec, None) + self.self_vec(h) * (mu - xs)

    def transport(self, batch: GraphBatch, x0: Tensor, mu: Tensor, steps: int) -> Tensor:
        """Integrate dx/ds = u(x, s) from s = 0 (x0 [ΣN, 3]) to s = 1 with ``steps`` midpoint steps."""
        ds = 1.0 / steps
        xs = x0
        for n in range(steps):
            s = torch.full((batch.num_graphs,), n * ds, device=x0.device, dtype=x0.dtype)
            half = xs + 0.5 * ds * self(batch, xs, s, mu)
            xs = xs + ds * self(batch, half, s + 0.5 * ds, mu)
        return xs

    def loss(self, batch: GraphBatch, x0: Tensor, x1: Tensor, mu: Tensor, generator: torch.Generator | None = None
             ) -> Tensor:
        """The flow-matching loss (mean per coordinate) for prior draws x0 and targets x1 [ΣN, 3] (no gradient
        into either), one uniform flow time per graph."""
        s = torch.rand(batch.num_graphs, generator=generator, device=x0.device, dtype=x0.dtype)
        sn = s[batch.batch].unsqueeze(-1)
        x0, x1 = x0.detach(), x1.detach()
        xs = (1 - sn) * x0 + sn * x1
        return (self(batch, xs, s, mu) - (x1 - x0)).square().mean()
