"""The MD teacher: equilibrium Langevin MD with OpenMM, so that every user has real trajectories to learn from.

    systems.py     embedded systems (ala2, adk), PDB (PDBFixer + Modeller.addHydrogens) and Amber prmtop input,
                   force fields, the OpenMM System
    openmm_run.py  minimise, equilibrate, produce; DCD + PDB + simulate.json; checkpoints and resume

OpenMM (and PDBFixer, MDAnalysis) are imported inside the functions that need them.
"""

from .openmm_run import SimulationSettings, load_record, resume, simulate
from .systems import EMBEDDED, FORCEFIELDS, SimulateInputError, build_system, load_input

__all__ = ["EMBEDDED", "FORCEFIELDS", "SimulateInputError", "SimulationSettings", "build_system", "load_input",
           "load_record", "resume", "simulate"]
