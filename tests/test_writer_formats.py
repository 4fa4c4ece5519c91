"""Writer classes beyond the native streaming ones: capabilities declared by the class, MDAnalysis' formats (XTC,
TRR, NetCDF, TRZ) round-tripped through MDAnalysis, extended-XYZ velocities read by ASE, and the atomic-path
guarantees every writer shares (unique partial files, refusal to overwrite, folders created, umask permissions)."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest

from mdsurrogate.data.atoms import AtomTopology, standard_mass
from mdsurrogate.errors import UserError
from mdsurrogate.io.atomic import OutputExistsError, OutputPathError, atomic_file
from mdsurrogate.io.writers import (
    WRITERS,
    DCDWriter,
    ExtXYZWriter,
    NCDFWriter,
    PDBWriter,
    TrajectoryWriter,
    TRRWriter,
    XTCWriter,
    open_writer,
    supported_extensions,
    writer_class,
)
from mdsurrogate.io.writers.xyz import ase_velocity_unit

mda = pytest.importorskip("MDAnalysis")


def _universe(*files):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(*[str(f) for f in files])


def _protein() -> AtomTopology:
    return AtomTopology(
        names=["N", "CA", "C", "O", "N", "CA", "C", "O", "OW"],
        elements=["N", "C", "C", "O", "N", "C", "C", "O", "O"],
        resnames=["ALA"] * 4 + ["GLY"] * 4 + ["SOL"],
        resids=[1, 1, 1, 1, 2, 2, 2, 2, 7],
        chainids=["PROA"] * 8 + ["W"],
        bonds=[[0, 1], [1, 2], [2, 3], [2, 4], [4, 5], [5, 6], [6, 7]],
    )


def _frames(n_frames: int, n_atoms: int, seed: int = 0, scale: float = 10.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n_frames, n_atoms, 3)) * scale).astype(np.float32)


# ------------------------------------------------------------------------------------------------ capabilities
def test_classes_declare_their_capabilities():
    table = {cls: (cls.format, cls.extensions, cls.velocities, cls.bonds, cls.times, cls.box)
             for cls in (PDBWriter, ExtXYZWriter, DCDWriter, XTCWriter, TRRWriter, NCDFWriter)}
    assert table == {
        PDBWriter: ("PDB", ("pdb", "ent"), False, True, True, True),
        ExtXYZWriter: ("XYZ", ("xyz", "extxyz"), True, False, True, True),
        DCDWriter: ("DCD", ("dcd",), False, False, True, True),
        XTCWriter: ("XTC", ("xtc",), False, False, True, True),
        TRRWriter: ("TRR", ("trr",), True, False, True, True),
        NCDFWriter: ("NCDF", ("ncdf", "nc"), True, False, True, True),
    }
    assert PDBWriter.stores_column("bfactors") and not PDBWriter.stores_column("cluster")
    assert ExtXYZWriter.stores_column("cluster") and not DCDWriter.stores_column("cluster")
    # callers ask the class, whatever the case of the extension
    assert writer_class("out.EXTXYZ") is ExtXYZWriter and writer_class("x.ent") is PDBWriter
    assert writer_class("x.nc") is NCDFWriter and writer_class(format="xtc") is XTCWriter
    assert writer_class(format="PDB") is PDBWriter
    assert {"pdb", "ent", "xyz", "extxyz", "dcd", "xtc", "trr", "ncdf", "nc", "trz"} <= set(supported_extensions())
    assert all(issubclass(c, TrajectoryWriter) for c in WRITERS.values())
    with pytest.raises(UserError, match="unknown trajectory format 'mp4'"):
        writer_class("movie.mp4")


def test_ent_gets_conect_like_pdb(tmp_path):
    top = _protein()
    with open_writer(tmp_path / "p.ent", top, conect=top.bonds is not None) as w:
        w.write(_frames(1, top.n_atoms)[0])
    u = _universe(tmp_path / "p.ent")
    assert {tuple(sorted(b)) for b in u.bonds.indices.tolist()} == {tuple(sorted(b)) for b in top.bonds.tolist()}


# ------------------------------------------------------------------------------------- MDAnalysis' formats
@pytest.mark.filterwarnings("ignore:The TRZ writer is deprecated:DeprecationWarning")
@pytest.mark.parametrize("ext", ["xtc", "trr", "ncdf", "nc", "trz"])
def test_mdanalysis_formats_round_trip(tmp_path, ext):
    """Atoms, residues, times, frame count, box (and velocities where the format has them) read back by
    MDAnalysis with a PDB of the same atoms as topology."""
    top = _protein()
    n = top.n_atoms
    xs = _frames(4, n, seed=1)
    vs = _frames(4, n, seed=2, scale=0.5)
    box = np.array([40.0, 41.0, 42.0, 90.0, 90.0, 90.0])
    t0, dt = 12.5, 0.25
    with open_writer(tmp_path / "top.pdb", top) as w:
        w.write(xs[0])
    cls = writer_class(f"r.{ext}")
    path = tmp_path / f"r.{ext}"
    with open_writer(path, top, box=box) as w:
        assert isinstance(w, cls)
        for i in range(4):
            w.write(xs[i], time_ps=t0 + i * dt, velocities=vs[i] if cls.velocities else None)
    u = _universe(tmp_path / "top.pdb", path)
    assert u.trajectory.n_frames == 4 and len(u.atoms) == n
    assert list(u.atoms.names) == list(top.names) and list(u.atoms.resnames) == list(top.resnames)
    assert list(u.atoms.resids) == list(top.resids) and len(u.residues) == 3
    assert [float(ts.time) for ts in u.trajectory] == pytest.approx([t0 + i * dt for i in range(4)], abs=1e-4)
    atol = 6e-3 if ext == "xtc" else 1e-4  # XTC keeps 0.001 nm
    for i, ts in enumerate(u.trajectory):
        np.testing.assert_allclose(ts.positions, xs[i], atol=atol)
        np.testing.assert_allclose(ts.dimensions, box, atol=1e-3)
        assert ts.has_velocities == cls.velocities
        if cls.velocities:
            np.testing.assert_allclose(ts.velocities, vs[i], rtol=1e-5, atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_mdanalysis_writer_times_and_no_box(tmp_path):
    top = _protein()
    with open_writer(tmp_path / "t.pdb", top) as w:
        w.write(_frames(1, top.n_atoms)[0])
    with open_writer(tmp_path / "t.xtc", top, dt_ps=2.0) as w:
        for x in _frames(3, top.n_atoms):
            w.write(x)  # no time given: dt_ps apart from 0
    u = _universe(tmp_path / "t.pdb", tmp_path / "t.xtc")
    assert [ts.time for ts in u.trajectory] == pytest.approx([0.0, 2.0, 4.0])
    # velocities on some frames only: refused rather than written inconsistently
    w = open_writer(tmp_path / "v.trr", top)
    w.write(_frames(1, top.n_atoms)[0], velocities=np.zeros((top.n_atoms, 3)))
    with pytest.raises(ValueError, match="velocities for every frame"):
        w.write(_frames(1, top.n_atoms)[0])
    w.close()
    assert _universe(tmp_path / "t.pdb", tmp_path / "v.trr").trajectory.n_frames == 1


def test_adk_rollout_formats_agree(tmp_path):
    """The AdK protein (3341 atoms) through every format: the same frames come back from each."""
    datafiles = pytest.importorskip("MDAnalysisTests.datafiles")
    ref = _universe(datafiles.PSF, datafiles.DCD)
    top = AtomTopology.from_atomgroup(ref.atoms)
    frames = [ref.trajectory[i].positions.copy() for i in (0, 5, 10)]
    times = [ref.trajectory[i].time for i in (0, 5, 10)]
    for ext in ("xtc", "trr", "ncdf"):
        with open_writer(tmp_path / f"adk.{ext}", top) as w:
            for t, x in zip(times, frames, strict=True):
                w.write(x, time_ps=t)
        u = _universe(datafiles.PSF, tmp_path / f"adk.{ext}")
        assert u.trajectory.n_frames == 3
        assert [ts.time for ts in u.trajectory] == pytest.approx(times, rel=1e-5)
        for ts, x in zip(u.trajectory, frames, strict=True):
            np.testing.assert_allclose(ts.positions, x, atol=6e-3 if ext == "xtc" else 1e-3)


# ------------------------------------------------------------------------------------ extended-XYZ velocities
@pytest.mark.parametrize("ext", ["xyz", "extxyz"])
def test_extxyz_velocities_read_by_ase(tmp_path, ext):
    pytest.importorskip("ase")
    import ase.io
    from ase import units

    top = _protein()
    xs = _frames(2, top.n_atoms, seed=3)
    vs = _frames(2, top.n_atoms, seed=4, scale=3.0)  # Å/ps
    path = tmp_path / f"v.{ext}"
    with open_writer(path, top) as w:
        assert w.velocities
        for i in range(2):
            w.write(xs[i], time_ps=float(i), velocities=vs[i])
    frames = ase.io.read(path, index=":")
    assert len(frames) == 2
    assert ase_velocity_unit() == pytest.approx(1000.0 * units.fs, rel=1e-12)
    masses = [standard_mass(e) for e in top.elements]
    for atoms, v in zip(frames, vs, strict=True):
        np.testing.assert_allclose(atoms.get_masses(), masses)
        # ASE velocities are Å per ASE time unit; ×1000 fs gives Å/ps
        np.testing.assert_allclose(atoms.get_velocities() * 1000.0 * units.fs, v, rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(atoms.arrays["vel"].astype(np.float32), v)  # the exact values too
    # a topology with its own masses: those are what ASE gets
    heavy = AtomTopology.generic(3, element="Ar", labels={}).with_labels(cluster=[0, 1, 1])
    heavy = AtomTopology(names=heavy.names, elements=heavy.elements, resnames=heavy.resnames, resids=heavy.resids,
                         chainids=heavy.chainids, masses=[40.0, 41.0, 42.0])
    with open_writer(tmp_path / "m.extxyz", heavy) as w:
        w.write(np.zeros((3, 3)), velocities=np.ones((3, 3)))
    atoms = ase.io.read(tmp_path / "m.extxyz")
    np.testing.assert_allclose(atoms.get_masses(), [40.0, 41.0, 42.0])
    np.testing.assert_allclose(atoms.get_velocities() * 1000.0 * units.fs, np.ones((3, 3)), rtol=1e-12)


# ------------------------------------------------------------------------------------------ the atomic path
@pytest.mark.parametrize("ext", ["pdb", "xyz", "dcd", "xtc"])
def test_two_writers_to_one_path_never_share_a_file(tmp_path, ext):
    top = AtomTopology.generic(5, element="C")
    target = tmp_path / f"r.{ext}"
    a = open_writer(target, top)
    b = open_writer(target, top)  # nothing exists yet: both may start
    assert a.partial_path != b.partial_path and a.partial_path.exists() and b.partial_path.exists()
    xs = _frames(4, 5)
    for k in range(2):
        a.write(xs[k], time_ps=float(k))
        b.write(xs[k + 2], time_ps=float(k))
    a.close()
    # b was opened with overwrite=False: it must not replace what a published meanwhile
    with pytest.raises(OutputExistsError, match="appeared while"):
        b.close()
    assert b.partial_path.exists()  # b's frames are kept where the message says
    with open_writer(tmp_path / "top.pdb", top) as w:
        w.write(xs[0])
    files = (target,) if ext in ("pdb", "xyz") else (tmp_path / "top.pdb", target)
    if ext == "xyz":
        ase_io = pytest.importorskip("ase.io")
        got = np.stack([f.positions for f in ase_io.read(target, index=":")])
    else:
        got = np.stack([ts.positions.copy() for ts in _universe(*files).trajectory])
    np.testing.assert_allclose(got, xs[:2], atol=6e-3)  # a's frames, intact
    # with overwrite=True the last to close wins, and nothing is left behind
    c, d = open_writer(target, top, overwrite=True), open_writer(target, top, overwrite=True)
    c.write(xs[3], time_ps=0.0)
    d.write(xs[2], time_ps=0.0)
    c.close()
    d.close()
    os.remove(b.partial_path)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))  # not MDAnalysis' offset caches
    assert left == sorted(["top.pdb", target.name])


def test_existing_output_refused_and_folders_created(tmp_path):
    top = AtomTopology.generic(2)
    target = tmp_path / "keep.pdb"
    target.write_text("the user's file\n")
    for ext_target in (target,):
        with pytest.raises(OutputExistsError, match="overwrite=True") as info:
            open_writer(ext_target, top)
        assert isinstance(info.value, UserError)  # the CLI prints one sentence and exits 2
    assert target.read_text() == "the user's file\n" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.pdb"]
    deep = tmp_path / "new" / "folder" / "r.xtc"
    with open_writer(deep, top) as w:
        w.write(np.zeros((2, 3)))
    assert deep.is_file()
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        open_writer(blocker / "r.pdb", top)
    with pytest.raises(OutputExistsError):
        with atomic_file(target, overwrite=False) as fh:
            fh.write(b"never")
    assert target.read_text() == "the user's file\n"


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda mask: os.umask(mask)
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_permissions_follow_the_umask(tmp_path, umask):
    from mdsurrogate.data.dataset import write_dataset

    def outputs(folder: Path) -> dict[str, Path]:
        folder.mkdir()
        with atomic_file(folder / "last.pt") as fh:  # checkpoints and .mdsr files are written this way
            fh.write(b"checkpoint")
        with open_writer(folder / "r.pdb", 2) as w:
            w.write(np.zeros((2, 3)))
        with open_writer(folder / "r.trr", 2) as w:
            w.write(np.zeros((2, 3)))
        ds = write_dataset(folder / "ds", positions=np.zeros((1, 2, 2, 3)), velocities=np.zeros((1, 2, 2, 3)),
                           samples=np.array([[0, 0, 1]]), split=np.array([0]),
                           meta={"features": {"global_graph": {"kind": "complete"}, "node": [], "edge": []},
                                 "units": {}, "frame_dt": 1.0, "delta_frames": 1})
        return {"ckpt": folder / "last.pt", "pdb": folder / "r.pdb", "trr": folder / "r.trr", "ds": ds,
                "ds_file": ds / "positions.npy", "ds_meta": ds / "meta.json"}

    umask(0o022)
    shared = outputs(tmp_path / "shared")
    assert {k: oct(_mode(p)) for k, p in shared.items()} == {
        "ckpt": "0o644", "pdb": "0o644", "trr": "0o644", "ds": "0o755", "ds_file": "0o644", "ds_meta": "0o644"}
    umask(0o077)
    private = outputs(tmp_path / "private")
    assert {k: oct(_mode(p)) for k, p in private.items()} == {
        "ckpt": "0o600", "pdb": "0o600", "trr": "0o600", "ds": "0o700", "ds_file": "0o600", "ds_meta": "0o600"}
