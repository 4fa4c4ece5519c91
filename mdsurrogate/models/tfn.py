"""Tensor field network (Thomas et al. 2018) with e3nn irreps, as a propagator.

Features are ``channels`` copies of each irrep 0e, 1o, …, up to ``lmax``. A layer is a point convolution with
filters F(r_ij) = R(‖r_ij‖, s_ij) · Y(r̂_ij), then self-interaction (a per-degree linear map that also sees the
node's own features) and a gate non-linearity:

    c_i = Σ_j Σ_paths R_path,u(‖r_ij‖, s_ij) · CG(h_j,u ⊗ Y^{l_f}(r̂_ij))       channel-wise ("uvu") convolution
    h_i ← h_i + σ(W_si [c_i, h_i])                                            self-interaction, gate, residual

R is an MLP of the edge length and the edge features (one radial weight per path and channel), Y the spherical
harmonics of the edge direction up to ``lmax``. Inputs as in SEGNN: [h_i (0e), x_i − x̄_g (1o), v_i (1o)]; the
last layer maps to 2 × 1o without a non-linearity: [Δx_i, Δv_i], x(t+Δ) = x + Δx, v(t+Δ) = v + Δv.

Defaults are the EGNN paper's TFN baseline (its README: ``--degree 2 --nf 32``, lr 1e-3): 4 layers (3 hidden +
the output convolution), lmax = 1 (its SE(3)-Transformer code reads ``--degree 2`` as two degrees, l = 0 and 1)
and 16 channels per degree (it passes nf / degree = 32 / 2). Radial MLP width 32, sum aggregation, gate
non-linearity ("norm" gives TFN's original norm non-linearity η(‖V‖ + b)·V/‖V‖).
"""

from __future__ import annotations

from e3nn import o3
from e3nn.nn import NormActivation
from torch import nn

from ..data.graph import GraphBatch
from .base import Prediction, Propagator, register
from .e3layers import (
    AttrTensorProduct,
    ChannelwiseTensorProduct,
    GatedBlock,
    input_irreps,
    radial_mlp,
    sh_irreps,
    sh_type_irreps,
    steerable_inputs,
)
from .layers import activation
from .scatter import weighted_scatter


class TFNLayer(nn.Module):
    """Convolution + self-interaction (+ non-linearity).

    Args:
        irreps_in, irreps_out: node feature irreps before and after the layer.
        lmax: highest filter degree. scalars: edge scalars fed to the radial MLP (‖r_ij‖ + edge features).
        radial_hidden: width of the radial MLP. nonlinearity: "gate", "norm" or "none".
        aggregation: "sum" or "mean" of the convolution over incoming edges.
    Forward: h [ΣN, irreps_in.dim], y_sh [E, (lmax+1)²], s [E, scalars], edge_index [2, E], edge_weight [E] or
    None (smooth-cutoff weights w_ij: Σ_j w_ij c_ij, or the w-weighted mean) → [ΣN, irreps_out.dim].
    """

    def __init__(self, irreps_in, irreps_out, lmax: int, scalars: int, radial_hidden: int = 32,
                 nonlinearity: str = "gate", aggregation: str = "sum", act: str = "silu"):
        super().__init__()
        irreps_in, irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.conv = ChannelwiseTensorProduct(irreps_in, sh_irreps(lmax), sorted({ir for _, ir in irreps_out}))
        self.radial = radial_mlp(scalars, radial_hidden, self.conv.weight_numel, act)
        parts = [self.conv.irreps_out, irreps_in]
        if nonlinearity == "gate":
            self.self_interaction = GatedBlock(parts, "0e", irreps_out, act=act, scalar_attr=1.0)
            self.norm_act = None
        elif nonlinearity in ("norm", "none"):
            self.self_interaction = AttrTensorProduct(parts, "0e", irreps_out, scalar_attr=1.0)
            self.norm_act = (NormActivation(irreps_out, activation(act), normalize=True, epsilon=1e-8, bias=True)
                             if nonlinearity == "norm" else None)
        else:
            raise ValueError(f"nonlinearity must be gate, norm or none, not {nonlinearity!r}")
        self.aggregation = aggregation

    def forward(self, h, y_sh, s, edge_index, edge_weight=None):
        i, j = edge_index
        c = self.conv(h.index_select(0, j), y_sh, self.radial(s))  # [E, conv irreps]
        n = h.shape[0]
        c = weighted_scatter(c, i, n, edge_weight, mean=self.aggregation == "mean")
        out = self.self_interaction([c, h], None)
        return self.norm_act(out) if self.norm_act is not None else out


@register
class TFN(Propagator):
    """Args:
        node_dim F, edge_dim A (from the data).
        channels: copies of each irrep in the hidden features. lmax: highest degree (features and filters).
        layers: convolutions (the last one maps to the 2 × 1o output). radial_hidden: radial MLP width.
        nonlinearity: "gate" or "norm". aggregation: "sum" or "mean". residual: h ← h + layer(h) in hidden
        layers. centre: feed x − centroid of the graph as a 1o input.
    """

    name = "tfn"

    def __init__(self, *, node_dim: int, edge_dim: int, local_edge_dim: int = 0, channels: int = 16, lmax: int = 1,
                 layers: int = 4, radial_hidden: int = 32, nonlinearity: str = "gate", aggregation: str = "sum",
                 residual: bool = True, centre: bool = True, act: str = "silu"):
        super().__init__()
        if aggregation not in ("sum", "mean"):
            raise ValueError(f"aggregation must be sum or mean, not {aggregation!r}")
        if layers < 1 or lmax < 1:
            raise ValueError("tfn needs layers ≥ 1 and lmax ≥ 1")
        self.lmax, self.centre, self.residual = lmax, centre, residual
        hidden = sh_type_irreps(channels, lmax)
        scalars = 1 + edge_dim
        dims = [input_irreps(node_dim, centre)] + [hidden] * (layers - 1) + [o3.Irreps("2x1o")]
        self.layers = nn.ModuleList(
            TFNLayer(dims[k], dims[k + 1], lmax, scalars, radial_hidden,
                     nonlinearity if k < layers - 1 else "none", aggregation, act)
            for k in range(layers)
        )

    def forward(self, batch: GraphBatch) -> Prediction:
        h, rel, s = steerable_inputs(batch, self.centre, edge_distance=True)
        y_sh = o3.spherical_harmonics(sh_irreps(self.lmax), rel, normalize=True, normalization="component")
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            out = layer(h, y_sh, s, batch.edge_index, batch.edge_weight)
            h = h + out if (self.residual and 0 < k < last) else out
        return Prediction(x=batch.x + h[:, :3], v=batch.v + h[:, 3:])
