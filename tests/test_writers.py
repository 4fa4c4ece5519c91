"""Round-trip tests of the streaming trajectory writers (mdsurrogate.io.writers, the native PDB/XYZ/DCD ones).

The writers are pure Python/NumPy; MDAnalysis and ASE are used here only as independent readers to prove
that what we write is read back exactly.
"""

from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from mdsurrogate.data.atoms import AtomTopology, guess_element
from mdsurrogate.io.writers import (
    AKMA_PS,
    DCDWriter,
    ExtXYZWriter,
    PDBWriter,
    TrajectoryWriter,
    UnknownFormatError,
    open_writer,
)
from mdsurrogate.io.writers.pdb import _hy36_encode

pytestmark = pytest.mark.filterwarnings(
    "ignore:DCDReader currently makes independent timesteps:DeprecationWarning"
)


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mda():
    return pytest.importorskip("MDAnalysis")


@pytest.fixture(scope="module")
def aseio():
    pytest.importorskip("ase")
    import ase.io

    return ase.io


def _universe(mda, *files):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. PDB element/segid info messages
        return mda.Universe(*[str(f) for f in files])


def _mixed_topology() -> AtomTopology:
    """Small protein-like + ion topology exercising PDB name alignment, 4-char resnames/segids."""
    return AtomTopology(
        names=["N", "CA", "HG21", "1HB", "FE", "CL", "OW", "HW1"],
        elements=["N", "C", "H", "H", "Fe", "Cl", "O", "H"],
        resnames=["ALA", "ALA", "ALA", "ALA", "FE2", "CLA", "TIP3", "TIP3"],
        resids=[1, 1, 1, 1, 2, 3, 9999, 9999],
        chainids=["PROA", "PROA", "PROA", "PROA", "B", "B", "WAT", "WAT"],
        bonds=[[0, 1], [1, 2], [1, 3], [6, 7]],
        labels={"cluster": [0, 0, 1, 1, 2, 2, 3, 3]},
        record_types=["ATOM"] * 4 + ["HETATM"] * 4,
    )


def _frames(n_frames: int, n_atoms: int, seed: int = 0, scale: float = 12.0, dtype=np.float64) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n_frames, n_atoms, 3)) * scale).astype(dtype)


_TIME_RE = re.compile(r"^REMARK     FRAME (\d+) TIME_PS (\S+)$")


def _pdb_times(path: Path) -> list[float]:
    return [float(m.group(2)) for line in path.read_text().splitlines() if (m := _TIME_RE.match(line))]


def _partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".partial-" in p.name)


# ----------------------------------------------------------------------------------------------- topology
def test_topology_generic_and_validation():
    top = AtomTopology.generic(4, element="Ar", labels={"cluster": [0, 0, 1, 1]})
    assert top.n_atoms == len(top) == 4
    assert list(top.names) == ["Ar"] * 4 and list(top.elements) == ["Ar"] * 4
    assert list(top.resids) == [1, 2, 3, 4] and top.labels["cluster"].dtype == np.int64
    named = AtomTopology.generic(3, element="C", name_prefix="B", one_residue_per_atom=False)
    assert list(named.names) == ["B1", "B2", "B3"] and list(named.resids) == [1, 1, 1]
    assert "cluster" in named.with_labels(cluster=[1, 2, 3]).labels
    with pytest.raises(ValueError, match="length"):
        AtomTopology(names=["A", "B"], elements=["C"], resnames="X", resids=1, chainids="A")
    with pytest.raises(ValueError, match="bond"):
        AtomTopology.generic(2, bonds=[[0, 2]])
    with pytest.raises(ValueError, match="integers"):
        AtomTopology.generic(2, labels={"cluster": [0.5, 1.0]})
    assert guess_element("CA", 12.011) == "C" and guess_element("CA", 40.08) == "Ca"
    assert guess_element("HT1") == "H" and guess_element("123") == "X"


