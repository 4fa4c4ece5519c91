"""Rotatable bonds of a batch of molecular graphs: the torsions a small molecule's motion lives in.

A bond (j, k) of the local (bond) graph is *rotatable* when it is a bridge (not in a ring: cutting it splits its
molecule in two) and each side holds at least one atom besides the bond's own, so that turning one side about the
bond axis moves some atom. The smaller side (fewer atoms; on a tie, the side of the endpoint with the larger
index) is the turning one, k its end of the bond. Every atom of the molecule carries a signed weight: n_f / n on
the turning side, −n_t / n on the other (n_t, n_f their atom counts, n = n_t + n_f), so that a unit turn rotates
the two sides against each other about the bond without turning the molecule as a whole (as frames superposed
on a reference see it). Found with one depth-first search over the whole flat batch (Tarjan's bridges; a
bridge's far side is a contiguous run of the search's pre-order), O(ΣN + E) per batch, and remembered for the
last few batches seen (a training set of one molecule repeats the same flat bond list batch after batch, a
rollout every step). A rollout passes the very same bond-list tensor at every step: that is recognised without
reading it (no copy to the host, so no device synchronisation per step on a GPU); other calls are matched by the
bond list's contents.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Torsions:
    """Rotatable bonds of a flat batch.

    Attributes:
        axis: [2, T] atom indices (j, k) of each rotatable bond; the atoms of ``members`` turn about the axis
            through x_j along x_k − x_j.
        graph: [T] graph of each torsion. slot: [T] index of each torsion within its graph (0 … T_g − 1).
        members: [2, P] (torsion id, atom index) pairs: every atom of each torsion's molecule.
        weight: [P] the share of the turn each member takes: n_f / n on the turning side, −n_t / n on the other.
        max_per_graph: the largest T_g in the batch (0 when there are no torsions).
    """

    axis: Tensor
    graph: Tensor
    slot: Tensor
    members: Tensor
    weight: Tensor
    max_per_graph: int

    def to(self, device) -> Torsions:
        return Torsions(self.axis.to(device), self.graph.to(device), self.slot.to(device),
                        self.members.to(device), self.weight.to(device), self.max_per_graph)


_CACHE: OrderedDict[bytes, Torsions] = OrderedDict()
_CACHE_SIZE = 8
#: the same tensors seen again: (id, id) → (weak references, their in-place versions, the Torsions on their device)
_SAME: OrderedDict[tuple[int, int], tuple] = OrderedDict()


def rotatable_bonds(local_edge_index: Tensor, ptr: Tensor) -> Torsions:
    """The :class:`Torsions` of a batch with bonds ``local_edge_index`` [2, E] (either or both directions) and
    node offsets ``ptr`` [B+1]; tensors on the device of ``local_edge_index``."""
    key = (id(local_edge_index), id(ptr))
    seen = _SAME.get(key)
    if seen is not None and seen[0]() is local_edge_index and seen[1]() is ptr \
            and seen[2] == (local_edge_index._version, ptr._version):
        _SAME.move_to_end(key)
        return seen[3]
    found = _by_contents(local_edge_index, ptr)
    _SAME[key] = (weakref.ref(local_edge_index), weakref.ref(ptr), (local_edge_index._version, ptr._version), found)
    if len(_SAME) > _CACHE_SIZE:
        _SAME.popitem(last=False)
    return found


def _by_contents(local_edge_index: Tensor, ptr: Tensor) -> Torsions:
    edges = local_edge_index.detach().cpu().numpy().astype(np.int64)
    offsets = ptr.detach().cpu().numpy().astype(np.int64)
    key = edges.tobytes() + b"|" + offsets.tobytes()
    hit = _CACHE.get(key)
    if hit is None:
        hit = _find(edges, offsets)
        _CACHE[key] = hit
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return hit.to(local_edge_index.device)


def _find(edges: np.ndarray, ptr: np.ndarray) -> Torsions:
    n = int(ptr[-1])
    graph_of = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    pairs = np.unique(np.sort(edges.T, axis=1), axis=0) if edges.size else np.zeros((0, 2), np.int64)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    adjacency: list[list[int]] = [[] for _ in range(n)]
    for a, b in pairs.tolist():
        adjacency[a].append(b)
        adjacency[b].append(a)
    # iterative DFS: pre-order time, subtree size, low-link; tree parent of each node
    tin = np.full(n, -1, np.int64)
    low = np.zeros(n, np.int64)
    size = np.ones(n, np.int64)
    parent = np.full(n, -1, np.int64)
    root_of = np.zeros(n, np.int64)
    order: list[int] = []
    for root in range(n):
        if tin[root] >= 0:
            continue
        tin[root] = low[root] = len(order)
        order.append(root)
        root_of[root] = root
        stack = [(root, iter(adjacency[root]))]
        while stack:
            node, it = stack[-1]
            advanced = False
            for nxt in it:
                if tin[nxt] < 0:
                    parent[nxt], root_of[nxt] = node, root
                    tin[nxt] = low[nxt] = len(order)
                    order.append(nxt)
                    stack.append((nxt, iter(adjacency[nxt])))
                    advanced = True
                    break
                if nxt != parent[node]:
                    low[node] = min(low[node], tin[nxt])
            if not advanced:
                stack.pop()
                if stack:
                    up = stack[-1][0]
                    low[up] = min(low[up], low[node])
                    size[up] += size[node]
    order_arr = np.asarray(order, np.int64)
    comp_size = size[root_of]
    axes, graphs, members, weights = [], [], [], []
    for child in range(n):
        up = parent[child]
        if up < 0 or low[child] <= tin[up]:
            continue  # a root, or the tree edge is in a ring
        inside = int(size[child])
        outside = int(comp_size[child]) - inside
        if inside < 2 or outside < 2:
            continue  # one side is a lone atom on the axis: turning it moves nothing
        subtree = order_arr[tin[child] : tin[child] + inside]
        comp = order_arr[tin[root_of[child]] : tin[root_of[child]] + inside + outside]
        rest = np.setdiff1d(comp, subtree)
        child_side = inside < outside or (inside == outside and child > up)
        axes.append((up, child) if child_side else (child, up))
        turning, other = (subtree, rest) if child_side else (rest, subtree)
        n_t, n_f = len(turning), len(other)
        members.append(np.concatenate([turning, other]))
        weights.append(np.concatenate([np.full(n_t, n_f / (n_t + n_f)), np.full(n_f, -n_t / (n_t + n_f))]))
        graphs.append(graph_of[child])
    T = len(axes)
    graph = np.asarray(graphs, np.int64)
    # torsions in order of graph, then axis: slot = rank within the graph
    perm = np.lexsort((np.asarray([a for a, _ in axes], np.int64), graph)) if T else np.zeros(0, np.int64)
    graph = graph[perm]
    axis = np.asarray(axes, np.int64).reshape(-1, 2)[perm].T
    members = [members[p] for p in perm]
    weights = [weights[p] for p in perm]
    first = np.searchsorted(graph, graph, side="left")
    slot = np.arange(T) - first
    tid = np.concatenate([np.full(len(m), t, np.int64) for t, m in enumerate(members)]) if T else np.zeros(0, np.int64)
    atoms = np.concatenate(members) if T else np.zeros(0, np.int64)
    weight = np.concatenate(weights) if T else np.zeros(0)
    return Torsions(torch.from_numpy(axis.copy()).reshape(2, T), torch.from_numpy(graph), torch.from_numpy(slot),
                    torch.from_numpy(np.stack([tid, atoms])).reshape(2, -1), torch.from_numpy(weight),
                    int(np.bincount(graph).max()) if T else 0)
