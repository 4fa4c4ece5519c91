"""The one periodic neighbour search (mdsurrogate.data.neighbors.neighbor_list): any cell size, per-graph
boundary conditions, exactly ASE's neighbour list; the same function serves potential ingest and the potential."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdsurrogate.data.neighbors import graph_cells, neighbor_list, periodic_widths, radius_graph_pbc


def _edges(ei: torch.Tensor, s: torch.Tensor) -> set[tuple[int, int, int, int, int]]:
    return {(i, j, *map(int, shift)) for (i, j), shift in zip(ei.T.tolist(), s.round().long().tolist(), strict=True)}


def _cell(rng: np.random.Generator, scale: float) -> np.ndarray:
    return np.eye(3) * scale + rng.normal(size=(3, 3)) * 0.25 * scale  # triclinic


CASES = [  # (cell scale, pbc, atoms, cutoff): minimum-image cells, cells smaller than 2 cutoffs, slabs, wires, free
    (12.0, (True, True, True), 40, 4.0),
    (5.0, (True, True, True), 6, 4.0),  # several images of a neighbour and of the atom itself
    (3.0, (True, True, True), 2, 3.5),
    (9.0, (True, True, False), 25, 3.0),
    (4.0, (True, False, False), 5, 3.0),
    (8.0, (False, False, False), 30, 3.0),
]


@pytest.mark.parametrize(("scale", "pbc", "n", "cutoff"), CASES)
def test_neighbor_list_equals_ase(scale, pbc, n, cutoff):
    pytest.importorskip("ase")
    from ase.neighborlist import primitive_neighbor_list

    rng = np.random.default_rng(int(scale * 10) + n)
    cell = _cell(rng, scale)
    x = rng.uniform(-0.3, 1.3, size=(n, 3)) @ cell  # not wrapped
    ei, s = neighbor_list(torch.from_numpy(x), cutoff, torch.zeros(n, dtype=torch.long),
                          torch.from_numpy(cell)[None], torch.tensor([pbc]))
    i, j, shift = primitive_neighbor_list("ijS", pbc, cell, x, cutoff, self_interaction=False)
    # ASE: the image of j at x_j + S·C is within the cutoff of x_i; ours: r_ij = x_i − x_j − s·C. Same (i, j, s).
    assert _edges(ei, s) == {(a, b, *map(int, c)) for a, b, c in zip(i.tolist(), j.tolist(), shift, strict=True)}
    assert (ei[0, 1:] * n + ei[1, 1:] >= ei[0, :-1] * n + ei[1, :-1]).all()  # sorted by receiver, then sender
    r = x[ei[0]] - x[ei[1]] - s.numpy() @ cell
    assert (np.linalg.norm(r, axis=1) < cutoff).all()


def test_minimum_image_cells_give_exactly_radius_graph_pbc():
    """Where the minimum image holds, the general search is radius_graph_pbc (same edges, same order, same shifts);
    a batch mixing boundary conditions equals its graphs searched one by one."""
    rng = np.random.default_rng(5)
    cells = [_cell(rng, 20.0), _cell(rng, 18.0), _cell(rng, 4.0), np.zeros((3, 3))]
    pbcs = [(True, True, True), (True, True, True), (True, True, True), (False, False, False)]
    sizes = [50, 30, 4, 20]
    xs = [rng.uniform(0, 1, size=(k, 3)) @ (c if c.any() else np.eye(3) * 8) for k, c in zip(sizes, cells,
                                                                                        strict=True)]
    x = torch.from_numpy(np.concatenate(xs))
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    cell, pbc = graph_cells(np.stack(cells), torch.tensor(pbcs), 4, "cpu")
    ei, s = neighbor_list(x, 4.0, batch, cell, pbc)
    ref_ei, ref_s = radius_graph_pbc(x[:80], 4.0, cell[:2], True, batch[:80])
    first_two = ei[0] < 80
    assert torch.equal(ei[:, first_two], ref_ei) and torch.equal(s[first_two], ref_s.double())
    offset = 0
    for g, k in enumerate(sizes):
        sel = (ei[0] >= offset) & (ei[0] < offset + k)
        one_ei, one_s = neighbor_list(x[offset:offset + k], 4.0, torch.zeros(k, dtype=torch.long), cell[g:g + 1],
                                      pbc[g:g + 1])
        assert torch.equal(ei[:, sel] - offset, one_ei) and torch.equal(s[sel], one_s)
        offset += k


def test_widths_and_bad_cells():
    cell = torch.tensor([[[10.0, 0, 0], [0, 8.0, 0], [0, 0, 6.0]]], dtype=torch.float64)
    w = periodic_widths(cell, torch.tensor([[True, True, False]]))
    assert w[0, :2].tolist() == pytest.approx([10.0, 8.0]) and w[0, 2] == float("inf")
    with pytest.raises(ValueError, match="degenerate"):
        neighbor_list(torch.zeros(2, 3, dtype=torch.float64), 1.0, torch.zeros(2, dtype=torch.long),
                      torch.zeros(1, 3, 3, dtype=torch.float64), torch.tensor([[True, True, True]]))


def test_one_search_serves_ingest_and_the_potential():
    """The potential and potential-dataset ingest call the same function (no second copy to drift)."""
    import mdsurrogate.data.ingest.ase as ingest_ase
    import mdsurrogate.data.neighbors as neighbors
    import mdsurrogate.models.potential as potential

    assert potential.neighbor_list is neighbors.neighbor_list and ingest_ase.neighbor_list is neighbors.neighbor_list
    assert potential.mean_degree is neighbors.mean_degree is ingest_ase.mean_degree
