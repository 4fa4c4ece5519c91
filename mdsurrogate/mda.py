"""MDAnalysis integration, importable as ``mdsurrogate.mda``: ``import mdsurrogate.mda`` registers the ``MDSR``
trajectory format and topology parser, so that ``MDAnalysis.Universe("run.mdsr")`` and
``MDAnalysis.Universe(TOP, "run.mdsr")`` open a surrogate trajectory whose frames the model computes on demand.
See :mod:`mdsurrogate.integrations.mdanalysis` for the spellings and :mod:`mdsurrogate.simulation.mdsr` for the file.
Requires MDAnalysis."""

from .integrations.mdanalysis import MDSRParser, MDSRReader, topology_from_atoms  # noqa: F401
from .simulation.mdsr import MdsrError, MdsrRun, read_mdsr, write_mdsr  # noqa: F401

__all__ = ["MDSRParser", "MDSRReader", "MdsrError", "MdsrRun", "read_mdsr", "topology_from_atoms", "write_mdsr"]
