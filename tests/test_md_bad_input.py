"""Bad MD input gets one sentence and exit code 2, never a traceback, also in a real process (where MDAnalysis'
readers print from ``__del__`` after a failed open); nothing the user had is overwritten without --overwrite; a
rollout killed while it writes leaves the old file or a complete new one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("MDAnalysisTests")
from MDAnalysisTests import datafiles as mdt  # noqa: E402

from mdsurrogate.config import recipe_from_dict  # noqa: E402
from mdsurrogate.data.ingest import ingest_md  # noqa: E402
from mdsurrogate.training.trainer import Trainer  # noqa: E402

from .conftest import invoke  # noqa: E402
from .mdfiles import REPO, one_sentence, read_all, universe, write_trajectory  # noqa: E402

warnings.filterwarnings("ignore", module="MDAnalysis")
TIP = ["--top", mdt.PSF_TRICLINIC]


@pytest.fixture(scope="module")
def tip(tmp_path_factory):
    """(folder, dataset, run) for the 375-atom CHARMM water box: a constant-velocity model (x + τ v) on it."""
    folder = tmp_path_factory.mktemp("tip")
    data = ingest_md(folder / "data", mdt.PSF_TRICLINIC, [mdt.DCD_TRICLINIC], select="all", delta=1,
                     ratios=(0.4, 0.3, 0.3))
    recipe = recipe_from_dict({"data": {"path": str(data)}, "model": {"name": "linear", "tau": 1.0},
                               "train": {"epochs": 1, "batch_size": 2, "eval_every": 1}})
    Trainer(recipe, folder / "run", device="cpu").run()
    return folder, data, folder / "run"


@pytest.fixture(scope="module")
def nan_dcd(tmp_path_factory):
    """tip125_tric as DCD with frame 6 all NaN and three atoms of frame 8 at +inf."""
    u = universe(mdt.PSF_TRICLINIC, mdt.DCD_TRICLINIC)
    x, dims, _ = read_all(u)
    x[6] = np.nan
    x[8, :3] = np.inf
    return write_trajectory(tmp_path_factory.mktemp("nan") / "nan.dcd", u, x, dimensions=dims, dt=1.0)


def _fails(*args, phrase: str) -> str:
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and all(line.startswith("warning:") for line in lines[:-1]), res.output
    text = " ".join(res.output.split())
    assert "Traceback" not in text and phrase in text, text
    return text


# ------------------------------------------------------------------------------------------------ ingest md
def test_bad_ingest_parameters(tmp_path, nan_dcd):
    out = tmp_path / "x"
    md = ["ingest", "md", out, "--top", mdt.PSF_TRICLINIC, "--traj", mdt.DCD_TRICLINIC, "--select", "all"]
    _fails(*md, "--cutoff", "nan", phrase="cutoff must be a positive, finite number of Å, got nan")
    _fails(*md, "--cutoff", "inf", phrase="cutoff must be a positive, finite number")
    _fails(*md, "--dt", "0", phrase="dt must be a positive number of ps")
    _fails("ingest", "md", out, *TIP, "--traj", mdt.DCD_TRICLINIC, "--select", "index 5",
           phrase="the selection 'index 5' has 1 atom")
    _fails("ingest", "md", out, *TIP, "--traj", nan_dcd, "--select", "all", phrase="frame 6 of")
    _fails("ingest", "md", out, *TIP, "--traj", nan_dcd, "--select", "all", phrase="non-finite values (NaN or inf)")
    _fails("ingest", "md", out, "--top", mdt.PRMncdf, "--traj", mdt.NCDF,
           phrase="does not state the time between its frames (every frame is at 0 ps); pass --dt")
    _fails("ingest", "md", out, "--top", mdt.LAMMPSdata2, "--traj", mdt.LAMMPSdcd2,
           phrase="needs atom information this topology does not have (no names or resnames)")
    _fails("ingest", "md", out, "--top", mdt.GRO, "--traj", mdt.TRR, "--select", "name CA", "--delta", 1,
           "--velocities", "trajectory", "--split", "0.4,0.3,0.3", phrase="do not describe its motion over a frame")
    _fails("ingest", "nbody", out, "--train", 0, "--val", 0, "--test", 0, phrase="all 0")
    assert not out.exists()


def test_outputs_are_never_lost(tmp_path, tip):
    _, data, run = tip
    md = ["ingest", "md", "--top", mdt.PSF_TRICLINIC, "--traj", mdt.DCD_TRICLINIC, "--select", "all", "--split",
          "0.4,0.3,0.3", "--delta", 1]
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    _fails("ingest", "md", blocker / "sub", *md[2:], phrase=f"{blocker} is a file, not a folder")
    _fails("rollout", mdt.DCD_TRICLINIC, *TIP, "--model", run, "--out", blocker / "r.pdb",
           phrase=f"{blocker} is a file, not a folder")
    _fails("ingest", "md", blocker, *md[2:], "--overwrite", phrase="is not a dataset folder")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    _fails("ingest", "md", mine, *md[2:], "--overwrite", phrase="holds other files")
    assert (mine / "notes.txt").read_text() == "keep" and blocker.read_text() == "mine"
    existing = tmp_path / "old.pdb"
    existing.write_text("old")
    _fails("rollout", mdt.DCD_TRICLINIC, *TIP, "--model", run, "--out", existing, phrase="pass --overwrite")
    assert existing.read_text() == "old"


def test_rollout_from_bad_frames(tmp_path, tip, nan_dcd):
    _, _, run = tip
    roll = ["rollout", nan_dcd, *TIP, "--model", run, "--out", tmp_path / "r.xyz", "--steps", 1]
    _fails(*roll, "--frame", 6, phrase="frame 6 has non-finite values (NaN or inf) for 375 atom(s)")
    _fails(*roll, "--frame", 9, phrase="frame 6 has non-finite")  # unwrapping needs every frame before it
    assert not (tmp_path / "r.xyz").exists()
    try:
        import h5py  # noqa: F401
    except ImportError:
        _fails("rollout", mdt.DCD_TRICLINIC, *TIP, "--model", run, "--out", tmp_path / "r.h5md",
               phrase="needs the Python package(s) h5py")


def test_corrupt_datasets_are_named(tmp_path, tip):
    _, data, _ = tip
    cases = {
        "short_split": (lambda p: np.save(p / "split.npy", np.load(p / "split.npy")[:-1]), "split.npy has shape"),
        "string_positions": (lambda p: np.save(p / "positions.npy", np.load(p / "positions.npy").astype(str)),
                             "positions.npy holds <U"),
        "no_features": (lambda p: _edit_meta(p, lambda m: m.pop("features")), "has no 'features'"),
        "zero_dt": (lambda p: _edit_meta(p, lambda m: m.update(frame_dt=0)), "frame_dt must be a positive number"),
    }
    for name, (corrupt, phrase) in cases.items():
        copy = tmp_path / name
        shutil.copytree(data, copy)
        corrupt(copy)
        _fails("info", copy, phrase=phrase)


def _edit_meta(path, edit):
    import json

    meta = json.loads((path / "meta.json").read_text())
    edit(meta)
    (path / "meta.json").write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------------------ real processes
def test_damaged_files_in_a_real_process_print_one_sentence(tmp_path, tip):
    """Random bytes, truncated and empty files: one line on stderr and exit 2 from a real process (the reader's
    ``__del__`` after a failed open used to print a traceback after the sentence)."""
    _, _, run = tip
    rng = np.random.default_rng(0)
    (tmp_path / "random.xtc").write_bytes(rng.bytes(4000))
    (tmp_path / "empty.xtc").write_bytes(b"")
    (tmp_path / "garbage.dcd").write_bytes(b"\x54\x00\x00\x00CORD" + rng.bytes(300))
    ncdf = open(mdt.NCDF, "rb").read()
    (tmp_path / "truncated.ncdf").write_bytes(ncdf[: len(ncdf) // 2])
    commands = [
        ["ingest", "md", tmp_path / "a", "--top", mdt.PSF, "--traj", tmp_path / "random.xtc"],
        ["ingest", "md", tmp_path / "b", "--top", mdt.PSF, "--traj", tmp_path / "empty.xtc"],
        ["ingest", "md", tmp_path / "c", "--top", mdt.PSF, "--traj", tmp_path / "garbage.dcd"],
        ["ingest", "md", tmp_path / "d", "--top", mdt.PRMncdf, "--traj", tmp_path / "truncated.ncdf", "--dt", 1],
        ["rollout", tmp_path / "garbage.dcd", *TIP, "--model", run, "--out", tmp_path / "r.pdb"],
    ]
    # one process runs the commands one after the other, as `mdsurrogate` would (saves four torch imports); a
    # reader collected late would print into the next command's stderr or at exit
    driver = (
        "import json, sys\n"
        "from mdsurrogate.cli import app\n"
        "codes = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        app(args, prog_name='mdsurrogate')\n"
        "    except SystemExit as exc:\n"
        "        codes.append(exc.code)\n"
        "    sys.stderr.write('---\\n'); sys.stderr.flush()\n"
        "print(json.dumps(codes))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    env.pop("MDSURROGATE_DEBUG", None)
    import json

    proc = subprocess.run([sys.executable, "-c", driver, json.dumps([[str(a) for a in c] for c in commands])],
                          capture_output=True, text=True, env=env, timeout=300)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [2] * len(commands), proc.stderr
    blocks = proc.stderr.split("---\n")
    assert len(blocks) == len(commands) + 1 and blocks[-1].strip() == "", proc.stderr  # nothing at exit
    for cmd, block in zip(commands, blocks, strict=False):
        assert "cannot read" in one_sentence(block), (cmd, block)
    assert not any((tmp_path / k).exists() for k in "abcd")


def _frames_in_xyz(path) -> int:
    lines = path.read_text().splitlines()
    n, k, frames = int(lines[0]), 0, 0
    while k < len(lines):
        assert int(lines[k]) == n and len(lines[k + 2: k + 2 + n]) == n
        k += n + 2
        frames += 1
    return frames


def test_a_rollout_killed_while_writing_leaves_the_old_file(tmp_path, tip):
    """SIGKILL in the middle of ``rollout --overwrite`` onto an existing file: the old file is untouched (the new
    frames went to a partial file beside it); a run that finishes replaces it with a complete new one."""
    _, _, run = tip
    out = tmp_path / "roll.xyz"
    out.write_text("the user's old trajectory\n")
    old = out.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "mdsurrogate", "rollout", str(mdt.DCD_TRICLINIC), "--top", str(mdt.PSF_TRICLINIC),
           "--model", str(run), "--steps", "400", "--out", str(out), "--overwrite",
           "--no-guard"]  # a one-epoch model: the guard would stop it before it writes much
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline, partial = time.time() + 240, []
    while proc.poll() is None and time.time() < deadline and not partial:
        partial = [p for p in tmp_path.glob("roll.partial-*.xyz") if p.stat().st_size > 0]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial, "the rollout ended before it could be killed while writing"
    assert out.read_bytes() == old  # untouched: the new frames went to the partial file beside it
    assert 0 < _frames_in_xyz(partial[0]) < 401
    res = invoke("rollout", mdt.DCD_TRICLINIC, *TIP, "--model", run, "--steps", 2, "--out", out, "--overwrite",
                 "--no-guard")
    assert res.exit_code == 0, res.output
    assert _frames_in_xyz(out) == 3 and out.read_bytes() != old
    assert partial[0].exists()  # a killed run's partial file stays, with a name no other run uses
