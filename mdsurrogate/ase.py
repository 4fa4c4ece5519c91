"""ASE integration, importable as ``mdsurrogate.ase``: ``SurrogateCalculator`` (learned potential) and
``SurrogateDynamics`` (a propagator as an ASE MolecularDynamics). Requires ASE."""

from .integrations.ase import SurrogateCalculator, SurrogateDynamics  # noqa: F401

__all__ = ["SurrogateCalculator", "SurrogateDynamics"]
