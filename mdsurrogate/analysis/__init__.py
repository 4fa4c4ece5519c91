"""Analysis of trajectories as NumPy arrays: backbone dihedrals, Ramachandran statistics, rollout fidelity.

Pure NumPy, no MD library: a trajectory is positions ``[F, N, 3]`` (any length unit) plus atom names and
residue indices. Used by ``mdsurrogate simulate`` (a summary of the teacher MD in ``simulate.json``), by
``mdsurrogate plot ramachandran`` and by comparisons of a surrogate rollout with MD.

    dihedrals.py     dihedral angles of atom quadruples, φ/ψ quadruples of any peptide backbone
    ramachandran.py  30° histograms, basin populations, Jensen–Shannon divergence, core-to-core transitions
    fidelity.py      rollout fidelity: RMSD (Kabsch), skill, bonds/Rg/steps against the data's envelope, ensemble
                     scores (spread–skill, energy score, CRPS), Wasserstein/JS distances, RMSF, bootstrap
    baselines.py     null models (stay still, constant velocity, drift) and trivial noise ensembles
"""

from .dihedrals import backbone_quadruples, dihedral_angles, phi_psi
from .ramachandran import (
    BASINS,
    CORES,
    TransitionCounts,
    basin_labels,
    basin_populations,
    jensen_shannon,
    ramachandran_histogram,
    ramachandran_summary,
    transitions,
)

__all__ = [
    "BASINS",
    "CORES",
    "TransitionCounts",
    "backbone_quadruples",
    "basin_labels",
    "basin_populations",
    "dihedral_angles",
    "jensen_shannon",
    "phi_psi",
    "ramachandran_histogram",
    "ramachandran_summary",
    "transitions",
]
