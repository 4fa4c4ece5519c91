"""Real MD files in, nothing silently wrong out (issue 15).

The GROMACS (TPR + XTC, rhombic dodecahedron), CHARMM triclinic (PSF + DCD), Amber NetCDF (PRMTOP + NCDF, frames
without times) and LAMMPS (data + DCD, no atom names) trajectories of MDAnalysisTests ingest, train for an epoch
and roll out to every output format, which MDAnalysis reads back with the right atoms, residues, times and frame
count; a wrapped trajectory gives the same dataset as its unwrapped version; velocities must describe the motion
over a frame; frame spacing is never 0 or silently 1 ps.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

pytest.importorskip("MDAnalysisTests")
from MDAnalysisTests import datafiles as mdt  # noqa: E402

import mdsurrogate.mda  # noqa: E402,F401 - registers the .mdsr format with MDAnalysis
from mdsurrogate.config import recipe_from_dict  # noqa: E402
from mdsurrogate.data.atoms import guess_element  # noqa: E402
from mdsurrogate.data.dataset import Dataset  # noqa: E402
from mdsurrogate.data.ingest import ingest_md  # noqa: E402
from mdsurrogate.data.sources.md import MDInputError, frame_state, velocity_mismatch  # noqa: E402
from mdsurrogate.io.writers import supported_extensions, writer_class  # noqa: E402
from mdsurrogate.simulation import initial_state  # noqa: E402
from mdsurrogate.simulation.mdsr import read_mdsr, write_rollout_spec  # noqa: E402
from mdsurrogate.simulation.rollout import rollout_to_file  # noqa: E402
from mdsurrogate.simulation.surrogate import Surrogate  # noqa: E402
from mdsurrogate.training.trainer import Trainer  # noqa: E402

from .conftest import invoke, last_json  # noqa: E402
from .mdfiles import read_all, smooth_trr, universe, wrap_into_box, write_trajectory  # noqa: E402

warnings.filterwarnings("ignore", module="MDAnalysis")
LAMMPS_SELECT = "index 0:599 and prop mass > 1.5"  # 301 heavy atoms of the IFABP protein (no names in the file)


def _lammps_dcd(folder):
    """A 12-frame LAMMPS DCD of the IFABP system: the 5 frames of MDAnalysisTests' ``ifabp_apo_100mM.dcd`` played
    forward, back and forward again (a trajectory long enough for three chronological splits, same frame spacing
    and units as the original)."""
    u = universe(mdt.LAMMPSdata2, mdt.LAMMPSdcd2, format="LAMMPS")
    x, dims, _ = read_all(u)
    order = [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3]
    return write_trajectory(folder / "ifabp12.dcd", u, x[order], dimensions=dims[order], dt=u.trajectory.dt,
                            format="LAMMPS")


#: name → (topology, trajectory to ingest or a callable making it, selection, ingest keywords, rollout source,
#: rollout flags)
SYSTEMS = {
    "gromacs": (mdt.TPR, mdt.XTC, "name CA", {"ratios": (0.4, 0.3, 0.3), "cutoff": 8.0}, mdt.XTC, []),
    "charmm_triclinic": (mdt.PSF_TRICLINIC, mdt.DCD_TRICLINIC, "all", {"ratios": (0.4, 0.3, 0.3), "cutoff": 5.0},
                         mdt.DCD_TRICLINIC, []),
    "amber_netcdf": (mdt.PRMncdf, mdt.NCDF, "not resname WAT", {"dt": 2.0, "cutoff": 6.0}, mdt.NCDF,
                     ["--dt", "2"]),
    "lammps": (mdt.LAMMPSdata2, _lammps_dcd, LAMMPS_SELECT, {"ratios": (0.4, 0.3, 0.3), "cutoff": 5.0},
               mdt.LAMMPSdcd2, []),
}


@pytest.fixture(scope="module", params=list(SYSTEMS))
def trained(request, tmp_path_factory):
    """(system name, dataset, run directory): ingested with Δ = 1 frame and trained for one epoch (tiny EGNN)."""
    name = request.param
    top, traj, select, kwargs, _, _ = SYSTEMS[name]
    folder = tmp_path_factory.mktemp(name)
    traj = traj(folder) if callable(traj) else traj
    ds = Dataset(ingest_md(folder / "data", top, [traj], select=select, delta=1, **kwargs))
    recipe = recipe_from_dict({"data": {"path": str(ds.path)}, "model": {"name": "egnn", "hidden": 8, "layers": 1},
                               "train": {"epochs": 1, "batch_size": 2, "eval_every": 1, "velocity_weight": 0.1}})
    Trainer(recipe, folder / "run", device="cpu").run()
    return name, ds, folder / "run"


def _reference_atoms(top, select):
    """(names, residue names or None, residue ids, elements) of the selection as the topology has them."""
    u = universe(top)
    ag = u.select_atoms(select)
    names = ag.names if hasattr(u.atoms, "names") else ag.types
    resnames = ag.resnames if hasattr(u.atoms, "resnames") else None
    elements = [guess_element(str(n), float(m)) for n, m in zip(names, ag.masses, strict=True)]
    return list(map(str, names)), None if resnames is None else list(map(str, resnames)), list(ag.resids), elements


def _times_in_text(path) -> list[float]:
    """Frame times written into a PDB (REMARK … TIME_PS t) or an extended XYZ (time=t)."""
    text = path.read_text()
    return [float(t) for t in re.findall(r"(?:TIME_PS |time=)([-0-9.e+]+)", text)]


def test_ingest_train_and_roll_out_to_every_format(trained, tmp_path):
    name, ds, run = trained
    top, _, select, _, source, flags = SYSTEMS[name]
    md = ds.meta["md"]
    assert ds.frame_dt > 0 and np.isfinite(ds.meta["features"]["scales"]["speed"])
    assert md["periodic"]["box"] is True  # all four files have a periodic box (bala.ncdf: 32 × 36 × 36 Å)
    names, resnames, resids, elements = _reference_atoms(top, select)
    n_atoms = len(names)
    extensions = [*supported_extensions(), "mdsr"]
    assert {"pdb", "xyz", "dcd", "xtc", "trr", "ncdf"} <= set(extensions)
    # the CLI, as a user would (PDB) …
    out = tmp_path / "roll.pdb"
    res = invoke("rollout", source, "--top", top, "--model", run, "--steps", 2, "--out", out, "--json", *flags)
    assert res.exit_code in (0, 3), res.output  # 3: the stability guard stopped an (untrained) model early
    info = last_json(res)
    outputs = {"pdb": (out, info["steps"] + 1, info)}
    # … and every other format through what the CLI calls (rollout_to_file, write_rollout_spec), from one start
    sur = Surrogate.load(run, device="cpu")
    dt = float(flags[1]) if flags else None
    start = initial_state.from_trajectory(source, sur, top=top, frame=-1, dt=dt)
    assert start.t0 == pytest.approx(info["times"][0])
    for ext in sorted(set(extensions) - set(outputs)):
        out = tmp_path / f"roll.{ext}"
        if ext == "mdsr":
            write_rollout_spec(out, run, start.x0, start.v0, start.topo, start.atoms, 2, t0_ps=start.t0,
                               dt_ps=sur.delta_time, seed=0)
            outputs[ext] = (out, read_mdsr(out, load_model=False).header["n_frames"], None)
        else:
            outputs[ext] = (out, rollout_to_file(sur, start, 2, out, seed=0).steps_done + 1, None)
    pdb, n_frames, info = outputs["pdb"]
    dt_step = ds.delta_frames * ds.frame_dt
    t0 = info["times"][0]
    expected_times = t0 + dt_step * np.arange(n_frames)
    for ext, (out, frames, _) in outputs.items():
        cls = None if ext == "mdsr" else writer_class(out)
        if ext in ("pdb", "ent", "mdsr"):
            u = universe(out)
        elif ext in ("xyz", "extxyz"):
            u = universe(out, format="XYZ")
        else:
            u = universe(pdb, out)  # coordinates only: the rollout's PDB is their topology
        assert len(u.atoms) == n_atoms and len(u.trajectory) == frames == n_frames, ext
        if ext in ("xyz", "extxyz"):
            assert list(u.atoms.names) == elements, ext  # XYZ holds element symbols
        else:
            assert list(u.atoms.names) == names and list(u.atoms.resids) == resids, ext
            if resnames is not None:
                assert list(u.atoms.resnames) == resnames, ext
        if ext in ("pdb", "ent", "xyz", "extxyz"):  # MDAnalysis does not read times from these: our text does
            np.testing.assert_allclose(_times_in_text(out), expected_times, rtol=1e-6, atol=1e-6, err_msg=ext)
        elif cls is None or cls.times:
            times = [ts.time for ts in u.trajectory]
            np.testing.assert_allclose(times, expected_times, rtol=1e-5, atol=1e-3, err_msg=ext)
        # the first frame is the start state: molecules whole, whatever the box did to the file
        x0 = u.trajectory[0].positions.astype(np.float64)
        local, _ = ds.edge_set("local", 0)
        lengths = np.linalg.norm(x0[local[:, 0]] - x0[local[:, 1]], axis=1)
        assert lengths.max() < 4.0, (ext, lengths.max())


# -------------------------------------------------------------------------------------------- periodic boxes
def _unwrapped(top, traj):
    """(positions [F, N, 3] continuous in time, dimensions [F, 6]) of a wrapped trajectory, in the orientation
    MDAnalysis' lengths and angles imply (a along x), unwrapped independently of mdsurrogate: MDAnalysis' NoJump for
    GROMACS; for the CHARMM DCD (whose box is CHARMM's symmetric shape matrix and whose molecules are saved whole)
    rounding in reduced coordinates of that matrix, then each frame expressed in the a-along-x orientation."""
    from MDAnalysis import transformations
    from MDAnalysis.lib.mdamath import triclinic_vectors

    u = universe(top, traj)
    if traj != mdt.DCD_TRICLINIC:
        u.trajectory.add_transformations(transformations.NoJump())
        x, dims, _ = read_all(u)
        return x, dims
    x, dims, _ = read_all(u)
    out, prev = [], None
    for xk, dk in zip(x.astype(np.float64), dims, strict=True):
        b = triclinic_vectors(dk).astype(np.float64)
        w, v = np.linalg.eigh(b @ b.T)
        f = xk @ np.linalg.inv((v * np.sqrt(w)) @ v.T)  # reduced coordinates in CHARMM's symmetric box
        if prev is not None:
            f -= np.round(f - prev)
        prev = f
        out.append(f @ b)
    return np.array(out), dims


def _wrapped_vs_unwrapped(tmp_path, top, traj, select, **kwargs):
    """Ingest an unwrapped version of a wrapped trajectory and a copy of it wrapped by hand (every atom into the
    box), both as TRR (lossless float32, a along x): two datasets."""
    ref = universe(top, traj)
    raw, _, _ = read_all(ref)
    unwrapped, dims = _unwrapped(top, traj)
    sel = ref.select_atoms(select).indices
    assert np.abs(np.diff(raw[:, sel], axis=0)).max() > 0.4 * dims[0, :3].min()  # the file has jumps
    bb = ref.select_atoms("backbone or name OH2").indices
    assert np.abs(np.diff(unwrapped[:, bb], axis=0)).max() < 0.2 * dims[0, :3].min()  # its unwrapped version not
    files = {"unwrapped": write_trajectory(tmp_path / "unwrapped.trr", ref, unwrapped, dimensions=dims, dt=1.0),
             "rewrapped": write_trajectory(tmp_path / "rewrapped.trr", ref, wrap_into_box(unwrapped, dims),
                                           dimensions=dims, dt=1.0)}
    return {k: Dataset(ingest_md(tmp_path / k, top, [f], select=select, delta=1, ratios=(0.4, 0.3, 0.3), **kwargs))
            for k, f in files.items()}


@pytest.mark.parametrize("system", ["gromacs", "charmm_triclinic"])
def test_a_wrapped_trajectory_gives_the_same_dataset_as_its_unwrapped_version(system, tmp_path):
    top, traj, select = {"gromacs": (mdt.TPR, mdt.XTC, "backbone or (resname SOL and index 40000:40999)"),
                         "charmm_triclinic": (mdt.PSF_TRICLINIC, mdt.DCD_TRICLINIC, "all")}[system]
    ds = _wrapped_vs_unwrapped(tmp_path, top, traj, select)
    a, b = ds["unwrapped"], ds["rewrapped"]
    for key in ("positions", "velocities"):
        np.testing.assert_allclose(a._arrays[key], b._arrays[key], rtol=0, atol=1e-4)  # float32 of ~100 Å
    np.testing.assert_array_equal(a._arrays["edges.local"], b._arrays["edges.local"])
    np.testing.assert_allclose(a._arrays["edges.local.length0"], b._arrays["edges.local.length0"], atol=1e-4)
    assert a.meta["md"]["periodic"]["box"] and a.meta["md"]["periodic"]["first_box"]


@pytest.mark.parametrize("system", ["gromacs", "charmm_triclinic"])
def test_the_file_as_saved_becomes_whole_molecules_without_jumps(system, tmp_path):
    """The files as their engines saved them (wrapped, jumps of a box length): what the model learns is motion,
    with whole molecules; for GROMACS (a along x) the dataset equals that of MDAnalysis' unwrapped version."""
    top, traj, select = {"gromacs": (mdt.TPR, mdt.XTC, "backbone or (resname SOL and index 40000:40999)"),
                         "charmm_triclinic": (mdt.PSF_TRICLINIC, mdt.DCD_TRICLINIC, "all")}[system]
    ds = Dataset(ingest_md(tmp_path / "orig", top, [traj], select=select, delta=1, ratios=(0.4, 0.3, 0.3)))
    periodic = ds.meta["md"]["periodic"]
    assert periodic["box"] and ("symmetric" in periodic["box_vectors"]) == (system == "charmm_triclinic")
    n = ds.traj_nodes[0]
    x = np.asarray(ds._arrays["positions"]).reshape(-1, n, 3)
    local, _ = ds.edge_set("local", 0)
    assert np.linalg.norm(x[:, local[:, 0]] - x[:, local[:, 1]], axis=-1).max() < 3.0
    step = np.linalg.norm(np.diff(x, axis=0), axis=-1).max()
    assert step < (10.0 if system == "charmm_triclinic" else 0.5 * 80.0), step  # tip3p: 1 ps frames
    if system == "gromacs":
        u = universe(top, traj)
        ref, dims = _unwrapped(top, traj)
        same = write_trajectory(tmp_path / "nojump.trr", u, ref, dimensions=dims, dt=100.0)
        other = Dataset(ingest_md(tmp_path / "nojump", top, [same], select=select, delta=1, ratios=(0.4, 0.3, 0.3)))
        np.testing.assert_allclose(other._arrays["positions"], ds._arrays["positions"], atol=1e-4)


def test_rollout_start_is_what_ingest_stored(tmp_path):
    """frame_state of a periodic trajectory whose box changes every frame (CHARMM, NPT): the dataset's state."""
    ds = Dataset(ingest_md(tmp_path / "tip", mdt.PSF_TRICLINIC, [mdt.DCD_TRICLINIC], select="all", delta=1,
                           ratios=(0.4, 0.3, 0.3)))
    u = universe(mdt.PSF_TRICLINIC, mdt.DCD_TRICLINIC)
    for f in (9, 1, 5):  # an earlier frame restarts the reading from the first
        st = frame_state(u, u.atoms, f, velocities="difference", frame_dt=ds.frame_dt)
        x, v = ds.frame(0, f)
        np.testing.assert_array_equal(st.positions, x)
        np.testing.assert_array_equal(st.velocities, v)


# ------------------------------------------------------------------------------------------------ velocities
def test_thermal_velocities_of_coarse_frames_are_not_taken(tmp_path):
    """GRO + TRR of AdK, frames 100 ps apart: ×100 ps its velocities are ~580 Å per frame while the atoms move
    ~2 Å; auto takes the difference (and says why), velocities='trajectory' is refused."""
    notes = []
    ds = Dataset(ingest_md(tmp_path / "auto", mdt.GRO, [mdt.TRR], select="name CA", delta=1, ratios=(0.4, 0.3, 0.3),
                           warn=notes.append))
    assert ds.meta["md"]["velocities"] == "difference"
    assert any("do not describe its motion over a frame" in n for n in notes), notes
    v_rms = float(np.sqrt((np.asarray(ds._arrays["velocities"]) ** 2).sum(-1).mean()))
    assert v_rms < 10  # Å per frame, not hundreds
    with pytest.raises(MDInputError, match="do not describe its motion.*velocities='difference'"):
        ingest_md(tmp_path / "traj", mdt.GRO, [mdt.TRR], select="name CA", delta=1, velocities="trajectory",
                  ratios=(0.4, 0.3, 0.3))


def test_velocities_that_describe_the_motion_are_kept(tmp_path):
    gro, trr = smooth_trr(tmp_path)
    ds = Dataset(ingest_md(tmp_path / "ds", gro, [trr], select="all", delta=1, ratios=(0.4, 0.3, 0.3)))
    assert ds.meta["md"]["velocities"] == "trajectory" and ds.frame_dt == pytest.approx(0.002, rel=1e-4)
    u = universe(gro, trr)
    x, _, v = read_all(u, velocities=True)
    mismatch, _, _ = velocity_mismatch(x, v, 0.002)
    assert mismatch < 0.01
    np.testing.assert_allclose(ds.frame(0, 3)[1], v[3] * ds.frame_dt, rtol=1e-4, atol=1e-6)
    st = frame_state(u, u.atoms, 3, velocities="trajectory", frame_dt=ds.frame_dt)
    np.testing.assert_array_equal(st.velocities, ds.frame(0, 3)[1])


def test_lag_velocities_still_work(tmp_path):
    ds = Dataset(ingest_md(tmp_path / "lag", mdt.PSF_TRICLINIC, [mdt.DCD_TRICLINIC], select="all", delta=2,
                           velocities="lag", ratios=(0.5, 0.5, 0.0), test_trajs=[mdt.DCD_TRICLINIC]))
    assert ds.meta["md"]["velocities"] == "lag"
    x5, v5 = ds.frame(0, 5)
    x3, _ = ds.frame(0, 3)
    np.testing.assert_allclose(v5, (x5 - x3) / 2, atol=1e-5)
    u = universe(mdt.PSF_TRICLINIC, mdt.DCD_TRICLINIC)
    st = frame_state(u, u.atoms, 5, velocities="lag", frame_dt=ds.frame_dt, lag=2)
    np.testing.assert_allclose(st.velocities, v5, atol=1e-4)


def test_a_recipe_built_for_lag_velocities_refuses_other_data(tmp_path):
    from mdsurrogate.errors import RecipeError, UserError

    ds = Dataset(ingest_md(tmp_path / "diff", mdt.PSF_TRICLINIC, [mdt.DCD_TRICLINIC], select="all", delta=2,
                           ratios=(0.5, 0.5, 0.0), test_trajs=[mdt.DCD_TRICLINIC]))
    assert ds.meta["md"]["velocities"] == "difference"
    raw = {"name": "lagged", "data": {"path": str(ds.path), "velocities": "lag"},
           "model": {"name": "egnn", "hidden": 8, "layers": 1}, "train": {"epochs": 1, "batch_size": 2}}
    with pytest.raises(UserError, match=r"built for lag velocities but dataset .* holds difference velocities; "
                                        r"ingest it again with velocities='lag' \(mdsurrogate ingest … "
                                        r"--velocities lag\)"):
        Trainer(recipe_from_dict(raw), tmp_path / "run", device="cpu")
    assert not (tmp_path / "run" / "last.pt").exists()
    raw["data"]["velocities"] = "difference"  # the data it was built for trains
    Trainer(recipe_from_dict(raw), tmp_path / "run", device="cpu").run()
    raw["data"]["velocities"] = "sideways"
    with pytest.raises(RecipeError, match="data.velocities must be one of lag, difference, trajectory"):
        recipe_from_dict(raw)
    recipe = tmp_path / "lagged.toml"
    recipe.write_text(f'name = "lagged"\n[data]\npath = "{ds.path}"\nvelocities = "lag"\n'
                      '[model]\nname = "egnn"\nhidden = 8\nlayers = 1\n[train]\nepochs = 1\nbatch_size = 2\n')
    res = invoke("train", recipe, "--out", tmp_path / "run2")
    assert res.exit_code == 2 and "--velocities lag" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------------------------------------ time steps
@pytest.mark.parametrize("top,traj", [(mdt.PRMncdf, mdt.NCDF), (mdt.PRM7, mdt.NCDFtruncoct)])
def test_netcdf_without_times_needs_dt(top, traj, tmp_path):
    with pytest.raises(MDInputError, match=r"does not state the time between its frames \(every frame is at 0 ps\); "
                                           r"pass `dt`"):
        ingest_md(tmp_path / "x", top, [traj], select="not resname WAT", delta=1)
    assert not (tmp_path / "x").exists()
    ds = Dataset(ingest_md(tmp_path / "y", top, [traj], select="not resname WAT", delta=1, dt=0.5,
                           ratios=(0.4, 0.3, 0.3)))
    assert ds.frame_dt == 0.5 and ds.meta["md"]["frame_dt_from"] == "the dt parameter"
    assert ds.meta["generator"]["dt"] == 0.5
    if traj == mdt.NCDFtruncoct:  # truncated octahedron: periodic, made whole
        assert ds.meta["md"]["periodic"]["box"]


def test_files_without_time_information_need_dt(tmp_path):
    """PDB models and XYZ frames carry no times (MDAnalysis would assume 1 ps): dt, or a sentence."""
    for top, traj, sel in ((mdt.PDB_multiframe, mdt.PDB_multiframe, "name CA"), (mdt.XYZ_psf, mdt.XYZ, "name CA")):
        with pytest.raises(MDInputError, match="does not state the time between its frames; pass `dt`"):
            ingest_md(tmp_path / "x", top, [traj], select=sel, delta=1)
        ds = Dataset(ingest_md(tmp_path / "y", top, [traj], select=sel, delta=1, dt=10.0, overwrite=True,
                               ratios=(0.4, 0.3, 0.3)))
        assert ds.frame_dt == 10.0


def test_rollout_from_netcdf_needs_dt_too(trained, tmp_path):
    name, ds, run = trained
    if name != "amber_netcdf":
        pytest.skip("one system is enough")
    res = invoke("rollout", mdt.NCDF, "--top", mdt.PRMncdf, "--model", run, "--out", tmp_path / "r.pdb")
    assert res.exit_code == 2 and "does not state the time between its frames" in res.output
    assert "--dt" in invoke("rollout", "--help").output


# ------------------------------------------------------------------------------------------------ LAMMPS
def test_lammps_data_and_dcd_without_atom_names(tmp_path):
    with pytest.raises(MDInputError, match="needs atom information this topology does not have"):
        ingest_md(tmp_path / "x", mdt.LAMMPSdata2, [mdt.LAMMPSdcd2], select="backbone", delta=1)
    ds = Dataset(ingest_md(tmp_path / "lmp", mdt.LAMMPSdata2, [_lammps_dcd(tmp_path)], select=LAMMPS_SELECT,
                           delta=1, ratios=(0.4, 0.3, 0.3)))
    u = universe(mdt.LAMMPSdata2)
    ag = u.select_atoms(LAMMPS_SELECT)
    elements = ds.meta["md"]["elements"]
    got = [elements[e] for e in ds.meta["md"]["element"]]
    assert got == [guess_element("", float(m)) if guess_element("", float(m)) in elements else "other"
                   for m in ag.masses]
    assert {"C", "N", "O"} <= set(got)  # element from masses: 12.011 → C, 14.007 → N, 15.999 → O
    assert ds.frame_dt == pytest.approx(0.5)  # LAMMPS 'units real': 500 fs between frames, not 24.4 ps (AKMA)


# ------------------------------------------------------------------------------------------------ selections
def test_rollout_selection_is_compared_by_atoms(trained, tmp_path):
    name, ds, run = trained
    if name != "gromacs":
        pytest.skip("one system is enough")
    res = invoke("rollout", mdt.XTC, "--top", mdt.TPR, "--model", run, "--out", tmp_path / "r.pdb", "--steps", 1,
                 "--select", "protein and name CA", "--json")  # the model's atoms: trained on "name CA"
    assert res.exit_code in (0, 3), res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["steps"] >= 0
    res = invoke("rollout", mdt.XTC, "--top", mdt.TPR, "--model", run, "--out", tmp_path / "s.pdb",
                 "--select", "name CA and resid 1:50")
    assert res.exit_code == 2 and "not the 214 atoms" in res.output and "trained on the selection 'name CA'" in \
        " ".join(res.output.split())
