"""ASE integration: the EGNN potential (symmetries, forces = −∇E, smooth cutoff), EMT data → dataset → a short fit,
SurrogateCalculator (ASE calculator conventions, caching, bad input) and SurrogateDynamics (.traj, units, errors).

Reference data come from ASE's own EMT (seeded Langevin MD of a periodic fcc Cu cell and a Cu cluster), never
from our model. Symmetry and gradient checks run in float64 on a randomly initialised two-element model.
"""

from __future__ import annotations

import subprocess
import sys

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.cluster import Octahedron
from ase.md import MDLogger

from mdsurrogate.config import recipe_from_dict
from mdsurrogate.data.dataset import Dataset, DatasetError
from mdsurrogate.data.ingest import ingest_ase
from mdsurrogate.data.sources.ase_frames import simulate_emt_frames
from mdsurrogate.errors import CheckpointError, UserError
from mdsurrogate.integrations.ase import (
    PropagatorPlaceholderCalculator,
    SurrogateCalculator,
    SurrogateDynamics,
)
from mdsurrogate.models.baselines import LinearDynamics
from mdsurrogate.models.potential import EGNNPotential, UnknownElementError, cutoff_envelope
from mdsurrogate.training.checkpoint import save_checkpoint
from mdsurrogate.training.trainer import Trainer

from .conftest import orthogonal

CUTOFF = 3.4  # < half the width of a 2×2×2 cubic Cu cell (7.22 Å)
CU, AG = 29, 47


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def random_potential(seed=0) -> EGNNPotential:
    """A float64 Cu/Ag potential with perturbed weights (nothing starts at zero that could hide a bug)."""
    torch.manual_seed(seed)
    model = EGNNPotential(elements=[CU, AG], cutoff=CUTOFF, hidden=16, layers=2, n_rbf=8, avg_neighbors=10.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.reference_energies.copy_(torch.tensor([-0.3, -0.2]))
        model.energy_scale.fill_(0.7)
    return model.double().eval()


def save_potential(path, model: EGNNPotential):
    return save_checkpoint(path, {
        "kind": "potential",
        "model": {"name": model.name, "hparams": {"elements": model.elements, "cutoff": model.cutoff, "hidden": 16,
                                                  "layers": 2, "n_rbf": 8, "avg_neighbors": model.avg_neighbors}},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "features": {"global_graph": {"kind": "radius", "cutoff": model.cutoff}, "node": [], "edge": ["dist"]},
        "dataset": {"units": {"length": "Å", "energy": "eV"}},
    })


def save_propagator(path, *, tau=0.002, units_=None, node=("speed",)):
    """A tiny propagator checkpoint in the layout Trainer._payload writes: linear model x + τv, Δ = τ."""
    return save_checkpoint(path, {
        "kind": "propagator",
        "model": {"name": "linear", "hparams": {"tau": tau, "learn_tau": False}},
        "state_dict": LinearDynamics(tau=tau, learn_tau=False).state_dict(),
        "features": {"global_graph": {"kind": "complete"}, "node": list(node), "edge": ["dist2"]},
        "dataset": {"path": "", "name": "tiny", "source": "test",
                    "units": units_ or {"length": "Å", "time": "ps", "velocity": "Å/ps"},
                    "frame_dt": tau / 2, "delta_frames": 2, "delta_time": tau, "selection": None, "generator": {}},
        "recipe": {}, "train_state": {}, "n_parameters": 0,
    })


def evaluate(model, atoms: Atoms):
    out = model(torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions), None,
                torch.as_tensor(atoms.cell.array), torch.as_tensor(atoms.pbc), 1)
    return out["energy"].item(), out["forces"].detach().numpy()


def cluster(seed=0) -> Atoms:
    """A rattled Cu13 cuboctahedron with three Ag atoms, no cell."""
    a = Octahedron("Cu", 3, cutoff=1)
    a.numbers[[1, 5, 9]] = AG
    a.rattle(0.1, seed=seed)
    a.cell = np.zeros((3, 3))
    a.pbc = False
    return a


