"""Ingest: every source → the on-disk dataset format (:mod:`mdsurrogate.data.dataset`), one module per source.

=====================  ==========================================================================================
``nbody``              charged N-body simulator → the EGNN paper's N-body dataset
``mcomplex``           M-complex simulator → the EGHN paper's Table 1 datasets
``mocap``              CMU motion capture (ASF + AMC trials, or joint positions in an .npz) → Walk / Run
``md``                 any trajectory MDAnalysis reads → (frame i → frame i + Δ) samples of one selection
``adk``                adenylate kinase (MDAnalysisData / MDAnalysisTests files) through ``md``
``ase``                frames with energies and forces read by ASE (and EMT reference MD) → potential datasets
=====================  ==========================================================================================

Simulators and file parsers live in :mod:`mdsurrogate.data.sources`; this package builds samples, splits
(:data:`~mdsurrogate.data.dataset.SPLITS`), features and metadata from them. :data:`INGESTERS` maps a source
name to its function (``INGESTERS["md"](out, top, trajs, ...)``). MDAnalysis and ASE are imported inside the
functions that need them, so ``import mdsurrogate.data.ingest`` pulls in neither.
"""

from __future__ import annotations

from .adk import ingest_adk
from .ase import ingest_ase, ingest_emt
from .mcomplex import group_pairs, ingest_mcomplex
from .md import ingest_md
from .mocap import ingest_mocap_amc, ingest_mocap_positions
from .nbody import ingest_nbody

#: source name → ingest function (the ``mdsurrogate ingest`` subcommands are named alike).
INGESTERS = {
    "nbody": ingest_nbody,
    "mcomplex": ingest_mcomplex,
    "mocap_amc": ingest_mocap_amc,
    "mocap_positions": ingest_mocap_positions,
    "md": ingest_md,
    "adk": ingest_adk,
    "ase": ingest_ase,
    "emt": ingest_emt,
}

__all__ = ["INGESTERS", "group_pairs", "ingest_adk", "ingest_ase", "ingest_emt", "ingest_mcomplex", "ingest_md",
           "ingest_mocap_amc", "ingest_mocap_positions", "ingest_nbody"]
