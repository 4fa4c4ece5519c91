"""Neighbour lists for flat-batched graphs, in pure torch (CPU or CUDA).

Conventions (shared with the rest of :mod:`mdsurrogate`):

* positions ``x`` are ``[N, 3]`` for all graphs of a batch concatenated, ``batch`` is ``[N]`` (graph id of every
  node, sorted and contiguous) and ``ptr`` is ``[B + 1]`` node offsets;
* ``edge_index`` is ``[2, E]`` int64 with ``edge_index[0] = i`` (receiver / target) and ``edge_index[1] = j``
  (sender / source); both directions of every pair are present, there are no self loops and edges are sorted
  by receiver, then sender.  The order is fully determined by the input, so results are reproducible.

Everything runs on ``x.device`` without a NumPy round trip, without Python loops over atoms or graphs and
without a dense ``N x N`` matrix: the large-graph path is a cell list whose candidate pairs are materialised in
bounded chunks, so peak memory is ``O(N + E)`` plus a fixed chunk budget.  Only a handful of sizes are read back
to the host (one per chunk), which is what sizing the outputs requires.

Distances are compared as squared distances in the dtype of ``x``: a pair is an edge iff
``((x_i - x_j) ** 2).sum() < cutoff ** 2`` (strict; a pair exactly ``cutoff`` apart is *not* an edge).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

__all__ = ["complete_graph", "radius_graph", "radius_graph_pbc"]

# Number of candidate pairs materialised at once (about 100 bytes each); bounds peak memory.
_CHUNK_PAIRS = {"cpu": 1 << 20, "cuda": 1 << 23}
# Receivers whose per-column search ranges are built at once.
_RECEIVER_BLOCK = 16384
# Bins are (1 + _BIN_MARGIN) * cutoff (divided by _XY_DIVISIONS) wide, so rounding can never push a pair
# that passes the distance test outside the searched neighbourhood.
_BIN_MARGIN = 1e-4
# Cell-list columns are cutoff / _XY_DIVISIONS wide in x and y (a (2k + 1)^2 stencil of columns).
_XY_DIVISIONS = 2
# Inside a column atoms are sorted by z quantised to cutoff / _Z_RESOLUTION.
_Z_RESOLUTION = 1024
_MAX_KEY = 1 << 62


# ----------------------------------------------------------------------------------------------------------
# complete graph
# ----------------------------------------------------------------------------------------------------------


def complete_graph(ptr: torch.Tensor) -> torch.Tensor:
    """All ordered pairs ``i != j`` inside each graph of a batch.

    Args:
        ptr: ``[B + 1]`` node offsets (``ptr[0] == 0``, non-decreasing); graphs may have any size, including 0 or 1.

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
    # The k-th edge of receiver i (local index l_i) goes to local sender k + (k >= l_i): skip the self pair.
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