def periodic_triclinic(seed=0) -> Atoms:
    """A rattled 4×4×4 primitive fcc cell (triclinic, 64 atoms, widths 8.3 Å) with some Ag."""
    a = bulk("Cu", "fcc", a=3.6).repeat((4, 4, 4))
    rng = np.random.default_rng(seed)
    a.numbers[rng.choice(len(a), 10, replace=False)] = AG
    a.rattle(0.1, seed=seed)
    return a


@pytest.fixture(scope="module")
def model():
    return random_potential()


# ----------------------------------------------------------------------------------------------------------
# the potential: symmetries, gradient, smoothness
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize("make", [cluster, periodic_triclinic], ids=["cluster", "periodic"])
def test_energy_invariant_forces_equivariant_under_rigid_motions(model, make, reflect):
    atoms = make()
    e, f = evaluate(model, atoms)
    q = orthogonal(3, reflect).numpy()
    moved = atoms.copy()
    moved.positions = atoms.positions @ q.T + np.array([3.0, -7.5, 11.0])
    moved.cell = atoms.cell.array @ q.T  # the lattice rotates with the atoms
    e2, f2 = evaluate(model, moved)
    assert abs(e2 - e) < 1e-9 * max(1.0, abs(e))
    np.testing.assert_allclose(f2, f @ q.T, atol=1e-9)


@pytest.mark.parametrize("make", [cluster, periodic_triclinic], ids=["cluster", "periodic"])
def test_permutation(model, make):
    atoms = make()
    e, f = evaluate(model, atoms)
    perm = np.random.default_rng(1).permutation(len(atoms))
    e2, f2 = evaluate(model, atoms[perm])
    assert abs(e2 - e) < 1e-9 * max(1.0, abs(e))
    np.testing.assert_allclose(f2, f[perm], atol=1e-9)


def test_lattice_translations(model):
    atoms = periodic_triclinic(seed=2)
    e, f = evaluate(model, atoms)
    shifted = atoms.copy()
    n = np.random.default_rng(3).integers(-3, 4, size=(len(atoms), 3))  # each atom by its own lattice vector
    shifted.positions = atoms.positions + n @ atoms.cell.array
    e2, f2 = evaluate(model, shifted)
    assert abs(e2 - e) < 1e-9 * max(1.0, abs(e))
    np.testing.assert_allclose(f2, f, atol=1e-9)
    wrapped = atoms.copy()
    wrapped.wrap()
    e3, f3 = evaluate(model, wrapped)
    assert abs(e3 - e) < 1e-9 * max(1.0, abs(e))
    np.testing.assert_allclose(f3, f, atol=1e-9)


@pytest.mark.parametrize("make", [cluster, periodic_triclinic], ids=["cluster", "periodic"])
def test_forces_are_minus_the_energy_gradient(model, make):
    atoms = make(seed=4)
    _, f = evaluate(model, atoms)
    h = 1e-5
    rng = np.random.default_rng(5)
    for i in rng.choice(len(atoms), 4, replace=False):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, c] += h
            minus.positions[i, c] -= h
            fd = -(evaluate(model, plus)[0] - evaluate(model, minus)[0]) / (2 * h)
            assert abs(fd - f[i, c]) < 1e-6 * max(1.0, abs(f[i, c])), (i, c, fd, f[i, c])


def test_energy_is_smooth_at_the_cutoff(model):
    def dimer(d):
        return Atoms([CU, AG], positions=[[0, 0, 0], [d, 0, 0]])

    e_far, f_far = evaluate(model, dimer(CUTOFF + 1e-3))
    assert np.abs(f_far).max() == 0.0
    e_in, f_in = evaluate(model, dimer(CUTOFF - 1e-4))
    assert abs(e_in - e_far) < 1e-9 and np.abs(f_in).max() < 1e-6
    d = torch.tensor([0.0, CUTOFF / 2, CUTOFF, 2 * CUTOFF], dtype=torch.float64)
    np.testing.assert_allclose(cutoff_envelope(d, CUTOFF).numpy(), [1.0, 0.5, 0.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False)], ids=["bulk", "slab"])
