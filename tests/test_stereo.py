"""Stereo centres: found from the topology and the data, and kept by rollouts (an E(3)-equivariant model with
distance constraints cannot tell L-alanine from D-alanine)."""

from __future__ import annotations

import numpy as np
import torch

from mdsurrogate.data.constraints import restore_handedness
from mdsurrogate.data.geometry import signed_volumes, stereo_centres

from .conftest import orthogonal

# alanine dipeptide heavy atoms: 0 CH3(ACE) 1 C 2 O 3 N 4 CA 5 CB 6 C 7 O 8 N 9 CH3(NME)
BONDS = torch.tensor([[0, 1], [1, 2], [1, 3], [3, 4], [4, 5], [4, 6], [6, 7], [6, 8], [8, 9]]).T
X = torch.tensor([[-2.9, 1.2, 0.1], [-1.6, 0.5, 0.0], [-1.5, -0.7, 0.1], [-0.5, 1.3, -0.1], [0.8, 0.7, -0.1],
                  [1.0, 0.1, 1.3], [1.8, 1.8, -0.4], [1.5, 3.0, -0.5], [3.1, 1.4, -0.5], [4.2, 2.3, -0.8]],
                 dtype=torch.float64)


def test_candidates_are_atoms_with_a_leaf_and_two_more_neighbours():
    centres = stereo_centres(BONDS, 10)
    # CA (N, C; leaf CB), and the two carbonyl carbons (leaf O), which the data rules out as planar
    assert sorted(map(tuple, centres.tolist())) == [(1, 0, 3, 2), (4, 3, 6, 5), (6, 4, 8, 7)]
    assert stereo_centres(torch.tensor([[0, 1], [1, 2]]).T, 3).shape == (0, 4)


def test_a_mirror_image_flips_the_sign_and_a_rotation_does_not():
    centres = stereo_centres(BONDS, 10)
    v = signed_volumes(X, centres)
    assert torch.allclose(signed_volumes(X @ orthogonal(1, False).T + 3.0, centres), v)
    assert torch.allclose(signed_volumes(X @ orthogonal(1, True).T, centres), -v)


def test_restore_reflects_the_leaf_back_and_keeps_bonds_and_angles():
    centres = torch.tensor([[4, 3, 6, 5]])
    signs = torch.sign(signed_volumes(X, centres))
    o, a, b = X[4], X[3], X[6]
    n = torch.linalg.cross(a - o, b - o)
    n = n / n.norm()
    inverted = X.clone()
    inverted[5] = X[5] - 2 * ((X[5] - o) @ n) * n  # D-alanine
    assert torch.sign(signed_volumes(inverted, centres)) == -signs
    fixed, count = restore_handedness(inverted, centres, signs)
    assert count == 1 and torch.allclose(fixed, X, atol=1e-12)
    unchanged, count = restore_handedness(X, centres, signs)
    assert count == 0 and torch.equal(unchanged, X)
    # equivariant: restoring a rotated, translated copy gives the rotated, translated result
    q = orthogonal(2, False)
    moved, _ = restore_handedness(inverted @ q.T + 1.5, centres, signs)
    assert torch.allclose(moved, X @ q.T + 1.5, atol=1e-12)


def test_the_data_keeps_the_chiral_alpha_carbon_only(tmp_path):
    """A simulated alanine dipeptide: the limits keep CA (one sign, far from planar), not the carbonyl carbons."""
    from mdsurrogate.data.dataset import Dataset
    from mdsurrogate.data.ingest import ingest_md
    from mdsurrogate.teacher.openmm_run import simulate
    from mdsurrogate.teacher.settings import SimulationSettings
    from mdsurrogate.training.limits import data_limits

    out = tmp_path / "ala2"
    simulate("ala2", out, SimulationSettings(ns=0.03, equilibration_ps=1.0, seed=5))
    ds_path = ingest_md(tmp_path / "ds", out / "topology.pdb", [out / "trajectory.dcd"], select="not element H",
                        delta=1, ratios=(0.8, 0.1, 0.1))
    _, extra = data_limits(Dataset(ds_path))
    import MDAnalysis as mda

    names = mda.Universe(str(out / "topology.pdb")).select_atoms("not element H").names
    kept = extra["stereo_centres"].tolist()
    assert [[names[i] for i in q] for q in kept] == [["CA", "N", "C", "CB"]]
    assert np.all(np.asarray(kept) < len(names))
