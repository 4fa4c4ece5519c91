"""Torsion noise: the rotatable bonds of a bond graph, and a stochastic propagator whose noise turns them —
the likelihood against a dense Gaussian, samples with the stated covariance, equivariance in distribution."""

from __future__ import annotations

import pytest
import torch

from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.data.topology import BatchTopology, EdgeSet
from mdsurrogate.data.torsions import rotatable_bonds

from .conftest import FEATURES, orthogonal, perturbed_model

# two molecules as parent lists (atom i bonded to parent[i]); the second closes a ring 0-1-2-3-0
TREE = [-1, 0, 1, 1, 3, 4, 4]             # 0-1, 1-2, 1-3, 3-4, 4-5, 4-6
RING = [-1, 0, 1, 2, 3, 4]                # 0-1-2-3-4-5, plus the ring bond 3-0


def bond_topology():
    bonds = [(i, p) for i, p in enumerate(TREE) if p >= 0]
    off = len(TREE)
    bonds += [(off + i, off + p) for i, p in enumerate(RING) if p >= 0] + [(off + 3, off)]
    b = torch.tensor(bonds).T
    local = torch.cat([b, b.flip(0)], 1)
    n = len(TREE) + len(RING)
    ptr = torch.tensor([0, len(TREE), n])
    charge = torch.tensor([1.0, -1.0] * (n // 2) + [1.0] * (n % 2), dtype=torch.float64)
    group = torch.zeros(n, dtype=torch.long)
    return BatchTopology(ptr, {"charge": charge, "group": group}, {"local": EdgeSet(local, {})})


def batch_of(topo, x=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(topo.ptr[-1])
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.5 if x is None else x
    return Featurizer(FEATURES)(x, torch.zeros_like(x), topo)


def test_rotatable_bonds_are_the_bridges_with_atoms_off_the_axis():
    topo = bond_topology()
    tors = rotatable_bonds(topo.edge_sets["local"].index, topo.ptr)
    t_of, atom = tors.members
    found = {tuple(a): set(atom[(t_of == t) & (tors.weight > 0)].tolist()) for t, a in enumerate(tors.axis.T.tolist())}
    # tree: 1-3 splits {0,1,2} from {3,4,5,6}, 3-4 splits {0,1,2,3} from {4,5,6}; 0-1, 1-2, 4-5 and 4-6 end in a
    # lone atom (turning it about its own bond moves nothing). Ring molecule (atoms 7…12): the ring bonds are no
    # bridges, 11-12 ends in a lone atom, 10-11 splits {7,8,9,10} from {11,12}. The smaller side turns; the
    # axis is (fixed end, turning end).
    assert found == {(3, 1): {0, 1, 2}, (3, 4): {4, 5, 6}, (10, 11): {11, 12}}
    assert tors.graph.tolist() == [0, 0, 1] and tors.slot.tolist() == [0, 1, 0] and tors.max_per_graph == 2
    # every atom of the molecule takes a share: the two sides turn against each other (3 against 4 atoms for 3-1)
    first = t_of == 0
    assert sorted(atom[first].tolist()) == list(range(7))
    assert torch.allclose(tors.weight[first & (tors.weight > 0)], torch.full((3,), 4 / 7, dtype=torch.float64))
    assert torch.allclose(tors.weight[first & (tors.weight < 0)], torch.full((4,), -3 / 7, dtype=torch.float64))


def test_the_same_bond_tensor_is_recognised_and_an_edited_one_is_read_again(monkeypatch):
    """A rollout passes the same bond tensor every step: the second call returns the first answer without reading
    the tensor (no host copy); an in-place edit of it, or an equal copy, is read by its contents."""
    import mdsurrogate.data.torsions as torsions_module

    topo = bond_topology()
    local, ptr = topo.edge_sets["local"].index.clone(), topo.ptr.clone()
    first = rotatable_bonds(local, ptr)
    reads = []
    by_contents = torsions_module._by_contents
    monkeypatch.setattr(torsions_module, "_by_contents", lambda e, p: reads.append(1) or by_contents(e, p))
    assert rotatable_bonds(local, ptr) is first and reads == []
    assert torch.equal(rotatable_bonds(local.clone(), ptr).axis, first.axis) and len(reads) == 1
    local[:, -2:] = local[:, -2:].flip(1)  # in place: two columns swapped …
    local[:, -2:] = local[:, -2:].flip(1)  # … and back: same contents, new version
    assert torch.equal(rotatable_bonds(local, ptr).axis, first.axis) and len(reads) == 2
    ring = {len(TREE), len(TREE) + 3}  # the second molecule's ring-closing bond, both directions
    local[:, [set(c) == ring for c in local.T.tolist()]] = len(TREE) + 5  # in place: made a self-loop (ignored)
    opened = rotatable_bonds(local, ptr)  # a chain of six: 8-9 and 9-10 split it too
    assert opened.axis.shape[1] == first.axis.shape[1] + 2 and len(reads) == 3


def build(noise):
    return perturbed_model("egnn", noise=noise, noise_torsions=True, noise_hidden=8, hidden=16, layers=2)


def dense_cov3(model, pred, g, batch):
    """[3n, 3n] covariance (node-major) of graph g, built densely from the extras."""
    idx = (batch == g).nonzero().squeeze(1)
    n = len(idx)
    eye3 = torch.eye(3, dtype=torch.float64)
    cov = torch.kron(torch.diag(pred.extras["noise_scale"][idx] ** 2), eye3)
    if model.noise == "modes":
        A = pred.extras["noise_modes"][idx]
        cov = cov + torch.kron(A @ A.T, eye3)
    atom, t, vec = model.torsion_columns(pred)
    tors = pred.extras["torsions"]
    for k in (tors.graph == g).nonzero().squeeze(1).tolist():
        col = torch.zeros(n, 3, dtype=torch.float64)
        sel = t == k
        col[atom[sel] - idx[0]] = vec[sel]
        cov = cov + torch.outer(col.reshape(-1), col.reshape(-1))
    return cov


@pytest.mark.parametrize("noise", ["node", "modes"])
def test_torsion_likelihood_equals_dense_gaussian(noise):
    model = build(noise)
    batch = batch_of(bond_topology())
    with torch.no_grad():
        pred = model(batch)
    assert pred.extras["torsion_scale"].shape == (3,) and (pred.extras["torsion_scale"] > 0).all()
    target = pred.x + torch.randn(pred.x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    total, n = 0.0, 0
    for g in range(batch.num_graphs):
        idx = (batch.batch == g).nonzero().squeeze(1)
        dist = torch.distributions.MultivariateNormal(pred.x[idx].reshape(-1),
                                                      covariance_matrix=dense_cov3(model, pred, g, batch.batch))
        total -= dist.log_prob(target[idx].reshape(-1)).item()
        n += 3 * len(idx)
    got = model.nll(pred, target, batch.batch, batch.num_graphs).item()
    assert got == pytest.approx(total / n, rel=1e-10)


def test_torsion_samples_have_the_stated_covariance():
    model = build("modes")
    batch = batch_of(bond_topology())
    with torch.no_grad():
        pred = model(batch)
    gen = torch.Generator().manual_seed(4)
    draws = torch.stack([model.sample(pred, batch.batch, 2, gen) for _ in range(20000)]) - pred.x  # [D, ΣN, 3]
    first = draws[:, : len(TREE)].reshape(20000, -1)
    cov = dense_cov3(model, pred, 0, batch.batch)
    assert torch.allclose(first.T.cov(), cov, atol=0.05 * cov.diagonal().max().item())
    # a torsion turns its side only: the atoms that do not move with any torsion or mode keep σ alone
    assert cov.shape == (3 * len(TREE), 3 * len(TREE))


def test_torsion_noise_is_equivariant_in_distribution():
    model = build("modes")
    topo = bond_topology()
    batch = batch_of(topo)
    q = orthogonal(5, reflect=True)
    shift = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    with torch.no_grad():
        out = model(batch)
        moved = model(batch_of(topo, x=batch.x @ q.T + shift))
    assert torch.allclose(moved.extras["torsion_scale"], out.extras["torsion_scale"], atol=1e-10, rtol=0)
    assert torch.allclose(moved.x, out.x @ q.T + shift, atol=1e-9, rtol=0)
    Q = torch.kron(torch.eye(len(TREE), dtype=torch.float64), q)
    for g_cov, m_cov in ((dense_cov3(model, out, 0, batch.batch), dense_cov3(model, moved, 0, batch.batch)),):
        assert torch.allclose(m_cov, Q @ g_cov @ Q.T, atol=1e-9, rtol=0)
    # seeded draws repeat, and the chain's draws (ε, ξ, θ) come back for a correlated next step
    a, drawn = model.draw(out, batch.batch, 2, torch.Generator().manual_seed(1))
    b, _ = model.draw(out, batch.batch, 2, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and drawn[2].shape == (3,)
    c, _ = model.draw(out, batch.batch, 2, torch.Generator().manual_seed(2), memory=0.5, previous=drawn)
    assert not torch.equal(a, c)
