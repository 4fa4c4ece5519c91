"""Neighbour lists for flat-batched graphs, in pure torch (CPU or CUDA).

Conventions (shared with the rest of :mod:`mdsurrogate`):

* positions ``x`` are ``[N, 3]`` for all graphs of a batch concatenated, ``batch`` is ``[N]`` (graph id of
  every node, sorted and contiguous) and ``ptr`` is ``[B + 1]`` node offsets;
* ``edge_index`` is ``[2, E]`` int64 with ``edge_index[0] = i`` (receiver / target) and
  ``edge_index[1] = j`` (sender / source); both directions of every pair are present, there are no self loops
  and edges are sorted by receiver, then sender.  The order is fully determined by the input (no atomics, no
  unstable sorts), so results are reproducible run to run.

Everything runs on ``x.device`` without a NumPy round trip, without Python loops over atoms or graphs and
without a dense ``N x N`` matrix.  Candidate pairs are materialised in chunks of bounded size (see
``_CHUNK_PAIRS``), so peak memory is ``O(N + E)`` plus a fixed chunk budget.  A few sizes are read back to the
host (a handful per call plus one per chunk): that is what sizing the outputs requires.

Distances are compared as squared distances in the dtype of ``x``: a pair is an edge iff
``dx*dx + dy*dy + dz*dz < cutoff**2`` (strict; a pair exactly ``cutoff`` apart is *not* an edge).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch

__all__ = ["complete_graph", "graph_cells", "mean_degree", "neighbor_list", "periodic_widths", "radius_graph",
           "radius_graph_pbc"]

# Candidate pairs materialised at once (a few tens of bytes each); bounds peak memory.
_CHUNK_PAIRS = {"cpu": 1 << 19, "cuda": 1 << 23}
# Receivers whose candidate ranges are computed at once (a few hundred bytes each).
_RECEIVER_BLOCK = 8192
# Bins are (1 + _BIN_MARGIN) * cutoff wide, so floating-point rounding can never move a pair that passes the
# distance test out of the searched neighbourhood.
_BIN_MARGIN = 1e-4
# Cell-list columns are cutoff / _XY_DIVISIONS wide in x and y (a (2k + 1)^2 stencil of columns).
_XY_DIVISIONS = 2
# Inside a column atoms are sorted by z quantised to cutoff / z_res, z_res <= _Z_RESOLUTION.
_Z_RESOLUTION = 1024
# A dense table of cell starts is used while it has at most this many entries per atom (+ 65536).
_CELL_TABLE_PER_ATOM = 2
_MAX_KEY = 1 << 62


# ----------------------------------------------------------------------------------------------------------
# complete graph
# ----------------------------------------------------------------------------------------------------------


def complete_graph(ptr: torch.Tensor) -> torch.Tensor:
    """All ordered pairs ``i != j`` inside each graph of a batch.

    Args:
        ptr: ``[B + 1]`` node offsets (``ptr[0] == 0``, non-decreasing); graphs may have any size (also 0, 1).

    Returns:
        ``[2, sum_g n_g (n_g - 1)]`` int64 edge index on ``ptr.device``, sorted by receiver then sender.
    """
    ptr = torch.as_tensor(ptr)
    if ptr.dim() != 1 or ptr.numel() < 1:
        raise ValueError(f"ptr must be a 1-D tensor of length B + 1 >= 1, got shape {tuple(ptr.shape)}")
    if ptr.dtype.is_floating_point or ptr.dtype == torch.bool:
        raise TypeError(f"ptr must be an integer tensor, got {ptr.dtype}")
    ptr = ptr.long()
    sizes = ptr[1:] - ptr[:-1]
    first, n_nodes, n_edges, min_size = torch.stack(
        [ptr[0], ptr[-1], (sizes * (sizes - 1)).sum(), sizes.min() if sizes.numel() else ptr[0]]
    ).tolist()
    if first != 0 or min_size < 0:
        raise ValueError("ptr must start at 0 and be non-decreasing")
    device = ptr.device
    if n_edges == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    graph = torch.repeat_interleave(torch.arange(sizes.numel(), device=device), sizes, output_size=n_nodes)
    node_first = ptr[graph]  # first node of each node's graph
    deg = sizes[graph] - 1  # out-degree of every node
    row_start = torch.cumsum(deg, 0) - deg
    recv = torch.repeat_interleave(torch.arange(n_nodes, device=device), deg, output_size=n_edges)
    e = torch.arange(n_edges, device=device)
    # the k-th edge of receiver i (local index l) goes to local sender k + (k >= l): the self pair is skipped
    base = node_first - row_start
    thresh = row_start + (torch.arange(n_nodes, device=device) - node_first)
    send = e + base[recv] + (e >= thresh[recv]).long()
    return torch.stack([recv, send])


# ----------------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------------


def _check_cutoff(cutoff: float) -> float:
    cutoff = float(cutoff)
    if not (cutoff > 0.0 and cutoff < float("inf")):
        raise ValueError(f"cutoff must be a positive finite number, got {cutoff}")
    return cutoff


def _check_positions(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"x must have shape [N, 3], got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be floating point, got {x.dtype}")
    return x.detach()


def _graph_sizes(
    batch: torch.Tensor | None, n: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate ``batch``; return (batch [N] int64, nodes per graph [B], largest graph size)."""
    if batch is None:
        return (
            torch.zeros(n, dtype=torch.long, device=device),
            torch.full((1,), n, dtype=torch.long, device=device),
            n,
        )
    if not isinstance(batch, torch.Tensor) or batch.dim() != 1 or batch.numel() != n:
        raise ValueError(f"batch must be a 1-D tensor with one entry per node ({n})")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool:
        raise TypeError(f"batch must be an integer tensor, got {batch.dtype}")
    if batch.device != device:
        raise ValueError(f"batch is on {batch.device} but x is on {device}")
    batch = batch.long()
    unsorted = (batch[1:] < batch[:-1]).any()
    lo, hi, bad = torch.stack([batch.min(), batch.max(), unsorted.long()]).tolist()
    if lo < 0 or bad:
        raise ValueError("batch must be non-negative and sorted (the nodes of each graph contiguous)")
    counts = torch.bincount(batch, minlength=hi + 1)
    return batch, counts, int(counts.max())


