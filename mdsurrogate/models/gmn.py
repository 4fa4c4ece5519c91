"""GMN: Graph Mechanics Network (Huang, Han, Rong, Xu, Sun & Huang, ICLR 2022), for systems of isolated particles.

Every node carries invariant scalars h_i ∈ R^H and the multi-channel matrix Z_i = [x_i, v_i] ∈ R^{3×2}. Layer l
(separate weights) computes a matrix message from the edge matrix Ẑ_ij = [x_i − x_j, v_i, v_j] ∈ R^{3×3} and
moves every particle with GMN's forward kinematics of an isolated object:

    m_ij = φ_m([Ĝ_ij, ‖x_i − x_j‖², h_i, h_j, e_ij]),   Ĝ_ij = Ẑ_ijᵀẐ_ij / ‖Ẑ_ijᵀẐ_ij‖_F   (invariant)
    f_i  = mean_j clip(Ẑ_ij φ_f(m_ij))                  φ_f: H → R³, bias-free last layer, Xavier gain 0.001
    v_i ← φ_v(h_i) v_i + f_i                             (generalised acceleration of an isolated object)
    x_i ← x_i + v_i
    h_i ← h_i + φ_h([h_i, Σ_j m_ij])

f_i is a 3×3 matrix times invariant coefficients, so it rotates and reflects with the input and ignores
translations; x, v, h follow. The message m_ij and the basis Ẑ_ij are EGHN's EMMP message (``eghn.EMMP.message``
with the "difference" Gram), reused here: written as a matrix update Z_i ← Z_i + mean_j Ẑ_ij W_ij, the layer is
EMMP without pooling whose coefficient matrix W_ij ∈ R^{3×2} is tied to GMN's kinematics, W_ij = [w_ij + φ_v(h_i)
e₂, w_ij + (φ_v(h_i) − 1) e₂] with w_ij = φ_f(m_ij) and e₂ the v_i column.

Not reproduced: GMN's generalised coordinates for sticks and hinges (objects whose particles move as a rigid
bar or a hinged pair, updated through their centre, angular velocity and a rotation). The systems here have
none: N-body particles are free, M-complex complexes are rigid bodies of 2–4 or more particles (not sticks or
hinges), and the mocap skeleton's bones form a tree that does not split into disjoint sticks and hinges without
an arbitrary choice. Every particle is therefore an isolated object, for which GMN's update is the one above.

Next velocity: the shared equivariant ``VelocityReadout`` (as in EGNN) on the final scalars and positions; the
internal v_i of the layers are per-layer displacements, not velocities in the dataset's unit. It is trained only
when ``train.velocity_weight`` > 0.

Shapes: ΣN nodes, E edges, F node scalars, A edge scalars, H hidden width. Units: the dataset's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.graph import GraphBatch
from .base import Prediction, Propagator, register
from .eghn import EMMP
from .fused import EdgeNet, edge_pipeline, fused_enabled, fused_mlp
from .layers import VelocityReadout, activation, mlp
from .scatter import Aggregator


class GMNLayer(EMMP):
    """One GMN layer on Z = [x, v] (see the module docstring); EMMP's message, GMN's isolated-object update.

    Args: hidden H, edge_dim A, act, clip (per-edge clamp of Ẑ_ij φ_f(m_ij), ±clip; None: off),
        force_gain (Xavier gain of φ_f's bias-free last layer).
    Forward: h [ΣN, H], x [ΣN, 3], v [ΣN, 3], edge_index [2, E], edge_attr [E, A], agg (Aggregator),
        edge_weight [E] or None (smooth-cutoff weights: m_ij and the clipped f_ij are multiplied by them, the
        mean is the weighted one)
        → (h', x', v').
    """

    def __init__(self, hidden: int, edge_dim: int, act: str = "silu", clip: float | None = 100.0,
                 force_gain: float = 0.001):
        super().__init__(hidden, edge_dim, channels=2, act=act, gram="difference", residual=True,
                         update_vectors=False)
        self.clip = clip
        last = nn.Linear(hidden, self.basis_dim, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=force_gain)
        self.force = nn.Sequential(nn.Linear(hidden, hidden), activation(act), last)  # φ_f
        self.vel = mlp(hidden, hidden, 1, act)  # φ_v

    def forward(self, h: Tensor, x: Tensor, v: Tensor, edge_index: Tensor, edge_attr: Tensor, agg: Aggregator,
                edge_weight: Tensor | None = None):
        Z = torch.stack([x, v], dim=-1)
        if fused_enabled(self.act, edge_index.shape[1]):
            lin2, hid, last = self.edge_out[1], self.force[0], self.force[2]
            net = EdgeNet(self.edge_in.linear.weight, self.edge_in.linear.bias, lin2.weight, lin2.bias,
                          hid.weight, hid.bias, last.weight, last.bias)
            msum, fsum = edge_pipeline(net, edge_index, h, nodes=Z.reshape(Z.shape[0], -1),
                                       geometry=self.geometry, attr=edge_attr, edge_weight=edge_weight, n_out=1,
                                       clip=self.clip)
            f_mean = fsum * agg.inv_degree(fsum.dtype, edge_weight)
        else:
            m, basis = self.message(h, Z, edge_index, edge_attr)  # m_ij, Ẑ_ij [E, 3, 3]
            f = (basis @ self.force(m).unsqueeze(-1)).squeeze(-1)  # Ẑ_ij φ_f(m_ij)  [E, 3]
            if self.clip is not None:
                f = f.clamp(-self.clip, self.clip)
            if edge_weight is not None:
                m = m * edge_weight.unsqueeze(-1)
            msum, f_mean = agg.sum(m), agg.mean(f, edge_weight)
        v = fused_mlp([self.vel], h)[0] * v + f_mean
        x = x + v
        out = fused_mlp([self.node], h, msum)[0]
        return h + out, x, v


@register
class GMN(Propagator):
    """GMN propagator for isolated particles.

    Args:
        node_dim F, edge_dim A: from the dataset's featurizer. hidden: H (64). layers: L (4). act ("silu").
        clip: per-edge clamp of the force messages (100, as EGNN's coordinate messages; None: off).
        predict_velocity: build the next-velocity head (else v̂ = v, the input velocity).
    Forward: GraphBatch → Prediction(x [ΣN, 3], v [ΣN, 3]).
    """

    name = "gmn"

    def __init__(self, *, node_dim: int, edge_dim: int, local_edge_dim: int = 0, hidden: int = 64, layers: int = 4,
                 act: str = "silu", clip: float | None = 100.0, predict_velocity: bool = True):
        super().__init__()
        if layers < 1:
            raise ValueError("layers must be at least 1")
        self.embed = nn.Linear(node_dim, hidden)
        self.layers = nn.ModuleList(GMNLayer(hidden, edge_dim, act, clip) for _ in range(layers))
        self.readout = VelocityReadout(hidden, act) if predict_velocity else None

    def forward(self, batch: GraphBatch) -> Prediction:
        x0, v0 = batch.x, batch.v
        agg = Aggregator(batch.edge_index[0], x0.shape[0])
        h = self.embed(batch.h)
        x, v = x0, v0
        w = batch.edge_weight  # smooth-cutoff weights of the global edges, or None
        for layer in self.layers:
            h, x, v = layer(h, x, v, batch.edge_index, batch.edge_attr, agg, w)
        v_new = v0 if self.readout is None else self.readout(h, x0, x, v0, batch.edge_index, agg, w)
        return Prediction(x=x, v=v_new)
