"""Protein MD through MDAnalysis: ingestion of the AdK files of MDAnalysisTests (CHARMM PSF + DCD and GROMACS
TPR + XTC/TRR), the leakage-free chronological split, rollout from a trajectory into PDB / XYZ / DCD that
MDAnalysis reads back, and one clear sentence for every bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("MDAnalysisTests")
import MDAnalysis as mda  # noqa: E402
from MDAnalysisTests.datafiles import DCD, DCD2, GRO, PSF, TPR, XTC  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from mdsurrogate.cli import app  # noqa: E402
from mdsurrogate.config import recipe_from_dict  # noqa: E402
from mdsurrogate.data.dataset import Dataset  # noqa: E402
from mdsurrogate.data.featurize import Featurizer  # noqa: E402
from mdsurrogate.data.ingest import ingest_md  # noqa: E402
from mdsurrogate.data.ingest.md import chronological_samples  # noqa: E402
from mdsurrogate.data.neighbors import radius_graph  # noqa: E402
from mdsurrogate.training.trainer import Trainer  # noqa: E402

from .mdfiles import smooth_trr  # noqa: E402

warnings.filterwarnings("ignore", module="MDAnalysis")
runner = CliRunner()


def universe(*files):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(*map(str, files))


@pytest.fixture(scope="module")
def adk_ca(tmp_path_factory):
    """Cα of AdK: adk_dims.dcd split 0.8/0.2 into train/val, adk_dims2.dcd held out as test (the demo's data)."""
    path = tmp_path_factory.mktemp("md") / "adk_ca"
    ingest_md(path, PSF, [DCD], test_trajs=[DCD2], select="name CA", delta=5, cutoff=10.0, ratios=(0.8, 0.2, 0.0))
    return path


@pytest.fixture(scope="module")
def adk_model(adk_ca, tmp_path_factory):
    run = tmp_path_factory.mktemp("md_run") / "eghn"
    recipe = recipe_from_dict({"data": {"path": str(adk_ca)},
                               "model": {"name": "eghn", "hidden": 8, "n_clusters": 4, "layers": 1, "pool_layers": 1},
                               "train": {"epochs": 2, "batch_size": 16, "eval_every": 1, "velocity_weight": 0.1}})
    Trainer(recipe, run, device="cpu").run()
    return run


def test_psf_dcd_dataset(adk_ca):
    ds = Dataset(adk_ca)
    md = ds.meta["md"]
    assert md["n_atoms"] == 214 and md["velocities"] == "difference" and not md["bonds_guessed"]
    assert md["n_bonds"] == 213  # virtual Cα(i)–Cα(i+1) bonds through C(i) and N(i+1) of the PSF's bond graph
    assert ds.meta["n_samples"] == {"train": 72, "val": 14, "test": 96}
    assert ds.frame_dt == pytest.approx(1.0, rel=1e-5) and ds.delta_frames == 5
    # the held-out trajectory is test only, the other one never is
    codes = ds.split_codes
    assert set(codes[ds.samples[:, 0] == 1]) == {2} and 2 not in set(codes[ds.samples[:, 0] == 0])
    # velocities are the backward difference in Å per frame
    x, v = ds.frame(0, 10)
    x_prev, _ = ds.frame(0, 9)
    np.testing.assert_allclose(v, x - x_prev, atol=1e-5)
    u = universe(PSF, DCD)
    ca = u.select_atoms("name CA")
    u.trajectory[10]
    np.testing.assert_allclose(x, ca.positions, atol=1e-5)


def test_bonds_from_the_topology_and_guessed(tmp_path):
    path = ingest_md(tmp_path / "bb", PSF, [DCD], select="backbone", delta=5)
    md = Dataset(path).meta["md"]
    assert md["n_atoms"] == 855 and not md["bonds_guessed"]
    assert md["n_bonds"] == 855 - 1  # N–CA, CA–C, C=O per residue and the peptide bonds, the C-terminus OT1/OT2 aside
    notes = []
    path = ingest_md(tmp_path / "gro", GRO, [XTC], select="backbone", delta=1, ratios=(0.4, 0.3, 0.3),
                     warn=notes.append)
    md = Dataset(path).meta["md"]
    assert md["bonds_guessed"] and "guessed" in notes[0]
    assert 0.9 * 855 < md["n_bonds"] < 1.1 * 855


def test_tpr_xtc_works_like_psf_dcd(tmp_path):
    path = ingest_md(tmp_path / "tpr", TPR, [XTC], select="backbone", delta=1, ratios=(0.4, 0.3, 0.3))
    ds = Dataset(path)
    assert ds.meta["md"]["n_atoms"] == 855 and not ds.meta["md"]["bonds_guessed"]
    assert ds.frame_dt == pytest.approx(100.0, rel=1e-4)
    assert ds.meta["n_samples"] == {"train": 2, "val": 1, "test": 1}
    charges = ds.node_property("charge", 0)
    assert np.abs(charges).max() > 0.1  # OPLS-AA partial charges from the TPR
    x0, v0, x1, _, topo = ds.gather(ds.split_indices("train"))
    g = Featurizer(ds.features)(x0, v0, topo)
    assert g.h.shape == (2 * 855, 2 + 7) and torch.isfinite(g.h).all()
    assert g.local_edge_index.shape[1] == 2 * ds.meta["md"]["n_bonds"] * 2  # both directions, two graphs


def test_trajectory_velocities_are_converted_to_angstrom_per_frame(tmp_path):
    gro, trr = smooth_trr(tmp_path)  # velocities that describe the motion over a frame (AdK's TRR's do not)
    path = ingest_md(tmp_path / "trr", gro, [trr], select="name CA", delta=1, ratios=(0.4, 0.3, 0.3))
    ds = Dataset(path)
    assert ds.meta["md"]["velocities"] == "trajectory"
    u = universe(gro, trr)
    ca = u.select_atoms("name CA")
    u.trajectory[3]
    np.testing.assert_allclose(ds.frame(0, 3)[1], ca.velocities * u.trajectory.dt, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,delta,ratios", [(98, 5, (0.6, 0.2, 0.2)), (4187, 15, (0.6, 0.2, 0.2)),
                                            (40, 3, (0.5, 0.25, 0.25))])