def _empty_edges(device: torch.device) -> torch.Tensor:
    return torch.empty(2, 0, dtype=torch.long, device=device)


# ----------------------------------------------------------------------------------------------------------
# candidate generation: per-receiver ranges of a sender order, expanded in bounded chunks
# ----------------------------------------------------------------------------------------------------------

# seg_fn(a, b) -> (start [b - a, S], length [b - a, S]): for receivers a..b-1, S ranges of positions (into the
# sender order) that hold its candidate senders.
SegFn = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


def _candidate_chunks(
    n: int, seg_fn: SegFn, cap: int, device: torch.device
) -> Iterator[tuple[int, int, int, torch.Tensor, torch.Tensor]]:
    """Yield ``(b0, b1, S, seg_id, pos)`` for consecutive receiver ranges ``[b0, b1)``.

    Candidate ``c`` pairs receiver ``b0 + seg_id[c] // S`` with the sender at position ``pos[c]``.  Receivers
    come in increasing order, and for one receiver its ranges in order.  A chunk holds at most ``cap``
    candidates plus those of one receiver.
    """
    for a0 in range(0, n, _RECEIVER_BLOCK):
        a1 = min(n, a0 + _RECEIVER_BLOCK)
        start, length = seg_fn(a0, a1)
        n_seg = start.shape[1]
        cum = torch.cumsum(length.sum(1), 0)
        total = int(cum[-1])
        if total == 0:
            continue
        n_chunks = -(-total // cap)
        if n_chunks == 1:
            bounds, sizes = [0, a1 - a0], [total]
        else:
            targets = torch.arange(1, n_chunks, device=device) * cap
            cut = torch.searchsorted(cum, targets, right=True)
            cut = torch.unique_consecutive(torch.cat([cut.new_zeros(1), cut, cut.new_full((1,), a1 - a0)]))
            bounds = cut.tolist()
            ends = torch.cat([cum.new_zeros(1), cum])[cut].tolist()
            sizes = [e1 - e0 for e0, e1 in zip(ends[:-1], ends[1:], strict=True)]
        for b0, b1, size in zip(bounds[:-1], bounds[1:], sizes, strict=True):
            if size == 0:
                continue
            seg_len = length[b0:b1].reshape(-1)
            seg_start = start[b0:b1].reshape(-1)
            seg_id = torch.repeat_interleave(
                torch.arange(seg_len.numel(), device=device), seg_len, output_size=size
            )
            # position = start of the range + rank inside the range
            offset = seg_start - (torch.cumsum(seg_len, 0) - seg_len)
            pos = torch.arange(size, device=device) + offset.index_select(0, seg_id)
            yield a0 + b0, a0 + b1, n_seg, seg_id, pos


def _dense_segments(batch: torch.Tensor, counts: torch.Tensor) -> SegFn:
    """Every receiver's candidates are all nodes of its graph, in index order (one range)."""
    ptr = torch.cumsum(counts, 0) - counts

    def seg_fn(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = batch[a:b]
        return ptr.index_select(0, g)[:, None], counts.index_select(0, g)[:, None]

    return seg_fn


def _segment_min_max(
    v: torch.Tensor, batch: torch.Tensor, n_graphs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    idx = batch[:, None].expand(-1, v.shape[1])
    lo = torch.full((n_graphs, v.shape[1]), float("inf"), dtype=v.dtype, device=v.device)
    hi = torch.full((n_graphs, v.shape[1]), float("-inf"), dtype=v.dtype, device=v.device)
    lo = lo.scatter_reduce(0, idx, v, "amin")
    hi = hi.scatter_reduce(0, idx, v, "amax")
    empty = torch.isinf(lo)  # graphs without nodes
    return lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)


def _column_cell_list(
    x: torch.Tensor,
    batch: torch.Tensor,
    n_graphs: int,
    cutoff: float,
    n_recv: int | None = None,
    reach: float | None = None,
):
    """Cell list for open boundaries.  Returns ``(perm, seg_fn)``.

    Atoms are binned per graph into square columns of side ``cutoff / k`` (``k = _XY_DIVISIONS``) in x and y,
    and sorted within a column by z quantised to ``cutoff / z_res``.  The graph id is folded into the integer
    key ``(graph, column x, column y, z bin)``, so a whole batch is one stable sort.  A neighbour within the
    cutoff lies in one of the ``(2k + 1)^2`` columns around the receiver's (the 27-neighbour-cube stencil,
    refined), and inside such a column within ``sqrt(r^2 - rho^2)`` of the receiver's z (``rho``: distance
    from the receiver to the column in the xy plane); that z window is one contiguous range of the sorted
    order.  Columns out of reach (``rho >= r``) are skipped.  At uniform density this tests ~1.7-2x as many
    candidates as there are neighbours; the work is O(N).

    Only the first ``n_recv`` atoms (default: all) are receivers; the others are senders only.  ``reach``
    (default ``cutoff * (1 + _BIN_MARGIN)``) is the radius actually searched, slightly above the cutoff so
    that rounding cannot lose a pair.

    Range ends come from a table of cell starts (``bincount`` + ``cumsum``) when the number of cells is
    O(N), with ``z_res`` as fine as that allows, else from ``searchsorted`` on the sorted keys with a fine
    ``z_res`` (no memory proportional to the bounding volume, e.g. for sparse or very elongated inputs).
    """
    device, n = x.device, x.shape[0]
    k = _XY_DIVISIONS
    xd = x.to(torch.float64)
    lo, hi = _segment_min_max(xd, batch, n_graphs)
    ext = hi - lo
    reach = cutoff * (1.0 + _BIN_MARGIN) if reach is None else reach
    side = reach / k
    nx = torch.floor(ext[:, 0] / side).long() + 1 + 2 * k  # k empty padding columns on each side
    ny = torch.floor(ext[:, 1] / side).long() + 1 + 2 * k
    # total number of cells for z_res = 1, 2, 4, ..., _Z_RESOLUTION (one host sync)
    z_options = [2**e for e in range(_Z_RESOLUTION.bit_length()) if 2**e <= _Z_RESOLUTION]
    zr = torch.tensor(z_options, dtype=torch.float64, device=device)
    n_cells = ((nx * ny).double()[:, None] * (torch.floor(ext[:, 2:3] * (zr / cutoff)) + 1)).sum(0).tolist()
    budget = _CELL_TABLE_PER_ATOM * n + 65536
    fits = [z for z, c in zip(z_options, n_cells, strict=True) if c <= budget]
    use_table = bool(fits)
    if use_table:
        z_res = fits[-1]
    else:
        keyable = [z for z, c in zip(z_options, n_cells, strict=True) if c < _MAX_KEY]
        if not keyable:
            raise ValueError(
                "positions span too many cutoff-sized cells for 64-bit cell keys; use a larger cutoff or "
                "split the system into graphs"
            )
        z_res = keyable[-1]
    zscale = z_res / cutoff  # z bins per unit length
    nz = torch.floor(ext[:, 2] * zscale).long() + 1
    size = nx * ny * nz
    base = torch.cumsum(size, 0) - size
    rel = xd - lo.index_select(0, batch)
    cx = torch.floor(rel[:, 0] / side).long() + k
    cy = torch.floor(rel[:, 1] / side).long() + k
    cz = torch.floor(rel[:, 2] * zscale).long()
    ny_b, nz_b, base_b = ny.index_select(0, batch), nz.index_select(0, batch), base.index_select(0, batch)
    key = base_b + (cx * ny_b + cy) * nz_b + cz
    sorted_key, perm = torch.sort(key, stable=True)
    if use_table:
        total = int(size.sum())
        cell_start = torch.zeros(total + 1, dtype=torch.long, device=device)
        torch.cumsum(torch.bincount(key, minlength=total), 0, out=cell_start[1:])

    off = torch.arange(-k, k + 1, device=device)
    off_x = off.repeat_interleave(2 * k + 1)  # column stencil, x-major
    off_y = off.repeat(2 * k + 1)
    reach2 = reach * reach

    # Ranges of every receiver, computed in cell order (lookups then hit nearby memory) and stored per node:
    # (2k + 1)^2 starts and lengths per atom.
    n_seg = off_x.numel()
    n_recv = n if n_recv is None else n_recv
    recv_order = perm if n_recv == n else perm[perm < n_recv]
    idx_dtype = torch.int32 if n < 2**31 else torch.long
    starts = torch.empty(n_recv, n_seg, dtype=idx_dtype, device=device)
    lengths = torch.empty(n_recv, n_seg, dtype=idx_dtype, device=device)
    for p0 in range(0, n_recv, _RECEIVER_BLOCK):
        atoms = recv_order[p0 : p0 + _RECEIVER_BLOCK]
        ccx = cx.index_select(0, atoms) + off_x[:, None]  # [S, r] neighbour column indices
        ccy = cy.index_select(0, atoms) + off_y[:, None]
        r = rel.index_select(0, atoms)
        rx, ry, rz = r[:, 0], r[:, 1], r[:, 2]
        # distance in x (y) from the receiver to the column's slab; 0 for its own column
        x0 = (ccx - k).double() * side
        y0 = (ccy - k).double() * side
        gx = torch.clamp(torch.maximum(x0 - rx, rx - (x0 + side)), min=0.0)
        gy = torch.clamp(torch.maximum(y0 - ry, ry - (y0 + side)), min=0.0)
        rho2 = gx * gx + gy * gy
        # z window; reach > cutoff leaves enough slack for rounding, so no extra bin is needed
        half = torch.sqrt(torch.clamp(reach2 - rho2, min=0.0))
        nz_r = nz_b.index_select(0, atoms)
        z_lo = torch.clamp(torch.floor((rz - half) * zscale).long(), min=0)
        z_hi = torch.minimum(torch.floor((rz + half) * zscale).long(), nz_r - 1)
        col = base_b.index_select(0, atoms) + (ccx * ny_b.index_select(0, atoms) + ccy) * nz_r
        if use_table:
            start = cell_start[col + z_lo]
            stop = cell_start[col + z_hi + 1]
        else:
            start = torch.searchsorted(sorted_key, col + z_lo)
            stop = torch.searchsorted(sorted_key, col + z_hi, right=True)
        length = torch.where(rho2 < reach2, stop - start, torch.zeros_like(start))
        starts.index_copy_(0, atoms, start.t().to(idx_dtype))
        lengths.index_copy_(0, atoms, length.t().to(idx_dtype))

    def seg_fn(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return starts[a:b].long(), lengths[a:b].long()

    return perm, seg_fn


# ----------------------------------------------------------------------------------------------------------
# the shared filter loop
# ----------------------------------------------------------------------------------------------------------


def _at_receivers(v: torch.Tensor, b0: int, b1: int, n_seg: int, seg_id: torch.Tensor) -> torch.Tensor:
    """Per-node values ``v[..., node]`` of the receivers ``[b0, b1)``, gathered for every candidate."""
    v = v[..., b0:b1]
    if n_seg > 1:
        v = v.repeat_interleave(n_seg, dim=-1)
    return v.index_select(v.dim() - 1, seg_id)


def _edges(
    seg_fn: SegFn,
    n: int,
    perm: torch.Tensor | None,
    cut2: float,
    recv_x: torch.Tensor | None,
    send_x: torch.Tensor | None,
    periodic: _Periodic | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Test every candidate of ``seg_fn``; return sorted ``edge_index`` (and shifts when ``periodic``).

    Candidates are first tested as open-boundary pairs, ``|recv_x[:, i] - send_x[:, pos]|^2 < cut2``
    (``[3, *]`` coordinates; ``send_x`` in sender-position order, so every range is contiguous in memory;
    ``recv_x is None`` skips the test).  With ``periodic`` the survivors then pass the exact minimum-image
    test, :meth:`_Periodic.test`.  ``perm`` maps sender positions to node ids (``None``: identity; senders
    then come out ascending for each receiver and no sort is needed).
    """
    device = (recv_x if recv_x is not None else periodic.x).device
    pieces: list[torch.Tensor] = []
    shifts: list[torch.Tensor] = []
    cap = _CHUNK_PAIRS.get(device.type, 1 << 23)
    for b0, b1, n_seg, seg_id, pos in _candidate_chunks(n, seg_fn, cap, device):
        if recv_x is not None:
            d = _at_receivers(recv_x, b0, b1, n_seg, seg_id)  # [3, C]
            d -= send_x.index_select(1, pos)
            d *= d
            keep = ((d[0] + d[1] + d[2]) < cut2).nonzero().squeeze(1)
            seg_id, pos = seg_id.index_select(0, keep), pos.index_select(0, keep)
        recv_of_seg = torch.arange(b0, b1, device=device)
        if n_seg > 1:
            recv_of_seg = recv_of_seg.repeat_interleave(n_seg)
        i = recv_of_seg.index_select(0, seg_id)
        j = pos if perm is None else perm.index_select(0, pos)
        s = None
        if periodic is not None:
            ok, s = periodic.test(i, j)
            keep = (ok & (i != j)).nonzero().squeeze(1)
            s = s.index_select(0, keep)
        else:
            keep = (i != j).nonzero().squeeze(1)
        i, j = i.index_select(0, keep), j.index_select(0, keep)
        if perm is not None and i.numel() > 1:
            # order senders within each receiver; receivers are already non-decreasing, so i is unchanged
            base = (i - b0) * n
            key = base + j
            if (b1 - b0) * n < 2**31:  # int32 sorts faster
                key = key.int()
            if s is None:
                key = torch.sort(key).values
            else:
                key, order = torch.sort(key)
                s = s.index_select(0, order)
            j = key.long() - base
            if periodic is not None:  # with ghosts, two images of one sender can both be candidates
                first = torch.ones_like(j, dtype=torch.bool)
                first[1:] = key[1:] != key[:-1]
                first = first.nonzero().squeeze(1)
                i, j, s = i.index_select(0, first), j.index_select(0, first), s.index_select(0, first)
        pieces.append(torch.stack([i, j]))
        if s is not None:
            shifts.append(s)
    edge_index = torch.cat(pieces, dim=1) if pieces else _empty_edges(device)
    if periodic is None:
        return edge_index, None
    return edge_index, (torch.cat(shifts) if shifts else torch.empty(0, 3, dtype=torch.long, device=device))


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------


def radius_graph(
    x: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor | None = None,
    *,
    max_dense: int = 512,
    cell: torch.Tensor | None = None,
    pbc=None,
) -> torch.Tensor:
    """All ordered pairs ``i != j`` of the same graph closer than ``cutoff`` (no periodic images).

    Args:
        x: ``[N, 3]`` positions (float32 or float64, any device); gradients are not tracked.
        cutoff: radius, in the units of ``x``.  The test is strict, ``|x_i - x_j| < cutoff``, evaluated
            as ``dx*dx + dy*dy + dz*dz < cutoff**2`` in the dtype of ``x``: pairs exactly ``cutoff`` apart
            are not edges; distinct atoms at the same position are.
        batch: ``[N]`` sorted graph id per node; ``None`` means a single graph.
        max_dense: if no graph has more than ``max_dense`` nodes, all pairs of each graph are tested (in
            chunks; ``sum_g n_g^2`` work, faster for small graphs); otherwise one cell list serves the whole
            batch (``O(N)`` work at fixed density).  ``0`` forces the cell list, a huge value the dense path.
            Both paths return identical results.
        cell, pbc: not supported (raises ``ValueError``); use :func:`radius_graph_pbc` for periodic systems.

    Returns:
        ``[2, E]`` int64 ``edge_index`` on ``x.device`` (row 0 receiver ``i``, row 1 sender ``j``), both
        directions present, no self loops, sorted by receiver then sender.
    """
    if cell is not None or pbc is not None:
        raise ValueError(
            "radius_graph does not handle periodic boundary conditions; use "
            "radius_graph_pbc(x, cutoff, cell, pbc, batch), which also returns the lattice shifts"
        )
    x = _check_positions(x)
    cutoff = _check_cutoff(cutoff)
    n = x.shape[0]
    if n == 0:
        return _empty_edges(x.device)
    batch, counts, n_max = _graph_sizes(batch, n, x.device)
    xt = x.t().contiguous()  # [3, N]
    if n_max <= max_dense:
        return _edges(_dense_segments(batch, counts), n, None, cutoff * cutoff, xt, xt)[0]
    perm, seg_fn = _column_cell_list(x, batch, counts.numel(), cutoff)
    return _edges(seg_fn, n, perm, cutoff * cutoff, xt, xt.index_select(1, perm))[0]


class _Periodic:
    """The exact minimum-image test shared by the dense and cell-list paths of :func:`radius_graph_pbc`."""

    def __init__(self, x, frac, axes, cell, batch, cutoff):
        self.x = x  # [N, 3] positions as given
        self.frac = frac * torch.tensor([a in axes for a in range(3)], dtype=frac.dtype, device=frac.device)
        cell_x = cell.to(x.dtype)
        self.shared = cell_x[0] if bool((cell == cell[:1]).all()) else None  # [3, 3] if one cell for all
        self.cells = cell_x.contiguous()  # [B, 3, 3]
        self.batch = batch
        self.cut2 = cutoff * cutoff

    def test(self, i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(|r_ij|^2 < cutoff^2, s)`` with ``s = round(f_i - f_j)`` and ``r_ij = x_i - x_j - s @ cell``."""
        s = torch.round(self.frac.index_select(0, i) - self.frac.index_select(0, j))  # [C, 3] float64
        s_x = s.to(self.x.dtype)
        if self.shared is not None:
            shift = s_x @ self.shared
        else:
            shift = torch.einsum("ck,ckd->cd", s_x, self.cells.index_select(0, self.batch.index_select(0, i)))
        d = self.x.index_select(0, i) - self.x.index_select(0, j) - shift
        d = d * d
        return (d[:, 0] + d[:, 1] + d[:, 2]) < self.cut2, s.long()


def _as_pbc(pbc) -> list[bool]:
    if pbc is None:
        raise ValueError("pbc is required: a bool or three bools")
    t = torch.as_tensor(pbc, dtype=torch.bool).flatten().tolist()
    if len(t) == 1:
        t = t * 3
    if len(t) != 3:
        raise ValueError(f"pbc must be a bool or three bools, got {pbc!r}")
    return t


def _complete_cell(cell: torch.Tensor, periodic: Sequence[int]) -> torch.Tensor:
    """Cells whose periodic rows are unchanged and whose other rows are an orthonormal complement of them.

    Non-periodic rows only define the binning frame (shifts along them are always 0), so ASE-style cells with
    zero rows along non-periodic directions are fine.
    """
    full = cell.clone()
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
    if len(periodic) == 2:
        p, q = periodic
        (m,) = [a for a in range(3) if a not in periodic]
        normal = torch.linalg.cross(cell[:, p], cell[:, q])
        full[:, m] = normal / torch.linalg.vector_norm(normal, dim=1, keepdim=True)
    elif len(periodic) == 1:
        (p,) = periodic
        a = cell[:, p] / torch.linalg.vector_norm(cell[:, p], dim=1, keepdim=True)
        e = eye[torch.argmin(a.abs(), dim=1)]  # the Cartesian axis least aligned with a
        u = e - (e * a).sum(1, keepdim=True) * a
        u = u / torch.linalg.vector_norm(u, dim=1, keepdim=True)
        m1, m2 = [b for b in range(3) if b != p]
        full[:, m1], full[:, m2] = u, torch.linalg.cross(a, u)
    elif len(periodic) == 0:
        full = eye.expand_as(cell).clone()
    return full


def _periodic_frame(cell: torch.Tensor, axes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(full, inv, width)`` of float64 cells ``[B, 3, 3]`` periodic along ``axes``.

    ``full``: the cells completed along open axes (:func:`_complete_cell`), ``inv`` its inverses (fractional
    coordinates are ``f = x @ inv``) and ``width`` ``[B, 3]`` the perpendicular widths ``1 / ‖inv[:, :, k]‖``:
    along a periodic axis the distance between opposite faces of the periodic lattice (1 along open axes, where
    it means nothing).  ``ValueError`` when the periodic rows are zero or linearly dependent.
    """
    full = _complete_cell(cell, axes)
    det = torch.linalg.det(full)
    ok = torch.isfinite(det) & (det.abs() > 1e-10 * torch.linalg.vector_norm(full, dim=2).prod(1))
    if not bool(ok.all()):
        raise ValueError("the periodic lattice vectors of cell are degenerate (zero or linearly dependent)")
    inv = torch.linalg.inv(full)
    return full, inv, 1.0 / torch.linalg.vector_norm(inv, dim=1)


def radius_graph_pbc(
    x: torch.Tensor,
    cutoff: float,
    cell: torch.Tensor,
    pbc,
    batch: torch.Tensor | None = None,
    *,
    max_dense: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Radius graph under periodic boundary conditions (minimum-image convention), with lattice shifts.

    Args:
        x: ``[N, 3]`` Cartesian positions; they need not be wrapped into the cell.
        cutoff: strict radius as in :func:`radius_graph`.  It must be less than half the smallest
            perpendicular width of the cell (distance between opposite faces) along every periodic direction,
            else ``ValueError``: then every pair has at most one image within the cutoff, the minimum image is
            exact for any (also triclinic) cell and no atom neighbours its own image.
        cell: ``[3, 3]`` (shared) or ``[B, 3, 3]`` (per graph) lattice; rows are the lattice vectors
            ``a_0, a_1, a_2`` in the units of ``x`` (ASE convention).  Rows along non-periodic directions are
            ignored (may be zero).
        pbc: bool or three bools: periodicity along ``a_0, a_1, a_2`` (shared by the batch).
        batch: ``[N]`` sorted graph id per node (``None``: one graph).
        max_dense: as in :func:`radius_graph`.

    Returns:
        ``(edge_index, shifts)``: ``edge_index`` ``[2, E]`` as in :func:`radius_graph` (a pair appears once,
        with its minimum image), and ``shifts`` ``[E, 3]`` int64 lattice shifts ``s`` (0 along non-periodic
        directions): the sender's image is at ``x_j + s @ cell_g`` and the edge vector, pointing from that
        image to the receiver, is::

            r_ij = x_i - (x_j + s @ cell_g)        # |r_ij| < cutoff; cell_g: the cell of the edge's graph

        i.e. ``s = round(f_i - f_j)`` for fractional coordinates ``f = x @ inv(cell_g)``.  The reverse edge
        ``(j, i)`` carries ``-s``.
    """
    x = _check_positions(x)
    cutoff = _check_cutoff(cutoff)
    n, device, dtype = x.shape[0], x.device, x.dtype
    mask = _as_pbc(pbc)
    axes = [a for a in range(3) if mask[a]]
    cell = torch.as_tensor(cell).detach().to(device=device, dtype=torch.float64)
    if n == 0:
        return _empty_edges(device), torch.empty(0, 3, dtype=torch.long, device=device)
    batch, counts, n_max = _graph_sizes(batch, n, device)
    n_graphs = counts.numel()
    if cell.shape == (3, 3):
        cell = cell.expand(n_graphs, 3, 3)
    elif cell.dim() != 3 or cell.shape[1:] != (3, 3) or cell.shape[0] != n_graphs:
        raise ValueError(f"cell must be [3, 3] or [B, 3, 3] with B = {n_graphs}, got {tuple(cell.shape)}")

    # geometry checks: periodic rows independent, cutoff below half of every periodic width
    _, inv, width = _periodic_frame(cell, axes)
    if axes:
        w_min = float(width[:, axes].min())
        if not cutoff < 0.5 * w_min:
            raise ValueError(
                f"cutoff {cutoff} must be less than half the smallest perpendicular width of the periodic "
                f"cell ({w_min:.6g}, so cutoff < {0.5 * w_min:.6g}) for the minimum-image convention; "
                "use a larger supercell"
            )

    frac = torch.bmm(x.to(torch.float64).unsqueeze(1), inv.index_select(0, batch)).squeeze(1)  # [N, 3]
    periodic = _Periodic(x, frac, axes, cell, batch, cutoff)
    if n_max <= max_dense:
        edge_index, shifts = _edges(_dense_segments(batch, counts), n, None, 0.0, None, None, periodic)
    else:
        # candidates: open-boundary cell list over wrapped atoms plus ghost images, prefiltered with a
        # slightly larger radius; the exact test then decides (so both paths agree bit for bit)
        # The exact test rounds relative to |x| and |s @ cell|, not only to the cutoff: widen the search
        # radius by more than any rounding of either test.
        x_w, ghosts = _with_periodic_ghosts(x, frac, cell, width, batch, axes, cutoff)
        size = float(torch.stack([x.abs().max().double(), x_w.abs().max()]).sum())
        reach = cutoff * (1.0 + _BIN_MARGIN) + 64 * torch.finfo(dtype).eps * size
        x_ext, batch_ext, source = ghosts(reach)
        perm_ext, seg_fn = _column_cell_list(x_ext, batch_ext, n_graphs, cutoff, n_recv=n, reach=reach)
        ext_t = x_ext.t().to(dtype)
        send_t = ext_t.index_select(1, perm_ext)
        edge_index, shifts = _edges(
            seg_fn, n, source.index_select(0, perm_ext), reach * reach, ext_t, send_t, periodic
        )
    assert shifts is not None
    return edge_index, shifts


def _with_periodic_ghosts(
    x: torch.Tensor,
    frac: torch.Tensor,
    cell: torch.Tensor,
    width: torch.Tensor,
    batch: torch.Tensor,
    axes: list[int],
    cutoff: float,
):
    """Wrapped positions, and a function adding periodic ghost images, for the open cell list.

    Atoms are wrapped into the cell along periodic axes (``x_w``, float64).  ``ghosts(reach)`` gives every
    atom within ``reach`` (perpendicular distance) of a face an image on the other side, for every combination
    of such faces (edges and corners too), so that any pair closer than ``reach`` under the minimum image
    appears as a real receiver and a real or ghost sender.  It returns float64 ``(x_ext [N + G, 3],
    batch_ext, source)``, ``source`` being the real atom of every entry (the first ``N`` are the atoms).
    """
    device, n = x.device, x.shape[0]
    pm = torch.zeros(3, dtype=torch.float64, device=device)
    pm[axes] = 1.0
    cell_b = cell.index_select(0, batch)  # [N, 3, 3] float64
    whole = torch.floor(frac) * pm
    wrapped = frac - whole  # in [0, 1) along periodic axes
    x_w = x.to(torch.float64) - torch.einsum("nk,nkc->nc", whole, cell_b)

    def ghosts(reach: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # images s in {-1, 0, 1}^3 (0 on open axes), s != 0; an atom near the low face (f < t) gets s = +1
        options = [(-1, 0, 1) if a in axes else (0,) for a in range(3)]
        images = [(a, b, c) for a in options[0] for b in options[1] for c in options[2] if a or b or c]
        if not images:
            return x_w, batch, torch.arange(n, device=device)
        img = torch.tensor(images, dtype=torch.float64, device=device)  # [M, 3]
        t = (reach / width).index_select(0, batch)[:, None, :]  # [N, 1, 3]
        f = wrapped[:, None, :]
        near = (img == 0) | ((img > 0) & (f < t)) | ((img < 0) & (f >= 1.0 - t))
        atom, which = near.all(-1).nonzero().unbind(1)
        ghost = x_w.index_select(0, atom) + torch.einsum(
            "gk,gkc->gc", img.index_select(0, which), cell_b.index_select(0, atom)
        )
        return (
            torch.cat([x_w, ghost]),
            torch.cat([batch, batch.index_select(0, atom)]),
            torch.cat([torch.arange(n, device=device), atom]),
        )

    return x_w, ghosts


# ----------------------------------------------------------------------------------------------------------
# the periodic neighbour list: any cell size, each graph with its own cell and boundary conditions
# ----------------------------------------------------------------------------------------------------------


def graph_cells(cell, pbc, num_graphs: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise ``cell`` to ``[B, 3, 3]`` float64 and ``pbc`` to ``[B, 3]`` bool.

    ``cell``: ``None`` (zeros: free graphs), ``[3, 3]`` shared or ``[B, 3, 3]`` (rows are lattice vectors);
    ``pbc``: ``None`` (all open), a bool, ``[3]`` shared or ``[B, 3]``.
    """
    if cell is None:
        cell_t = torch.zeros(num_graphs, 3, 3, dtype=torch.float64, device=device)
    else:
        cell_t = torch.as_tensor(cell, device=device).to(torch.float64)
        if cell_t.shape == (3, 3):
            cell_t = cell_t.expand(num_graphs, 3, 3)
        if cell_t.shape != (num_graphs, 3, 3):
            raise ValueError(f"cell must be [3, 3] or [B, 3, 3] with B = {num_graphs}, got {tuple(cell_t.shape)}")
    if pbc is None:
        pbc_t = torch.zeros(num_graphs, 3, dtype=torch.bool, device=device)
    else:
        pbc_t = torch.as_tensor(pbc, device=device).to(torch.bool)
        if pbc_t.dim() == 0:
            pbc_t = pbc_t.expand(3)
        if pbc_t.shape == (3,):
            pbc_t = pbc_t.expand(num_graphs, 3)
        if pbc_t.shape != (num_graphs, 3):
            raise ValueError(f"pbc must be a bool, [3] or [B, 3] with B = {num_graphs}, got {tuple(pbc_t.shape)}")
    return cell_t, pbc_t


def periodic_widths(cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """``[B, 3]`` perpendicular widths of the cells ``[B, 3, 3]`` under ``pbc`` ``[B, 3]``: along a periodic axis
    ``k`` the distance from ``a_k`` to the span of the graph's other periodic lattice vectors (between opposite
    faces for a 3-D cell), ``inf`` along open axes.  The same widths :func:`radius_graph_pbc` checks the cutoff
    against (one computation, :func:`_periodic_frame`, per boundary pattern); ``ValueError`` for degenerate
    periodic rows."""
    cell = cell.to(torch.float64)
    widths = torch.full(pbc.shape, float("inf"), dtype=torch.float64, device=cell.device)
    patterns, group = torch.unique(pbc, dim=0, return_inverse=True)
    for p in range(patterns.shape[0]):
        mask = patterns[p]
        axes = [k for k in range(3) if bool(mask[k])]
        if not axes:
            continue
        graphs = (group == p).nonzero().squeeze(1)
        _, _, w = _periodic_frame(cell.index_select(0, graphs), axes)
        widths[graphs] = torch.where(mask, w, widths[graphs])
    return widths


def _multi_image_edges(
    x: torch.Tensor, cutoff: float, cell: torch.Tensor, pbc: torch.Tensor, widths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(i, j, s)`` with ``‖x_i − x_j − s·C‖ < cutoff`` for ONE graph whose cell is too small for the minimum
    image (cutoff ≥ half a periodic width): an atom may then see several images of a neighbour, and its own
    images (``i = j``, ``s ≠ 0``).  Dense over atom pairs and a box of shifts (``ceil(cutoff / w_k) + 1`` cells
    each way along periodic axis ``k``); meant for small cells, the case that needs it.

    Args: ``x`` [n, 3], ``cell`` [3, 3], ``pbc`` [3] bool, ``widths`` [3] (:func:`periodic_widths`).
    Returns: ``edge_index`` [2, E] sorted by receiver then sender, and ``s`` [E, 3] float64.
    """
    device, n = x.device, x.shape[0]
    x = x.to(torch.float64)
    axes = [k for k in range(3) if bool(pbc[k])]
    full, inv, _ = _periodic_frame(cell.to(torch.float64)[None], axes)
    full, inv = full[0], inv[0]
    frac = x @ inv
    whole = torch.floor(frac) * pbc.to(torch.float64)
    xw = x - whole @ full  # wrapped into the cell along periodic axes
    reach = [int(math.ceil(cutoff / float(widths[k]))) + 1 if k in axes else 0 for k in range(3)]
    grid = torch.cartesian_prod(*[torch.arange(-r, r + 1, dtype=torch.float64, device=device) for r in reach])
    offsets = grid @ full  # [S, 3]
    rel = xw.unsqueeze(1) - xw.unsqueeze(0)  # [n, n, 3]
    same = torch.eye(n, dtype=torch.bool, device=device)
    per_chunk = max(1, (1 << 22) // max(n * n, 1))
    found = []
    for s0 in range(0, grid.shape[0], per_chunk):
        off = offsets[s0 : s0 + per_chunk]
        d = rel.unsqueeze(2) - off  # [n, n, S_c, 3]
        keep = (d * d).sum(-1) < cutoff * cutoff
        keep &= ~(same.unsqueeze(-1) & (grid[s0 : s0 + per_chunk].abs().sum(-1) == 0))
        i, j, k = keep.nonzero().unbind(1)
        found.append((i, j, grid[s0 + k]))
    i, j, s = (torch.cat(parts) for parts in zip(*found, strict=True))
    s = s + whole[i] - whole[j]  # the shift for the positions as given
    order = torch.sort(i * n + j, stable=True).indices
    return torch.stack([i, j])[:, order], s[order]


def neighbor_list(
    x: torch.Tensor, cutoff: float, batch: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges within ``cutoff`` under each graph's own boundary conditions, periodic images included: the one
    periodic neighbour search of mdsurrogate (potential datasets at ingest, learned potentials at every call).

    Args:
        x: ``[N, 3]`` positions (Å; need not be wrapped); gradients are not tracked.
        cutoff: strict radius (``|r_ij| < cutoff``).
        batch: ``[N]`` sorted graph ids.
        cell: ``[B, 3, 3]`` lattices (rows are lattice vectors; rows along open axes are ignored);
            pbc: ``[B, 3]`` bool. :func:`graph_cells` makes both from looser input.

    Returns:
        ``edge_index`` ``[2, E]`` (receiver ``i``, sender ``j``; sorted by receiver, then sender) and the integer
        lattice shifts ``s`` ``[E, 3]`` (float64) with ``r_ij = x_i − x_j − s·C_g`` (the convention of
        :func:`radius_graph_pbc`). A pair appears once per image within the cutoff.

    Graphs are searched in groups: free graphs with :func:`radius_graph` (cell list); periodic graphs whose
    cells hold the cutoff (cutoff < half every periodic width: the minimum image is exact and unique) with
    :func:`radius_graph_pbc`, one call per boundary pattern; and each graph with a smaller cell (a primitive
    cell, a few-atom supercell) by a dense search over several images, so any cell shape and size works.
    """
    x = x.detach()
    device = x.device
    widths = periodic_widths(cell, pbc)
    small = (cutoff >= 0.5 * widths * (1.0 - 1e-9)).any(1)  # minimum image not valid: several images per pair
    code = pbc.long() @ torch.tensor([1, 2, 4], device=device)
    code = torch.where(small, 8 + torch.arange(code.numel(), device=device), code)
    keys, group = torch.unique(code, return_inverse=True)

    def run(xs, bs, graphs):
        g0 = int(graphs[0])
        if bool(small[g0]):
            return _multi_image_edges(xs, cutoff, cell[g0], pbc[g0], widths[g0])
        pattern = pbc[g0]
        if bool(pattern.any()):
            ei, s = radius_graph_pbc(xs, cutoff, cell[graphs], pattern.tolist(), bs)
            return ei, s.to(torch.float64)
        ei = radius_graph(xs, cutoff, bs)
        return ei, torch.zeros(ei.shape[1], 3, dtype=torch.float64, device=device)

    if keys.numel() == 1:
        return run(x, batch, torch.arange(code.numel(), device=device))
    pieces, shifts = [], []
    for p in range(keys.numel()):
        graphs = (group == p).nonzero().squeeze(1)
        rank = torch.full((group.numel(),), -1, dtype=torch.long, device=device)
        rank[graphs] = torch.arange(graphs.numel(), device=device)
        nodes = (rank[batch] >= 0).nonzero().squeeze(1)
        ei, s = run(x[nodes], rank[batch[nodes]], graphs)
        pieces.append(nodes[ei])
        shifts.append(s)
    edge_index, s = torch.cat(pieces, dim=1), torch.cat(shifts)
    order = torch.sort(edge_index[0] * x.shape[0] + edge_index[1], stable=True).indices
    return edge_index[:, order], s[order]


def mean_degree(edge_count: int, atoms: int) -> float:
    """Mean number of neighbours (1 for an empty edge set): the ν of learned potentials, stored at ingest."""
    return max(edge_count / max(atoms, 1), 1.0) if edge_count else 1.0
