"""AdK ingest: adenylate kinase trajectories (``data.sources.adk`` says where they come from) through MD ingest."""

from __future__ import annotations

from pathlib import Path

from .md import ingest_md


def ingest_adk(out: str | Path, *, source: str = "equilibrium", select: str = "backbone", delta: int | None = None,
               cutoff: float = 10.0, smooth_cutoff: float | None = None, velocities: str = "auto", data_home=None,
               time_reversal: bool | None = None, overwrite: bool = False, warn=None) -> Path:
    """Adenylate kinase (sources/adk.py). ``equilibrium``: MDAnalysisData's adk_equilibrium (downloaded once),
    chronological 0.6/0.2/0.2 split, Δ = 15 frames by default. ``embedded``: MDAnalysisTests' two DIMS
    transitions, train/val (0.8/0.2) on ``adk_dims.dcd`` and the whole of ``adk_dims2.dcd`` as test, Δ = 5.
    ``velocities`` and ``smooth_cutoff`` as for :func:`~mdsurrogate.data.ingest.md.ingest_md`; ``smooth_cutoff``
    defaults to 0 (the EGHN paper's hard cutoff) for ``equilibrium`` and 2 Å for ``embedded``; ``time_reversal``
    (train on the training span played backwards too) defaults to on for ``embedded``, whose DIMS frames are a
    driven transition in one direction, and off for ``equilibrium``."""
    from ..sources.adk import embedded_adk_files, fetch_adk_equilibrium

    if source == "embedded":
        top, (first, second) = embedded_adk_files()
        trajs, test_trajs, ratios = [first], [second], (0.8, 0.2, 0.0)
    elif source == "equilibrium":
        top, trajs = fetch_adk_equilibrium(data_home)
        test_trajs, ratios = [], (0.6, 0.2, 0.2)
    else:
        raise ValueError(f"source must be 'equilibrium' or 'embedded', not {source!r}")
    delta = delta if delta is not None else (15 if source == "equilibrium" else 5)
    if smooth_cutoff is None:
        smooth_cutoff = 0.0 if source == "equilibrium" else 2.0
    if time_reversal is None:
        time_reversal = source == "embedded"
    return ingest_md(out, top, trajs, select=select, delta=delta, cutoff=cutoff, ratios=ratios, test_trajs=test_trajs,
                     smooth_cutoff=smooth_cutoff, velocities=velocities, overwrite=overwrite, name=f"adk_{source}",
                     time_reversal=time_reversal, warn=warn)