def test_chronological_split_never_crosses_a_boundary(n, delta, ratios):
    starts, codes = chronological_samples(n, delta, ratios)
    bounds = np.floor(np.cumsum([0.0, *ratios]) * n).astype(int)
    bounds[-1] = n
    for c in range(3):
        s = starts[codes == c]
        assert len(s) > 0
        assert (s - 1 >= bounds[c]).all() and (s + delta < bounds[c + 1]).all()
    assert (np.diff(codes) >= 0).all()


def test_neighbour_search_equals_brute_force_on_protein_coordinates():
    x = torch.from_numpy(universe(PSF, DCD).atoms.positions.astype(np.float64))
    for cutoff in (4.0, 8.0, 10.0):
        got = radius_graph(x, cutoff, torch.zeros(len(x), dtype=torch.long))
        d = torch.cdist(x, x)
        i, j = torch.nonzero((d < cutoff) & ~torch.eye(len(x), dtype=torch.bool), as_tuple=True)
        want = torch.stack([i, j])
        key = lambda e: set(map(tuple, e.T.tolist()))  # noqa: E731
        assert key(got) == key(want)


@pytest.mark.parametrize("ext", [".pdb", ".xyz", ".dcd"])
def test_rollout_from_a_dcd_round_trips_through_mdanalysis(adk_model, tmp_path, ext):
    out = tmp_path / f"roll{ext}"
    res = runner.invoke(app, ["rollout", DCD2, "--top", PSF, "--model", str(adk_model), "--steps", "4", "--out",
                              str(out), "--json", "--device", "cpu", "--no-guard"])  # an untrained model: files only
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["steps"] == 4
    ref = universe(PSF, DCD2).select_atoms("name CA")
    if ext == ".dcd":  # a DCD of the selection pairs with a topology of the same atoms
        ref.write(tmp_path / "ca.pdb")
        u = universe(tmp_path / "ca.pdb", out)
    else:
        u = universe(out)
    atoms = u.atoms
    assert len(u.trajectory) == 5 and len(atoms) == 214
    if ext != ".xyz":
        assert list(atoms.names) == list(ref.names) and list(atoms.resnames) == list(ref.resnames)
        assert list(atoms.resids) == list(ref.resids)
    else:
        assert list(atoms.names) == ["C"] * 214 or list(atoms.names) == list(ref.names)
    # frame 0 is the last frame of the trajectory
    ref.universe.trajectory[-1]
    u.trajectory[0]
    np.testing.assert_allclose(atoms.positions, ref.positions, atol=1e-3)
    if ext == ".dcd":  # DCD keeps the time stamps: start at the last frame's time, Δ = 5 frames apart
        times = [ts.time for ts in u.trajectory]
        np.testing.assert_allclose(np.diff(times), 5 * ref.universe.trajectory.dt, rtol=1e-4)
        assert times[0] == pytest.approx(ref.universe.trajectory[-1].time, rel=1e-4)


def test_rollout_to_mdsr_from_a_trajectory(adk_model, tmp_path):
    import mdsurrogate.mda  # noqa: F401  (registers the MDSR reader)

    out = tmp_path / "run.mdsr"
    res = runner.invoke(app, ["rollout", DCD2, "--top", PSF, "--model", str(adk_model), "--steps", "3", "--out",
                              str(out), "--device", "cpu", "--no-guard"])
    assert res.exit_code == 0, res.output
    u = universe(out)
    assert len(u.trajectory) == 4 and list(u.atoms.names[:2]) == ["CA", "CA"]
    xyz = tmp_path / "same.xyz"
    assert runner.invoke(app, ["rollout", DCD2, "--top", PSF, "--model", str(adk_model), "--steps", "3", "--out",
                               str(xyz), "--device", "cpu", "--no-guard"]).exit_code == 0
    np.testing.assert_allclose(u.trajectory[3].positions, universe(xyz).trajectory[3].positions, atol=1e-3)