def test_small_cells_see_several_images(model, pbc):
    """Cells narrower than twice the cutoff (a 2-atom primitive cell here) equal their large supercells: energy
    per copy and the force on every copy of an atom."""
    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    atoms.numbers[1] = AG
    atoms.rattle(0.1, seed=8)
    atoms.pbc = pbc
    reps = (4, 6, 6) if all(pbc) else (4, 6, 1)
    e, f = evaluate(model, atoms)
    e_big, f_big = evaluate(model, atoms.repeat(reps))
    copies = int(np.prod(reps))
    assert abs(e_big / copies - e) < 1e-9 * max(1.0, abs(e))
    np.testing.assert_allclose(f_big.reshape(copies, len(atoms), 3), np.broadcast_to(f, (copies, len(atoms), 3)),
                               atol=1e-9)


def test_mixed_periodic_and_free_batch_equals_single_graphs(model):
    tiny = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))  # multi-image path inside a batch
    tiny.rattle(0.05, seed=9)
    frames = [periodic_triclinic(), cluster(), tiny, periodic_triclinic(seed=7)]
    sizes = [len(a) for a in frames]
    out = model(torch.as_tensor(np.concatenate([a.numbers for a in frames])),
                torch.as_tensor(np.concatenate([a.positions for a in frames])),
                torch.repeat_interleave(torch.arange(len(frames)), torch.tensor(sizes)),
                torch.as_tensor(np.stack([a.cell.array for a in frames])),
                torch.as_tensor(np.stack([a.pbc for a in frames])), len(frames))
    forces = np.split(out["forces"].detach().numpy(), np.cumsum(sizes)[:-1])
    for k, a in enumerate(frames):
        e, f = evaluate(model, a)
        assert abs(out["energy"][k].item() - e) < 1e-9
        np.testing.assert_allclose(forces[k], f, atol=1e-10)


