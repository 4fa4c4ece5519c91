"""Radius graphs in plain torch, for exported mdsurrogate models (no mdsurrogate import: this file is copied
verbatim into every exported ``.pt2`` archive as ``neighbors.py``).

An exported model takes its graph as an input, because the number of edges depends on the positions. Build it
with any neighbour search that follows the convention below (ASE's, matscipy's, vesin's, your own), or with the
functions here: dense searches, O(N²) memory per block of receivers, meant for systems of up to a few thousand
atoms.

Convention: ``edge_index`` [2, E] int64 holds (receiver i, sender j), both directions of every pair, no self
pair; for periodic cells ``shifts`` [E, 3] holds the integer lattice shifts s (as floats) with

    r_ij = x_i − x_j − s · C        (C: the cell, rows are lattice vectors; |r_ij| < cutoff)

and a pair appears once per image within the cutoff (small cells see several images, and atoms their own).
"""

from __future__ import annotations

import math

import torch

__all__ = ["complete_graph", "neighbor_list", "radius_graph"]

_BLOCK = 1 << 22  # candidate (receiver, sender, image) triples held at once


def complete_graph(n: int, device=None) -> torch.Tensor:
    """All ordered pairs i ≠ j of ``n`` nodes: [2, n(n − 1)], sorted by receiver, then sender."""
    i, j = torch.meshgrid(torch.arange(n, device=device), torch.arange(n, device=device), indexing="ij")
    keep = i != j
    return torch.stack([i[keep], j[keep]])


def radius_graph(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Pairs of one free graph closer than ``cutoff`` (strict): x [N, 3] → edge_index [2, E]."""
    edge_index, _ = neighbor_list(x, cutoff)
    return edge_index


def neighbor_list(x: torch.Tensor, cutoff: float, cell: torch.Tensor | None = None, pbc=None):
    """All (i, j, s) with ‖x_i − x_j − s·C‖ < cutoff for ONE structure.

    Args:
        x: [N, 3] positions (need not be wrapped into the cell).
        cutoff: radius (same length unit as x).
        cell: [3, 3] lattice rows, or None for a free structure. pbc: three bools (default: all True when a cell
            is given); a cell with any periodic direction must have full rank (ASE slabs keep a vacuum row).

    Returns:
        edge_index [2, E] int64 sorted by receiver, then sender; shifts [E, 3] in x's dtype (0 along open axes).
    """
    n, device, dtype = x.shape[0], x.device, x.dtype
    x = x.detach()
    if cell is None:
        pbc_l = [False, False, False]
        cell_t = torch.zeros(3, 3, dtype=torch.float64, device=device)
    else:
        cell_t = torch.as_tensor(cell, device=device).to(torch.float64).reshape(3, 3)
        pbc_l = [True, True, True] if pbc is None else [bool(p) for p in torch.as_tensor(pbc).reshape(-1).tolist()]
        if len(pbc_l) == 1:
            pbc_l = pbc_l * 3
    x64 = x.to(torch.float64)
    reach = [0, 0, 0]
    whole = torch.zeros(n, 3, dtype=torch.float64, device=device)
    xw = x64
    if any(pbc_l):
        volume = float(torch.linalg.det(cell_t).abs())
        if not volume > 0:
            raise ValueError("a periodic cell must have full rank (a non-zero volume)")
        mask = torch.tensor(pbc_l, dtype=torch.float64, device=device)
        whole = torch.floor(x64 @ torch.linalg.inv(cell_t)) * mask  # wrap into the cell along periodic axes
        xw = x64 - whole @ cell_t
        for k in range(3):
            if pbc_l[k]:
                a, b = cell_t[(k + 1) % 3], cell_t[(k + 2) % 3]
                width = volume / float(torch.linalg.cross(a, b).norm())  # distance between the two k faces
                reach[k] = int(math.ceil(cutoff / width))
    grid = torch.cartesian_prod(*[torch.arange(-r, r + 1, dtype=torch.float64, device=device) for r in reach])
    grid = grid.reshape(-1, 3)
    offsets = grid @ cell_t  # [S, 3]
    zero = (grid.abs().sum(-1) == 0)  # the image s = 0
    s_count = grid.shape[0]
    per_block = max(1, _BLOCK // max(n * s_count, 1))
    found_i, found_j, found_s = [], [], []
    for a in range(0, n, per_block):
        b = min(n, a + per_block)
        d = xw[a:b, None, None, :] - xw[None, :, None, :] - offsets[None, None, :, :]  # [b − a, N, S, 3]
        keep = (d * d).sum(-1) < cutoff * cutoff
        recv = torch.arange(a, b, device=device)
        keep &= ~((recv[:, None] == torch.arange(n, device=device)[None, :])[:, :, None] & zero[None, None, :])
        i, j, k = keep.nonzero().unbind(1)
        found_i.append(i + a)
        found_j.append(j)
        found_s.append(grid[k])
    if not found_i:
        return torch.zeros(2, 0, dtype=torch.long, device=device), torch.zeros(0, 3, dtype=dtype, device=device)
    i, j, s = torch.cat(found_i), torch.cat(found_j), torch.cat(found_s)
    s = s + whole[i] - whole[j]  # shifts for the positions as given (unwrapped)
    order = torch.sort(i * n + j, stable=True).indices
    return torch.stack([i, j])[:, order], s[order].to(dtype)
