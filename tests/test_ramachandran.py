"""Dihedrals and Ramachandran statistics on synthetic data with known answers (and one real-data cross-check)."""

from __future__ import annotations

import numpy as np
import pytest

from mdsurrogate.analysis import (
    BASINS,
    backbone_quadruples,
    basin_labels,
    basin_populations,
    dihedral_angles,
    jensen_shannon,
    phi_psi,
    ramachandran_histogram,
    ramachandran_summary,
    transitions,
)
from mdsurrogate.analysis.ramachandran import core_assignment


def quad_with_angle(theta_deg: float) -> np.ndarray:
    """Four points a-b-c-d whose dihedral is theta: b at the origin, c on +z, a on +x, d rotated by theta."""
    t = np.radians(theta_deg)
    return np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 1.5], [np.cos(t), np.sin(t), 1.5]])


# ------------------------------------------------------------------------------------------------- dihedrals
@pytest.mark.parametrize("theta", [-179.0, -150.0, -60.0, -1.0, 0.0, 45.0, 90.0, 179.5])
def test_dihedral_of_constructed_quadruple(theta):
    got = dihedral_angles(quad_with_angle(theta), [[0, 1, 2, 3]])
    assert got.shape == (1,)
    assert got[0] == pytest.approx(theta, abs=1e-9)


def test_dihedral_range_and_trans():
    assert dihedral_angles(quad_with_angle(180.0), [[0, 1, 2, 3]])[0] == pytest.approx(-180.0)
    x = np.random.default_rng(0).normal(size=(50, 4, 3))
    a = dihedral_angles(x, [[0, 1, 2, 3]])
    assert a.shape == (50, 1) and (a >= -180).all() and (a < 180).all()


def test_dihedral_matches_mdanalysis_and_symmetries():
    from MDAnalysis.lib.distances import calc_dihedrals

    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 12, 3))
    quads = rng.integers(0, 12, size=(30, 4))
    quads = quads[np.array([len(set(q)) == 4 for q in quads])]
    ours = dihedral_angles(x, quads)
    ref = np.stack([np.degrees(calc_dihedrals(*(f[quads[:, k]] for k in range(4)))) for f in x])
    assert np.allclose(np.mod(ours - ref + 180, 360) - 180, 0, atol=1e-4)  # MDAnalysis computes in float32
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))  # proper rotation
    moved = x @ rot.T + rng.normal(size=3)
    assert np.allclose(dihedral_angles(moved, quads), ours, atol=1e-8)
    mirrored = x * np.array([-1.0, 1.0, 1.0])
    back = -dihedral_angles(mirrored, quads)
    assert np.allclose(np.mod(back - ours + 180, 360) - 180, 0, atol=1e-8)  # a reflection flips the sign


ALA2_NAMES = ["HH31", "CH3", "HH32", "HH33", "C", "O", "N", "H", "CA", "HA", "CB", "HB1", "HB2", "HB3", "C", "O",
              "N", "H", "CH3", "HH31", "HH32", "HH33"]
ALA2_RES = [1] * 6 + [2] * 10 + [3] * 6


def test_backbone_quadruples_of_capped_alanine():
    phi, psi, res = backbone_quadruples(ALA2_NAMES, ALA2_RES)
    assert res.tolist() == [2]
    assert phi.tolist() == [[4, 6, 8, 14]]  # C(ACE) N CA C
    assert psi.tolist() == [[6, 8, 14, 16]]  # N CA C N(NME)


def test_backbone_quadruples_respect_chains_and_order():
    names = ["N", "CA", "C"] * 4
    res = np.repeat([1, 2, 3, 4], 3)
    phi, psi, r = backbone_quadruples(names, res)
    assert r.tolist() == [2, 3]
    assert phi[0].tolist() == [2, 3, 4, 5] and psi[1].tolist() == [6, 7, 8, 9]
    # residues 1-2 in chain A, 3-4 in chain B: no residue has both neighbours in its chain
    phi, psi, r = backbone_quadruples(names, res, chain=["A"] * 6 + ["B"] * 6)
    assert len(r) == 0 and phi.shape == (0, 4)
    with pytest.raises(ValueError, match="no residue"):
        phi_psi(np.zeros((1, 12, 3)), names, res, chain=["A"] * 6 + ["B"] * 6)


def test_phi_psi_matches_mdanalysis_ramachandran():
    """Our φ/ψ of a real trajectory (MDAnalysisTests' VAL-GLU-VAL in water, 30 frames) equal MDAnalysis'
    Ramachandran analysis; only the middle residue has both angles."""
    import warnings

    import MDAnalysis as mda
    from MDAnalysis.analysis.dihedrals import Ramachandran
    from MDAnalysisTests.datafiles import NCDF, PRMncdf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(PRMncdf, NCDF)
        ref = Ramachandran(u.select_atoms("resname GLU")).run().results.angles[:, 0]  # [F, 2] (φ, ψ)
    solute = u.select_atoms("protein")
    x = np.stack([solute.positions.copy() for _ in u.trajectory])
    phi, psi, res = phi_psi(x, solute.names, solute.resids)
    assert res.tolist() == [2] and phi.shape == (30, 1)
    assert np.allclose(phi[:, 0], ref[:, 0], atol=1e-3) and np.allclose(psi[:, 0], ref[:, 1], atol=1e-3)