def test_core_imports_without_ase():
    code = ("import sys; sys.modules['ase'] = None\n"
            "import mdsurrogate.models.potential, mdsurrogate.training.trainer, mdsurrogate.data.sources.ase_frames\n"
            "import mdsurrogate.data.ingest.ase\n"
            "from mdsurrogate.models.potential import element_names\n"
            "assert element_names([79]) == 'Z=79'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


# ----------------------------------------------------------------------------------------------------------
# EMT data → dataset → fit
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emt_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("emt")
    files = [
        simulate_emt_frames(root / "bulk.xyz", system="bulk", size=2, temperatures=(300.0, 800.0),
                            frames_per_temperature=12, stride=5, equilibrate=20, seed=0),
        simulate_emt_frames(root / "cluster.traj", system="cluster", size=1, temperatures=(300.0, 800.0),
                            frames_per_temperature=12, stride=5, equilibrate=20, seed=1),
    ]
    return ingest_ase(root / "ds", files, cutoff=CUTOFF, val_fraction=0.15, test_fraction=0.15, seed=0), files


def test_ingest_ase_layout(emt_dataset, tmp_path):
    path, files = emt_dataset
    ds = Dataset(path)
    assert ds.meta["task"] == "potential" and ds.meta["elements"] == [CU] and ds.meta["cutoff"] == CUTOFF
    assert ds.n_trajectories == 48 and set(ds.traj_nodes) == {13, 32} and set(ds.traj_frames) == {1}
    assert sum(ds.meta["n_samples"].values()) == 48 and ds.meta["n_samples"]["test"] == 7
    assert np.load(path / "energy.npy").shape == (48,) and np.load(path / "forces.npy").shape == (24 * 32 + 24 * 13, 3)
    # cell and pbc travel as node properties: the bulk frames are periodic, the cluster frames free
    frames = ase.io.read(files[0], ":")
    t = int(np.flatnonzero(ds.traj_nodes == 32)[0])
    np.testing.assert_allclose(ds.node_property("cell", t)[0], frames[0].cell.array)
    t_cluster = int(np.flatnonzero(ds.traj_nodes == 13)[0])
    assert ds.node_property("pbc", t).all() and not ds.node_property("pbc", t_cluster).any()
    np.testing.assert_allclose(np.load(path / "forces.npy")[:32], frames[0].get_forces(), atol=1e-6)
    assert np.load(path / "energy.npy")[0] == pytest.approx(frames[0].get_potential_energy())
    # bad input: frames without labels
    bare = tmp_path / "bare.xyz"
    ase.io.write(bare, bulk("Cu", cubic=True))
    with pytest.raises(DatasetError, match="no energy"):
        ingest_ase(tmp_path / "x", [bare], cutoff=CUTOFF)
    # a one-atom primitive cell (narrower than twice the cutoff) is fine: 12 nearest neighbours, all images of itself
    prim = bulk("Cu", "fcc", a=3.61)
    prim.calc = EMT()
    prim.get_forces()
    ase.io.write(tmp_path / "prim.traj", prim)
    small = Dataset(ingest_ase(tmp_path / "prim", [tmp_path / "prim.traj"], cutoff=CUTOFF, val_fraction=0.0,
                               test_fraction=0.0))
    assert small.meta["avg_num_neighbors"] == 12.0


@pytest.fixture(scope="module")
def trained(emt_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    recipe = recipe_from_dict({"model": {"name": "egnn_potential", "hidden": 32, "layers": 2, "n_rbf": 12},
                               "train": {"epochs": 60, "lr": 3e-3, "batch_size": 4, "seed": 0}})
    summary = Trainer(recipe, run, device="cpu", data_path=str(emt_dataset[0])).run()
    return run, summary


def test_short_fit_beats_zero_force_predictor(trained, emt_dataset):
    run, summary = trained
    test = summary["test"]
    assert test["frames"] == 7
    assert test["force_mae"] < 0.35 * test["zero_force_mae"], test
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file() and (run / "metrics.jsonl").read_text()
    # the calculator reproduces the trainer's numbers on the held-out frames
    ds = Dataset(emt_dataset[0])
    calc = SurrogateCalculator(run, dtype="float64")
    forces = np.load(emt_dataset[0] / "forces.npy")
    errs = []
    for t in ds.split_indices("test"):
        n = int(ds.traj_nodes[t])
        x, _ = ds.frame(t, 0)
        atoms = Atoms(numbers=ds.node_property("Z", t), positions=x, cell=ds.node_property("cell", t)[0],
                      pbc=ds.node_property("pbc", t)[0])
        atoms.calc = calc
        rows = slice(int(ds.row_offset[t]), int(ds.row_offset[t]) + n)
        errs.append(np.abs(atoms.get_forces() - forces[rows]).ravel())
    assert np.concatenate(errs).mean() == pytest.approx(test["force_mae"], rel=1e-3)


def test_trained_potential_relaxes_a_32_atom_cell_with_frechet_cell_filter(trained):
    """Positions and cell together (stress by autograd) to fmax 1e-3 eV/Å from a strained, sheared, rattled cell."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    eps = np.eye(3) * 0.02
    eps[0, 1] = eps[1, 0] = 0.01
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    atoms.rattle(0.03, seed=0)
    atoms.calc = SurrogateCalculator(trained[0], dtype="float64")
    s0 = np.abs(atoms.get_stress()).max()
    opt = BFGS(FrechetCellFilter(atoms), logfile=None)
    converged = opt.run(fmax=1e-3, steps=300)
    cell = atoms.cell.array
    a = np.cbrt(atoms.get_volume() / len(atoms) * 4)
    shear = np.abs(cell - np.diag(np.diag(cell))).max()
    assert converged, (opt.nsteps, a, shear)
    assert np.abs(atoms.get_forces()).max() < 1e-3
    assert np.abs(atoms.get_stress()).max() < 0.05 * s0
    assert shear < 0.05 * a, (a, shear)  # the shear relaxed away (the fcc cell is cubic again)
    assert 3.0 < a < 4.2, a  # a copper-like lattice constant (EMT: 3.59 Å; this short fit sees first neighbours only)


def test_trained_potential_drives_npt(trained):
    """ASE's MTK barostat runs on the calculator's stress: from the model's relaxed cell, the volume moves with the
    thermal pressure and stays near the model's equilibrium volume."""
    from ase.filters import FrechetCellFilter
    from ase.md.nose_hoover_chain import IsotropicMTKNPT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.optimize import BFGS

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.calc = SurrogateCalculator(trained[0], dtype="float64")
    assert BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-2, steps=200)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    v0 = atoms.get_volume()
    dyn = IsotropicMTKNPT(atoms, timestep=2 * units.fs, temperature_K=300, pressure_au=0.0, tdamp=100 * units.fs,
                          pdamp=500 * units.fs)
    volumes = []
    dyn.attach(lambda: volumes.append(atoms.get_volume()), interval=1)
    dyn.run(60)
    volumes = np.array(volumes)
    assert np.isfinite(volumes).all() and np.ptp(volumes) > 1e-4 * v0  # the barostat moves the cell
    assert np.abs(volumes / v0 - 1).max() < 0.05, volumes / v0


# ----------------------------------------------------------------------------------------------------------
# SurrogateCalculator
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def potential_ckpt(model, tmp_path_factory):
    return save_potential(tmp_path_factory.mktemp("pot") / "pot.pt", model)


def test_calculator_matches_model_and_follows_ase_conventions(model, potential_ckpt):
    atoms = periodic_triclinic()
    calc = SurrogateCalculator(potential_ckpt, dtype="float64")
    atoms.calc = calc
    e, f = evaluate(model, atoms)
    assert atoms.get_potential_energy() == pytest.approx(e, abs=1e-9)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), f, atol=1e-10)
    atoms.get_stress()
    atoms.get_potential_energies()
    assert calc.calculations == 1  # energy, forces, per-atom energies and stress come from one evaluation
    assert set(SurrogateCalculator.implemented_properties) == {"energy", "free_energy", "energies", "forces",
                                                               "stress"}
    free = cluster()
    free.calc = calc
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        free.get_stress()
    f32 = SurrogateCalculator(potential_ckpt).get_forces(atoms)  # default float32
    np.testing.assert_allclose(f32, f, atol=1e-4)
    assert f32.dtype == np.float64


