"""The OpenMM TorchScript module of a learned potential: scripted, loads with torch.jit alone, and gives the
potential's energy (kJ/mol) and forces (by back-propagation, as openmm-torch computes them) in OpenMM units."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from ase.build import bulk

from mdsurrogate.errors import UserError
from mdsurrogate.integrations.openmm import EV_TO_KJ_PER_MOL, openmm_module, torch_force

from .test_ase_integration import AG, cluster, random_potential, save_potential


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = random_potential(seed=2)
    return model, save_potential(tmp_path_factory.mktemp("omm") / "pot.pt", model)


def big_cell():
    """3×3×3 cubic Cu with Ag (108 atoms, 10.8 Å: the cutoff 3.4 Å is below half the box)."""
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    a.numbers[[0, 50]] = AG
    a.rattle(0.05, seed=1)
    a.positions[7] += a.cell.array[0]  # an atom outside the box: the minimum image still finds its pairs
    return a


@pytest.mark.parametrize("make", [big_cell, cluster], ids=["periodic", "free"])
def test_scripted_module_reproduces_the_potential_in_openmm_units(ckpt, make, tmp_path):
    model, path = ckpt
    atoms = make()
    periodic = bool(atoms.pbc.any())
    box = torch.as_tensor(atoms.cell.array / 10.0)
    module = openmm_module(path, atoms.numbers, periodic=periodic, box_nm=box if periodic else None,
                           dtype="float64")
    assert isinstance(module, torch.jit.ScriptModule)
    module.save(str(tmp_path / "m.pt"))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    pos = torch.tensor(atoms.positions / 10.0, requires_grad=True)
    energy = loaded(pos, box) if periodic else loaded(pos)
    energy.backward()
    ref = model(torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions), None,
                torch.as_tensor(atoms.cell.array), torch.as_tensor(atoms.pbc), 1)
    assert float(energy.detach()) == pytest.approx(float(ref["energy"].detach()) * EV_TO_KJ_PER_MOL, rel=1e-12)
    np.testing.assert_allclose(-pos.grad.numpy(), ref["forces"].detach().numpy() * EV_TO_KJ_PER_MOL * 10.0,
                               atol=1e-8)


def test_box_too_small_for_the_minimum_image_is_refused(ckpt):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((1, 1, 1))
    with pytest.raises(UserError, match="half the smallest box width"):
        openmm_module(ckpt[1], atoms.numbers, periodic=True, box_nm=atoms.cell.array / 10.0)
    with pytest.raises(UserError, match="Cu, Ag only"):
        openmm_module(ckpt[1], [29, 79], periodic=False)


@pytest.mark.skipif(importlib.util.find_spec("openmmtorch") is not None, reason="openmmtorch is installed")
def test_torch_force_without_openmmtorch_says_what_to_install(ckpt):
    with pytest.raises(UserError, match="openmm-torch"):
        torch_force(ckpt[1], [29, 29], periodic=False)
