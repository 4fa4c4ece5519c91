"""What ``mdsurrogate simulate`` runs: embedded systems, PDB files and Amber prmtop + inpcrd, made ready for OpenMM.

    load_input("ala2")                          # an embedded system (built from files PyPI packages ship)
    load_input("protein.pdb", forcefield=...)   # hydrogens and missing heavy atoms added (PDBFixer/OpenMM)
    load_input("sys.prmtop", coordinates="sys.inpcrd")   # the prmtop's own force field
    build_system(prepared, forcefield=..., solvent=..., constraints=..., hydrogen_mass=..., cutoff_nm=...)

Embedded systems (:data:`EMBEDDED`):
    ala2  alanine dipeptide ACE-ALA-NME, 22 atoms: the solute of MDAnalysisTests' ``capped-ala.prmtop`` (an
          Amber system of the dipeptide in 1683 TIP3P waters) at the first frame of ``capped-ala.mdcrd.bz2``;
          names, residues, elements and bonds from the prmtop, the waters dropped. The standard small benchmark
          of learned MD samplers (two backbone dihedrals φ, ψ; αR and β basins).
    adk   adenylate kinase, open state (MDAnalysisTests' ``adk_open.pdb``, 214 residues, 3341 atoms with its
          CHARMM hydrogens, which OpenMM maps onto Amber names): a protein for GPU machines.

PDB input (.pdb, .ent, .cif): water and the counter-ions Na⁺, K⁺, Cl⁻ are removed (implicit solvent or vacuum
replaces them); any other residue that is not a standard amino acid, nucleotide or ACE/NME cap is an error
(no force field here has parameters for it). Missing heavy atoms of standard residues, including terminal
OXT, are added by PDBFixer from its residue templates, then hydrogens by OpenMM's ``Modeller.addHydrogens`` at
pH 7 (protonation states from the pH; histidine from its hydrogen-bond partners). Missing *residues* are not
modelled: a chain break (a bond longer than 3 Å) is an error. If the file's own hydrogens do not match the
force field's templates, they are removed and rebuilt (with a note).

Force fields (:data:`FORCEFIELDS`, OpenMM's bundled XML files) with their implicit-solvent partners:
    amber99sbildn  + amber99_obc.xml  (OBC II as OpenMM's native GBSAOBCForce: the fastest GB on CPU)  default
    amber99sb      + amber99_obc.xml
    amber03        + amber03_obc.xml
    amber14        + implicit/obc2.xml (OBC II as a CustomGBForce: 15–25 % slower on CPU for ala2)
Amber prmtop input keeps the prmtop's force field; its implicit solvent is OBC II with the prmtop's GB radii.
Lengths in nm inside OpenMM; positions are handed over as NumPy [N, 3] arrays in nm.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError


class SimulateInputError(UserError, ValueError):
    """An input structure, system name or setting that ``simulate`` cannot use."""


@dataclass(frozen=True)
class ForceFieldSpec:
    """OpenMM force-field XML files: the force field and the implicit-solvent model that goes with it."""

    files: tuple[str, ...]
    implicit: tuple[str, ...]
    implicit_model: str


FORCEFIELDS: dict[str, ForceFieldSpec] = {
    "amber99sbildn": ForceFieldSpec(("amber99sbildn.xml",), ("amber99_obc.xml",), "OBC II (GBSAOBCForce)"),
    "amber99sb": ForceFieldSpec(("amber99sb.xml",), ("amber99_obc.xml",), "OBC II (GBSAOBCForce)"),
    "amber03": ForceFieldSpec(("amber03.xml",), ("amber03_obc.xml",), "OBC II (GBSAOBCForce)"),
    "amber14": ForceFieldSpec(("amber14-all.xml",), ("implicit/obc2.xml",), "OBC II (CustomGBForce)"),
}
DEFAULT_FORCEFIELD = "amber99sbildn"
SOLVENTS = ("implicit", "vacuum")
CONSTRAINTS = ("none", "hbonds", "allbonds", "hangles")
PDB_SUFFIXES = (".pdb", ".ent", ".cif", ".pdbx")
AMBER_SUFFIXES = (".prmtop", ".parm7", ".top")
COORD_SUFFIXES = (".inpcrd", ".rst7", ".crd", ".ncrst", ".rst")
SOLVENT_RESIDUES = {"HOH", "WAT", "SOL", "TIP3", "TIP3P", "TIP4", "SPC", "T3P", "NA", "NA+", "SOD", "K", "K+",
                    "POT", "CL", "CL-", "CLA"}
CAPS = {"ACE", "NME", "NMA", "NH2"}
MAX_BOND_NM = 0.3  # a "bond" longer than this is a chain break


@dataclass
class PreparedInput:
    """A structure ready for OpenMM.

    Attributes:
        name: short name (embedded system name or file stem).
        kind: "embedded", "pdb" or "amber".
        topology: openmm.app.Topology (residues, names, elements, bonds).
        positions: [N, 3] float64 positions in nm.
        source: provenance (files read, force field origin), recorded in simulate.json.
        notes: what was changed (hydrogens added, waters removed, …), one sentence each.
        prmtop: the openmm.app.AmberPrmtopFile when the force field comes from a prmtop, else None.
    """

    name: str
    kind: str
    topology: object
    positions: np.ndarray
    source: dict
    notes: list[str] = field(default_factory=list)
    prmtop: object = None

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])


def import_openmm():
    """The openmm module (with openmm.app), or a SimulateInputError saying how to install it."""
    try:
        import openmm
        import openmm.app
    except ImportError:  # pragma: no cover - openmm is a dependency
        raise SimulateInputError("simulate needs OpenMM: pip install openmm") from None
    return openmm


def embedded_names() -> list[str]:
    return list(EMBEDDED)


def _forcefield_spec(name: str) -> ForceFieldSpec:
    if name not in FORCEFIELDS:
        raise SimulateInputError(f"unknown force field {name!r}: choose one of {', '.join(FORCEFIELDS)}")
    return FORCEFIELDS[name]


def openmm_forcefield(name: str, solvent: str):
    """openmm.app.ForceField for ``name`` with (``solvent="implicit"``) or without its GB model."""
    mm = import_openmm()
    spec = _forcefield_spec(name)
    if solvent not in SOLVENTS:
        raise SimulateInputError(f"solvent must be one of {', '.join(SOLVENTS)}, not {solvent!r}")
    files = spec.files + (spec.implicit if solvent == "implicit" else ())
    return mm.app.ForceField(*files)


# ----------------------------------------------------------------------------------------------- embedded
def _ala2() -> PreparedInput:
    """ACE-ALA-NME from MDAnalysisTests' capped-ala.prmtop + the first frame of capped-ala.mdcrd.bz2 (read once
    per process; each call returns its own copy of the positions and notes)."""
    p = _ala2_cached()
    return dataclasses.replace(p, positions=p.positions.copy(), notes=list(p.notes), source=dict(p.source))


@functools.lru_cache(maxsize=1)
def _ala2_cached() -> PreparedInput:
    import warnings

    from ..data.atoms import guess_element

    mm = import_openmm()
    try:
        import MDAnalysis
        from MDAnalysisTests.datafiles import PRMpbc, TRJpbc_bz2
    except ImportError:  # pragma: no cover - both are dependencies
        raise SimulateInputError("the embedded system ala2 needs MDAnalysis and MDAnalysisTests "
                                 "(pip install MDAnalysisTests)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = MDAnalysis.Universe(PRMpbc, TRJpbc_bz2)
    solute = u.select_atoms("resname ACE ALA NME")
    assert len(solute) == 22 and [r.resname for r in solute.residues] == ["ACE", "ALA", "NME"]
    top = mm.app.Topology()
    chain = top.addChain("A")
    residues = {}
    atoms = []
    for atom in solute:
        if atom.resindex not in residues:
            residues[atom.resindex] = top.addResidue(atom.resname, chain, str(len(residues) + 1))
        element = mm.app.Element.getBySymbol(guess_element(atom.name, float(atom.mass)))
        atoms.append(top.addAtom(atom.name, element, residues[atom.resindex]))
    local = {int(i): k for k, i in enumerate(solute.indices)}
    for a, b in solute.intra_bonds.indices:
        top.addBond(atoms[local[int(a)]], atoms[local[int(b)]])
    positions = solute.positions.astype(np.float64) / 10.0  # Å → nm
    source = {"files": [os.path.basename(PRMpbc), os.path.basename(TRJpbc_bz2)], "package": "MDAnalysisTests",
              "frame": 0, "selection": "resname ACE ALA NME"}
    return PreparedInput("ala2", "embedded", top, positions, source,
                         ["alanine dipeptide (ACE-ALA-NME) taken from the first frame of MDAnalysisTests' "
                          "capped-ala system; its 1683 waters dropped"])


def _adk() -> PreparedInput:
    try:
        from MDAnalysisTests.datafiles import PDB_small
    except ImportError:  # pragma: no cover
        raise SimulateInputError("the embedded system adk needs MDAnalysisTests (pip install MDAnalysisTests)") \
            from None
    prepared = _load_pdb(Path(PDB_small), DEFAULT_FORCEFIELD)
    prepared.name, prepared.kind = "adk", "embedded"
    prepared.source = {"files": [os.path.basename(PDB_small)], "package": "MDAnalysisTests"} | prepared.source
    return prepared


EMBEDDED = {
    "ala2": ("alanine dipeptide ACE-ALA-NME, 22 atoms (MDAnalysisTests capped-ala, waters dropped)", _ala2),
    "adk": ("adenylate kinase, open state, 214 residues, 3341 atoms (MDAnalysisTests adk_open.pdb)", _adk),
}


# ------------------------------------------------------------------------------------------------ loading
def load_input(spec: str | os.PathLike, *, forcefield: str = DEFAULT_FORCEFIELD,
               coordinates: str | os.PathLike | None = None) -> PreparedInput:
    """An embedded system name, a PDB/mmCIF file, or an Amber prmtop (+ ``coordinates``) → PreparedInput.

    ``coordinates``: the inpcrd/rst7 of a prmtop; default: a file beside it with the same stem and one of the
    suffixes .inpcrd, .rst7, .crd, .ncrst, .rst. ``forcefield`` is used to check PDB residues and to add
    hydrogens; a prmtop brings its own.
    """
    text = str(spec)
    if text in EMBEDDED:
        return EMBEDDED[text][1]()
    path = Path(text)
    suffix = path.suffix.lower()
    if not path.exists():
        if suffix or os.sep in text:
            raise SimulateInputError(f"{text} does not exist")
        raise SimulateInputError(f"unknown system {text!r}: give a PDB file, an Amber prmtop, or one of the "
                                 f"embedded systems {', '.join(EMBEDDED)}")
    if path.is_dir():
        raise SimulateInputError(f"{text} is a directory, not a structure file")
    if suffix in PDB_SUFFIXES:
        _forcefield_spec(forcefield)
        return _load_pdb(path, forcefield)
    if suffix in AMBER_SUFFIXES:
        return _load_amber(path, coordinates)
    raise SimulateInputError(f"cannot tell what {path.name} is: give a PDB/mmCIF file ({', '.join(PDB_SUFFIXES)}), "
                             f"an Amber prmtop ({', '.join(AMBER_SUFFIXES)}) or one of {', '.join(EMBEDDED)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def _load_pdb(path: Path, forcefield: str) -> PreparedInput:
    mm = import_openmm()
    try:
        from pdbfixer import PDBFixer
        from pdbfixer.pdbfixer import dnaResidues, proteinResidues, rnaResidues, substitutions
    except ImportError:  # pragma: no cover - pdbfixer is a dependency
        raise SimulateInputError("reading a PDB needs PDBFixer: pip install pdbfixer") from None
    try:
        fixer = PDBFixer(filename=str(path))
    except Exception as exc:  # noqa: BLE001 - the PDB/PDBx parsers raise many types
        raise SimulateInputError(f"cannot read {path.name} as a structure: {_first_line(exc)}") from None
    if fixer.topology.getNumAtoms() == 0:
        raise SimulateInputError(f"{path.name} holds no atoms")
    notes = []
    known = set(proteinResidues) | set(dnaResidues) | set(rnaResidues) | CAPS
    solvent = [r for r in fixer.topology.residues() if r.name.upper() in SOLVENT_RESIDUES]
    unknown = [r for r in fixer.topology.residues() if r.name.upper() not in known | SOLVENT_RESIDUES]
    if unknown:
        r = unknown[0]
        names = sorted({x.name for x in unknown})
        hint = (f" ({r.name} is a modified {substitutions[r.name]}: replace it first, e.g. with PDBFixer's "
                "replaceNonstandardResidues)") if r.name in substitutions else ""
        raise SimulateInputError(
            f"{path.name} has residues that are not standard amino acids, nucleotides or ACE/NME caps "
            f"({', '.join(names)}; first: {r.name} {r.id} of chain {r.chain.id}){hint}; the force field "
            f"{forcefield} has no parameters for them: remove them or give an Amber prmtop + inpcrd")
    if solvent:
        modeller = mm.app.Modeller(fixer.topology, fixer.positions)
        modeller.delete(solvent)
        fixer.topology, fixer.positions = modeller.topology, modeller.positions
        notes.append(f"removed {len(solvent)} water/ion residues (implicit solvent or vacuum replaces them)")
    if fixer.topology.getNumAtoms() == 0:
        raise SimulateInputError(f"{path.name} holds only water and ions")
    fixer.findMissingResidues()
    fixer.missingResidues = {}  # residues are never modelled; gaps are caught by the bond-length check
    fixer.findMissingAtoms()
    n_heavy = sum(len(v) for v in fixer.missingAtoms.values()) + sum(len(v) for v in fixer.missingTerminals.values())
    if n_heavy:
        fixer.addMissingAtoms()
        notes.append(f"added {n_heavy} missing heavy atoms (PDBFixer)")
    ff = openmm_forcefield(forcefield, "vacuum")
    had_h = any(a.element is not None and a.element.symbol == "H" for a in fixer.topology.atoms())
    topology, positions, added = _add_hydrogens(fixer.topology, fixer.positions, ff)
    try:
        ff.createSystem(topology)
    except ValueError as exc:
        if not had_h:
            raise SimulateInputError(f"{path.name}: {_first_line(exc)}") from None
        # the file's hydrogens do not match the templates: rebuild them all
        modeller = mm.app.Modeller(fixer.topology, fixer.positions)
        modeller.delete([a for a in modeller.topology.atoms() if a.element is not None and a.element.symbol == "H"])
        topology, positions, added = _add_hydrogens(modeller.topology, modeller.positions, ff)
        try:
            ff.createSystem(topology)
        except ValueError as exc2:
            raise SimulateInputError(f"{path.name}: {_first_line(exc2)}") from None
        notes.append(f"the file's hydrogens did not match {forcefield}'s templates: all rebuilt")
    if added:
        notes.append(f"added {added} hydrogens at pH 7 (OpenMM Modeller)")
    pos = np.asarray(positions.value_in_unit(mm.unit.nanometer), np.float64)
    _check_bonds(topology, pos, path.name)
    return PreparedInput(path.stem, "pdb", topology, pos, {"files": [str(path)], "forcefield_from": "--forcefield"},
                         notes)


def _add_hydrogens(topology, positions, ff):
    import openmm.app as app

    modeller = app.Modeller(topology, positions)
    before = modeller.topology.getNumAtoms()
    try:
        modeller.addHydrogens(ff, pH=7.0)
    except ValueError as exc:
        raise SimulateInputError(f"cannot add hydrogens: {_first_line(exc)}") from None
    return modeller.topology, modeller.positions, modeller.topology.getNumAtoms() - before


def _check_bonds(topology, pos: np.ndarray, label: str) -> None:
    """Chain breaks: OpenMM bonds consecutive residues of a chain whatever their distance."""
    bonds = np.array([(b[0].index, b[1].index) for b in topology.bonds()], np.int64).reshape(-1, 2)
    if not len(bonds):
        return
    length = np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=1)
    bad = np.flatnonzero(length > MAX_BOND_NM)
    if len(bad):
        atoms = list(topology.atoms())
        a, b = atoms[bonds[bad[0], 0]], atoms[bonds[bad[0], 1]]
        raise SimulateInputError(
            f"{label} has a chain break: {a.residue.name} {a.residue.id} {a.name} – {b.residue.name} "
            f"{b.residue.id} {b.name} are {10 * length[bad[0]]:.1f} Å apart ({len(bad)} such bonds); missing "
            "residues are not modelled, so split the chains or complete the structure first")


def _load_amber(path: Path, coordinates) -> PreparedInput:
    mm = import_openmm()
    try:
        prmtop = mm.app.AmberPrmtopFile(str(path))
    except Exception as exc:  # noqa: BLE001
        raise SimulateInputError(f"cannot read {path.name} as an Amber prmtop: {_first_line(exc)}") from None
    waters = [r for r in prmtop.topology.residues() if r.name.upper() in SOLVENT_RESIDUES]
    if prmtop.topology.getPeriodicBoxVectors() is not None or waters:
        raise SimulateInputError(
            f"{path.name} is a solvated (periodic) system with {len(waters)} water/ion residues; simulate runs "
            "implicit solvent or vacuum: strip the solvent (e.g. cpptraj's strip or ParmEd) or give a PDB "
            "of the solute")
    if coordinates is None:
        found = [path.with_suffix(s) for s in COORD_SUFFIXES if path.with_suffix(s).is_file()]
        if not found:
            raise SimulateInputError(f"{path.name} is a prmtop: give its coordinates with --coordinates FILE.inpcrd "
                                     "(or put FILE.inpcrd / .rst7 beside it with the same name)")
        coordinates = found[0]
    coordinates = Path(coordinates)
    if not coordinates.is_file():
        raise SimulateInputError(f"{coordinates} does not exist")
    try:
        crd = mm.app.AmberInpcrdFile(str(coordinates))
    except Exception as exc:  # noqa: BLE001
        raise SimulateInputError(f"cannot read {coordinates.name} as Amber coordinates: {_first_line(exc)}") \
            from None
    n_top, pos = prmtop.topology.getNumAtoms(), crd.getPositions(asNumpy=True)
    pos = np.asarray(pos.value_in_unit(mm.unit.nanometer), np.float64)
    if len(pos) != n_top:
        raise SimulateInputError(f"{coordinates.name} has {len(pos)} atoms but {path.name} has {n_top}")
    return PreparedInput(path.stem, "amber", prmtop.topology, pos,
                         {"files": [str(path), str(coordinates)], "forcefield_from": "prmtop"}, [], prmtop)


# ---------------------------------------------------------------------------------------------- the System
def build_system(prepared: PreparedInput, *, forcefield: str = DEFAULT_FORCEFIELD, solvent: str = "implicit",
                 constraints: str = "hbonds", hydrogen_mass: float | None = 1.5, cutoff_nm: float | None = None):
    """The openmm.System of a prepared input.

    Args:
        forcefield: a key of :data:`FORCEFIELDS` (ignored for a prmtop, which brings its own).
        solvent: "implicit" (OBC II generalized Born) or "vacuum".
        constraints: none, hbonds (bonds to hydrogen rigid), allbonds or hangles.
        hydrogen_mass: amu given to every hydrogen, the difference taken from the heavy atom it is bonded to
            (hydrogen mass repartitioning: the configurational ensemble is unchanged); None or ≤ 1.008 = off.
        cutoff_nm: non-bonded cutoff in nm (reaction field beyond it); None = every pair (exact).
    """
    mm = import_openmm()
    app, unit = mm.app, mm.unit
    if constraints not in CONSTRAINTS:
        raise SimulateInputError(f"constraints must be one of {', '.join(CONSTRAINTS)}, not {constraints!r}")
    if solvent not in SOLVENTS:
        raise SimulateInputError(f"solvent must be one of {', '.join(SOLVENTS)}, not {solvent!r}")
    cons = {"none": None, "hbonds": app.HBonds, "allbonds": app.AllBonds, "hangles": app.HAngles}[constraints]
    hmass = hydrogen_mass * unit.amu if hydrogen_mass is not None and hydrogen_mass > 1.008 else None
    method = app.NoCutoff if cutoff_nm is None else app.CutoffNonPeriodic
    kwargs = {"nonbondedMethod": method, "constraints": cons, "hydrogenMass": hmass}
    if cutoff_nm is not None:
        if cutoff_nm <= 0:
            raise SimulateInputError(f"--cutoff must be positive, got {cutoff_nm}")
        kwargs["nonbondedCutoff"] = cutoff_nm * unit.nanometer
    if prepared.prmtop is not None:
        implicit = app.OBC2 if solvent == "implicit" else None
        try:
            return prepared.prmtop.createSystem(implicitSolvent=implicit, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise SimulateInputError(f"OpenMM cannot build a system from the prmtop: {_first_line(exc)}") from None
    ff = openmm_forcefield(forcefield, solvent)
    try:
        return ff.createSystem(prepared.topology, **kwargs)
    except ValueError as exc:
        raise SimulateInputError(f"{prepared.name}: {_first_line(exc)} (force field {forcefield})") from None