# -------------------------------------------------------------------------------------------------- PDB
def test_pdb_multiframe_roundtrip_mdanalysis(tmp_path, mda):
    top = _mixed_topology()
    xs = _frames(3, top.n_atoms)
    box = [30.0, 31.0, 32.0, 90.0, 90.0, 90.0]
    path = tmp_path / "traj.pdb"
    with open_writer(path, top, bfactors="cluster", box=box) as w:
        assert isinstance(w, TrajectoryWriter) and isinstance(w, PDBWriter)
        for i, x in enumerate(xs):
            # per-frame occupancies override the default, bfactors come from the topology label
            w.write(x, time_ps=10.0 + 0.5 * i, occupancies=np.full(top.n_atoms, 0.5 + 0.1 * i))

    lines = path.read_text().splitlines()
    atom_lines = [ln for ln in lines if ln.startswith(("ATOM  ", "HETATM"))]
    assert len(atom_lines) == 3 * top.n_atoms and all(len(ln) == 80 for ln in atom_lines)
    assert [ln[12:16] for ln in atom_lines[:6]] == [" N  ", " CA ", "HG21", "1HB ", "FE  ", "CL  "]
    assert [ln[76:78] for ln in atom_lines[:6]] == [" N", " C", " H", " H", "FE", "CL"]
    assert sum(ln.startswith("CRYST1") for ln in lines) == 3 and lines[-1] == "END"
    assert _pdb_times(path) == [10.0, 10.5, 11.0]

    u = _universe(mda, path)
    assert u.trajectory.n_frames == 3
    assert list(u.atoms.names) == list(top.names)
    assert list(u.atoms.resnames) == list(top.resnames)
    assert list(u.atoms.resids) == list(top.resids)
    assert list(u.atoms.segids) == list(top.chainids)
    assert list(u.atoms.chainIDs) == [c[0] for c in top.chainids]
    assert list(u.atoms.elements) == list(top.elements)
    assert list(u.atoms.record_types) == list(top.record_types)
    for i, ts in enumerate(u.trajectory):
        np.testing.assert_allclose(ts.positions, xs[i], atol=1e-3)
        np.testing.assert_allclose(ts.data["tempfactor"], top.labels["cluster"])
        np.testing.assert_allclose(ts.data["occupancy"], 0.5 + 0.1 * i)
        np.testing.assert_allclose(ts.dimensions, box, atol=1e-3)


def test_pdb_conect_bonds_read_back(tmp_path, mda):
    top = _mixed_topology()
    path = tmp_path / "skeleton.pdb"
    with open_writer(path, top, conect=True) as w:
        for x in _frames(2, top.n_atoms):
            w.write(x)
    u = _universe(mda, path)
    got = {tuple(sorted(b)) for b in u.bonds.indices.tolist()}
    assert got == {tuple(sorted(b)) for b in top.bonds.tolist()}
    assert u.trajectory.n_frames == 2
    assert not any(ln.startswith("CRYST1") for ln in path.read_text().splitlines())  # no box given
    assert _pdb_times(path) == []  # no times given, no dt_ps


def test_pdb_rejects_unrepresentable_values(tmp_path):
    top = AtomTopology.generic(2)
    with open_writer(tmp_path / "x.pdb", top) as w:
        w.write(np.zeros((2, 3)))
        with pytest.raises(ValueError, match="PDB"):
            w.write(np.full((2, 3), 1.0e4))
        with pytest.raises(ValueError, match="bfactors"):
            w.write(np.zeros((2, 3)), bfactors=np.array([0.0, 1e4]))
        assert w.n_frames == 1
    with pytest.raises(ValueError, match="bonds"):
        open_writer(tmp_path / "y.pdb", top, conect=True)


def test_hybrid36_serials_match_mdanalysis_decoder(mda):
    from MDAnalysis.topology.PDBParser import hy36decode

    for value in (1, 99999, 100000, 100001, 2_000_000, 43_770_015, 43_770_016, 87_440_031):
        encoded = _hy36_encode(5, value)
        assert len(encoded) == 5 and hy36decode(5, encoded) == value
    with pytest.raises(ValueError):
        _hy36_encode(5, 87_440_032)


