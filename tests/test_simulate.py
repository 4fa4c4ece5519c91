"""`mdsurrogate simulate`: short OpenMM runs of alanine dipeptide (a few ps each, seconds on 2 cores)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from .conftest import invoke, last_json

pytest.importorskip("openmm")

from mdsurrogate.teacher import SimulationSettings, resume, simulate  # noqa: E402
from mdsurrogate.teacher.outputs import PROGRESS, WORK_DIR  # noqa: E402
from mdsurrogate.teacher.settings import available_platforms  # noqa: E402

SHORT = {"ns": 0.012, "equilibration_ps": 1.0, "minimize_iterations": 200, "seed": 5}


def frames(out: Path):
    """(positions [F, N, 3] Å, times [F] ps, universe) of a simulate output directory, read by MDAnalysis."""
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(str(out / "topology.pdb"), str(out / "trajectory.dcd"))
        x = np.stack([u.atoms.positions.copy() for _ in u.trajectory])
        t = np.array([ts.time for ts in u.trajectory])
    return x, t, u


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One CLI run with --ingest and --json, shared by the read-back tests."""
    base = tmp_path_factory.mktemp("sim")
    out, ds = base / "ala2", base / "ala2_ds"
    r = invoke("simulate", "ala2", out, "--ns", "0.02", "--equilibration-ps", "1", "--seed", "3",
               "--ingest", ds, "--json")
    assert r.exit_code == 0, r.output
    return out, ds, last_json(r)


def test_outputs_read_back_by_mdanalysis(cli_run):
    out, _, summary = cli_run
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.chk", "simulate.json", "system.xml",
                                                      "topology.pdb", "trajectory.dcd"]
    x, t, u = frames(out)
    assert x.shape == (20, 22, 3)
    assert [r.resname for r in u.residues] == ["ACE", "ALA", "NME"]
    assert list(u.select_atoms("resname ALA").names) == ["N", "H", "CA", "HA", "CB", "HB1", "HB2", "HB3", "C", "O"]
    assert list(u.atoms.elements).count("H") == 12
    assert len(u.bonds) == 21  # every bond of the force field, as CONECT records
    assert np.allclose(t, np.arange(1, 21) * 1.0, atol=1e-5)  # frame k at (k + 1) · frame_ps, in ps
    assert u.trajectory.dt == pytest.approx(1.0, abs=1e-6)
    bonds = np.linalg.norm(x[:, u.bonds.indices[:, 0]] - x[:, u.bonds.indices[:, 1]], axis=-1)
    assert 0.9 < bonds.min() and bonds.max() < 1.7  # Å: a sane molecule in every frame
    assert summary["frames"] == 20 and summary["n_atoms"] == 22 and summary["ns"] == pytest.approx(0.02)
    assert summary["ns_per_day"] > 0 and summary["platform"] in available_platforms()


def test_json_record(cli_run):
    out, _, summary = cli_run
    rec = json.loads((out / "simulate.json").read_text())
    assert rec["format"] == "mdsurrogate-simulate" and rec["complete"] is True
    assert rec["settings"]["seed"] == 3 and rec["settings"]["timestep_fs"] == 4.0
    assert rec["settings"]["hydrogen_mass"] == 1.5 and rec["settings"]["constraints"] == "hbonds"
    assert rec["system"]["n_atoms"] == 22 and rec["system"]["residues"] == ["ACE", "ALA", "NME"]
    assert rec["system"]["n_constraints"] == 12 and rec["system"]["degrees_of_freedom"] == 66 - 12 - 3
    assert "GBSAOBCForce" in rec["system"]["forces"]
    assert rec["versions"]["openmm"] and rec["versions"]["mdsurrogate"]
    assert rec["platform"]["name"] == "Reference" or "CUDA" in available_platforms()  # 22 atoms: Reference on CPU
    e = rec["energies"]
    assert len(e["time_ps"]) == len(e["potential_kj_mol"]) == len(e["temperature_k"]) == 20
    assert e["time_ps"][0] == 1.0 and e["time_ps"][-1] == 20.0
    assert np.isfinite(e["potential_kj_mol"]).all()
    kin = np.array(e["kinetic_kj_mol"])
    assert np.allclose(np.array(e["temperature_k"]), 2 * kin / (51 * 0.00831446261815324), rtol=1e-3)
    assert 200 < rec["summary"]["temperature_mean_k"] < 400  # 300 K ± fluctuations of 51 degrees of freedom
    assert rec["minimisation"]["potential_after_kj_mol"] <= rec["minimisation"]["potential_before_kj_mol"]
    assert rec["throughput"]["ns_per_day"] > 0 and rec["throughput"]["production_ps"] == 20.0
    rama = rec["ramachandran"]
    assert rama["frames"] == 20 and sum(rama["populations"].values()) == pytest.approx(1.0)
    assert summary["ramachandran"]["populations"] == rama["populations"]


