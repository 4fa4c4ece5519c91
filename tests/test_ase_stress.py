"""Stress, per-atom energies and batched evaluation of learned potentials (model and ASE calculator).

The stress is checked against central finite differences of the energy under a symmetric strain of positions and
cell (float64), its equivariance under rotations (σ → RσRᵀ) and its ASE sign convention against EMT; per-atom
energies against the total; batched calls against one-by-one calls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.stress import voigt_6_to_full_3x3_stress

from mdsurrogate.integrations.ase import SurrogateCalculator

from .conftest import orthogonal
from .test_ase_integration import AG, cluster, periodic_triclinic, random_potential, save_potential


@pytest.fixture(scope="module")
def model():
    return random_potential(seed=3)


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    return save_potential(tmp_path_factory.mktemp("pot") / "pot.pt", model)


def strained(atoms, eps: np.ndarray):
    """Atoms under the homogeneous strain ε (symmetric 3×3): positions and cell × (1 + ε)."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out


def energy(model, atoms) -> float:
    out = model(torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions), None,
                torch.as_tensor(atoms.cell.array), torch.as_tensor(atoms.pbc), 1, compute_forces=False)
    return float(out["energy"].detach()[0])


def fd_stress(model, atoms, h=1e-5) -> np.ndarray:
    """(1/V) ∂E/∂ε by central differences, component by component (ε symmetric)."""
    volume = atoms.get_volume()
    s = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            eps = np.zeros((3, 3))
            eps[i, j] += h / 2
            eps[j, i] += h / 2
            s[i, j] = s[j, i] = (energy(model, strained(atoms, eps)) - energy(model, strained(atoms, -eps))) / (
                2 * h * volume)
    return s


def small_cell():
    """A rattled, sheared 2×2×2 cubic Cu cell with Ag (32 atoms; narrower than twice the cutoff along no axis)."""
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    a.numbers[[3, 17]] = AG
    cell = a.cell.array.copy()
    cell[0, 1] += 0.4
    cell[2, 0] -= 0.3
    a.set_cell(cell, scale_atoms=True)
    a.rattle(0.08, seed=4)
    return a


def slab():
    a = fcc111("Cu", size=(2, 2, 3), vacuum=5.0, a=3.61)
    a.rattle(0.05, seed=1)
    return a


@pytest.mark.parametrize("make", [small_cell, periodic_triclinic, slab], ids=["sheared", "triclinic64", "slab"])
def test_stress_matches_finite_differences_of_the_energy_under_strain(model, ckpt, make):
    atoms = make()
    atoms.calc = SurrogateCalculator(ckpt, dtype="float64")
    stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
    ref = fd_stress(model, atoms)
    assert np.abs(ref).max() > 1e-4  # not a trivially zero stress
    np.testing.assert_allclose(stress, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(atoms.get_stress(voigt=False), atoms.get_stress(voigt=False).T, atol=1e-14)


def test_stress_sign_follows_ase(ckpt):
    """Compressed crystal → negative diagonal stress (it pushes outwards), as EMT says too."""
    atoms = bulk("Cu", "fcc", a=3.3, cubic=True).repeat((2, 2, 2))
    atoms.calc = EMT()
    assert (atoms.get_stress()[:3] < 0).all()
    # the model: energy falls as the cell expands ⇔ negative trace
    model = random_potential(seed=3)
    ref = fd_stress(model, atoms)
    atoms.calc = SurrogateCalculator(ckpt, dtype="float64")
    assert np.sign(np.trace(voigt_6_to_full_3x3_stress(atoms.get_stress()))) == np.sign(np.trace(ref))


@pytest.mark.parametrize("reflect", [False, True])
def test_stress_rotates_with_the_structure(ckpt, reflect):
    atoms = small_cell()
    calc = SurrogateCalculator(ckpt, dtype="float64")
    atoms.calc = calc
    s0 = atoms.get_stress(voigt=False)
    r = orthogonal(7, reflect).numpy()
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ r.T, scale_atoms=False)
    moved.positions = atoms.positions @ r.T + np.array([0.3, -1.2, 2.0])
    moved.calc = calc
    np.testing.assert_allclose(moved.get_stress(voigt=False), r @ s0 @ r.T, atol=1e-10)
    np.testing.assert_allclose(moved.get_forces(), atoms.get_forces() @ r.T, atol=1e-10)


def test_per_atom_energies_sum_to_the_energy_and_are_invariant(ckpt):
    atoms = periodic_triclinic()
    atoms.calc = SurrogateCalculator(ckpt, dtype="float64")
    eps = atoms.get_potential_energies()
    assert eps.shape == (len(atoms),) and eps.dtype == np.float64
    assert eps.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    assert np.ptp(eps) > 1e-4  # atoms in different environments have different energies
    perm = np.random.default_rng(0).permutation(len(atoms))
    shuffled = atoms[perm]
    shuffled.calc = atoms.calc
    np.testing.assert_allclose(shuffled.get_potential_energies(), eps[perm], atol=1e-10)


def test_free_structures_have_no_stress(ckpt):
    atoms = cluster()
    atoms.calc = calc = SurrogateCalculator(ckpt, dtype="float64")
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="periodic cell"):
        atoms.get_stress()
    assert "stress" not in calc.results
    atoms.get_potential_energies()  # energies still work
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        calc.calculate_batch([atoms], ["stress"])


def test_batch_equals_one_by_one(ckpt):
    images = [periodic_triclinic(), cluster(), small_cell(), slab(), cluster(seed=2), bulk("Cu", "fcc", a=3.6)]
    calc = SurrogateCalculator(ckpt, dtype="float64")
    batched = calc.calculate_batch(images)
    assert calc.calculations == 1  # one model call for all six
    small_groups = calc.calculate_batch(images, max_atoms=40)  # several calls
    assert calc.calculations == 1 + 4  # groups of ≤ 40 atoms (a bigger structure alone): 64 | 13 | 32 | 12+13+1
    for a, res, res2 in zip(images, batched, small_groups, strict=True):
        a.calc = SurrogateCalculator(ckpt, dtype="float64")
        assert res["energy"] == pytest.approx(a.get_potential_energy(), abs=1e-10)
        assert res["free_energy"] == res["energy"]
        np.testing.assert_allclose(res["forces"], a.get_forces(), atol=1e-10)
        np.testing.assert_allclose(res["energies"], a.get_potential_energies(), atol=1e-10)
        if SurrogateCalculator.has_stress(a):
            np.testing.assert_allclose(res["stress"], a.get_stress(), atol=1e-12)
        else:
            assert "stress" not in res
        for key in res:
            np.testing.assert_allclose(res2[key], res[key], atol=1e-10)
    assert calc.calculate_batch([]) == []
    with pytest.raises(PropertyNotImplementedError, match="dipole"):
        calc.calculate_batch(images, ["dipole"])


def test_float32_stress_is_close_to_float64(ckpt):
    atoms = small_cell()
    s64 = SurrogateCalculator(ckpt, dtype="float64").get_stress(atoms)
    s32 = SurrogateCalculator(ckpt).get_stress(atoms)
    np.testing.assert_allclose(s32, s64, atol=1e-5 * np.abs(s64).max() + 1e-7)