def test_pdb_resid_wraps_like_md_tools(tmp_path, mda):
    top = AtomTopology.generic(4, element="C")
    top.resids[:] = [9998, 9999, 10000, 10001]
    path = tmp_path / "wrap.pdb"
    with open_writer(path, top) as w:
        w.write(_frames(1, 4)[0])
    assert list(_universe(mda, path).atoms.resids) == [9998, 9999, 10000, 10001]


# -------------------------------------------------------------------------------------------------- DCD
def _dcd_nset(path: Path) -> int:
    with open(path, "rb") as fh:
        head = fh.read(12)
    assert struct.unpack("<i4s", head[:8]) == (84, b"CORD")
    return struct.unpack("<i", head[8:12])[0]


@pytest.mark.parametrize(("t0", "dt"), [(0.0, 0.002), (2.5, 0.5), (0.1, 0.3), (1000.0, 0.002)])
def test_dcd_roundtrip_with_pdb_topology(tmp_path, mda, t0, dt):
    top = _mixed_topology()
    xs = _frames(5, top.n_atoms, seed=1)
    box = [25.0, 26.0, 27.0, 80.0, 95.0, 100.0]
    with open_writer(tmp_path / "top.pdb", top) as w:
        w.write(xs[0])
    with open_writer(tmp_path / "traj.dcd", top, box=box) as w:
        assert isinstance(w, DCDWriter)
        for i, x in enumerate(xs):
            w.write(x, time_ps=t0 + i * dt)
    assert _dcd_nset(tmp_path / "traj.dcd") == 5
    u = _universe(mda, tmp_path / "top.pdb", tmp_path / "traj.dcd")
    assert u.trajectory.n_frames == 5
    assert u.trajectory.dt == pytest.approx(dt, rel=1e-6)
    for i, ts in enumerate(u.trajectory):
        np.testing.assert_array_equal(ts.positions, xs[i].astype(np.float32))
        np.testing.assert_allclose(ts.positions, xs[i], atol=1e-3)
        assert ts.time == pytest.approx(t0 + i * dt, rel=1e-6, abs=1e-9)
        np.testing.assert_allclose(ts.dimensions, box, atol=1e-4)


def test_dcd_default_times_and_header_patched_every_frame(tmp_path, mda):
    n = 6
    top = AtomTopology.generic(n)
    xs = _frames(3, n, dtype=np.float32)
    w = open_writer(tmp_path / "p.pdb", top)
    w.write(xs[0])
    w.close()
    w = open_writer(tmp_path / "d.dcd", top, dt_ps=0.25)
    for i, x in enumerate(xs):
        w.write(x)
        # the partial file is a complete DCD after every frame: header frame count patched
        assert _dcd_nset(w.partial_path) == i + 1
        u = _universe(mda, tmp_path / "p.pdb", w.partial_path)
        assert u.trajectory.n_frames == i + 1
        assert u.trajectory.dt == pytest.approx(0.25, rel=1e-6)
        assert u.dimensions is None
    w.close()
    u = _universe(mda, tmp_path / "p.pdb", tmp_path / "d.dcd")
    assert [ts.time for ts in u.trajectory] == pytest.approx([0.0, 0.25, 0.5], abs=1e-7)


def test_dcd_rejects_non_uniform_times_without_corrupting(tmp_path, mda):
    top = AtomTopology.generic(3)
    xs = _frames(3, 3)
    path = tmp_path / "t.dcd"
    with open_writer(path, top) as w:
        w.write(xs[0], time_ps=0.0)
        w.write(xs[1], time_ps=1.0)
        with pytest.raises(ValueError, match="uniform"):
            w.write(xs[2], time_ps=2.5)
    with open_writer(tmp_path / "t.pdb", top) as w:
        w.write(xs[0])
    u = _universe(mda, tmp_path / "t.pdb", path)
    assert u.trajectory.n_frames == 2 and _dcd_nset(path) == 2
    np.testing.assert_allclose(u.trajectory[1].positions, xs[1], atol=1e-5)
    w = open_writer(tmp_path / "u.dcd", top)
    w.write(xs[0], time_ps=1.0)
    with pytest.raises(ValueError, match="increase"):
        w.write(xs[1], time_ps=1.0)
    w.abort()