def test_calculator_caches_and_recomputes_on_changes(potential_ckpt):
    atoms = cluster()
    atoms.calc = calc = SurrogateCalculator(potential_ckpt, dtype="float64")
    e0 = atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energy()
    assert calc.calculations == 1
    atoms.info["note"] = "ignored"  # the model reads no atoms.info
    atoms.set_initial_charges(np.ones(len(atoms)))  # nor charges
    atoms.get_forces()
    assert calc.calculations == 1

    def changed(edit):
        before = calc.calculations
        edit()
        atoms.get_forces()
        atoms.get_potential_energy()
        return calc.calculations - before

    assert changed(lambda: atoms.positions.__setitem__((0, 0), atoms.positions[0, 0] + 0.01)) == 1
    numbers = atoms.numbers.copy()
    numbers[0] = AG if numbers[0] == CU else CU
    assert changed(lambda: atoms.set_atomic_numbers(numbers)) == 1
    assert changed(lambda: atoms.set_cell(np.eye(3) * 30.0)) == 1
    e_before = atoms.get_potential_energy()
    assert changed(lambda: atoms.set_pbc(True)) == 1  # a 30 Å box: the images are out of reach
    assert atoms.get_potential_energy() == pytest.approx(e_before, abs=1e-9)
    assert e0 != atoms.get_potential_energy()


def test_calculator_rejects_unseen_elements_and_wrong_checkpoints(potential_ckpt, tmp_path):
    atoms = cluster()
    atoms.numbers[[0, 2]] = [79, 78]
    atoms.calc = SurrogateCalculator(potential_ckpt)
    with pytest.raises(ValueError, match=r"Cu, Ag only.*Pt, Au") as info:
        atoms.get_potential_energy()
    assert isinstance(info.value, UnknownElementError)
    prop = save_propagator(tmp_path / "prop.pt")
    with pytest.raises(CheckpointError, match="propagator checkpoint.*SurrogateDynamics"):
        SurrogateCalculator(prop)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        SurrogateCalculator(tmp_path / "junk.pt")


