"""Geometry of batched states: per-graph radius of gyration (flat batches, no padding)."""

from __future__ import annotations

import torch
from torch import Tensor

from .topology import BatchTopology


def radius_of_gyration(x: Tensor, topo: BatchTopology) -> Tensor:
    """[B] radius of gyration of each graph of ``x`` [ΣN, 3] (unweighted), in the length unit of ``x``."""
    b, nb = topo.batch, topo.num_graphs
    count = torch.zeros(nb, dtype=x.dtype, device=x.device).index_add_(0, b, torch.ones_like(x[:, 0]))
    count = count.clamp_min(1).unsqueeze(-1)
    centre = torch.zeros(nb, 3, dtype=x.dtype, device=x.device).index_add_(0, b, x) / count
    sq = ((x - centre[b]) ** 2).sum(-1, keepdim=True)
    return (torch.zeros(nb, 1, dtype=x.dtype, device=x.device).index_add_(0, b, sq) / count).squeeze(-1).sqrt()
