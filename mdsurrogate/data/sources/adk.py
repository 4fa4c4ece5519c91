"""Adenylate kinase (AdK), the reference protein: where its files come from.

- ``embedded``: the real AdK trajectories that MDAnalysisTests ships (CHARMM PSF, 3341 atoms; two DIMS
  closed → open transition trajectories ``adk_dims.dcd`` (98 frames) and ``adk_dims2.dcd`` (102 frames)); no
  network needed, used by ``mdsurrogate demo`` and the tests.
- ``equilibrium``: MDAnalysisData's ``adk_equilibrium`` (the EGHN paper's data, docs/protocols.md §4: 4187 frames every
  240 ps, 1.004 µs, NPT 300 K, CHARMM27, solvent stripped), downloaded once (about 70 MB) into
  ``~/MDAnalysis_data`` or ``data_home``. This is the only part of mdsurrogate that uses the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import UserError


class AdKUnavailable(UserError, RuntimeError):
    """The requested AdK files cannot be obtained here (package missing or offline)."""


def embedded_adk_files() -> tuple[str, list[str]]:
    """(topology, [trajectories]) of the AdK DIMS trajectories shipped by MDAnalysisTests."""
    try:
        from MDAnalysisTests.datafiles import DCD, DCD2, PSF
    except ImportError:
        raise AdKUnavailable("the embedded AdK data comes with MDAnalysisTests: pip install MDAnalysisTests") from None
    return PSF, [DCD, DCD2]


def fetch_adk_equilibrium(data_home: str | os.PathLike | None = None) -> tuple[str, list[str]]:
    """(topology, [trajectory]) of MDAnalysisData's ``adk_equilibrium``, downloading it on first use."""
    try:
        from MDAnalysisData import datasets
    except ImportError:
        raise AdKUnavailable(
            "fetching adk_equilibrium needs the optional package MDAnalysisData (pip install 'mdsurrogate[adk]') and "
            "network access; or download it elsewhere and run `mdsurrogate ingest md OUT --top adk4AKE.psf "
            "--traj 1ake_007-nowater-core-dt240ps.dcd`") from None
    try:
        bunch = datasets.fetch_adk_equilibrium(data_home=None if data_home is None else str(data_home))
    except OSError as exc:  # URLError is an OSError: offline, DNS, refused, …
        raise AdKUnavailable(
            f"could not download adk_equilibrium ({exc.__class__.__name__}: {exc}); this needs network access "
            "once. Offline, copy adk4AKE.psf and 1ake_007-nowater-core-dt240ps.dcd here and run `mdsurrogate "
            "ingest md OUT --top adk4AKE.psf --traj 1ake_007-nowater-core-dt240ps.dcd`, or use the embedded "
            "source (source='embedded')") from None
    top, traj = Path(bunch.topology), Path(bunch.trajectory)
    return str(top), [str(traj)]