def _graph_sizes(batch: torch.Tensor | None, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate ``batch``; return (batch [N], counts [B], max graph size)."""
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
        raise ValueError("batch must be non-negative and sorted (nodes of each graph contiguous)")
    counts = torch.bincount(batch, minlength=hi + 1)
    return batch, counts, int(counts.max())


def _chunk_pairs(device: torch.device) -> int:
    return _CHUNK_PAIRS["cuda" if device.type == "cuda" else "cpu"]


# ----------------------------------------------------------------------------------------------------------
# chunked expansion of per-receiver candidate ranges
# ----------------------------------------------------------------------------------------------------------

# seg_fn(a, b) -> (start [b - a, S], length [b - a, S]): for receivers a..b-1, S ranges of positions (into the
# sender order) that hold candidate senders.
SegFn = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


def _candidate_chunks(n: int, seg_fn: SegFn, cap: int, device: torch.device) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(a, recv_local, pos)``: candidate pairs (receiver ``a + recv_local``, sender position ``pos``).

    Receivers come in increasing order and, for one receiver, positions in the order of its ranges.  Each chunk
    holds at most ``cap`` candidates plus those of a single receiver.
    """
    for a0 in range(0, n, _RECEIVER_BLOCK):
        a1 = min(n, a0 + _RECEIVER_BLOCK)
        start, length = seg_fn(a0, a1)
        n_seg = start.shape[1]
        cnt = length.sum(1)
        cum = torch.cumsum(cnt, 0)
        total = int(cum[-1])
        if total == 0:
            continue
        n_chunks = -(-total // cap)
        if n_chunks == 1:
            bounds = [0, a1 - a0]
            sizes = [total]
        else:
            targets = torch.arange(1, n_chunks, device=device) * cap
            cut = torch.searchsorted(cum, targets, right=True)
            cut = torch.unique_consecutive(torch.cat([cut.new_zeros(1), cut, cut.new_full((1,), a1 - a0)]))
            cum0 = torch.cat([cum.new_zeros(1), cum])
            bounds = cut.tolist()
            edges = cum0[cut].tolist()
            sizes = [e1 - e0 for e0, e1 in zip(edges[:-1], edges[1:], strict=True)]
        for b0, b1, size in zip(bounds[:-1], bounds[1:], sizes, strict=True):
            if size == 0:
                continue
            seg_len = length[b0:b1].reshape(-1)
            seg_start = start[b0:b1].reshape(-1)
            seg_id = torch.repeat_interleave(torch.arange(seg_len.numel(), device=device), seg_len, output_size=size)
            # position = start of the range + rank inside the range
            shift = seg_start - (torch.cumsum(seg_len, 0) - seg_len)
            pos = torch.arange(size, device=device) + shift[seg_id]
            recv_local = torch.div(seg_id, n_seg, rounding_mode="floor") + b0
            yield a0, recv_local, pos


# ----------------------------------------------------------------------------------------------------------
# radius graph without periodic boundaries
# ----------------------------------------------------------------------------------------------------------


def _segment_min_max(xd: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = batch[:, None].expand(-1, xd.shape[1])
    lo = torch.full((n_graphs, xd.shape[1]), float("inf"), dtype=xd.dtype, device=xd.device)
    hi = torch.full((n_graphs, xd.shape[1]), float("-inf"), dtype=xd.dtype, device=xd.device)
    lo = lo.scatter_reduce(0, idx, xd, "amin")
    hi = hi.scatter_reduce(0, idx, xd, "amax")
    # graphs without nodes (never indexed) get an empty box
    empty = torch.isinf(lo)
    return lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)


def _column_cell_list(x: torch.Tensor, batch: torch.Tensor, n_graphs: int, cutoff: float):
    """Cell list: columns of side cutoff / k in x and y, atoms sorted by (graph, column, quantised z).

    For receiver i and each of the (2k + 1)^2 neighbouring columns the candidates are the atoms whose z lies
    within sqrt(r^2 - rho^2) of z_i (rho: distance from i to the column in the xy plane, r: cutoff with
    margin), i.e. one contiguous range of the sorted order, found with two searchsorted calls.  Columns with
    rho >= r are skipped.  Returns (perm, seg_fn).
    """
    device = x.device
    k = _XY_DIVISIONS
    xd = x.to(torch.float64)
    lo, hi = _segment_min_max(xd, batch, n_graphs)
    ext = hi - lo
    reach = cutoff * (1.0 + _BIN_MARGIN)
    side = reach / k
    z_res = _Z_RESOLUTION
    nx = torch.floor(ext[:, 0] / side).long() + 1 + 2 * k  # k padding columns on each side
    ny = torch.floor(ext[:, 1] / side).long() + 1 + 2 * k
    while True:
        q = cutoff / z_res
        nz = torch.floor(ext[:, 2] / q).long() + 1
        n_keys = (nx.double() * ny.double() * nz.double()).sum()
        if float(n_keys) < _MAX_KEY:
            break
        if z_res == 1:
            raise ValueError(
                "positions span too many cutoff-sized cells for 64-bit cell keys; use a larger cutoff or "
                "split the system"
            )
        z_res = max(1, z_res // 64)
    size = nx * ny * nz
    base = torch.cumsum(size, 0) - size
    rel = xd - lo[batch]
    cx = torch.floor(rel[:, 0] / side).long() + k
    cy = torch.floor(rel[:, 1] / side).long() + k
    cz = torch.floor(rel[:, 2] / q).long()
    nyb, nzb, baseb = ny[batch], nz[batch], base[batch]
    key = baseb + (cx * nyb + cy) * nzb + cz
    sorted_key, perm = torch.sort(key, stable=True)

    off = torch.arange(-k, k + 1, device=device)
    offx = off.repeat_interleave(2 * k + 1)  # column stencil, x-major
    offy = off.repeat(2 * k + 1)
    reach2 = reach * reach

    def seg_fn(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        ccx = cx[a:b, None] + offx  # [r, S] neighbour column indices
        ccy = cy[a:b, None] + offy
        rx, ry, rz = rel[a:b, 0:1], rel[a:b, 1:2], rel[a:b, 2:3]
        # distance in x (y) from the receiver to the column's slab; 0 for its own column
        x0 = (ccx - k).double() * side
        y0 = (ccy - k).double() * side
        gx = torch.clamp(torch.maximum(x0 - rx, rx - (x0 + side)), min=0.0)
        gy = torch.clamp(torch.maximum(y0 - ry, ry - (y0 + side)), min=0.0)
        rho2 = gx * gx + gy * gy
        half = torch.sqrt(torch.clamp(reach2 - rho2, min=0.0))
        nzr = nzb[a:b, None]
        z_lo = torch.clamp(torch.floor((rz - half) / q).long() - 1, min=0)
        z_hi = torch.minimum(torch.floor((rz + half) / q).long() + 1, nzr - 1)
        col = baseb[a:b, None] + (ccx * nyb[a:b, None] + ccy) * nzr
        start = torch.searchsorted(sorted_key, col + z_lo)
        stop = torch.searchsorted(sorted_key, col + z_hi, right=True)
        length = torch.where(rho2 < reach2, stop - start, torch.zeros_like(start))
        return start, length

    return perm, seg_fn


def _dense_segments(batch: torch.Tensor, counts: torch.Tensor) -> SegFn:
    """Every receiver's candidates are all nodes of its graph, in index order."""
    ptr = torch.cumsum(counts, 0) - counts

    def seg_fn(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = batch[a:b]
        return ptr[g][:, None], counts[g][:, None]

    return seg_fn


def _collect(
    n: int,
    seg_fn: SegFn,
    perm: torch.Tensor | None,
    accept: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the chunked expansion, filter with ``accept(i, j) -> (mask, extra)``, return sorted edges (+ extra).

    With ``perm is None`` senders come out ascending for each receiver and no sort is needed; otherwise the
    survivors of each chunk are sorted by (receiver, sender) (chunks hold increasing receiver ranges).
    """
    rows: list[torch.Tensor] = []
    cols: list[torch.Tensor] = []
    extras: list[torch.Tensor] = []
    has_extra = False
    for a0, recv_local, pos in _candidate_chunks(n, seg_fn, _chunk_pairs(device), device):
        i = recv_local + a0
        j = pos if perm is None else perm[pos]
        mask, extra = accept(i, j)
        keep = mask.nonzero().squeeze(1)
        i, j = i[keep], j[keep]
        if extra is not None:
            has_extra = True
            extra = extra[keep]
        if perm is not None and i.numel() > 1:
            order = torch.argsort(i * n + j)
            i, j = i[order], j[order]
            if extra is not None:
                extra = extra[order]
        rows.append(i)
        cols.append(j)
        if extra is not None:
            extras.append(extra)
    if not rows:
        return torch.empty(2, 0, dtype=torch.long, device=device), None
    edge_index = torch.stack([torch.cat(rows), torch.cat(cols)])
    return edge_index, (torch.cat(extras) if has_extra else None)


def radius_graph(
    x: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor | None = None,
    *,
    max_dense: int = 2048,
    cell: torch.Tensor | None = None,
    pbc=None,
) -> torch.Tensor:
    """All ordered pairs ``i != j`` of the same graph closer than ``cutoff`` (open ball, no periodic images).

    Args:
        x: ``[N, 3]`` positions (float32 or float64, any device); gradients are not tracked.
        cutoff: radius, in the units of ``x``.  The test is strict: ``|x_i - x_j| < cutoff``, evaluated as a
            squared distance in the dtype of ``x`` (pairs exactly ``cutoff`` apart are excluded).  Coincident
            distinct atoms are neighbours.
        batch: ``[N]`` sorted graph id per node; ``None`` means a single graph.
        max_dense: if every graph has at most this many nodes, all pairs of each graph are tested (chunked,
            ``sum_g n_g^2`` work, faster for small graphs); otherwise a cell list is used for the whole batch
            (``O(N)`` work at fixed density).  ``0`` forces the cell list, a huge value forces the dense path.
            Both paths return identical results.
        cell, pbc: not supported here (raises); use :func:`radius_graph_pbc` for periodic systems.

    Returns:
        ``[2, E]`` int64 ``edge_index`` on ``x.device`` (row 0 receiver ``i``, row 1 sender ``j``), both
        directions present, no self loops, sorted by receiver then sender.
    """
    if cell is not None or pbc is not None:
        raise ValueError(
            "radius_graph does not handle periodic boundary conditions; use "
            "radius_graph_pbc(x, cutoff, cell, pbc, batch) which also returns the lattice shifts"
        )
    x = _check_positions(x)
    cutoff = _check_cutoff(cutoff)
    n, device = x.shape[0], x.device
    if n == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    batch, counts, n_max = _graph_sizes(batch, n, device)
    cut2 = cutoff * cutoff

    if n_max <= max_dense:

        def accept(i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, None]:
            d = x[i] - x[j]
            return ((d * d).sum(1) < cut2) & (i != j), None

        return _collect(n, _dense_segments(batch, counts), None, accept, device)[0]

    perm, seg_fn = _column_cell_list(x, batch, counts.numel(), cutoff)
    xs = x[perm]  # sender coordinates in cell order: candidate ranges are contiguous in memory
    # filter on sorted positions, then translate survivors to node ids, drop self pairs and sort (i, j)
    rows: list[torch.Tensor] = []
    cols: list[torch.Tensor] = []
    for a0, recv_local, pos in _candidate_chunks(n, seg_fn, _chunk_pairs(device), device):
        i = recv_local + a0
        d = x[i] - xs[pos]
        keep = ((d * d).sum(1) < cut2).nonzero().squeeze(1)
        i, j = i[keep], perm[pos[keep]]
        key = i * n + j
        key = key[i != j]
        key = torch.sort(key).values
        rows.append(torch.div(key, n, rounding_mode="floor"))
        cols.append(key - rows[-1] * n)
    if not rows:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    return torch.stack([torch.cat(rows), torch.cat(cols)])


# ----------------------------------------------------------------------------------------------------------
# periodic boundary conditions
# ----------------------------------------------------------------------------------------------------------


def _as_pbc(pbc, device: torch.device) -> torch.Tensor:
    if pbc is None:
        raise ValueError("pbc is required (bool or three bools)")
    t = torch.as_tensor(pbc, dtype=torch.bool).flatten()
    if t.numel() == 1:
        t = t.expand(3)
    if t.numel() != 3:
        raise ValueError(f"pbc must be a bool or three bools, got {pbc!r}")
    return t.to(device)


def _complete_cell(cell: torch.Tensor, periodic: Sequence[int]) -> torch.Tensor:
    """Return cells whose periodic rows are unchanged and whose other rows are an orthonormal complement.

    The non-periodic rows only define the binning frame (shifts along them are always 0), so ASE-style cells
    with zero rows along non-periodic directions are accepted.
    """
    full = cell.clone()
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
    if len(periodic) == 2:
        p, q = periodic
        (m,) = [a for a in range(3) if a not in periodic]
        nrm = torch.linalg.cross(cell[:, p], cell[:, q])
        full[:, m] = nrm / torch.linalg.vector_norm(nrm, dim=1, keepdim=True)
    elif len(periodic) == 1:
        (p,) = periodic
        a = cell[:, p]
        a = a / torch.linalg.vector_norm(a, dim=1, keepdim=True)
        e = eye[torch.argmin(a.abs(), dim=1)]  # the axis least aligned with a
        u = e - (e * a).sum(1, keepdim=True) * a
        u = u / torch.linalg.vector_norm(u, dim=1, keepdim=True)
        v = torch.linalg.cross(a, u)
        m1, m2 = [b for b in range(3) if b != p]
        full[:, m1], full[:, m2] = u, v
    elif len(periodic) == 0:
        full = eye.expand_as(cell).clone()
    return full


def radius_graph_pbc(
    x: torch.Tensor,
    cutoff: float,
    cell: torch.Tensor,
    pbc,
    batch: torch.Tensor | None = None,
    *,
    max_dense: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Radius graph under periodic boundary conditions (minimum-image convention), with lattice shifts.

    Args:
        x: ``[N, 3]`` Cartesian positions; they need not be wrapped into the cell.
        cutoff: strict radius (see :func:`radius_graph`); must be less than half the smallest perpendicular
            width of the cell along every periodic direction (``ValueError`` otherwise), so that each pair has
            at most one image within the cutoff, the minimum image is well defined for any (also triclinic)
            cell and no atom neighbours its own image.
        cell: ``[3, 3]`` (shared) or ``[B, 3, 3]`` (per graph) lattice, rows are the lattice vectors
            ``a_0, a_1, a_2`` in the units of ``x``.  Rows along non-periodic directions are ignored (may be 0).
        pbc: bool or three bools, periodicity along ``a_0, a_1, a_2`` (shared by the batch).
        batch: ``[N]`` sorted graph id per node (``None``: one graph).
        max_dense: as in :func:`radius_graph`.

    Returns:
        ``(edge_index, shifts)``: ``edge_index`` ``[2, E]`` as in :func:`radius_graph`, and ``shifts`` ``[E, 3]``
        int64 lattice shifts ``s`` (0 along non-periodic directions) such that the sender's image is at
        ``x_j + s @ cell`` and the edge vector pointing from it to the receiver is::

            r_ij = x_i - (x_j + s @ cell_g)        # |r_ij| < cutoff, cell_g the cell of the edge's graph

        i.e. ``s = round(f_i - f_j)`` for fractional coordinates ``f = x @ inv(cell)``.  The reverse edge
        ``(j, i)`` carries ``-s``.
    """
    x = _check_positions(x)
    cutoff = _check_cutoff(cutoff)
    n, device, dtype = x.shape[0], x.device, x.dtype
    periodic_mask = _as_pbc(pbc, device)
    periodic = [a for a, p in enumerate(periodic_mask.tolist()) if p]
    cell = torch.as_tensor(cell).to(device=device, dtype=torch.float64)
    if n == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device), torch.empty(0, 3, dtype=torch.long, device=device)
    batch, counts, n_max = _graph_sizes(batch, n, device)
    n_graphs = counts.numel()
    if cell.shape == (3, 3):
        cell = cell.expand(n_graphs, 3, 3)
    elif cell.dim() != 3 or cell.shape[1:] != (3, 3) or cell.shape[0] != n_graphs:
        raise ValueError(f"cell must be [3, 3] or [B, 3, 3] with B = {n_graphs}, got {tuple(cell.shape)}")

    # --- geometry checks: periodic rows independent, cutoff < half of every periodic width
    full = _complete_cell(cell, periodic)
    det = torch.linalg.det(full)
    scale = torch.linalg.vector_norm(full, dim=2).prod(1)
    inv = torch.linalg.inv(torch.where((det.abs() > 1e-10 * scale)[:, None, None], full, torch.eye(3, device=device, dtype=torch.float64)))
    width = 1.0 / torch.linalg.vector_norm(inv, dim=1)  # [B, 3]: distance between lattice planes
    singular = bool(((det.abs() <= 1e-10 * scale) | ~torch.isfinite(det)).any())
    if singular:
        raise ValueError("the periodic lattice vectors of cell are degenerate (zero or linearly dependent)")
    if periodic:
        w_min = float(width[:, periodic].min())
        if not cutoff < 0.5 * w_min:
            raise ValueError(
                f"cutoff {cutoff} must be less than half the smallest perpendicular width of the periodic cell "
                f"({w_min:.6g}, i.e. cutoff < {0.5 * w_min:.6g}) for the minimum-image convention; use a larger "
                "supercell"
            )

    xd = x.to(torch.float64)
    frac = torch.bmm(xd.unsqueeze(1), inv[batch]).squeeze(1)  # [N, 3] fractional coordinates
    pmask = periodic_mask.to(torch.float64)
    frac_p = frac * pmask  # only periodic components determine shifts
    cell_x = cell.to(dtype)
    shared_cell = cell_x[0] if bool((cell == cell[:1]).all()) else None
    cell_flat = cell_x.reshape(n_graphs, 9)
    cut2 = cutoff * cutoff

    def accept(i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.round(frac_p[i] - frac_p[j])
        sx = s.to(dtype)
        if shared_cell is not None:
            shift_vec = sx @ shared_cell
        else:
            c = cell_flat[batch[i]]
            shift_vec = sx[:, 0:1] * c[:, 0:3] + sx[:, 1:2] * c[:, 3:6] + sx[:, 2:3] * c[:, 6:9]
        d = x[i] - x[j] - shift_vec
        return ((d * d).sum(1) < cut2) & (i != j), s.long()

    if n_max <= max_dense:
        edge_index, shifts = _collect(n, _dense_segments(batch, counts), None, accept, device)
    else:
        perm, seg_fn = _periodic_cell_list(frac, width, batch, counts.numel(), periodic_mask, cutoff)
        edge_index, shifts = _collect(n, seg_fn, perm, accept, device)
    if shifts is None:
        shifts = torch.empty(0, 3, dtype=torch.long, device=device)
    return edge_index, shifts


def _periodic_cell_list(
    frac: torch.Tensor,
    width: torch.Tensor,
    batch: torch.Tensor,
    n_graphs: int,
    periodic_mask: torch.Tensor,
    cutoff: float,
):
    """Cell list in fractional coordinates: bins at least ``cutoff`` apart (perpendicular distance) per axis.

    Periodic axes are wrapped into ``[0, 1)`` and split into ``n = floor(width / cutoff)`` bins with periodic
    neighbours (offsets deduplicated when ``n < 3``); non-periodic axes use padded open-ended bins.  Each of
    the 27 neighbour bins is one searchsorted range of the atoms sorted by (graph, bin).
    """
    device = frac.device
    reach = cutoff * (1.0 + _BIN_MARGIN)
    pm = periodic_mask[None, :]
    wrapped = torch.where(pm, frac - torch.floor(frac), frac)
    # perpendicular coordinate along each axis (units of length)
    u = wrapped * width[batch]
    lo, hi = _segment_min_max(u, batch, n_graphs)
    n_per = torch.clamp(torch.floor(width / reach).long(), min=1)  # [B, 3] periodic bin counts
    n_open = torch.floor((hi - lo) / reach).long() + 3  # padded: one empty bin on each side
    dims = torch.where(pm, n_per, n_open)  # [B, 3]
    if float((dims.double().prod(1)).sum()) >= _MAX_KEY:
        raise ValueError("positions span too many cutoff-sized cells for 64-bit cell keys")
    size = dims.prod(1)
    base = torch.cumsum(size, 0) - size
    dims_b = dims[batch]
    bin_per = torch.minimum(torch.floor(wrapped * dims_b).long(), dims_b - 1)
    bin_open = torch.floor((u - lo[batch]) / reach).long() + 1
    bins = torch.where(pm, bin_per, bin_open)  # [N, 3]
    base_b = base[batch]

    def key_of(b: torch.Tensor, d: torch.Tensor, bb: torch.Tensor) -> torch.Tensor:
        return bb + (b[..., 0] * d[..., 1] + b[..., 1]) * d[..., 2] + b[..., 2]

    key = key_of(bins, dims_b, base_b)
    sorted_key, perm = torch.sort(key, stable=True)
    o = torch.arange(-1, 2, device=device)
    offsets = torch.stack(torch.meshgrid(o, o, o, indexing="ij"), dim=-1).reshape(27, 3)  # [27, 3]

    def seg_fn(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        nb = bins[a:b, None, :] + offsets  # [r, 27, 3]
        d = dims_b[a:b, None, :]
        wrapped_nb = torch.remainder(nb, d)
        nb = torch.where(pm, wrapped_nb, nb)
        # with fewer than 3 periodic bins keep one offset per distinct neighbour bin
        valid = (~pm | (offsets + 1 < torch.clamp(d, max=3))).all(-1)
        k = key_of(nb, d, base_b[a:b, None])
        start = torch.searchsorted(sorted_key, k)
        stop = torch.searchsorted(sorted_key, k, right=True)
        return start, torch.where(valid, stop - start, torch.zeros_like(start))

    return perm, seg_fn
