"""Neighbour lists: radius graphs (open and periodic) against brute force, complete graphs."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from mdsurrogate.data import neighbors as nb
from mdsurrogate.data.neighbors import complete_graph, radius_graph, radius_graph_pbc

CELL, DENSE = 0, 10**9  # max_dense values forcing the cell-list / the dense path


@pytest.fixture(autouse=True)
def _one_thread():
    # the inputs here are small: one intra-op thread is fastest and immune to oversubscribed CI runners
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def assert_edge_format(e: torch.Tensor, n: int) -> None:
    """int64 [2, E], sorted by (receiver, sender) without duplicates, no self loops, symmetric."""
    assert e.dtype == torch.long and e.dim() == 2 and e.shape[0] == 2
    if e.shape[1] == 0:
        return
    assert int(e.min()) >= 0 and int(e.max()) < n
    key = e[0] * n + e[1]
    assert bool((key[1:] > key[:-1]).all()), "edges must be strictly sorted by (receiver, sender)"
    assert not bool((e[0] == e[1]).any()), "self loop"
    assert torch.equal(torch.sort(e[1] * n + e[0]).values, key), "edge set must be symmetric"


def brute_force_check(e: torch.Tensor, x: torch.Tensor, cutoff: float, batch: torch.Tensor | None) -> None:
    """Every pair closer than cutoff - tol is an edge, every edge is closer than cutoff + tol (float64)."""
    n = x.shape[0]
    assert_edge_format(e, n)
    batch = torch.zeros(n, dtype=torch.long) if batch is None else batch
    tol = 1e-4 if x.dtype == torch.float32 else 1e-9
    got = torch.zeros(n, n, dtype=torch.bool)
    got[e[0], e[1]] = True
    x64 = x.detach().double()
    for g in torch.unique(batch).tolist():
        idx = (batch == g).nonzero().squeeze(1)
        d = torch.cdist(x64[idx], x64[idx])
        d.fill_diagonal_(float("inf"))
        sub = got[idx][:, idx]
        assert not bool((sub & ~(d < cutoff + tol)).any()), "edge longer than the cutoff"
        assert not bool((~sub & (d < cutoff - tol)).any()), "missing edge"
    same = batch[:, None] == batch[None, :]
    assert not bool((got & ~same).any()), "edge across graphs"


def sizes_to_batch(sizes: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


@pytest.fixture(params=["table", "searchsorted"])
def lookup(request, monkeypatch):
    """Run the cell list with its dense table of cell starts and with its searchsorted fallback."""
    if request.param == "searchsorted":
        monkeypatch.setattr(nb, "_CELL_TABLE_PER_ATOM", -(10**12))
    return request.param


# ----------------------------------------------------------------------------------------------------------
# complete graph
# ----------------------------------------------------------------------------------------------------------


def test_complete_graph_mixed_sizes():
    ptr = torch.tensor([0, 3, 3, 4, 9, 11])  # sizes 3, 0, 1, 5, 2
    e = complete_graph(ptr)
    expected = [
        (i, j)
        for a, b in itertools.pairwise(ptr.tolist())
        for i in range(a, b)
        for j in range(a, b)
        if i != j
    ]
    assert e.dtype == torch.long and e.shape == (2, 3 * 2 + 0 + 0 + 5 * 4 + 2 * 1)
    assert [tuple(p) for p in e.t().tolist()] == expected  # same pairs, sorted by receiver then sender
    assert_edge_format(e, 11)


@pytest.mark.parametrize("ptr", [[0], [0, 1], [0, 0, 1, 1], [0, 2]])
def test_complete_graph_trivial(ptr):
    e = complete_graph(torch.tensor(ptr))
    n_edges = sum((b - a) * (b - a - 1) for a, b in itertools.pairwise(ptr))
    assert e.shape == (2, n_edges)


def test_complete_graph_equals_radius_graph_with_huge_cutoff():
    torch.manual_seed(0)
    sizes = [4, 1, 17, 9]
    x = torch.randn(sum(sizes), 3)
    ptr = torch.tensor([0, *itertools.accumulate(sizes)])
    batch = sizes_to_batch(sizes)
    for max_dense in (CELL, DENSE):
        assert torch.equal(complete_graph(ptr), radius_graph(x, 100.0, batch, max_dense=max_dense))


def test_complete_graph_rejects_bad_ptr():
    with pytest.raises(ValueError):
        complete_graph(torch.tensor([1, 3]))
    with pytest.raises(ValueError):
        complete_graph(torch.tensor([0, 3, 2]))


# ----------------------------------------------------------------------------------------------------------
# radius graph: random points
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "box", "cutoff"),
    [
        (400, 60.0, 3.0),  # sparse: few neighbours
        (1500, 25.0, 4.0),  # liquid-like density
        (600, 4.0, 3.0),  # nearly complete graph
        (300, 5000.0, 40.0),  # very sparse and wide: exceeds the cell table budget
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_points_match_brute_force(n, box, cutoff, dtype, lookup):
    g = torch.Generator().manual_seed(n)
    x = (torch.rand(n, 3, generator=g, dtype=torch.float64) * box).to(dtype)
    e_cell = radius_graph(x, cutoff, max_dense=CELL)
    e_dense = radius_graph(x, cutoff, max_dense=DENSE)
    brute_force_check(e_cell, x, cutoff, None)
    assert torch.equal(e_cell, e_dense)  # both paths apply the same arithmetic to the same pairs


def test_batch_of_graphs_of_different_sizes(lookup):
    torch.manual_seed(1)
    sizes = [1, 50, 1, 400, 7, 2, 120]
    batch = sizes_to_batch(sizes)
    x = torch.rand(sum(sizes), 3) * 12.0  # all graphs overlap in space: edges must not cross graphs
    x[batch == 3] *= 2.0
    for cutoff in (2.5, 5.0):
        e_cell = radius_graph(x, cutoff, batch, max_dense=CELL)
        brute_force_check(e_cell, x, cutoff, batch)
        assert torch.equal(e_cell, radius_graph(x, cutoff, batch, max_dense=DENSE))
        assert torch.equal(e_cell, radius_graph(x, cutoff, batch.int(), max_dense=CELL))


def test_single_node_graphs_have_no_edges():
    x = torch.zeros(3, 3)
    for max_dense in (CELL, DENSE):
        assert radius_graph(x, 1.0, torch.arange(3), max_dense=max_dense).shape == (2, 0)
        assert radius_graph(x[:1], 1.0, max_dense=max_dense).shape == (2, 0)
    assert radius_graph(torch.zeros(0, 3), 1.0).shape == (2, 0)


def test_points_exactly_on_bin_boundaries_and_at_the_cutoff(lookup):
    # integer grid, cutoff 2: distances 1, sqrt2, sqrt3 are edges, exactly 2 is not (strict <); the grid
    # points sit exactly on the boundaries of cutoff-wide cells
    r = torch.arange(6, dtype=torch.float64)
    grid = torch.cartesian_prod(r, r, r)
    for x in (grid, grid.float()):
        e = radius_graph(x, 2.0, max_dense=CELL)
        brute_force_check(e, x, 2.0, None)
        d = (x[e[0]] - x[e[1]]).norm(dim=1)
        assert float(d.max()) < 2.0
        assert e.shape[1] == int((torch.cdist(grid, grid) < 2.0).sum()) - grid.shape[0]
        assert torch.equal(e, radius_graph(x, 2.0, max_dense=DENSE))
    # points on the internal column / z-bin boundaries of the cell list
    side = 3.0 * (1.0 + nb._BIN_MARGIN) / nb._XY_DIVISIONS
    x = torch.cartesian_prod(
        *(torch.arange(7, dtype=torch.float64) * side,) * 2, torch.arange(7, dtype=torch.float64) * 0.75
    )
    e = radius_graph(x, 3.0, max_dense=CELL)
    brute_force_check(e, x, 3.0, None)
    assert torch.equal(e, radius_graph(x, 3.0, max_dense=DENSE))


@pytest.mark.parametrize("shape", ["coincident", "line", "plane", "far_cluster"])
def test_degenerate_geometries(shape, lookup):
    torch.manual_seed(2)
    n = 200
    if shape == "coincident":
        x = torch.full((n, 3), 3.25)
    elif shape == "line":
        x = torch.zeros(n, 3)
        x[:, 0] = torch.rand(n) * 50
    elif shape == "plane":
        x = torch.rand(n, 3) * 20
        x[:, 2] = -7.0
    else:
        x = torch.rand(n, 3) * 5
        x[n // 2 :] += 1e4
    e = radius_graph(x, 2.0, max_dense=CELL)
    brute_force_check(e, x, 2.0, None)
    assert torch.equal(e, radius_graph(x, 2.0, max_dense=DENSE))
    if shape == "coincident":  # distinct atoms at the same place are neighbours
        assert e.shape[1] == n * (n - 1)


def test_small_chunks_give_identical_results(monkeypatch):
    torch.manual_seed(3)
    sizes = [150, 1, 250]
    batch = sizes_to_batch(sizes)
    x = torch.rand(sum(sizes), 3) * 12
    reference = [radius_graph(x, 4.0, batch, max_dense=m) for m in (CELL, DENSE)]
    monkeypatch.setitem(nb._CHUNK_PAIRS, "cpu", 3000)
    monkeypatch.setattr(nb, "_RECEIVER_BLOCK", 37)
    for m, ref in zip((CELL, DENSE), reference, strict=True):
        assert torch.equal(radius_graph(x, 4.0, batch, max_dense=m), ref)


def test_deterministic_mode_and_gradients_are_fine():
    torch.manual_seed(4)
    x = (torch.rand(700, 3) * 14).requires_grad_(True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        e1 = radius_graph(x, 4.0, max_dense=CELL)
        e2 = radius_graph(x, 4.0, max_dense=CELL)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(e1, e2) and not e1.requires_grad
    brute_force_check(e1, x, 4.0, None)


def test_input_validation():
    x = torch.rand(10, 3)
    with pytest.raises(ValueError, match="radius_graph_pbc"):
        radius_graph(x, 1.0, cell=torch.eye(3) * 5)
    with pytest.raises(ValueError, match="radius_graph_pbc"):
        radius_graph(x, 1.0, pbc=True)
    with pytest.raises(ValueError):
        radius_graph(x, 0.0)
    with pytest.raises(ValueError):
        radius_graph(x, float("nan"))
    with pytest.raises(ValueError):
        radius_graph(torch.rand(10, 2), 1.0)
    with pytest.raises(TypeError):
        radius_graph(torch.arange(30).reshape(10, 3), 1.0)
    with pytest.raises(ValueError, match="sorted"):
        radius_graph(x, 1.0, torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1]))
    with pytest.raises(ValueError):
        radius_graph(x, 1.0, torch.zeros(9, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------------
# radius graph: real protein coordinates (adenylate kinase, 3341 atoms)
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adk():
    mda = pytest.importorskip("MDAnalysis")
    datafiles = pytest.importorskip("MDAnalysisTests.datafiles")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(datafiles.PSF, datafiles.DCD)
        backbone = u.select_atoms("backbone").indices
        frames = []
        for ts in u.trajectory[[0, 50]]:
            frames.append(torch.from_numpy(ts.positions.copy()))
    return frames, torch.from_numpy(backbone)


@pytest.mark.parametrize("cutoff", [6.0, 8.0, 10.0])
@pytest.mark.parametrize("selection", ["all", "backbone"])
def test_adk_protein_matches_brute_force(adk, selection, cutoff):
    frames, backbone = adk
    x = frames[0] if selection == "all" else frames[0][backbone]
    assert x.shape == ((3341, 3) if selection == "all" else (855, 3))
    e_cell = radius_graph(x, cutoff, max_dense=CELL)
    brute_force_check(e_cell, x, cutoff, None)
    assert torch.equal(e_cell, radius_graph(x, cutoff, max_dense=DENSE))
    assert torch.equal(e_cell, radius_graph(x, cutoff))  # default path choice
    if cutoff == 8.0:
        x64 = x.double()
        brute_force_check(radius_graph(x64, cutoff, max_dense=CELL), x64, cutoff, None)


def test_adk_two_frames_as_one_batch(adk):
    frames, _ = adk
    x = torch.cat(frames)
    batch = sizes_to_batch([3341, 3341])
    e = radius_graph(x, 8.0, batch, max_dense=CELL)
    brute_force_check(e, x, 8.0, batch)
    half = e[:, e[0] < 3341]
    assert torch.equal(half, radius_graph(frames[0], 8.0, max_dense=CELL))
    assert torch.equal(e[:, e[0] >= 3341] - 3341, radius_graph(frames[1], 8.0, max_dense=CELL))


# ----------------------------------------------------------------------------------------------------------
# periodic boundary conditions
# ----------------------------------------------------------------------------------------------------------


def min_image_reference(x, cutoff, cell, pbc, batch):
    """Brute force: for every pair, the shortest of 27 images around the rounded fractional difference."""
    x = x.double()
    n = x.shape[0]
    cells = cell.double().expand(int(batch.max()) + 1, 3, 3) if cell.dim() == 2 else cell.double()
    pm = torch.tensor(pbc, dtype=torch.float64)
    images = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.float64) * pm
    images = torch.unique(images, dim=0)
    edges, shifts, vectors = [], [], []
    for g in torch.unique(batch).tolist():
        idx = (batch == g).nonzero().squeeze(1)
        c = cells[g]
        f = x[idx] @ torch.linalg.pinv(c)  # pinv: ASE-style zero rows along open axes
        for lo in range(0, len(idx), 128):  # rows in chunks to bound memory
            rows = torch.arange(lo, min(lo + 128, len(idx)))
            s0 = torch.round(f[rows, None, :] - f[None, :, :]) * pm  # [r, n, 3]
            s = s0[:, :, None, :] + images  # [r, n, M, 3]
            r = x[idx][rows, None, None, :] - x[idx][None, :, None, :] - s @ c  # [r, n, M, 3]
            d = r.norm(dim=-1)
            best = d.argmin(dim=-1)
            dmin = d.gather(-1, best[..., None]).squeeze(-1)
            dmin[torch.arange(len(rows)), rows] = float("inf")
            a, b = (dmin < cutoff).nonzero().unbind(1)
            k = best[a, b]
            edges.append(torch.stack([idx[rows[a]], idx[b]]))
            shifts.append(s[a, b, k].long())
            vectors.append(r[a, b, k])
    e = torch.cat(edges, dim=1)
    order = torch.argsort(e[0] * n + e[1])
    return e[:, order], torch.cat(shifts)[order], torch.cat(vectors)[order]


def check_pbc(x, cutoff, cell, pbc, batch=None):
    n = x.shape[0]
    batch_ = torch.zeros(n, dtype=torch.long) if batch is None else batch
    e_ref, s_ref, r_ref = min_image_reference(x, cutoff, cell, pbc, batch_)
    results = [radius_graph_pbc(x, cutoff, cell, pbc, batch, max_dense=m) for m in (CELL, DENSE)]
    e, s = results[0]
    assert_edge_format(e, n)
    assert torch.equal(e, e_ref), "edge set differs from the brute-force minimum image"
    assert s.dtype == torch.long and s.shape == (e.shape[1], 3)
    assert torch.equal(s, s_ref)
    # the documented convention: r_ij = x_i - (x_j + s @ cell_g) is the minimum-image vector, |r_ij| < cutoff
    cells = cell.double().expand(int(batch_.max()) + 1, 3, 3) if cell.dim() == 2 else cell.double()
    x64 = x.double()
    r = x64[e[0]] - (x64[e[1]] + torch.einsum("ek,ekd->ed", s.double(), cells[batch_[e[0]]]))
    torch.testing.assert_close(r, r_ref)
    assert bool((r.norm(dim=1) < cutoff).all())
    # the reverse edge carries the opposite shift
    rev = torch.searchsorted(e[0] * n + e[1], e[1] * n + e[0])
    assert torch.equal(s[rev], -s)
    # dense and cell-list paths agree exactly
    assert torch.equal(results[1][0], e) and torch.equal(results[1][1], s)
    return e, s


def test_pbc_cubic_cell_with_unwrapped_atoms():
    torch.manual_seed(5)
    x = torch.rand(300, 3, dtype=torch.float64) * 14.0 - 2.0  # partly outside the 10 A box
    e, s = check_pbc(x, 4.5, torch.eye(3, dtype=torch.float64) * 10.0, [True, True, True])
    assert bool((s != 0).any())


def test_pbc_triclinic_cell():
    torch.manual_seed(6)
    cell = torch.tensor([[10.0, 0.0, 0.0], [3.0, 9.0, 0.0], [2.0, -2.5, 8.0]], dtype=torch.float64)
    width = 1.0 / torch.linalg.inv(cell).norm(dim=0)
    f = torch.rand(350, 3, dtype=torch.float64) * 1.4 - 0.2
    x = f @ cell
    check_pbc(x, 0.49 * float(width.min()), cell, [True, True, True])
    check_pbc(x.float(), 0.45 * float(width.min()), cell.float(), [True, True, True])


def test_pbc_larger_supercell_float32():
    torch.manual_seed(7)
    cell = torch.tensor([[20.0, 0.0, 0.0], [4.0, 19.0, 0.0], [-3.0, 2.0, 21.0]])
    x = torch.rand(500, 3) @ cell
    check_pbc(x, 4.0, cell, [True, True, True])


def test_pbc_batch_of_cells_and_mixed_periodicity():
    torch.manual_seed(8)
    sizes = [150, 1, 200]
    batch = sizes_to_batch(sizes)
    cells = torch.stack(
        [
            torch.tensor([[9.0, 0.0, 0.0], [2.0, 8.0, 0.0], [0.0, 0.0, 0.0]]),  # ASE slab: zero third row
            torch.eye(3) * 7.0,
            torch.tensor([[12.0, 0.0, 0.0], [0.0, 11.0, 0.0], [0.0, 0.0, 5.0]]),
        ]
    ).double()
    x = torch.rand(sum(sizes), 3, dtype=torch.float64) * 12.0
    e, s = check_pbc(x, 3.2, cells, [True, True, False], batch)
    assert bool((s[:, 2] == 0).all()) and bool((s[:, :2] != 0).any())
    # a wire: periodic along a_0 only
    check_pbc(x, 3.0, cells[2], [True, False, False], batch)


def test_pbc_without_periodic_axes_equals_radius_graph():
    torch.manual_seed(9)
    x = torch.rand(400, 3) * 10
    for m in (CELL, DENSE):
        e, s = radius_graph_pbc(x, 3.0, torch.zeros(3, 3), False, max_dense=m)
        assert torch.equal(e, radius_graph(x, 3.0)) and not bool(s.any())


def test_pbc_cutoff_must_be_below_half_the_perpendicular_width():
    x = torch.rand(20, 3)
    with pytest.raises(ValueError, match="half the smallest perpendicular width"):
        radius_graph_pbc(x, 5.0, torch.eye(3) * 10.0, True)
    # |a_i| = 10 for all vectors, but the faces of this skewed cell are only ~7.1 apart
    skewed = torch.tensor([[10.0, 0.0, 0.0], [7.0710678, 7.0710678, 0.0], [0.0, 0.0, 10.0]])
    with pytest.raises(ValueError, match="half the smallest perpendicular width"):
        radius_graph_pbc(x, 4.0, skewed, True)
    radius_graph_pbc(x, 3.5, skewed, True)
    # the width along a non-periodic direction does not matter
    radius_graph_pbc(x, 4.0, torch.diag(torch.tensor([10.0, 10.0, 1.0])), [True, True, False])
    with pytest.raises(ValueError, match="degenerate"):
        radius_graph_pbc(x, 1.0, torch.zeros(3, 3), True)
    with pytest.raises(ValueError):
        radius_graph_pbc(x, 1.0, torch.eye(3).expand(2, 3, 3) * 10, True)  # one graph, two cells
