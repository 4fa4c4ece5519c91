"""The batch type: graphs concatenated flat (no padding), the PyTorch Geometric idea kept small.

A batch of B graphs with n_1 … n_B nodes holds ΣN = Σ n_g nodes. ``batch[i]`` names the graph of node i and
``ptr`` [B+1] holds node offsets (graph g owns nodes ``ptr[g]:ptr[g+1]``). Edge lists carry the node offsets
already, so an edge index always points into the flat node arrays.

Edge convention (everywhere in mdsurrogate): ``edge_index[0] = i`` is the receiver, ``edge_index[1] = j`` the
sender; a message m_ij is aggregated at i and r_ij = x_i − x_j.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class GraphBatch:
    """Model input for one batch of graphs.

    Attributes:
        x: [ΣN, 3] positions at time t (dataset length unit, e.g. Å).
        v: [ΣN, 3] velocities at time t (length unit per dataset time unit, e.g. Å/ps).
        h: [ΣN, F] invariant node scalars (features computed by the dataset's featurizer).
        edge_index: [2, E] global (interaction) edges, receiver first.
        edge_attr: [E, A] invariant global-edge scalars.
        local_edge_index: [2, E_l] local (connectivity) edges: bonds, bones, intra-complex pairs.
        local_edge_attr: [E_l, A_l] invariant local-edge scalars.
        batch: [ΣN] graph id of each node (sorted, contiguous).
        ptr: [B+1] node offsets.
        edge_weight: [E] smooth-cutoff weight of every global edge in [0, 1] (an envelope of the distance that
            reaches 0 at the cutoff), or None; message-passing layers multiply each global-edge message by it.
    """

    x: Tensor
    v: Tensor
    h: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    local_edge_index: Tensor
    local_edge_attr: Tensor
    batch: Tensor
    ptr: Tensor
    edge_weight: Tensor | None = None

    @property
    def num_graphs(self) -> int:
        return self.ptr.numel() - 1

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def graph_sizes(self) -> Tensor:
        """[B] number of nodes of each graph."""
        return self.ptr[1:] - self.ptr[:-1]

    def to(self, device=None, dtype: torch.dtype | None = None) -> GraphBatch:
        """Move to a device; floating tensors are cast to ``dtype`` when given, index tensors are kept int64."""
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t is None:
                out[f.name] = None
            elif t.is_floating_point():
                out[f.name] = t.to(device=device, dtype=dtype or t.dtype)
            else:
                out[f.name] = t.to(device=device)
        return GraphBatch(**out)

    def with_state(self, x: Tensor, v: Tensor) -> GraphBatch:
        return replace(self, x=x, v=v)


def sizes_to_ptr(sizes: Tensor) -> Tensor:
    """[B] sizes → [B+1] offsets."""
    ptr = torch.zeros(sizes.numel() + 1, dtype=torch.long, device=sizes.device)
    torch.cumsum(sizes, 0, out=ptr[1:])
    return ptr


def ptr_to_batch(ptr: Tensor) -> Tensor:
    """[B+1] offsets → [ΣN] graph id of each node."""
    sizes = ptr[1:] - ptr[:-1]
    return torch.repeat_interleave(torch.arange(sizes.numel(), device=ptr.device), sizes)