def test_ingest_reads_the_output(cli_run):
    from mdsurrogate.data.dataset import Dataset
    from mdsurrogate.data.ingest import ingest_md

    out, ds, summary = cli_run
    d = Dataset(ds)
    assert d.meta["md"]["n_atoms"] == 10  # heavy atoms of ACE-ALA-NME
    assert d.meta["frame_dt"] == pytest.approx(1.0, abs=1e-5)
    assert not d.meta["md"]["bonds_guessed"] and d.meta["md"]["n_bonds"] == 9
    assert summary["dataset"]["samples"]["train"] > 0
    # `ingest md` straight on the files, every atom
    path = ingest_md(out.parent / "all_atoms", out / "topology.pdb", [out / "trajectory.dcd"], select="all", delta=2)
    assert Dataset(path).meta["md"]["n_atoms"] == 22


def test_same_seed_same_trajectory_and_resume_is_exact(tmp_path):
    """Reference platform: same seed → bitwise the same trajectory; a run interrupted twice (Ctrl-C at a
    frame, then a crash after the last checkpoint) and resumed equals the uninterrupted run, frame for frame."""
    settings = {**SHORT, "platform": "Reference", "checkpoint_ps": 4.0}
    simulate("ala2", tmp_path / "a", SimulationSettings(**settings))
    simulate("ala2", tmp_path / "b", SimulationSettings(**settings))
    xa, ta, _ = frames(tmp_path / "a")
    xb, _, _ = frames(tmp_path / "b")
    assert xa.shape == (12, 22, 3) and np.array_equal(xa, xb)
    simulate("ala2", tmp_path / "other", SimulationSettings(**{**settings, "seed": 6}))
    assert not np.allclose(frames(tmp_path / "other")[0], xa)

    def stop_at(ps, exc):
        def progress(phase, done, total, rate):
            if phase == "produce" and done >= ps:
                raise exc
        return progress

    c = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C after frame 5: committed there
        simulate("ala2", c, SimulationSettings(**settings), progress=stop_at(5, KeyboardInterrupt))
    assert len(json.loads((c / WORK_DIR / PROGRESS).read_text())["energies"]["time_ps"]) == 5
    with pytest.raises(RuntimeError):  # a crash at frame 10: the last checkpoint is frame 8, the DCD has 10
        resume(c, progress=stop_at(10, RuntimeError("crash")))
    assert len(json.loads((c / WORK_DIR / PROGRESS).read_text())["energies"]["time_ps"]) == 8
    rec = resume(c)
    xc, tc, _ = frames(c)
    assert np.array_equal(xc, xa) and np.allclose(tc, ta)
    rec_a = json.loads((tmp_path / "a" / "simulate.json").read_text())
    assert rec["energies"]["potential_kj_mol"] == rec_a["energies"]["potential_kj_mol"]
    assert [s["end_frame"] for s in rec["throughput"]["segments"]] == [5, 8, 12]
    assert not (c / WORK_DIR).exists()
    # extend the finished run: the first 12 frames stay, 4 more follow
    resume(c, ns=0.016)
    xe, te, _ = frames(c)
    assert xe.shape[0] == 16 and np.array_equal(xe[:12], xa) and te[-1] == pytest.approx(16.0, abs=1e-4)


def test_cpu_platform_one_thread_is_reproducible(tmp_path):
    settings = {**SHORT, "ns": 0.004, "platform": "CPU", "threads": 1}
    simulate("ala2", tmp_path / "a", SimulationSettings(**settings))
    simulate("ala2", tmp_path / "b", SimulationSettings(**settings))
    xa, xb = frames(tmp_path / "a")[0], frames(tmp_path / "b")[0]
    assert xa.shape == (4, 22, 3) and np.array_equal(xa, xb)
    assert json.loads((tmp_path / "a" / "simulate.json").read_text())["platform"]["name"] == "CPU"


def test_pdb_input_gets_hydrogens(cli_run, tmp_path):
    """A PDB of the heavy atoms only: OpenMM adds the 12 hydrogens and the run goes through."""
    src = (cli_run[0] / "topology.pdb").read_text().splitlines()
    heavy = [ln for ln in src if ln.startswith(("ATOM", "HETATM")) and ln[76:78].strip() != "H"]
    pdb = tmp_path / "ala2_heavy.pdb"
    pdb.write_text("\n".join(heavy + ["END"]) + "\n")
    rec = simulate(pdb, tmp_path / "out", SimulationSettings(**{**SHORT, "ns": 0.002}))
    assert rec["system"]["n_atoms"] == 22
    assert any("added 12 hydrogens" in n for n in rec["system"]["notes"])