# ---------------------------------------------------------------------------------------------- histograms
def test_histogram_counts_bins_and_wraps():
    phi = np.array([-165.0, -165.0, 15.0, 180.0, 179.9])
    psi = np.array([-165.0, -165.0, 45.0, 180.0, -180.0])
    h = ramachandran_histogram(phi, psi)
    assert h.shape == (12, 12) and h.sum() == pytest.approx(1.0)
    assert h[0, 0] == pytest.approx(3 / 5)  # two points + (180, 180) wrapped to (−180, −180)
    assert h[6, 7] == pytest.approx(1 / 5)
    assert h[11, 0] == pytest.approx(1 / 5)
    assert ramachandran_histogram(phi, psi, bin_deg=60).shape == (6, 6)
    with pytest.raises(ValueError):
        ramachandran_histogram(phi, psi, bin_deg=25)


def test_basin_boundaries_are_half_open_and_documented():
    names = list(BASINS)
    cases = [((-60, -45), "alphaR"), ((-60, 59.99), "alphaR"), ((-60, 60), "beta"), ((-60, -120), "alphaR"),
             ((-60, -120.01), "beta"), ((-150, 180), "beta"), ((-150, -180), "beta"), ((0, 0), "other"),
             ((-0.001, 0), "alphaR"), ((65, 35), "other"), ((180, 150), "beta")]  # φ = 180 wraps to −180
    phi, psi = np.array([c[0] for c in cases], float).T
    labels = basin_labels(phi, psi)
    assert [names[k] for k in labels] == [c[1] for c in cases]


def test_populations_of_known_mixture():
    phi = np.r_[np.full(30, -70.0), np.full(60, -120.0), np.full(10, 60.0)]
    psi = np.r_[np.full(30, -40.0), np.full(60, 150.0), np.full(10, 40.0)]
    pops = basin_populations(phi, psi)
    assert pops == pytest.approx({"alphaR": 0.3, "beta": 0.6, "other": 0.1})
    # [F, R] pools residues
    pops2 = basin_populations(np.stack([phi, phi[::-1]], 1), np.stack([psi, psi[::-1]], 1))
    assert pops2 == pytest.approx(pops)


def test_jensen_shannon_known_values():
    p, q = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert jensen_shannon(p, q) == pytest.approx(1.0)  # disjoint supports: 1 bit
    assert jensen_shannon(p, q, base=np.e) == pytest.approx(np.log(2))
    assert jensen_shannon(p, p) == 0.0
    a, b = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    m = np.array([0.75, 0.25])
    expected = 0.5 * np.log2(1 / 0.75) + 0.5 * (0.5 * np.log2(0.5 / m[0]) + 0.5 * np.log2(0.5 / m[1]))
    assert jensen_shannon(a, b) == pytest.approx(expected)
    assert jensen_shannon(b, a) == pytest.approx(expected)
    assert jensen_shannon(a * 7, b * 3) == pytest.approx(expected)  # normalised inside
    with pytest.raises(ValueError):
        jensen_shannon(np.ones(3), np.ones(4))


# ------------------------------------------------------------------------------------------------ transitions
A, B, BARRIER_B, O = (-70.0, -40.0), (-120.0, 150.0), (-70.0, 80.0), (60.0, 40.0)
# BARRIER_B lies in the β basin (ψ ≥ 60°) but outside the β core (ψ ≥ 100°)


def series(*points):
    phi, psi = np.array(points, float).T
    return phi, psi


def test_recrossing_without_reaching_the_other_core_is_no_transition():
    phi, psi = series(A, A, BARRIER_B, A, BARRIER_B, BARRIER_B, A)
    assert basin_populations(phi, psi)["beta"] == pytest.approx(3 / 7)  # the basins see the excursions …
    assert transitions(phi, psi, frame_ps=1.0).total == 0  # … the cores do not count them


def test_core_to_core_transitions_and_rate():
    phi, psi = series(BARRIER_B, A, BARRIER_B, B, B, BARRIER_B, A, O, O, A)  # first frame: before any core
    assert core_assignment(phi, psi).tolist() == [-1, 0, 0, 1, 1, 1, 0, 2, 2, 0]
    t = transitions(phi, psi, frame_ps=2.0)
    assert t.total == 4
    assert t.counts[0, 1] == 1 and t.counts[1, 0] == 1 and t.counts[0, 2] == 1 and t.counts[2, 0] == 1
    assert t.duration_ns == pytest.approx(10 * 2.0 / 1000)
    assert t.per_ns == pytest.approx(4 / 0.02)
    d = t.as_dict()
    assert d["pairs"]["alphaR->beta"] == 1 and d["total"] == 4
    # two residues: counts add up, duration doubles
    t2 = transitions(np.stack([phi, phi], 1), np.stack([psi, psi], 1), frame_ps=2.0)
    assert t2.total == 8 and t2.per_ns == pytest.approx(t.per_ns)


def test_summary_of_a_stationary_series():
    phi, psi = series(*([A, A, B, BARRIER_B] * 24))
    s = ramachandran_summary(phi, psi, frame_ps=1.0)
    assert s["frames"] == 96 and s["residues"] == 1
    assert s["js_halves_bits"] == pytest.approx(0.0, abs=1e-12)  # both halves hold the same frames
    assert s["populations"] == pytest.approx({"alphaR": 0.5, "beta": 0.5, "other": 0.0})
    assert s["transitions"]["total"] == 47  # A→B in each of the 24 repeats, B→A between them
    assert np.asarray(s["histogram"]).sum() == pytest.approx(1.0)