def test_akma_constant_matches_mdanalysis(mda):
    from MDAnalysis import units

    assert units.convert(1.0, "AKMA", "ps") == pytest.approx(AKMA_PS, rel=1e-12)


# ---------------------------------------------------------------------------------------- extended XYZ
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_xyz_roundtrip_ase(tmp_path, aseio, dtype):
    top = _mixed_topology()
    xs = _frames(3, top.n_atoms, seed=2, dtype=dtype)
    vs = _frames(3, top.n_atoms, seed=3, scale=0.1, dtype=dtype)
    charge_like = np.linspace(-1, 1, top.n_atoms)
    path = tmp_path / "traj.xyz"
    with open_writer(path, top) as w:
        assert isinstance(w, ExtXYZWriter)
        for i in range(3):
            w.write(
                xs[i], time_ps=0.1 * i, velocities=vs[i], hard_id=np.arange(top.n_atoms) + i, q=charge_like
            )
    frames = aseio.read(path, index=":")
    assert len(frames) == 3
    for i, atoms in enumerate(frames):
        assert atoms.get_chemical_symbols() == list(top.elements)
        assert atoms.info["time"] == pytest.approx(0.1 * i, abs=0) and atoms.info["frame"] == i
        # written with enough digits to read back bit-exactly
        np.testing.assert_array_equal(atoms.positions.astype(dtype), xs[i])
        np.testing.assert_array_equal(atoms.arrays["vel"].astype(dtype), vs[i])
        np.testing.assert_array_equal(atoms.arrays["hard_id"], np.arange(top.n_atoms) + i)
        assert np.issubdtype(atoms.arrays["hard_id"].dtype, np.integer)
        np.testing.assert_array_equal(atoms.arrays["cluster"], top.labels["cluster"])
        np.testing.assert_array_equal(atoms.arrays["q"], charge_like)
        assert not atoms.pbc.any()  # no Lattice unless a box is given
    assert "Lattice" not in path.read_text()


def test_xyz_lattice_only_with_box(tmp_path, aseio):
    top = AtomTopology.generic(3, element="Ar")
    path = tmp_path / "box.xyz"
    with open_writer(path, top, box=[10.0, 11.0, 12.0]) as w:
        w.write(_frames(1, 3)[0])
        w.write(_frames(1, 3)[0], box=np.diag([9.0, 9.5, 10.5]))
    frames = aseio.read(path, index=":")
    np.testing.assert_allclose(frames[0].cell[:], np.diag([10.0, 11.0, 12.0]))
    np.testing.assert_allclose(frames[1].cell[:], np.diag([9.0, 9.5, 10.5]))
    assert frames[0].pbc.all()
    assert "time" not in frames[0].info  # no time given and no dt_ps


