"""Helpers for the MD tests: write topology + trajectory files from arrays with MDAnalysis, wrap a trajectory into
its box by hand, run the CLI as a real process. Not a test module (no ``test_`` prefix)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def universe(*files, **kwargs):
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(*map(str, files), **kwargs)


def read_all(u, atoms=None, velocities=False):
    """(positions [F, N, 3], dimensions [F, 6] or None, velocities or None) of every frame."""
    ag = atoms if atoms is not None else u.atoms
    x, box, v = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ts in u.trajectory:
            x.append(ag.positions.copy())
            box.append(None if ts.dimensions is None else ts.dimensions.copy())
            if velocities:
                v.append(ag.velocities.copy())
    return np.array(x), (None if box[0] is None else np.array(box)), (np.array(v) if velocities else None)


def write_trajectory(path, u, positions, *, dimensions=None, velocities=None, dt=None, format=None):
    """Write ``positions`` [F, N, 3] (and per-frame ``dimensions`` [F, 6], ``velocities`` [F, N, 3] Å/ps) as a
    trajectory of ``u``'s atoms (its topology file stays the topology); times k·``dt`` ps when given."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {}
        if dimensions is not None:
            kw["dimensions"] = np.asarray(dimensions, np.float32)
        if velocities is not None:
            kw["velocities"] = np.asarray(velocities, np.float32)
        if dt is not None:
            kw["dt"] = dt
        u.load_new(np.asarray(positions, np.float32), format=MemoryReader, **kw)
        wkw = ({"format": format} if format else {}) | ({"dt": dt} if dt is not None and str(path).endswith(".dcd")
                                                         else {})
        with mda.Writer(str(path), u.atoms.n_atoms, **wkw) as w:
            for _ in u.trajectory:
                w.write(u.atoms)
    return Path(path)


def smooth_trr(folder, n_frames=14, dt=0.002):
    """GRO + TRR of AdK's Cα atoms moving smoothly (x = x0 + v0 t + a t²/2) with the matching velocities."""
    from MDAnalysisTests.datafiles import GRO

    u0 = universe(GRO)
    ca = u0.select_atoms("name CA")
    gro = folder / "ca.gro"
    ca.write(gro)
    u = universe(gro)
    rng = np.random.default_rng(0)
    v0, a = rng.normal(scale=5.0, size=(2, len(ca), 3))  # Å/ps, Å/ps²
    t = np.arange(n_frames)[:, None, None] * dt
    x = ca.positions[None] + v0 * t + 0.5 * a * t**2
    v = v0 + a * t
    return gro, write_trajectory(folder / "ca.trr", u, x, velocities=v, dt=dt)


def wrap_into_box(positions, dimensions):
    """Every atom of every frame moved into the primary cell (reduced coordinates in [0, 1)), as an MD engine
    saves a wrapped trajectory: [F, N, 3] float64."""
    from MDAnalysis.lib.mdamath import triclinic_vectors

    out = np.empty(positions.shape, np.float64)
    for k, (x, d) in enumerate(zip(positions, dimensions, strict=True)):
        box = triclinic_vectors(d).astype(np.float64)
        f = x.astype(np.float64) @ np.linalg.inv(box)
        out[k] = (f - np.floor(f)) @ box
    return out


def run_cli(*args, cwd=None, timeout=300, env=None):
    """The CLI as a real process (``python -m mdsurrogate``): (exit code, stdout, stderr)."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", NO_COLOR="1", **(env or {}))
    full_env.pop("MDSURROGATE_DEBUG", None)
    res = subprocess.run([sys.executable, "-m", "mdsurrogate", *map(str, args)], capture_output=True, text=True,
                         cwd=cwd, timeout=timeout, env=full_env)
    return res.returncode, res.stdout, res.stderr


def one_sentence(stderr: str) -> str:
    """The one ``error:`` line of a failed command's stderr; fails the test when anything else was printed (a
    traceback, "Exception ignored in …", a raw Python warning)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    return lines[0]
