"""The .mdsr surrogate-trajectory file and its MDAnalysis reader: round trip, frames equal to rollout(), random
access / slicing / reverse equal to sequential reading, RMSD and RMSF, the MDAnalysisTests reader test bases,
changed or missing checkpoints, a blown-up model, and `rollout --out X.mdsr`."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from mdsurrogate.config import recipe_from_dict
from mdsurrogate.data.atoms import AtomTopology
from mdsurrogate.data.dataset import Dataset
from mdsurrogate.data.graph import sizes_to_ptr
from mdsurrogate.data.topology import BatchTopology, EdgeSet
from mdsurrogate.simulation.initial_state import InitialState
from mdsurrogate.simulation.mdsr import MdsrError, read_mdsr, write_mdsr
from mdsurrogate.simulation.rollout import rollout
from mdsurrogate.simulation.surrogate import Surrogate
from mdsurrogate.training.checkpoint import load_checkpoint, save_checkpoint
from mdsurrogate.training.trainer import Trainer

mda = pytest.importorskip("MDAnalysis")
import mdsurrogate.mda  # noqa: E402,F401 - registers the MDSR format
from mdsurrogate.mda import MDSRReader  # noqa: E402


def peptide_atoms(bonds=True) -> AtomTopology:
    """Five atoms of a dipeptide fragment: ALA 7 (N, CA, C) and GLY 8 (N, CA) in chain B."""
    return AtomTopology(names=["N", "CA", "C", "N", "CA"], elements=["N", "C", "C", "N", "C"],
                        resnames=["ALA", "ALA", "ALA", "GLY", "GLY"], resids=[7, 7, 7, 8, 8], chainids="B",
                        bonds=[[0, 1], [1, 2], [2, 3], [3, 4]] if bonds else None)


@pytest.fixture(scope="module")
def trained(tiny_nbody, tmp_path_factory):
    """An EGNN trained for two epochs on the tiny N-body set (5 particles), and a starting state."""
    run = tmp_path_factory.mktemp("mdsr") / "run"
    rec = recipe_from_dict({"data": {"path": str(tiny_nbody)}, "model": {"name": "egnn", "hidden": 16, "layers": 2},
                            "train": {"epochs": 2, "batch_size": 20, "lr": 1e-3, "eval_every": 1, "seed": 3,
                                      "velocity_weight": 0.1}})
    Trainer(rec, run, device="cpu").run()
    ds = Dataset(tiny_nbody)
    x0, v0 = ds.states([3], [0])
    return run, x0, v0, ds.topology([3])


def reference_rollout(run, x0, v0, topo, steps):
    sur = Surrogate.load(run / "best.pt", device="cpu")
    res = rollout(sur, InitialState(x0, v0, topo, None, 0.0, None, []), steps)
    assert res.stopped is None
    return res


@pytest.fixture(scope="module")
def mdsr12(trained, tmp_path_factory):
    """A 12-frame .mdsr file (t0 = 5 ps, dt = 2 ps) and the rollout() it must reproduce."""
    run, x0, v0, topo = trained
    path = write_mdsr(run.parent / "r12.mdsr", run, x0, v0, topo, peptide_atoms(), 12, 5.0, 2.0)
    return path, reference_rollout(run, x0, v0, topo, 11)


# ---------------------------------------------------------------------------------------------- the file
def test_write_read_round_trip(trained, tmp_path):
    run, x0, v0, _ = trained
    charge = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0], dtype=torch.float64)
    local = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    topo = BatchTopology(sizes_to_ptr(torch.tensor([5])), {"charge": charge, "group": torch.tensor([0, 0, 1, 1, 2])},
                         {"local": EdgeSet(local, {"hops": torch.tensor([1.0, 1.0, 2.0, 2.0])})})
    atoms = peptide_atoms().with_labels(cluster=[0, 0, 1, 1, 1])
    atoms.record_types = np.array(["ATOM"] * 4 + ["HETATM"], dtype=object)
    path = write_mdsr(tmp_path / "sub" / "a.mdsr", run / "best.pt", x0.double(), v0, topo, atoms, 7, -3.5, 0.25)
    assert not [p for p in path.parent.iterdir() if p.name != "a.mdsr"]  # no temporary file left behind

    with zipfile.ZipFile(path) as zf:  # a zip of JSON + .npy members, every array readable without pickle
        names = zf.namelist()
        assert "header.json" in names and all(n == "header.json" or n.endswith(".npy") for n in names)
        for n in names:
            if n.endswith(".npy"):
                with zf.open(n) as fh:
                    np.lib.format.read_array(fh, allow_pickle=False)
    r = read_mdsr(path)
    h = r.header
    assert (h["n_atoms"], h["n_frames"], h["t0_ps"], h["dt_ps"], h["dtype"]) == (5, 7, -3.5, 0.25, "float32")
    assert h["checkpoint"]["path"] == os.path.relpath(run / "best.pt", path.parent)
    assert h["checkpoint"]["model"] == "egnn"
    assert len(h["checkpoint"]["sha256"]) == 64
    assert r.x0.dtype == np.float64 and np.array_equal(r.x0, x0.double().numpy())
    assert np.array_equal(r.v0, v0.numpy())
    assert torch.equal(r.topology.node_props["charge"], charge)
    assert r.topology.node_props["charge"].dtype == torch.float64
    assert torch.equal(r.topology.node_props["group"], topo.node_props["group"])
    assert torch.equal(r.topology.edge_sets["local"].index, local)
    assert torch.equal(r.topology.edge_sets["local"].props["hops"], topo.edge_sets["local"].props["hops"])
    a = r.atoms
    assert list(a.names) == ["N", "CA", "C", "N", "CA"] and list(a.resnames) == ["ALA"] * 3 + ["GLY"] * 2
    assert list(a.resids) == [7, 7, 7, 8, 8] and list(a.chainids) == ["B"] * 5
    assert list(a.elements) == ["N", "C", "C", "N", "C"] and a.bonds.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert a.labels["cluster"].tolist() == [0, 0, 1, 1, 1] and list(a.record_types) == ["ATOM"] * 4 + ["HETATM"]
    assert [r.time(k) for k in (0, 6)] == [-3.5, -2.0]


def test_bad_input_to_write_and_read(trained, tmp_path):
    run, x0, v0, topo = trained
    atoms = peptide_atoms()
    with pytest.raises(MdsrError, match="shape"):
        write_mdsr(tmp_path / "a.mdsr", run, x0[:4], v0, topo, atoms, 3, 0, 1)
    with pytest.raises(MdsrError, match="4 atoms"):
        write_mdsr(tmp_path / "a.mdsr", run, x0, v0, topo, AtomTopology.generic(4), 3, 0, 1)
    with pytest.raises(MdsrError, match="dt_ps"):
        write_mdsr(tmp_path / "a.mdsr", run, x0, v0, topo, atoms, 3, 0, 0.0)
    with pytest.raises(MdsrError, match="n_frames"):
        write_mdsr(tmp_path / "a.mdsr", run, x0, v0, topo, atoms, 0, 0, 1)
    with pytest.raises(ValueError, match="charge"):  # the model needs a node property this topology lacks
        write_mdsr(tmp_path / "a.mdsr", run, x0, v0, BatchTopology(topo.ptr), atoms, 3, 0, 1)
    assert not list(tmp_path.iterdir())
    (tmp_path / "junk.mdsr").write_text("not a zip")
    with pytest.raises(MdsrError, match="not an .mdsr file"):
        read_mdsr(tmp_path / "junk.mdsr")
    with pytest.raises(MdsrError, match="does not exist"):
        read_mdsr(tmp_path / "none.mdsr")


# ---------------------------------------------------------------------------------------------- frames
def test_sequential_frames_equal_rollout(mdsr12):
    path, ref = mdsr12
    r = read_mdsr(path)
    frames = list(r.frames())
    assert [f.index for f in frames] == list(range(12))
    assert [f.time_ps for f in frames] == [5.0 + 2.0 * k for k in range(12)]
    assert np.array_equal(np.stack([f.positions for f in frames]), ref.positions)  # bit for bit
    assert np.array_equal(np.stack([f.velocities for f in frames]), ref.velocities)
    assert r.steps_computed == 11
    frames[3].positions[:] = 0  # frames are copies: the kept states are untouched
    assert np.array_equal(r.frame(3).positions, ref.positions[3])


@pytest.mark.parametrize("stride", [1, 3, 16])
def test_random_access_equals_sequential(mdsr12, stride):
    path, ref = mdsr12
    r = read_mdsr(path, stride=stride)
    order = [9, 2, 11, 0, 5, 5, 10, 1, 7, -1, -12, 4, 3, 8, 6]
    for k in order:
        fr = r.frame(k)
        assert fr.index == k % 12 and np.array_equal(fr.positions, ref.positions[k])
        assert np.array_equal(fr.velocities, ref.velocities[k])
    rev = list(r.frames(11, None, -1))
    assert np.array_equal(np.stack([f.positions for f in rev]), ref.positions[::-1])
    before = r.steps_computed
    r.frame(11)  # already met: at most stride − 1 steps from the nearest kept state
    assert r.steps_computed - before <= stride - 1
    fresh = read_mdsr(path, stride=stride)
    list(fresh.frames())
    assert fresh.steps_computed == 11
    rev = list(fresh.frames(None, None, -1))  # reverse after a sequential pass: about one step per frame
    assert np.array_equal(np.stack([f.positions for f in rev]), ref.positions[::-1])
    assert fresh.steps_computed - 11 <= 11
    with pytest.raises(IndexError, match="12 frames"):
        r.frame(12)


def test_mdanalysis_reader_random_access_slicing_reverse(mdsr12):
    path, ref = mdsr12
    u = mda.Universe(path)
    t = u.trajectory
    assert isinstance(t, MDSRReader) and (t.n_frames, t.n_atoms) == (12, 5)
    assert t.dt == 2.0 and t.totaltime == 22.0 and t.units["time"] == "ps"
    pos32 = ref.positions.astype(np.float32)
    seq = np.stack([ts.positions.copy() for ts in t])
    assert np.array_equal(seq, pos32)
    assert [ts.time for ts in t] == [5.0 + 2.0 * k for k in range(12)]
    for k in (7, 0, 11, 3, -2):
        assert np.array_equal(t[k].positions, pos32[k]) and t.ts.frame == k % 12
        assert np.array_equal(t[k].velocities, ref.velocities[k])
    sliced = [(ts.frame, ts.time, ts.positions.copy()) for ts in t[2:9:3]]
    assert [s[0] for s in sliced] == [2, 5, 8] and [s[1] for s in sliced] == [9.0, 15.0, 21.0]
    assert np.array_equal(np.stack([s[2] for s in sliced]), pos32[2:9:3])
    assert np.array_equal(np.stack([ts.positions.copy() for ts in t[::-1]]), pos32[::-1])
    assert np.array_equal(np.stack([ts.positions.copy() for ts in t[[10, 1, 4]]]), pos32[[10, 1, 4]])
    ts3 = t.timeseries(start=0, stop=10, step=3, order="fac")  # the base test's slice needs ≥ 10 frames
    assert np.array_equal(ts3, pos32[0:10:3])
    assert u.dimensions is None
    # pickling (multiprocessing analyses) sends the file name and the frame, not the model
    t[7]
    blob = pickle.dumps(t)
    assert b"state_dict" not in blob and len(blob) < 20_000
    back = pickle.loads(blob)
    assert back.ts.frame == 7 and np.array_equal(next(back).positions, pos32[8])
    # topology from the file
    assert list(u.atoms.names) == ["N", "CA", "C", "N", "CA"] and list(u.residues.resnames) == ["ALA", "GLY"]
    assert list(u.residues.resids) == [7, 8] and list(u.segments.segids) == ["B"] and len(u.bonds) == 4
    assert u.atoms.masses == pytest.approx([14.007, 12.011, 12.011, 14.007, 12.011])


def test_universe_with_a_topology_file_and_with_an_opened_run(mdsr12, tmp_path):
    from mdsurrogate.io.writers import open_writer

    path, ref = mdsr12
    pdb = tmp_path / "top.pdb"
    with open_writer(pdb, peptide_atoms()) as w:
        w.write(ref.positions[0])
    u = mda.Universe(pdb, path)
    assert isinstance(u.trajectory, MDSRReader) and list(u.atoms.names) == ["N", "CA", "C", "N", "CA"]
    assert np.array_equal(u.trajectory[6].positions, ref.positions[6].astype(np.float32))
    u2 = mda.Universe(read_mdsr(path))  # an MdsrRun is one trajectory, not a list of files for the ChainReader
    assert isinstance(u2.trajectory, MDSRReader) and u2.trajectory.n_frames == 12
    assert np.array_equal(u2.trajectory[4].positions, ref.positions[4].astype(np.float32))


def test_rmsd_and_rmsf_on_a_reader_universe(mdsr12):
    from MDAnalysis.analysis import rms

    path, ref = mdsr12
    u = mda.Universe(path)
    mem = mda.Universe(path)
    mem.load_new(ref.positions.astype(np.float32), format=mda.coordinates.memory.MemoryReader, dt=2.0)
    got = rms.RMSD(u, select="all").run().results.rmsd
    want = rms.RMSD(mem, select="all").run().results.rmsd
    assert got.shape == (12, 3) and got[0, 2] == pytest.approx(0, abs=1e-5) and got[1:, 2].max() > 1e-3
    np.testing.assert_allclose(got[:, 2], want[:, 2], atol=1e-6)
    np.testing.assert_allclose(got[:, 1], 5.0 + 2.0 * np.arange(12))
    rmsf = rms.RMSF(u.atoms).run().results.rmsf
    x = ref.positions.astype(np.float64)
    np.testing.assert_allclose(rmsf, np.sqrt(((x - x.mean(0)) ** 2).sum(-1).mean(0)), rtol=1e-4)
    # a slice of the trajectory, as analyses request it
    part = rms.RMSF(u.atoms).run(start=2, stop=9, step=3).results.rmsf
    xs = x[2:9:3]
    np.testing.assert_allclose(part, np.sqrt(((xs - xs.mean(0)) ** 2).sum(-1).mean(0)), rtol=1e-4)


def test_protein_selection_linear_model(tmp_path):
    """A realistic case: the 214 CA atoms of AdK (MDAnalysisTests PSF/DCD), identity from the topology, a radius
    graph rebuilt every step, positions in Å; a Linear model (x + τv) gives frames known in closed form."""
    from MDAnalysis.analysis import rms
    from MDAnalysisTests.datafiles import DCD, PSF

    from mdsurrogate.models.baselines import LinearDynamics

    src = mda.Universe(PSF, DCD)
    ca = src.select_atoms("name CA")
    atoms = AtomTopology.from_atomgroup(ca)
    n = ca.n_atoms
    spec = {"global_graph": {"kind": "radius", "cutoff": 10.0}, "node": ["speed"], "edge": ["dist2"]}
    ck = save_checkpoint(tmp_path / "lin.pt", {
        "kind": "propagator", "model": {"name": "linear", "hparams": {"tau": 0.5}},
        "state_dict": LinearDynamics(tau=0.5).state_dict(), "features": spec,
        "dataset": {"units": {"length": "Å", "time": "ps", "velocity": "Å/ps"}, "delta_time": 10.0}})
    x0 = torch.tensor(ca.positions, dtype=torch.float64)
    v0 = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.2
    path = write_mdsr(tmp_path / "adk.mdsr", ck, x0, v0, BatchTopology(sizes_to_ptr(torch.tensor([n]))), atoms,
                      9, 0.0, 10.0)
    u = mda.Universe(path)
    assert u.atoms.n_atoms == 214 and set(u.atoms.names) == {"CA"} and u.residues.n_residues == 214
    assert list(u.residues.resnames[:3]) == list(ca.residues.resnames[:3]) and u.segments.segids[0] == "4AKE"
    x032, v032 = x0.float(), v0.float()
    for k in (8, 3, 0, 5):
        expect = x032.clone()
        for _ in range(k):
            expect = expect + 0.5 * v032
        np.testing.assert_allclose(u.trajectory[k].positions, expect.numpy(), atol=1e-4)
    r = rms.RMSD(u, select="name CA").run().results.rmsd
    assert np.all(np.diff(r[:, 2]) > 0)  # uniform random velocities: deviation grows every frame
    # TOP = a PDB of the selection written by MDAnalysis itself
    ca.write(tmp_path / "ca.pdb")
    u2 = mda.Universe(tmp_path / "ca.pdb", path)
    assert list(u2.atoms.resids) == list(ca.resids)
    np.testing.assert_array_equal(u2.trajectory[8].positions, u.trajectory[8].positions)
    with pytest.raises(ValueError, match="same number of atoms"):
        mda.Universe(PSF, path)  # all 3341 atoms of AdK against 214 in the file


def test_file_and_frames_need_no_mdanalysis(mdsr12, trained, tmp_path):
    """The format, its writer and the frame generator are core: they run where MDAnalysis is not installed."""
    path, ref = mdsr12
    run = trained[0]
    np.save(tmp_path / "want.npy", ref.positions)
    code = ("import sys; sys.modules['MDAnalysis'] = None\n"
            "import numpy as np, torch\n"
            "from mdsurrogate.simulation.mdsr import read_mdsr, write_mdsr\n"
            f"r = read_mdsr({str(path)!r}, stride=4)\n"
            f"want = np.load({str(tmp_path / 'want.npy')!r})\n"
            "assert all(np.array_equal(r.frame(k).positions, want[k]) for k in (11, 3, 7, 0))\n"
            f"w = write_mdsr({str(tmp_path / 'c.mdsr')!r}, {str(run)!r}, r.x0, r.v0, r.topology, r.atoms, 3, 0, 1)\n"
            "assert np.array_equal(read_mdsr(w).frame(2).positions, want[2])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})  # same kernels
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------------------------------- checkpoints
def test_changed_and_missing_checkpoint(trained, tmp_path):
    run, x0, v0, topo = trained
    ck = tmp_path / "ck" / "model.pt"
    ck.parent.mkdir()
    shutil.copy(run / "best.pt", ck)
    path = write_mdsr(tmp_path / "out" / "r.mdsr", ck, x0, v0, topo, peptide_atoms(), 5, 0, 1)
    assert np.isfinite(read_mdsr(path).frame(4).positions).all()

    # moved together with its checkpoint: found through the relative path
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "ck", moved / "ck")
    shutil.copytree(tmp_path / "out", moved / "out")
    data = load_checkpoint(ck)
    data["state_dict"] = {k: v + 0.01 for k, v in data["state_dict"].items()}
    save_checkpoint(ck, {k: v for k, v in data.items() if k not in ("format", "format_version")})  # retrained
    r = read_mdsr(moved / "out" / "r.mdsr")
    assert r.check_checkpoint() == moved / "out" / ".." / "ck" / "model.pt"
    with pytest.raises(MdsrError, match="has changed since r.mdsr was written"):
        read_mdsr(path)
    with pytest.raises(MdsrError, match="has changed"):
        mda.Universe(path)
    lazily = read_mdsr(path, load_model=False)  # the topology alone does not need the checkpoint
    assert lazily.frame(0).index == 0
    with pytest.raises(MdsrError, match="has changed"):
        lazily.frame(1)
    ck.unlink()
    with pytest.raises(MdsrError, match="missing"):
        read_mdsr(path)
    with pytest.raises(MdsrError, match="missing"):
        mda.Universe(path)


def test_blow_up_names_the_frame(tmp_path):
    """A model that runs away: the reader stops with the frame it cannot produce, where rollout() stops, and
    the frames before it stay readable."""
    from mdsurrogate.models.baselines import LinearDynamics

    spec = {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": ["dist2"]}
    ck = save_checkpoint(tmp_path / "runaway.pt", {
        "kind": "propagator", "model": {"name": "linear", "hparams": {"tau": 10.0}},
        "state_dict": LinearDynamics(tau=10.0).state_dict(), "features": spec, "dataset": {}})
    g = torch.Generator().manual_seed(1)
    x0, v0 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    topo = BatchTopology(sizes_to_ptr(torch.tensor([5])))
    res = rollout(Surrogate.load(ck, device="cpu"), InitialState(x0, v0, topo, None, 0.0, None, []), 30)
    assert res.stopped and "blew up" in res.stopped
    bad = res.steps_done + 1
    # by default the file is checked when written: it never promises frames the model cannot produce
    path = write_mdsr(tmp_path / "v.mdsr", ck, x0, v0, topo, peptide_atoms(), 30, 0, 1)
    r = read_mdsr(path)
    assert r.n_frames == bad and "blew up" in r.header["stopped"]
    assert len(mda.Universe(path).trajectory) == bad
    np.testing.assert_array_equal(r.frame(-1).positions, res.positions[bad - 1])
    # unchecked, the reader stops with the frame it cannot produce
    path = write_mdsr(tmp_path / "r.mdsr", ck, x0, v0, topo, peptide_atoms(), 30, 0, 1, verify=False)
    r = read_mdsr(path)
    with pytest.raises(MdsrError, match=f"frame {bad} of r.mdsr cannot be computed: the geometry blew up"):
        r.frame(20)
    np.testing.assert_array_equal(r.frame(bad - 1).positions, res.positions[bad - 1])
    u = mda.Universe(path)
    with pytest.raises(MdsrError, match=f"frame {bad} "):
        for _ in u.trajectory:
            pass
    assert u.trajectory[bad - 1].frame == bad - 1


# ---------------------------------------------------------------------------------------------- command line
def test_cli_rollout_writes_mdsr_that_mdanalysis_opens(tiny_nbody, trained, tmp_path):
    from typer.testing import CliRunner

    from mdsurrogate.cli import app

    run = trained[0]
    out = tmp_path / "r.mdsr"
    args = ["rollout", str(tiny_nbody), "--model", str(run), "--steps", "6", "--frame", "0", "--device", "cpu"]
    res = CliRunner().invoke(app, args + ["--out", str(out), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["frames"] == 7 and info["steps"] == 6
    res = CliRunner().invoke(app, args + ["--out", str(tmp_path / "r.xyz")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    u = mda.Universe(out)
    assert u.trajectory.n_frames == 7 and [ts.time for ts in u.trajectory] == [0, 1, 2, 3, 4, 5, 6]
    xyz = mda.Universe(tmp_path / "r.xyz")
    assert xyz.trajectory.n_frames == 7
    for a, b in zip(u.trajectory, xyz.trajectory, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)
    bad = CliRunner().invoke(app, args[:-2] + ["--out", str(tmp_path / "r.txt")])
    assert bad.exit_code == 2 and ".mdsr" in bad.output


# ---------------------------------------------------------------------------------------------- MDAnalysisTests
mdt_base = pytest.importorskip("MDAnalysisTests.coordinates.base")


class MdsrReference(mdt_base.BaseReference):
    """The MDAnalysisTests reference (5 atoms, 5 frames, t = 0 … 4 ps, dt = 1 ps, as its auxiliary test files
    assume) with the expected positions and velocities taken from a sequential rollout()."""

    def __init__(self, path, res):
        super().__init__()
        self.trajectory = self.topology = str(path)
        self.reader = MDSRReader
        self.ext = "mdsr"
        self.writer = None
        self.prec = 6
        self.dimensions = self.dimensions_second_frame = None
        self.volume = 0
        self._pos = res.positions.astype(np.float32)
        self._vel = res.velocities.astype(np.float32)
        self.first_frame = self.iter_ts(0)
        self.second_frame = self.iter_ts(1)
        self.last_frame = self.iter_ts(4)
        self.jump_to_frame = self.iter_ts(3)

    def iter_ts(self, i):
        from MDAnalysis.coordinates.timestep import Timestep

        ts = Timestep(self.n_atoms, velocities=True, dt=1.0)
        ts.positions = self._pos[i]
        ts.velocities = self._vel[i]
        ts.frame = i
        ts.time = float(i)
        ts.aux.lowf = np.array(self.aux_lowf_data[i])
        ts.aux.highf = np.array(self.aux_highf_data[i])
        return ts


@pytest.fixture(scope="module")
def mdsr_reference(trained):
    run, x0, v0, topo = trained
    path = write_mdsr(run.parent / "ref5.mdsr", run, x0, v0, topo, peptide_atoms(), 5, 0.0, 1.0)
    return MdsrReference(path, reference_rollout(run, x0, v0, topo, 4))


class TestMdsrReaderBases(mdt_base.MultiframeReaderTest):
    """MDAnalysisTests' MultiframeReaderTest (and BaseReaderTest through it) run on an MDSR reader."""

    @staticmethod
    @pytest.fixture()
    def ref(mdsr_reference):
        return mdsr_reference

    def test_get_writer_1(self):
        pytest.skip("MDSR has no writer: .mdsr files are written by `mdsurrogate rollout --out` / write_mdsr")

    def test_get_writer_2(self):
        pytest.skip("MDSR has no writer: .mdsr files are written by `mdsurrogate rollout --out` / write_mdsr")
