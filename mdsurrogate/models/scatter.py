"""Segment reductions used by every message-passing layer (index_add based, no padding, no dense N×N)."""

from __future__ import annotations

import torch
from torch import Tensor


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum rows of ``src`` [E, …] into ``dim_size`` buckets given by ``index`` [E] → [dim_size, …]."""
    out = src.new_zeros((dim_size,) + src.shape[1:])
    return out.index_add_(0, index, src)


def segment_count(index: Tensor, dim_size: int, dtype: torch.dtype) -> Tensor:
    """[dim_size] number of rows falling into each bucket (as ``dtype``)."""
    ones = torch.ones(index.shape[0], dtype=dtype, device=index.device)
    return torch.zeros(dim_size, dtype=dtype, device=index.device).index_add_(0, index, ones)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int, count: Tensor | None = None) -> Tensor:
    """Mean of rows of ``src`` per bucket; empty buckets give 0. ``count`` may be passed when already known."""
    total = scatter_sum(src, index, dim_size)
    if count is None:
        count = segment_count(index, dim_size, src.dtype)
    shape = (dim_size,) + (1,) * (src.dim() - 1)
    return total / count.clamp(min=1).view(shape)


def weighted_scatter(src: Tensor, index: Tensor, dim_size: int, weight: Tensor | None, mean: bool) -> Tensor:
    """Σ_e w_e src_e per bucket (``mean``: divided by max(Σ_e w_e, 1), the smooth-cutoff soft degree, see
    ``Aggregator.inv_degree``); ``weight`` None gives ``scatter_sum`` / ``scatter_mean``."""
    if weight is None:
        return scatter_mean(src, index, dim_size) if mean else scatter_sum(src, index, dim_size)
    w = weight.to(src.dtype)
    total = scatter_sum(src * w.view((-1,) + (1,) * (src.dim() - 1)), index, dim_size)
    if not mean:
        return total
    soft = scatter_sum(w, index, dim_size).clamp(min=1.0)
    return total / soft.view((-1,) + (1,) * (src.dim() - 1))


SEGMENT_MAX_WIDTH = 16


class Aggregator:
    """Reduction plan for one edge set, built once per forward and shared by every layer.

    When the receiver index is sorted (our graph builders emit edges sorted by receiver) sums of narrow rows
    (≤ ``SEGMENT_MAX_WIDTH`` values, e.g. coordinate updates [E, 3]) use ``torch.segment_reduce`` over contiguous
    segments, whose backward on CPU is several times faster than ``index_add_``'s; wide rows (messages [E, H])
    use ``index_add_``, which is 2–5× faster there in both directions (torch 2.13 CPU, measured on 2·10³ to
    5·10⁵ edges). ``mean`` divides by the in-degree (0 for isolated
    nodes, matching the EGNN/EGHN "mean over incoming edges").

    Args: index [E] receiver of each edge; dim_size: number of receivers (ΣN, or clusters).
    """

    def __init__(self, index: Tensor, dim_size: int):
        self.index = index
        self.dim_size = dim_size
        if torch.compiler.is_compiling():
            # no data-dependent shapes or Python branches under torch.compile (each would break the graph):
            # the counts by a scatter of ones, and the scatter path for every sum
            self.counts = index.new_zeros(dim_size).index_add_(0, index, torch.ones_like(index))
            self.sorted = False
        else:
            self.counts = torch.bincount(index, minlength=dim_size) if index.numel() else index.new_zeros(dim_size)
            self.sorted = index.numel() < 2 or bool((index[1:] >= index[:-1]).all())
        self._inv = None

    def sum(self, src: Tensor) -> Tensor:
        """[E, …] → [dim_size, …]"""
        if self.sorted and src.shape[0] > 0 and src[0].numel() <= SEGMENT_MAX_WIDTH:
            return torch.segment_reduce(src, "sum", lengths=self.counts, axis=0)
        return scatter_sum(src, self.index, self.dim_size)

    def inv_degree(self, dtype: torch.dtype, weight: Tensor | None = None) -> Tensor:
        """[dim_size, 1] 1 / in-degree (0 where the in-degree is 0).

        With smooth-cutoff weights ``weight`` [E] (w_e in [0, 1]): 1 / max(Σ_{e→i} w_e, 1), the soft degree, so
        that a weighted mean Σ_e w_e t_e / max(Σ_e w_e, 1) is the plain mean when every weight is 1 and is
        continuous as an edge's weight goes to 0 and the edge leaves the graph (differentiable in the weights).
        """
        if weight is not None:
            return 1.0 / self.sum(weight.to(dtype).unsqueeze(-1)).clamp(min=1.0)
        if self._inv is None or self._inv.dtype != dtype:
            c = self.counts.to(dtype)
            self._inv = torch.where(c > 0, 1.0 / c.clamp(min=1), torch.zeros_like(c)).unsqueeze(-1)
        return self._inv

    def mean(self, src: Tensor, weight: Tensor | None = None) -> Tensor:
        """[E, …] → [dim_size, …] mean over incoming edges; with ``weight`` [E] the weighted mean
        Σ_e w_e src_e / max(Σ_e w_e, 1) (see ``inv_degree``)."""
        inv = self.inv_degree(src.dtype, weight)
        if weight is not None:
            src = src * weight.to(src.dtype).view((-1,) + (1,) * (src.dim() - 1))
        return self.sum(src) * inv.view((-1,) + (1,) * (src.dim() - 1))