def _fails(args, *phrases):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "Traceback" not in text and "error:" in text
    for p in phrases:
        assert p in text, text
    return text


def test_bad_md_input_gets_one_sentence(tmp_path, adk_model):
    out = str(tmp_path / "x")
    _fails(["ingest", "md", out, "--top", PSF, "--traj", XTC], "does not match")  # 3341 atoms vs 47681
    _fails(["ingest", "md", out, "--top", PSF, "--traj", DCD, "--select", "resname XYZ"], "matches no atoms")
    _fails(["ingest", "md", out, "--top", PSF, "--traj", DCD, "--select", "name CA and ("], "invalid atom selection")
    _fails(["ingest", "md", out, "--top", TPR, "--traj", XTC, "--delta", "50"], "frames, too few")
    junk = tmp_path / "junk.dcd"
    junk.write_bytes(b"not a dcd at all" * 10)
    _fails(["ingest", "md", out, "--top", PSF, "--traj", str(junk)], "cannot read")
    _fails(["ingest", "md", out, "--top", PSF, "--traj", str(tmp_path / "missing.dcd")], "does not exist")
    _fails(["ingest", "md", out, "--top", PSF, "--traj", DCD, "--split", "0.5,0.5"], "--split")
    roll = ["rollout", DCD2, "--top", PSF, "--model", str(adk_model), "--out", str(tmp_path / "r.pdb")]
    _fails(roll + ["--select", "backbone"], "trained on the selection 'name CA'")
    _fails(["rollout", XTC, "--top", TPR, "--model", str(adk_model), "--out", str(tmp_path / "r.pdb")],
           "not the 214 atoms")
    _fails(roll + ["--frame", "0"], "cannot start at frame 0")
    _fails(roll + ["--frame", "500"], "out of range")


def test_ingest_adk_without_mdanalysisdata_says_what_to_do(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "MDAnalysisData", None)  # not installed (or offline: same advice)
    text = _fails(["ingest", "adk", str(tmp_path / "adk")], "mdsurrogate[adk]", "ingest md")
    assert not (tmp_path / "adk").exists() and len(text) < 600


def test_ingest_adk_embedded(tmp_path):
    res = runner.invoke(app, ["ingest", "adk", str(tmp_path / "e"), "--source", "embedded", "--select", "name CA",
                              "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    # the training span of adk_dims.dcd forwards and backwards (72 + 72), validation and test forwards only
    assert info["samples"] == {"train": 144, "val": 14, "test": 96} and info["delta_frames"] == 5
    res = runner.invoke(app, ["ingest", "adk", str(tmp_path / "f"), "--source", "embedded", "--select", "name CA",
                              "--no-time-reversal", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["samples"] == {"train": 72, "val": 14, "test": 96}


@pytest.mark.parametrize("velocities", ["difference", "lag"])
def test_time_reversal_adds_the_training_span_backwards(adk_ca, tmp_path, velocities):
    """--time-reversal: each training span is appended played backwards, velocities by the same rule in reversed
    time, as training samples only; validation and test samples and the forward trajectories are unchanged."""
    kw = dict(test_trajs=[DCD2], select="name CA", delta=5, cutoff=10.0, ratios=(0.8, 0.2, 0.0),
              velocities=velocities)
    fwd = Dataset(ingest_md(tmp_path / "fwd", PSF, [DCD], **kw))
    both = Dataset(ingest_md(tmp_path / "rev", PSF, [DCD], time_reversal=True, **kw))
    assert both.meta["md"]["time_reversal"] and not fwd.meta["md"]["time_reversal"]
    assert both.n_trajectories == fwd.n_trajectories + 1
    for split in ("val", "test"):
        np.testing.assert_array_equal(both.samples[both.split_indices(split)], fwd.samples[fwd.split_indices(split)])
    for t in range(fwd.n_trajectories):
        np.testing.assert_array_equal(both.frame(t, 7)[0], fwd.frame(t, 7)[0])
    rev = fwd.n_trajectories
    span = int(np.floor(0.8 * fwd.traj_frames[0]))                      # frames 0 … 77 of adk_dims.dcd (98)
    assert both.traj_frames[rev] == span
    x = np.stack([fwd.frame(0, f)[0] for f in range(span)])[::-1]       # the span, backwards
    np.testing.assert_array_equal(np.stack([both.frame(rev, f)[0] for f in range(span)]), x)
    v = np.stack([both.frame(rev, f)[1] for f in range(span)])
    lag = 5 if velocities == "lag" else 1
    np.testing.assert_allclose(v[lag:], (x[lag:] - x[:-lag]) / lag, atol=1e-5)
    new = both.samples[both.split_indices("train")]
    new = new[new[:, 0] == rev]
    assert len(new) == span - 5 - lag and (new[:, 2] - new[:, 1] == 5).all() and new[:, 1].min() == lag
