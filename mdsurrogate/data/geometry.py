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


def constraint_pairs(local_index: Tensor, n_nodes: int, *, angles: bool = False) -> Tensor:
    """[2, P] atom pairs (each once, i < j, sorted) whose distances a topology fixes: its local edges (bonds) and,
    with ``angles``, the 1-3 pairs (two atoms bonded to a common atom, not bonded to each other): fixing their
    distances fixes the bond angles. ``local_index`` [2, E] may hold each bond once or in both directions."""
    i, j = local_index
    a, b = torch.minimum(i, j), torch.maximum(i, j)
    key = torch.unique(a[a != b] * n_nodes + b[a != b])
    if angles and key.numel():
        u, v = key // n_nodes, key % n_nodes
        ends = torch.cat([torch.stack([u, v]), torch.stack([v, u])], dim=1)  # both directions [2, 2E]
        order = torch.argsort(ends[0], stable=True)
        centre, nb = ends[0][order], ends[1][order]
        # neighbour table [n, D] (D = the largest degree, small for molecules), then every pair of its columns
        deg = torch.bincount(centre, minlength=n_nodes)
        start = torch.cumsum(deg, 0) - deg
        slot = torch.arange(centre.numel(), device=centre.device) - start[centre]
        table = torch.full((n_nodes, int(deg.max())), -1, dtype=torch.long, device=centre.device)
        table[centre, slot] = nb
        c1, c2 = torch.triu_indices(table.shape[1], table.shape[1], 1, device=centre.device)
        p, q = table[:, c1].reshape(-1), table[:, c2].reshape(-1)
        ok = (p >= 0) & (q >= 0)
        p, q = torch.minimum(p[ok], q[ok]), torch.maximum(p[ok], q[ok])
        key = torch.unique(torch.cat([key, p * n_nodes + q]))
    return torch.stack([key // n_nodes, key % n_nodes])


def stereo_centres(local_index: Tensor, n_nodes: int) -> Tensor:
    """[Q, 4] candidate stereo centres ``(o, a, b, c)`` of a topology: an atom o with at least three bonded
    neighbours, one of which, c, is a leaf (bonded to o only); a and b are two of its other neighbours (the
    first two by index). The signed volume of (a − o, b − o, c − o) is the handedness of o; reflecting the leaf
    c through the plane (o, a, b) inverts it and changes no bond length or bond angle. Which candidates are real
    stereo centres (volume far from 0 with one sign throughout the data) is for the data to say
    (``training.limits``)."""
    pairs = constraint_pairs(local_index, n_nodes)
    ends = torch.cat([pairs, pairs.flip(0)], dim=1)
    deg = torch.bincount(ends[0], minlength=n_nodes)
    out = []
    for o in torch.nonzero(deg >= 3).flatten().tolist():  # setup only: a handful of atoms per molecule
        nbrs = sorted(ends[1][ends[0] == o].tolist())
        leaves = [n for n in nbrs if int(deg[n]) == 1]
        if not leaves:
            continue
        c = leaves[-1]
        a, b = [n for n in nbrs if n != c][:2]
        out.append((o, a, b, c))
    return torch.tensor(out, dtype=torch.long).reshape(-1, 4)


def signed_volumes(x: Tensor, centres: Tensor) -> Tensor:
    """[..., Q] signed volumes (a − o) · ((b − o) × (c − o)) of the ``centres`` [Q, 4] in ``x`` [..., N, 3]
    (length unit cubed); their sign is the handedness, and a mirror image flips it."""
    o, a, b, c = (x[..., centres[:, k], :] for k in range(4))
    return ((a - o) * torch.linalg.cross(b - o, c - o)).sum(-1)