def test_amber_prmtop_input(tmp_path):
    """An Amber prmtop + inpcrd keeps its own force field (6-atom ACE of MDAnalysisTests, coordinates from its
    NetCDF trajectory written as an inpcrd)."""
    import MDAnalysis as mda
    from MDAnalysisTests.datafiles import PRMNCRST

    nc = Path(PRMNCRST).with_suffix(".nc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = mda.Universe(PRMNCRST, str(nc)).atoms.positions.astype(np.float64)
    flat = [f"{v:12.7f}" for v in x.ravel()]
    lines = ["ACE", f"{len(x):6d}"] + ["".join(flat[i:i + 6]) for i in range(0, len(flat), 6)]
    crd = tmp_path / "ace.inpcrd"
    crd.write_text("\n".join(lines) + "\n")
    top = tmp_path / "ace.parm7"
    shutil.copy(PRMNCRST, top)
    rec = simulate(top, tmp_path / "out", SimulationSettings(**{**SHORT, "ns": 0.002}), coordinates=crd)
    assert rec["system"]["n_atoms"] == 6 and rec["system"]["forcefield"] == "prmtop"
    assert rec["ramachandran"] is None  # no backbone
    assert rec["input"]["kind"] == "amber"


# ---------------------------------------------------------------------------------------------------- errors
def assert_clean_error(r, *words):
    assert r.exit_code == 2, r.output
    text = r.output.strip()
    assert "Traceback" not in text and text.startswith("error:") and len(text.splitlines()) <= 3
    for w in words:
        assert w in text, text


def test_error_unknown_system(tmp_path):
    assert_clean_error(invoke("simulate", "ala3", tmp_path / "o"), "unknown system", "ala2")


def test_error_missing_file(tmp_path):
    assert_clean_error(invoke("simulate", tmp_path / "nothere.pdb", tmp_path / "o"), "does not exist")


def test_error_pdb_with_unknown_residue(cli_run, tmp_path):
    text = (cli_run[0] / "topology.pdb").read_text().replace(" NME ", " XYZ ")
    pdb = tmp_path / "bad.pdb"
    pdb.write_text(text)
    assert_clean_error(invoke("simulate", pdb, tmp_path / "o"), "XYZ", "not standard")


def test_error_cuda_without_gpu(tmp_path):
    if "CUDA" in available_platforms():
        pytest.skip("this machine has OpenMM's CUDA platform")
    assert_clean_error(invoke("simulate", "ala2", tmp_path / "o", "--platform", "CUDA"), "CUDA", "not available")


def test_error_periodic_prmtop(tmp_path):
    from MDAnalysisTests.datafiles import PRMpbc

    crd = tmp_path / "x.inpcrd"
    crd.write_text("x\n")
    assert_clean_error(invoke("simulate", PRMpbc, tmp_path / "o", "--coordinates", crd), "solvated")


def test_error_existing_output_and_bad_resume(cli_run, tmp_path):
    out = cli_run[0]
    before = (out / "trajectory.dcd").read_bytes()
    assert_clean_error(invoke("simulate", "ala2", out), "--overwrite", "--resume")
    assert (out / "trajectory.dcd").read_bytes() == before
    assert_clean_error(invoke("simulate", "ala2", tmp_path / "empty", "--resume"), "nothing to resume")
    assert_clean_error(invoke("simulate", "ala2", out, "--resume", "--temperature", "310"), "--temperature")
    assert_clean_error(invoke("simulate", "ala2", out, "--resume"), "larger --ns")
    assert_clean_error(invoke("simulate", "ala2", tmp_path / "o", "--frame-ps", "0.003"), "--frame-ps")


def test_plot_ramachandran(cli_run, tmp_path):
    pytest.importorskip("matplotlib")
    out = cli_run[0]
    fig = tmp_path / "rama.png"
    r = invoke("plot", "ramachandran", out, "--out", fig, "--json")
    assert r.exit_code == 0, r.output
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = last_json(r)
    rec = json.loads((out / "simulate.json").read_text())
    assert res["populations"] == rec["ramachandran"]["populations"] and res["frames"] == 20
    assert_clean_error(invoke("plot", "ramachandran", tmp_path, "--out", fig), "not a `mdsurrogate simulate`")


def test_library_errors_name_parameters_and_the_cli_names_options(tmp_path):
    from mdsurrogate.errors import UserError
    from mdsurrogate.teacher.settings import SimulationSettings

    with pytest.raises(UserError, match="`frame_ps`") as caught:
        SimulationSettings(frame_ps=-1.0).validate()
    assert "--" not in str(caught.value)
    r = invoke("simulate", "ala2", tmp_path / "x", "--frame-ps", "-1")
    assert r.exit_code == 2 and "--frame-ps" in r.output and "`" not in r.output


def test_plot_ramachandran_of_a_multi_model_pdb_needs_its_frame_spacing(cli_run, tmp_path):
    """A rollout written as multi-MODEL PDB holds its own frames but states no time between them: --dt gives it."""
    pytest.importorskip("matplotlib")
    import MDAnalysis as mda

    out = cli_run[0]
    u = mda.Universe(str(out / "topology.pdb"), str(out / "trajectory.dcd"))
    heavy = u.select_atoms("not element H")
    pdb = tmp_path / "rollout.pdb"
    with mda.Writer(str(pdb), heavy.n_atoms, multiframe=True) as w:
        for _ in u.trajectory:
            w.write(heavy)
    fig = tmp_path / "rama.png"
    assert_clean_error(invoke("plot", "ramachandran", pdb, "--out", fig), "pass --dt")
    r = invoke("plot", "ramachandran", pdb, "--dt", "1", "--out", fig, "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "simulate.json").read_text())
    assert last_json(r)["frames"] == 20 and last_json(r)["populations"] == rec["ramachandran"]["populations"]
