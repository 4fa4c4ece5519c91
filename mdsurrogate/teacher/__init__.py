"""The MD teacher: equilibrium Langevin MD with OpenMM, so that every user has real trajectories to learn from.

    systems.py     embedded systems (ala2, adk), PDB (PDBFixer + Modeller.addHydrogens) and Amber prmtop input,
                   force fields, the OpenMM System
    settings.py    SimulationSettings (what defines a run) and the choice of OpenMM platform
    openmm_run.py  minimise, equilibrate, produce; checkpoints and resume
    outputs.py     the output directory: file names, simulate.json, topology PDB, DCD truncation

OpenMM (and PDBFixer, MDAnalysis) are imported inside the functions that need them.
"""

from .openmm_run import resume, simulate
from .outputs import load_record
from .settings import SimulationSettings
from .systems import EMBEDDED, FORCEFIELDS, SimulateInputError, build_system, load_input

__all__ = ["EMBEDDED", "FORCEFIELDS", "SimulateInputError", "SimulationSettings", "build_system", "load_input",
           "load_record", "resume", "simulate"]