# ---------------------------------------------------------------------------------- real protein (AdK)
def test_adk_protein_roundtrip_all_formats(tmp_path, mda, aseio):
    datafiles = pytest.importorskip("MDAnalysisTests.datafiles")
    ref = _universe(mda, datafiles.PSF, datafiles.DCD)
    top = AtomTopology.from_atomgroup(ref.atoms)
    assert top.n_atoms == 3341 and top.bonds is not None and len(top.bonds) == len(ref.bonds)
    assert set(top.elements) == {"C", "H", "N", "O", "S"}
    frames = [ref.trajectory[i].positions.copy() for i in (0, 10, 20)]
    times = [ref.trajectory[i].time for i in (0, 10, 20)]

    with (
        open_writer(tmp_path / "adk.pdb", top, conect=True, dt_ps=10.0) as wp,
        open_writer(tmp_path / "adk.xyz", top) as wx,
        open_writer(tmp_path / "adk.dcd", top) as wd,
    ):
        for t, x in zip(times, frames, strict=True):
            wp.write(x, time_ps=t)
            wx.write(x, time_ps=t)
            wd.write(x, time_ps=t)

    u = _universe(mda, tmp_path / "adk.pdb")
    assert u.trajectory.n_frames == 3
    for attr in ("names", "resnames", "resids", "segids"):
        assert list(getattr(u.atoms, attr)) == list(getattr(ref.atoms, attr)), attr
    assert list(u.atoms.elements) == list(top.elements)
    assert {tuple(sorted(b)) for b in u.bonds.indices.tolist()} == {
        tuple(sorted(b)) for b in ref.bonds.indices.tolist()
    }
    for ts, x in zip(u.trajectory, frames, strict=True):
        np.testing.assert_allclose(ts.positions, x, atol=1e-3)
    assert _pdb_times(tmp_path / "adk.pdb") == pytest.approx(times)

    u = _universe(mda, datafiles.PSF, tmp_path / "adk.dcd")
    assert u.trajectory.n_frames == 3
    assert u.trajectory.dt == pytest.approx(times[1] - times[0], rel=1e-6)
    for ts, x, t in zip(u.trajectory, frames, times, strict=True):
        np.testing.assert_array_equal(ts.positions, x)  # float32 in, float32 out
        assert ts.time == pytest.approx(t, rel=1e-6)

    got = aseio.read(tmp_path / "adk.xyz", index=":")
    assert len(got) == 3
    for atoms, x, t in zip(got, frames, times, strict=True):
        assert atoms.get_chemical_symbols() == list(top.elements)
        np.testing.assert_array_equal(atoms.positions.astype(np.float32), x)
        assert atoms.info["time"] == pytest.approx(t)


# ------------------------------------------------------------------------------------ atomic streaming
def _read_frames(path: Path, fmt: str, mda, aseio, topology_pdb: Path) -> list[np.ndarray]:
    if fmt == "xyz":
        return [a.positions for a in aseio.read(path, index=":", format="extxyz")]
    files = (path,) if fmt == "pdb" else (topology_pdb, path)
    return [ts.positions.copy() for ts in _universe(mda, *files).trajectory]


@pytest.fixture
def topology_pdb(tmp_path):
    top = AtomTopology.generic(7, element="O")
    with open_writer(tmp_path / "topology.pdb", top) as w:
        w.write(np.zeros((7, 3)))
    return top, tmp_path / "topology.pdb"


@pytest.mark.parametrize("fmt", ["pdb", "xyz", "dcd"])
def test_existing_target_untouched_until_close_and_partial_valid(tmp_path, mda, aseio, fmt, topology_pdb):
    top, top_pdb = topology_pdb
    target = tmp_path / f"out.{fmt}"
    target.write_text("precious user data\n")
    xs = _frames(3, top.n_atoms)
    w = open_writer(target, top, dt_ps=1.0, overwrite=True)
    # a partial file of its own beside the target, with the format's extension (readers recognise it)
    assert w.partial_path.parent == tmp_path and w.partial_path.name.startswith("out.partial-")
    assert w.partial_path.suffix == f".{fmt}" and _partials(tmp_path) == [w.partial_path]
    for i, x in enumerate(xs):
        w.write(x)
        assert target.read_text() == "precious user data\n"
        # if the process died now, the partial file would hold every frame written so far
        got = _read_frames(w.partial_path, fmt, mda, aseio, top_pdb)
        assert len(got) == i + 1
        np.testing.assert_allclose(got[-1], x, atol=1e-3)
    w.close()
    w.close()  # idempotent
    assert not w.partial_path.exists()
    got = _read_frames(target, fmt, mda, aseio, top_pdb)
    assert len(got) == 3
    np.testing.assert_allclose(np.stack(got), xs, atol=1e-3)
    with pytest.raises(ValueError, match="closed"):
        w.write(xs[0])


