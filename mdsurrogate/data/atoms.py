"""Per-atom identity of a system (:class:`AtomTopology`): what trajectory writers and readers need.

Two "topologies" live in :mod:`mdsurrogate.data`; they answer different questions:

* :class:`~mdsurrogate.data.topology.BatchTopology` (``data/topology.py``) is what the *model* sees: the static
  graph of a batch of systems as tensors (``ptr`` [B+1], node properties such as charges or element ids [ΣN],
  static edge sets such as bonds [2, E] with edge properties), batched flat for the featurizer. It has no names.
* :class:`AtomTopology` (this module) is what a *file* holds: one system's per-atom identity as NumPy arrays of
  strings and integers (atom names, elements, residue names and numbers, chains/segments, PDB record types,
  bonds as index pairs, integer labels such as cluster ids), so that a PDB/XYZ/DCD/XTC written from a rollout
  opens in VMD, PyMOL, MDAnalysis or ASE with the right atoms. It is never batched and has no tensors.

An MD selection has both (``data.sources.md.MDSystem``): its BatchTopology for the model, its AtomTopology for
the writers. AtomTopology is a small, dependency-free container rather than an MDAnalysis ``Universe`` or an ASE
``Atoms``; it can be built for generic particles (:meth:`AtomTopology.generic`), from an MDAnalysis
``AtomGroup`` (:meth:`AtomTopology.from_atomgroup`) or an ASE ``Atoms`` (:meth:`AtomTopology.from_ase`), duck-typed:
neither library is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["AtomTopology", "guess_element", "mdanalysis_topology", "standard_mass"]

# Standard atomic masses (u) of the elements that show up in biomolecular and soft-matter systems,
# used only to guess elements from masses when a topology carries masses but no elements (e.g. PSF).
_ELEMENT_MASSES: dict[str, float] = {
    "H": 1.008,
    "He": 4.0026,
    "Li": 6.94,
    "B": 10.81,
    "C": 12.011,
    "N": 14.007,
    "O": 15.999,
    "F": 18.998,
    "Ne": 20.180,
    "Na": 22.990,
    "Mg": 24.305,
    "Al": 26.982,
    "Si": 28.085,
    "P": 30.974,
    "S": 32.06,
    "Cl": 35.45,
    "Ar": 39.948,
    "K": 39.098,
    "Ca": 40.078,
    "Mn": 54.938,
    "Fe": 55.845,
    "Co": 58.933,
    "Ni": 58.693,
    "Cu": 63.546,
    "Zn": 65.38,
    "Se": 78.971,
    "Br": 79.904,
    "I": 126.904,
}


def guess_element(name: str, mass: float | None = None) -> str:
    """Guess a chemical element symbol from an atom name and, preferably, its mass.

    A mass within 0.6 u of a tabulated standard atomic mass wins (this is what makes CHARMM PSF
    topologies unambiguous: ``CA`` with mass 12.011 is carbon, with mass 40.08 calcium). Otherwise the
    first letter of the name is used (the PDB convention for biomolecules). Returns ``"X"`` if nothing
    can be guessed.
    """
    if mass is not None and np.isfinite(mass) and mass > 0:
        best = min(_ELEMENT_MASSES, key=lambda el: abs(_ELEMENT_MASSES[el] - mass))
        if abs(_ELEMENT_MASSES[best] - mass) < 0.6:
            return best
    letters = "".join(ch for ch in str(name) if ch.isalpha())
    return letters[0].upper() if letters else "X"


def standard_mass(element: str) -> float:
    """Standard atomic mass (u) of an element symbol: from the table above, else from ASE's table when ASE is
    installed, else 1.0 (also for ``"X"``, a dummy particle, as in ASE)."""
    symbol = str(element).strip().capitalize()
    if symbol in _ELEMENT_MASSES:
        return _ELEMENT_MASSES[symbol]
    try:
        from ase.data import atomic_masses, atomic_numbers
    except ImportError:
        return 1.0
    z = atomic_numbers.get(symbol, 0)
    return float(atomic_masses[z]) if z else 1.0


def _str_array(values: Any, n: int, what: str) -> np.ndarray:
    if isinstance(values, str):
        arr = np.full(n, values, dtype=object)
    else:
        arr = np.array([str(v) for v in values], dtype=object)
    if arr.shape != (n,):
        raise ValueError(f"{what} must have length n_atoms={n}, got shape {arr.shape}")
    return arr


def _int_array(values: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise ValueError(f"{what} must have length n_atoms={n}, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_int = arr.astype(np.int64)
        if not np.array_equal(as_int, arr):
            raise ValueError(f"{what} must be integers")
        arr = as_int
    return arr.astype(np.int64)


@dataclass(eq=False)
class AtomTopology:
    """Static per-atom identity of ONE system, as trajectory writers and readers need it (not batched, no tensors;
    the model's static graph is :class:`~mdsurrogate.data.topology.BatchTopology`).

    All per-atom arrays have length ``n_atoms`` and are normalised on construction (strings to object
    arrays of ``str``, integers to ``int64``). A scalar string/int is broadcast to all atoms.

    Attributes
    ----------
    names:
        Atom names, e.g. ``"CA"``. PDB holds at most 4 characters.
    elements:
        Element symbols, e.g. ``"C"``, ``"Fe"`` (``"X"`` for a dummy/unknown particle). Used as the
        PDB element column and the extended-XYZ ``species``.
    resnames:
        Residue names (PDB holds at most 4 characters, 3 by convention).
    resids:
        Residue numbers (integers).
    chainids:
        Chain/segment identifiers. Written to PDB both as the chain ID (first character, column 22) and
        as the segment ID (columns 73-76, up to 4 characters), which is what MDAnalysis reads as
        ``segids``.
    bonds:
        Optional ``[E, 2]`` integer array of 0-based atom index pairs (e.g. a coarse-grained skeleton),
        written as PDB ``CONECT`` records on request.
    labels:
        Optional static integer per-atom labels keyed by name, e.g. ``{"cluster": ids}``. Written as
        integer columns in extended XYZ; a PDB writer can use one as its B-factor column.
    record_types:
        Optional per-atom PDB record type, ``"ATOM"`` or ``"HETATM"`` (default: all ``"ATOM"``).
    masses:
        Optional per-atom masses in u (positive); :meth:`masses_or_standard` falls back to the elements'
        standard masses. Written to extended XYZ (with velocities as ASE momenta).

    Examples
    --------
    >>> top = AtomTopology.generic(4, element="Ar", labels={"cluster": [0, 0, 1, 1]})
    >>> top.n_atoms, list(top.names)
    (4, ['Ar', 'Ar', 'Ar', 'Ar'])
    """

    names: np.ndarray
    elements: np.ndarray
    resnames: np.ndarray
    resids: np.ndarray
    chainids: np.ndarray
    bonds: np.ndarray | None = None
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    record_types: np.ndarray | None = None
    masses: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.names, str):
            raise TypeError("names must be a sequence of strings (one per atom)")
        self.names = _str_array(self.names, len(self.names), "names")
        n = len(self.names)
        self.elements = _str_array(self.elements, n, "elements")
        self.resnames = _str_array(self.resnames, n, "resnames")
        self.resids = _int_array(self.resids, n, "resids")
        self.chainids = _str_array(self.chainids, n, "chainids")
        if self.bonds is not None:
            bonds = np.asarray(self.bonds)
            if bonds.size == 0:
                bonds = bonds.reshape(0, 2)
            if bonds.ndim != 2 or bonds.shape[1] != 2:
                raise ValueError(f"bonds must have shape [E, 2], got {bonds.shape}")
            bonds = _int_array(bonds.ravel(), bonds.size, "bonds").reshape(-1, 2)
            if bonds.size and (bonds.min() < 0 or bonds.max() >= n):
                raise ValueError(f"bond indices must lie in [0, {n})")
            if np.any(bonds[:, 0] == bonds[:, 1]):
                raise ValueError("bonds must not connect an atom to itself")
            self.bonds = bonds
        labels: dict[str, np.ndarray] = {}
        for key, values in dict(self.labels or {}).items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ValueError(f"label names must be identifiers, got {key!r}")
            labels[key] = _int_array(values, n, f"labels[{key!r}]")
        self.labels = labels
        if self.record_types is not None:
            rec = _str_array(self.record_types, n, "record_types")
            bad = set(rec) - {"ATOM", "HETATM"}
            if bad:
                raise ValueError(f"record_types must be 'ATOM' or 'HETATM', got {sorted(bad)}")
            self.record_types = rec
        if self.masses is not None:
            masses = np.asarray(self.masses, dtype=np.float64).reshape(-1)
            if masses.shape != (n,):
                raise ValueError(f"masses must have length n_atoms={n}, got shape {masses.shape}")
            if not (np.all(np.isfinite(masses)) and np.all(masses > 0)):
                raise ValueError("masses must be positive and finite")
            self.masses = masses

    # ------------------------------------------------------------------ properties
    @property
    def n_atoms(self) -> int:
        """Number of atoms/particles."""
        return len(self.names)

    def __len__(self) -> int:
        return self.n_atoms

    def __repr__(self) -> str:
        extra = []
        if self.bonds is not None:
            extra.append(f"n_bonds={len(self.bonds)}")
        if self.labels:
            extra.append(f"labels={sorted(self.labels)}")
        tail = (", " + ", ".join(extra)) if extra else ""
        return f"AtomTopology(n_atoms={self.n_atoms}{tail})"

    # ---------------------------------------------------------------- constructors
    @classmethod
    def generic(
        cls,
        n: int,
        element: str = "C",
        name_prefix: str | None = None,
        *,
        resname: str = "PAR",
        chainid: str = "A",
        one_residue_per_atom: bool = True,
        bonds: Any = None,
        labels: Mapping[str, Any] | None = None,
    ) -> AtomTopology:
        """Topology for ``n`` identical generic particles (e.g. a Lennard-Jones fluid or CG beads).

        Parameters
        ----------
        n:
            Number of particles.
        element:
            Element symbol used for every particle (``"X"`` for a dummy).
        name_prefix:
            If given, atom names are ``f"{name_prefix}{i + 1}"``; otherwise every name is ``element``.
            Keep names within 4 characters if the topology is written to PDB.
        resname, chainid:
            Residue name and chain/segment ID of every particle.
        one_residue_per_atom:
            Residue IDs ``1..n`` (default, one bead per residue) instead of a single residue 1.
        bonds, labels:
            Passed through (see the class attributes).
        """
        n = int(n)
        if n < 0:
            raise ValueError("n must be non-negative")
        if name_prefix is None:
            names = [element] * n
        else:
            names = [f"{name_prefix}{i + 1}" for i in range(n)]
        resids = np.arange(1, n + 1) if one_residue_per_atom else np.ones(n, dtype=np.int64)
        return cls(
            names=np.array(names, dtype=object),
            elements=np.full(n, element, dtype=object),
            resnames=np.full(n, resname, dtype=object),
            resids=resids,
            chainids=np.full(n, chainid, dtype=object),
            bonds=bonds,
            labels=dict(labels or {}),
        )

    @classmethod
    def from_atomgroup(cls, atomgroup: Any, *, labels: Mapping[str, Any] | None = None) -> AtomTopology:
        """Build from an MDAnalysis ``AtomGroup`` or ``Universe`` (duck-typed; MDAnalysis is not imported).

        Elements come from ``elements`` when present and non-empty, else are guessed from masses and
        names (:func:`guess_element`). Names fall back to the atom types where the topology has none (LAMMPS).
        ``chainids`` are the segment IDs (falling back to chain IDs).
        Bonds with both atoms inside the group are kept, re-indexed to the group.
        """
        ag = getattr(atomgroup, "atoms", atomgroup)
        n = ag.n_atoms

        def attr(name: str) -> np.ndarray | None:
            try:
                value = getattr(ag, name)
            except Exception:  # MDAnalysis raises NoDataError for missing attributes
                return None
            return np.asarray(value)

        names = attr("names")
        if names is None:  # a LAMMPS data file has atom types and masses but no names
            names = attr("types")
        if names is None:
            names = np.full(n, "X", dtype=object)
        masses = attr("masses")
        elements = attr("elements")
        if elements is None or not all(str(e).strip() for e in elements):
            given = elements if elements is not None else [""] * n
            mass_list = masses.tolist() if masses is not None else [None] * n
            elements = np.array(
                [
                    str(e).strip().capitalize() or guess_element(str(nm), m)
                    for e, nm, m in zip(given, names, mass_list, strict=True)
                ],
                dtype=object,
            )
        resnames = attr("resnames")
        resids = attr("resids")
        segids = attr("segids")
        if segids is None or not any(str(s).strip() for s in segids):
            segids = attr("chainIDs")
        record_types = attr("record_types")
        if record_types is not None and set(map(str, record_types)) - {"ATOM", "HETATM"}:
            record_types = None

        bonds = None
        try:
            bond_group = ag.bonds
        except Exception:  # no bond information in the topology
            bond_group = None
        if bond_group is not None:
            try:
                pairs = np.asarray(bond_group.indices, dtype=np.int64).reshape(-1, 2)
            except Exception:
                pairs = None
            if pairs is not None:
                global_idx = np.asarray(ag.indices, dtype=np.int64)
                local = {int(g): i for i, g in enumerate(global_idx)}
                keep = [(local[a], local[b]) for a, b in pairs.tolist() if a in local and b in local]
                bonds = np.array(keep, dtype=np.int64).reshape(-1, 2)

        return cls(
            names=names,
            elements=elements,
            resnames=resnames if resnames is not None else np.full(n, "UNK", dtype=object),
            resids=resids if resids is not None else np.ones(n, dtype=np.int64),
            chainids=segids if segids is not None else np.full(n, "A", dtype=object),
            bonds=bonds,
            labels=dict(labels or {}),
            record_types=record_types,
            masses=masses if masses is not None and np.all(masses > 0) else None,
        )

    @classmethod
    def from_ase(
        cls,
        atoms: Any,
        *,
        resname: str = "MOL",
        chainid: str = "A",
        labels: Mapping[str, Any] | None = None,
    ) -> AtomTopology:
        """Build from an ASE ``Atoms`` (duck-typed): names and elements are the chemical symbols, and
        every atom is in residue 1."""
        symbols = list(atoms.get_chemical_symbols())
        n = len(symbols)
        return cls(
            names=symbols,
            elements=symbols,
            resnames=np.full(n, resname, dtype=object),
            resids=np.ones(n, dtype=np.int64),
            chainids=np.full(n, chainid, dtype=object),
            labels=dict(labels or {}),
            masses=np.asarray(atoms.get_masses(), dtype=np.float64),
        )

    # -------------------------------------------------------------------- helpers
    def with_labels(self, **labels: Sequence[int] | np.ndarray) -> AtomTopology:
        """Return a copy with the given integer labels added (or replaced)."""
        merged = dict(self.labels)
        merged.update(labels)
        return replace(self, labels=merged)

    def with_bonds(self, bonds: Any) -> AtomTopology:
        """Return a copy with ``bonds`` (``[E, 2]`` 0-based index pairs) replaced."""
        return replace(self, bonds=bonds)

    def masses_or_standard(self) -> np.ndarray:
        """[N] masses in u: :attr:`masses` when known, else the elements' standard masses (:func:`standard_mass`)."""
        if self.masses is not None:
            return self.masses
        table = {e: standard_mass(e) for e in set(self.elements)}
        return np.array([table[e] for e in self.elements], dtype=np.float64)


def mdanalysis_topology(atoms: AtomTopology):
    """An MDAnalysis ``Topology`` of ``atoms``: names, types (= elements), elements, resids, resnames, chain and
    segment ids (both from ``chainids``), record types, masses (when known) and bonds. Residues are runs of atoms
    with the same (resid, resname, segid); segments are runs with the same segid. MDAnalysis is imported here."""
    from MDAnalysis.core.topology import Topology
    from MDAnalysis.core.topologyattrs import (
        Atomids,
        Atomnames,
        Atomtypes,
        Bonds,
        ChainIDs,
        Elements,
        Masses,
        RecordTypes,
        Resids,
        Resnames,
        Resnums,
        Segids,
    )
    from MDAnalysis.topology.base import change_squash

    n = atoms.n_atoms
    names = np.asarray(atoms.names, dtype=object)
    elements = np.asarray([str(e).strip().capitalize() for e in atoms.elements], dtype=object)
    chain = np.asarray(atoms.chainids, dtype=object)
    attrs = [Atomnames(names), Atomids(np.arange(1, n + 1)), Atomtypes(elements.copy()), Elements(elements),
             ChainIDs(chain.copy())]
    if atoms.record_types is not None:
        attrs.append(RecordTypes(np.asarray(atoms.record_types, dtype=object)))
    if atoms.masses is not None:
        attrs.append(Masses(np.asarray(atoms.masses, dtype=np.float64)))
    resids = np.asarray(atoms.resids, dtype=np.int64)
    resnames = np.asarray(atoms.resnames, dtype=object)
    residx, (resids, resnames, segids) = change_squash((resids, resnames, chain), (resids, resnames, chain))
    attrs += [Resids(resids), Resnums(resids.copy()), Resnames(resnames)]
    segidx, (segids,) = change_squash((segids,), (segids,))
    attrs.append(Segids(segids))
    if atoms.bonds is not None and len(atoms.bonds):
        pairs = np.unique(np.sort(atoms.bonds, axis=1), axis=0)
        attrs.append(Bonds([tuple(p) for p in pairs.tolist()], guessed=False))
    return Topology(n, len(resids), len(segids), attrs=attrs, atom_resindex=residx, residue_segindex=segidx)