def test_calculator_runs_ase_md(potential_ckpt):
    from ase.md.verlet import VelocityVerlet

    atoms = periodic_triclinic()
    atoms.calc = SurrogateCalculator(potential_ckpt, dtype="float64")
    atoms.set_momenta(np.random.default_rng(0).normal(0, 0.3, (len(atoms), 3)))
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, 0.5 * units.fs).run(10)
    assert abs(atoms.get_total_energy() - e0) < 1e-3 * len(atoms)


# ----------------------------------------------------------------------------------------------------------
# SurrogateDynamics
# ----------------------------------------------------------------------------------------------------------


def test_surrogate_dynamics_writes_traj_and_advances_by_v_tau(tmp_path):
    ckpt = save_propagator(tmp_path / "prop.pt", tau=0.002)  # Δ = 2 fs (dataset time unit ps)
    atoms = cluster()
    atoms.set_velocities(np.random.default_rng(0).normal(0, 0.05, (len(atoms), 3)))
    x0, v0 = atoms.get_positions(), atoms.get_velocities()
    assert atoms.calc is None
    log = tmp_path / "md.log"
    seen = []
    dyn = SurrogateDynamics(atoms, ckpt, trajectory=str(tmp_path / "out.traj"), logfile=str(log), dtype="float64")
    dyn.attach(lambda: seen.append(dyn.nsteps))
    assert dyn.dt == pytest.approx(2 * units.fs)
    dyn.run(5)
    assert seen == [0, 1, 2, 3, 4, 5]
    assert isinstance(atoms.calc, PropagatorPlaceholderCalculator)
    # (τ is stored as a float32 parameter: ~1e-8 relative, hence the tolerance)
    np.testing.assert_allclose(atoms.get_positions(), x0 + 5 * v0 * dyn.dt, atol=1e-7)
    np.testing.assert_allclose(atoms.get_velocities(), v0, atol=1e-12)
    assert dyn.get_time() == pytest.approx(5 * 2 * units.fs)
    dyn.close()
    frames = ase.io.read(tmp_path / "out.traj", ":")
    assert len(frames) == 6
    for k, fr in enumerate(frames):
        np.testing.assert_allclose(fr.get_positions(), x0 + k * v0 * dyn.dt, atol=1e-7)
    lines = log.read_text().strip().splitlines()
    assert len(lines) == 7 and "Time[ps]" in lines[0] and lines[-1].split()[0] == "0.0100"


def test_surrogate_dynamics_units_properties_and_calculators(tmp_path):
    atoms = cluster()
    atoms.set_velocities(np.full((len(atoms), 3), 0.01))
    # a dimensionless checkpoint needs the meaning of its units
    dimless = save_propagator(tmp_path / "nd.pt", tau=1.0, units_={"length": "1", "time": "1"})
    with pytest.raises(UserError, match="no ASE equivalent"):
        SurrogateDynamics(atoms.copy(), dimless)
    a = atoms.copy()
    dyn = SurrogateDynamics(a, dimless, units={"length": "Å", "time": "fs"}, dtype="float64")
    dyn.run(1)
    np.testing.assert_allclose(a.positions, atoms.positions + 0.01 * units.fs, atol=1e-9)
    # features that read node properties the atoms must supply
    charged = save_propagator(tmp_path / "q.pt", node=("speed", "charge"))
    with pytest.raises(UserError, match="set_initial_charges"):
        SurrogateDynamics(atoms.copy(), charged)
    b = atoms.copy()
    b.set_initial_charges(np.ones(len(b)))
    SurrogateDynamics(b, charged).run(1)
    # a real calculator on the atoms is kept: MDLogger then logs its energies
    c = atoms.copy()
    c.calc = EMT()
    dyn = SurrogateDynamics(c, save_propagator(tmp_path / "p.pt"))
    energies = []
    dyn.attach(MDLogger(dyn, c, str(tmp_path / "emt.log")))
    dyn.attach(lambda: energies.append(c.get_potential_energy()))
    dyn.run(2)
    assert isinstance(c.calc, EMT) and len(energies) == 3 and np.isfinite(energies).all()
    # the wrong kind of checkpoint
    pot = save_potential(tmp_path / "pot.pt", random_potential())
    with pytest.raises(CheckpointError, match="potential checkpoint.*SurrogateCalculator"):
        SurrogateDynamics(atoms.copy(), pot)
