"""OpenMM integration, importable as ``mdsurrogate.openmm``: a learned potential as a TorchScript module for
openmm-torch's ``TorchForce`` (:func:`openmm_module`, :func:`torch_force`)."""

from .integrations.openmm import OPENMM_TORCH_NOTE, OpenMMPotential, openmm_module, torch_force  # noqa: F401

__all__ = ["OPENMM_TORCH_NOTE", "OpenMMPotential", "openmm_module", "torch_force"]
