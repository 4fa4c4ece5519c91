"""Bond-length projection: reaches the reference lengths, keeps the centroid, and is E(3)-equivariant."""

from __future__ import annotations

import torch

from mdsurrogate.data.constraints import project_bond_lengths

from .conftest import orthogonal


def chain(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(n, 3, generator=g, dtype=torch.float64)
    steps = 3.8 * steps / steps.norm(dim=-1, keepdim=True)
    x = steps.cumsum(0)
    bonds = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    return x, bonds


def test_projection_restores_lengths_and_keeps_the_centroid():
    x, bonds = chain()
    lengths = torch.full((bonds.shape[1],), 3.8, dtype=torch.float64)
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, violation = project_bond_lengths(noisy, bonds, lengths, tol=1e-9, iterations=5000)
    d = (out[bonds[0]] - out[bonds[1]]).norm(dim=-1)
    assert violation < 1e-9 and torch.allclose(d, lengths, atol=1e-8)
    assert torch.allclose(out.mean(0), noisy.mean(0), atol=1e-12)
    assert (out - noisy).norm(dim=-1).max() < 1.0  # a correction, not a new structure


def test_projection_is_equivariant():
    x, bonds = chain(seed=2)
    lengths = torch.full((bonds.shape[1],), 3.8, dtype=torch.float64)
    noisy = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    q = orthogonal(4, reflect=True)
    t = torch.tensor([5.0, -1.0, 2.0], dtype=torch.float64)
    a, _ = project_bond_lengths(noisy, bonds, lengths, iterations=50)
    b, _ = project_bond_lengths(noisy @ q.T + t, bonds, lengths, iterations=50)
    assert torch.allclose(b, a @ q.T + t, atol=1e-10)


def test_no_bonds_is_identity():
    x = torch.randn(4, 3)
    out, violation = project_bond_lengths(x, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0))
    assert out is x and violation == 0.0


def test_constraint_pairs_bonds_and_angles():
    from mdsurrogate.data.geometry import constraint_pairs

    # a chain 0-1-2-3 with a branch 2-4, bonds given in both directions
    e = torch.tensor([[0, 1, 1, 2, 2, 3, 2, 4], [1, 0, 2, 1, 3, 2, 4, 2]])
    assert constraint_pairs(e, 5).tolist() == [[0, 1, 2, 2], [1, 2, 3, 4]]
    pairs = constraint_pairs(e, 5, angles=True)
    assert set(map(tuple, pairs.T.tolist())) == {(0, 1), (1, 2), (2, 3), (2, 4), (0, 2), (1, 3), (1, 4), (3, 4)}


def test_projection_with_angles_keeps_the_torsion_free():
    """Fixing bonds and 1-3 distances of a 4-atom chain leaves the dihedral as the one internal freedom."""
    from mdsurrogate.data.geometry import constraint_pairs

    x = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [1.5, 0.0, 1.0]], dtype=torch.float64)
    e = torch.tensor([[0, 1, 2], [1, 2, 3]])
    pairs = constraint_pairs(e, 4, angles=True)
    lengths = (x[pairs[0]] - x[pairs[1]]).norm(dim=-1)
    moved = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out, violation = project_bond_lengths(moved, pairs, lengths, tol=1e-10, iterations=5000)
    assert violation < 1e-9
    d = (out[pairs[0]] - out[pairs[1]]).norm(dim=-1)
    assert torch.allclose(d, lengths, atol=1e-8)


def test_contacts_are_pushed_to_the_floor_and_bonds_kept():
    from mdsurrogate.data.constraints import close_contacts, project_with_contacts
    from mdsurrogate.data.geometry import constraint_pairs

    n = 40
    bonds = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    pairs = constraint_pairs(bonds, n, angles=True)
    excluded = torch.unique(pairs[0] * n + pairs[1])
    batch = torch.zeros(n, dtype=torch.long)
    i, j = torch.triu_indices(n, n, 1)
    free = ~torch.isin(i * n + j, excluded)
    pushed = 0
    for seed in (0, 2, 3, 7):
        x, _ = chain(n, seed=seed)                                   # 3.8 Å bonds, random angles
        lengths = (x[pairs[0]] - x[pairs[1]]).norm(dim=-1)
        floor = float((x[i[free]] - x[j[free]]).norm(dim=-1).min())   # the clean chain is just clear of it
        noisy = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        before = close_contacts(noisy, floor, batch, pairs)
        assert not torch.isin(before[0] * n + before[1], excluded).any() and (before[0] < before[1]).all()
        pushed += before.shape[1]
        out, left = project_with_contacts(noisy, pairs, lengths, floor=floor, batch=batch, excluded=pairs,
                                          rounds=6, tol=1e-9, iterations=1000)
        assert left == 0
        assert float((out[i[free]] - out[j[free]]).norm(dim=-1).min()) > floor - 1e-5
        assert torch.allclose((out[pairs[0]] - out[pairs[1]]).norm(dim=-1), lengths, atol=1e-3)
        assert torch.allclose(out.mean(0), noisy.mean(0), atol=1e-10)
    assert pushed >= 2                                                 # the noise did bring pairs inside the floor
    # equivariant: a rotation with reflection and a translation of the input moves the output alike
    q = orthogonal(7, reflect=True)
    shift = torch.tensor([1.0, -4.0, 2.5], dtype=torch.float64)
    kw = dict(floor=floor, batch=batch, excluded=pairs, rounds=6, tol=1e-9, iterations=1000)
    a, _ = project_with_contacts(noisy, pairs, lengths, **kw)
    b, _ = project_with_contacts(noisy @ q.T + shift, pairs, lengths, **kw)
    assert torch.allclose(b, a @ q.T + shift, atol=1e-8)