@pytest.mark.parametrize("fmt", ["pdb", "xyz", "dcd"])
def test_context_manager_error_midway_finalises_frames_so_far(tmp_path, mda, aseio, fmt, topology_pdb):
    top, top_pdb = topology_pdb
    target = tmp_path / f"rollout.{fmt}"
    target.write_text("old\n")
    xs = _frames(4, top.n_atoms)
    with pytest.raises(FloatingPointError, match="NaN guard"):
        with open_writer(target, top, dt_ps=0.5, overwrite=True) as w:
            for i, x in enumerate(xs):
                if i == 2:
                    bad = x.copy()
                    bad[3, 1] = np.nan
                    with pytest.raises(ValueError, match="non-finite"):
                        w.write(bad)  # the writer refuses the frame; nothing is written
                    raise FloatingPointError("NaN guard stopped the rollout")
                w.write(x)
    assert not _partials(tmp_path)
    got = _read_frames(target, fmt, mda, aseio, top_pdb)
    assert len(got) == 2
    np.testing.assert_allclose(np.stack(got), xs[:2], atol=1e-3)


def test_no_frames_leaves_target_alone_and_abort(tmp_path):
    target = tmp_path / "out.pdb"
    target.write_text("keep\n")
    with pytest.warns(RuntimeWarning, match="no frames"):
        with open_writer(target, 2, overwrite=True):
            pass
    assert target.read_text() == "keep\n" and not _partials(tmp_path)
    w = open_writer(target, 2, overwrite=True)
    w.write(np.zeros((2, 3)))
    w.abort()
    assert target.read_text() == "keep\n" and not _partials(tmp_path)
    with pytest.raises(FileExistsError):
        open_writer(target, 2, overwrite=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        open_writer(target, 2)  # refusing is the default


def test_open_writer_format_handling(tmp_path):
    top = AtomTopology.generic(2)
    writers = [open_writer(tmp_path / "a.XYZ", top), open_writer(tmp_path / "traj", top, format="dcd"),
               open_writer(tmp_path / "c.extxyz", top), open_writer(tmp_path / "d.ent", top)]
    assert isinstance(writers[0], ExtXYZWriter) and isinstance(writers[1], DCDWriter)
    assert isinstance(writers[2], ExtXYZWriter) and isinstance(writers[3], PDBWriter)
    assert writers[1].partial_path.name.startswith("traj.partial-")
    with pytest.raises(UnknownFormatError, match="unknown trajectory format 'abc'.*\\.xtc"):
        open_writer(tmp_path / "a.abc", top)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # options a format lacks are dropped: one call serves every format
        w = open_writer(tmp_path / "b.xyz", top, bfactors=np.zeros(2), conect=True, remarks="x")
    with pytest.raises(TypeError, match="bfactor"):
        open_writer(tmp_path / "e.pdb", top, bfactor="cluster")  # a typo is no option of any writer
    with pytest.raises(ValueError, match="shape"):
        w.write(np.zeros((3, 3)))
    for writer in [*writers, w]:
        writer.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_tensor_like_inputs_and_ignored_data_warns_once(tmp_path, aseio):
    class FakeTensor:  # stands in for a (GPU) torch tensor: detach().cpu().numpy()
        def __init__(self, a):
            self.a = np.asarray(a)

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    top = AtomTopology.generic(3)
    with open_writer(tmp_path / "t.xyz", top) as w:
        w.write(FakeTensor(np.ones((3, 3))), velocities=FakeTensor(np.zeros((3, 3))))
    np.testing.assert_array_equal(aseio.read(tmp_path / "t.xyz").positions, np.ones((3, 3)))
    with open_writer(tmp_path / "t.dcd", top) as w:
        with pytest.warns(UserWarning, match="velocities"):
            w.write(np.ones((3, 3)), velocities=np.zeros((3, 3)))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            w.write(np.ones((3, 3)), velocities=np.zeros((3, 3)))  # warned once only
