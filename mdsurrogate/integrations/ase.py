"""ASE integration: a calculator for learned potentials, and an MD driver for learned propagators.

    from mdsurrogate.integrations.ase import SurrogateCalculator, SurrogateDynamics

    atoms.calc = SurrogateCalculator("runs/cu/best.pt", dtype="float64")   # energy, energies, forces, stress
    VelocityVerlet(atoms, 2 * units.fs).run(1000)                           # any ASE dynamics or optimiser
    BFGS(FrechetCellFilter(atoms)).run(fmax=1e-3)                           # cell relaxation (stress)
    results = atoms.calc.calculate_batch(list_of_atoms)                     # many structures, batched calls

    dyn = SurrogateDynamics(atoms, "runs/md/best.pt", trajectory="out.traj", logfile="-")
    dyn.run(100)                                                            # each step advances the model's Δ

Only this module imports ASE; ``import mdsurrogate`` and the core (data, models, training, rollout) work
without it. Checkpoints are loaded with ``torch.load(weights_only=True)`` (through ``load_checkpoint``): opening
an untrusted checkpoint cannot execute code.

Units at the boundary: ASE uses Å, eV, amu and its own time unit (``ase.units.fs`` per fs); velocities are
``momenta / masses`` in Å per ASE time unit. Potentials are trained in Å and eV, so the calculator needs no
conversion. Propagator checkpoints carry their dataset's units (``dataset.units``: length and time, e.g. Å and
ps for MD data) and Δ (``dataset.delta_time`` in that time unit); ``SurrogateDynamics`` converts positions and
velocities into them and back, once per step. Dimensionless checkpoints (synthetic systems) need
``units={"length": "Å", "time": "fs"}`` to say what their units mean.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

try:
    from ase import units as ase_units
    from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
    from ase.md.md import MolecularDynamics
except ImportError as exc:  # pragma: no cover - ASE is a declared dependency
    raise ImportError("mdsurrogate.integrations.ase needs ASE: pip install ase") from exc

from ..data.topology import BatchTopology
from ..device import resolve_dtype
from ..errors import CheckpointError, UserError
from ..simulation.guard import StabilityGuard
from ..simulation.surrogate import Surrogate
from ..training.checkpoint import Checkpoint, resolve_checkpoint

__all__ = ["PropagatorPlaceholderCalculator", "SurrogateCalculator", "SurrogateDynamics"]

_HINTS = {
    "potential": "SurrogateCalculator needs a learned potential (a run of `mdsurrogate train` with a potential "
                 "recipe such as recipes/cu_emt_potential.toml, on `mdsurrogate ingest emt` or `ingest ase` data); "
                 "to drive a propagator use SurrogateDynamics",
    "propagator": "SurrogateDynamics needs a propagator (an EGNN/EGHN/… run of `mdsurrogate train`); "
                  "to compute energies and forces with a potential use SurrogateCalculator",
}


def _load(checkpoint: str | os.PathLike, kind: str) -> Checkpoint:
    """Load a checkpoint safely and check its kind, with a hint naming the right class."""
    path = resolve_checkpoint(checkpoint)
    ck = Checkpoint.load(path)
    if ck.kind != kind:
        raise CheckpointError(f"{path} holds a {ck.kind} checkpoint, not a {kind}: {_HINTS[kind]}")
    return ck


# ----------------------------------------------------------------------------------------------------------
# the calculator
# ----------------------------------------------------------------------------------------------------------


class SurrogateCalculator(Calculator):
    """ASE calculator for a learned potential checkpoint (``kind = "potential"``).

    Args:
        checkpoint: a ``best.pt``/``last.pt`` file or a run directory (its ``best.pt``).
        device: torch device ("cpu", "cuda", "cuda:1"). dtype: "float32" (default) or "float64".
        **kwargs: passed to ``ase.calculators.calculator.Calculator`` (label, directory, …).

    Properties (float64 arrays):

    * ``energy`` and ``free_energy`` (eV; equal, the model has no electronic entropy);
    * ``energies`` [N] (eV): the model's per-atom energies ε_i, which sum to the energy;
    * ``forces`` [N, 3] (eV/Å): −∂E/∂x by autograd;
    * ``stress`` [6] (eV/Å³, Voigt order xx, yy, zz, yz, xz, xy): (1/V) ∂E/∂ε for a symmetric strain ε applied to
      positions and cell, by autograd in the same backward pass as the forces, with ASE's sign (positive under
      tension: ``atoms.get_stress()`` of a compressed crystal is negative). Defined for cells with a periodic
      direction and a non-zero volume (slabs too, with their vacuum row); a free structure raises ASE's
      ``PropertyNotImplementedError`` for it. Works with ``ase.filters.FrechetCellFilter`` (cell relaxation)
      and ASE's NPT integrators (``ase.md.nose_hoover_chain.MTKNPT``/``IsotropicMTKNPT``, ``ase.md.npt.NPT``,
      ``NPTBerendsen``).

    Caching follows ASE's protocol: one calculation fills every property (stress whenever the cell allows it), and
    a ``get_*`` call recomputes only when positions, numbers, cell or pbc changed. ``initial_charges`` and
    ``initial_magmoms`` are in ``ignored_changes``: the model reads neither, nor ``atoms.info``.
    ``calculations`` counts the model evaluations. :meth:`calculate_batch` evaluates many structures in one
    batched model call (screening).

    Periodic cells of any shape and size work (cells narrower than twice the cutoff, e.g. a one-atom primitive
    cell, see several images of each neighbour); partial periodicity (slabs, wires) too.

    Raises ``UnknownElementError`` (a ``ValueError``) naming any element the potential was never trained on,
    ``ValueError`` for degenerate periodic cells, and ``CheckpointError`` for a checkpoint of the wrong kind.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    ignored_changes = {"initial_charges", "initial_magmoms"}

    def __init__(self, checkpoint: str | os.PathLike, device: str | torch.device = "cpu", dtype="float32",
                 **kwargs):
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.checkpoint = _load(checkpoint, "potential")
        self.checkpoint_path = self.checkpoint.path
        self.model = self.checkpoint.build_model(device=self.device, dtype=self.dtype)
        self.elements: list[int] = list(self.model.elements)
        self.cutoff: float = float(self.model.cutoff)
        self.calculations = 0

    def _get_name(self) -> str:
        return "mdsurrogate"

    def todict(self, skip_default=True) -> dict:
        return {"checkpoint": str(self.checkpoint_path), "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", "")}

    @staticmethod
    def has_stress(atoms) -> bool:
        """True when stress is defined for ``atoms``: a periodic direction and a cell of non-zero volume."""
        return bool(np.any(atoms.pbc)) and abs(float(np.linalg.det(np.asarray(atoms.cell.array)))) > 1e-12

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        properties = list(properties or ["energy"])
        super().calculate(atoms, properties, system_changes)
        if "stress" in properties and not self.has_stress(self.atoms):
            raise PropertyNotImplementedError(
                "stress needs a periodic cell with a non-zero volume; these atoms are a free structure "
                f"(pbc = {self.atoms.pbc.tolist()})")
        self.results = self._evaluate([self.atoms])[0]

    def calculate_batch(self, images, properties=None, *, max_atoms: int = 20000) -> list[dict]:
        """Evaluate many structures (a list of ``Atoms``) in batched model calls; one result dict per structure.

        Each dict holds ``energy``, ``free_energy``, ``energies``, ``forces`` and, for structures with a periodic
        cell, ``stress`` (Voigt, eV/Å³), equal to what :meth:`calculate` gives one by one (to float rounding).
        Structures are grouped into calls of at most ``max_atoms`` atoms (a bigger structure goes alone). The
        atoms' own calculators and this calculator's cache are left untouched. ``properties`` (default all) only
        checks that what is asked for exists: asking for ``stress`` of a free structure raises
        ``PropertyNotImplementedError``.
        """
        images = list(images)
        for name in properties or []:
            if name not in self.implemented_properties:
                raise PropertyNotImplementedError(f"{name} is not a property of SurrogateCalculator")
        if "stress" in (properties or []):
            free = [k for k, a in enumerate(images) if not self.has_stress(a)]
            if free:
                raise PropertyNotImplementedError(f"stress needs periodic cells; structures {free[:5]} are free")
        results: list[dict] = []
        group: list = []
        count = 0
        for a in images:
            if group and count + len(a) > max_atoms:
                results.extend(self._evaluate(group))
                group, count = [], 0
            group.append(a)
            count += len(a)
        if group:
            results.extend(self._evaluate(group))
        return results

    def _evaluate(self, images) -> list[dict]:
        """One model call on a list of structures → one results dict per structure."""
        from ase.stress import full_3x3_to_voigt_6_stress

        sizes = [len(a) for a in images]
        numbers = torch.as_tensor(np.concatenate([np.asarray(a.numbers) for a in images]), dtype=torch.long,
                                  device=self.device)
        positions = torch.as_tensor(np.concatenate([np.asarray(a.positions, dtype=np.float64) for a in images]),
                                    dtype=self.dtype, device=self.device)
        batch = torch.repeat_interleave(torch.arange(len(images), device=self.device),
                                        torch.as_tensor(sizes, device=self.device))
        cells = np.stack([np.asarray(a.cell.array, dtype=np.float64) for a in images])
        pbcs = np.stack([np.asarray(a.pbc, dtype=bool) for a in images])
        stress_ok = [self.has_stress(a) for a in images]
        out = self.model(numbers, positions, batch, cells, pbcs, len(images), compute_forces=True,
                         compute_stress=any(stress_ok), create_graph=False)
        energy = out["energy"].detach().to("cpu", torch.float64).numpy()
        eps = out["atom_energies"].detach().to("cpu", torch.float64).numpy()
        forces = out["forces"].detach().to("cpu", torch.float64).numpy()
        stress = out["stress"].detach().to("cpu", torch.float64).numpy() if any(stress_ok) else None
        results, start = [], 0
        for g, n in enumerate(sizes):
            res = {"energy": float(energy[g]), "free_energy": float(energy[g]),
                   "energies": eps[start:start + n].copy(), "forces": forces[start:start + n].copy()}
            if stress_ok[g]:
                res["stress"] = full_3x3_to_voigt_6_stress(stress[g])
            results.append(res)
            start += n
        self.calculations += 1
        return results


# ----------------------------------------------------------------------------------------------------------
# the dynamics driver
# ----------------------------------------------------------------------------------------------------------


class PropagatorPlaceholderCalculator(Calculator):
    """Stands in for a force field on atoms driven by :class:`SurrogateDynamics` when they have no calculator.

    ASE's dynamics machinery and ``MDLogger`` ask the atoms for forces and energies; a propagator has neither.
    This calculator answers ``forces`` with zeros (never used to move atoms) and ``energy``/``free_energy``
    with NaN: "not known", so a log or trajectory can never be mistaken for a real potential energy. Attach a
    real calculator (e.g. a :class:`SurrogateCalculator`) to the atoms instead to log energies along a
    propagated trajectory.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties or ["energy"], system_changes)
        self.results = {"energy": math.nan, "free_energy": math.nan, "forces": np.zeros((len(self.atoms), 3))}


_LENGTH_UNITS = {"å": 1.0, "a": 1.0, "ang": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01, "bohr": ase_units.Bohr}
_TIME_UNITS = {"fs": ase_units.fs, "ps": 1000.0 * ase_units.fs, "ns": 1e6 * ase_units.fs, "ase": 1.0}
_BUILTIN_NODE = {"speed", "ones", "height"}
_BUILTIN_EDGE = {"dist", "dist2", "charge_product"}


def unit_factors(ds_units: dict | None, override: dict | None = None) -> tuple[float, float]:
    """(Å per dataset length unit, ASE time units per dataset time unit) from a checkpoint's ``dataset.units``."""
    u = dict(ds_units or {})
    u.update(override or {})
    length, time = str(u.get("length", "")), str(u.get("time", ""))
    lf, tf = _LENGTH_UNITS.get(length.lower()), _TIME_UNITS.get(time.lower())
    if lf is None or tf is None:
        raise UserError(
            f"the checkpoint's units (length {length!r}, time {time!r}) have no ASE equivalent; pass "
            f"units={{'length': …, 'time': …}} with a length in {sorted(_LENGTH_UNITS)} and a time in "
            f"{sorted(_TIME_UNITS)} (dimensionless synthetic data needs this too)"
        )
    return lf, tf


def needed_node_properties(spec) -> set[str]:
    """Node properties a feature spec reads from the topology (``charge`` for ``charge_product``, …)."""
    props = set()
    for name in spec.node:
        if name in _BUILTIN_NODE:
            continue
        props.add(name.split(":", 1)[1] if name.startswith("one_hot:") else name)
    for name in list(spec.edge) + list(spec.local_edge):
        if name == "charge_product":
            props.add("charge")
        elif name.startswith("same:"):
            props.add(name.split(":", 1)[1])
    return props


def _atoms_property(atoms, name: str) -> np.ndarray:
    if name == "charge":
        if "initial_charges" not in atoms.arrays:
            raise UserError("the propagator reads per-atom charges (node property 'charge'), but the atoms have "
                            "none: set them with atoms.set_initial_charges(...)")
        return atoms.get_initial_charges()
    if name == "mass":
        return atoms.get_masses()
    if name in ("Z", "numbers", "element"):
        return atoms.numbers.copy()
    if name in atoms.arrays:
        return np.asarray(atoms.arrays[name])
    raise UserError(f"the propagator reads the node property {name!r}, which the atoms do not have: store it "
                    f"with atoms.set_array({name!r}, values) or pass node_props={{{name!r}: values}}")


class SurrogateDynamics(MolecularDynamics):
    """ASE ``MolecularDynamics`` whose step is one learned-propagator step: (x, v)(t) → (x, v)(t + Δ).

    Args:
        atoms: the system; positions in Å, velocities from its momenta (zero when it has none).
        checkpoint: a propagator checkpoint (``kind = "propagator"``) or run directory.
        trajectory, logfile, loginterval, append_trajectory: as for every ASE dynamics (``Trajectory``
            writing and ``MDLogger`` work as usual; ``attach`` adds observers).
        device, dtype: where and in which precision the model runs ("float32" or "float64").
        units: override of the checkpoint's units, e.g. ``{"length": "Å", "time": "fs"}`` for a dimensionless one.
        node_props: name → [N] values for node properties the featurizer needs that ``atoms`` cannot supply.
            By default ``charge`` comes from ``atoms.get_initial_charges()`` (which must have been set),
            ``mass`` from the masses, ``Z`` from the atomic numbers and any other name from ``atoms.arrays``.
        topology: a full ``BatchTopology`` (``ptr = [0, N]``), needed when the model uses static edge sets
            (local bonds/complexes, a static global graph); by default one is built from ``atoms``.
        guard: "default" (the checkpoint's stability guard, with the limits derived from its training data), a
            ``StabilityGuard``, or None (no checks); checked after every step: a ``RuntimeError`` naming the
            quantity and the limit stops the run, with the atoms left at the last good state.
        seed: seed of a stochastic propagator's random stream (the same seed gives the same trajectory).

    The time step ``dt`` is the checkpoint's Δ (``dataset.delta_time``) in ASE time units, so ``get_time()``
    and ``MDLogger`` times are physical. Propagators see open boundaries: positions are never wrapped into a
    periodic cell. Constraints (e.g. ``FixAtoms``) are applied when positions and momenta are set.

    A propagator has no forces or energy, but ASE's ``run`` asks for forces after every step and
    ``MDLogger`` for the potential energy: when ``atoms.calc`` is None, a
    :class:`PropagatorPlaceholderCalculator` (zero forces, NaN energy) is attached, and its forces are not
    requested after steps (so trajectories do not record placeholder forces). A real calculator already on
    the atoms is kept and evaluated as under any ASE integrator.
    """

    def __init__(self, atoms, checkpoint: str | os.PathLike, *, trajectory=None, logfile=None, loginterval: int = 1,
                 append_trajectory: bool = False, device: str | torch.device = "cpu", dtype="float32",
                 units: dict | None = None, node_props: dict | None = None, topology: BatchTopology | None = None,
                 guard: StabilityGuard | None | str = "default", seed: int | None = None, **kwargs):
        self.checkpoint = _load(checkpoint, "propagator")
        self.checkpoint_path = self.checkpoint.path
        self.surrogate = Surrogate.from_checkpoint(self.checkpoint, device=device, dtype=dtype)
        self.device, self.dtype = self.surrogate.device, self.surrogate.dtype
        self.model, self.featurizer = self.surrogate.model, self.surrogate.featurizer
        self.length_unit, self.time_unit = unit_factors(self.checkpoint.dataset.units, units)
        if not self.surrogate.delta_time > 0:
            raise CheckpointError(f"{self.checkpoint_path} does not record a positive Δ (dataset.delta_time)")
        self.delta_time = self.surrogate.delta_time  # in the checkpoint's time unit
        self.guard = self.surrogate.guard() if guard == "default" else guard
        self.seed = seed
        self._node_props = dict(node_props or {})
        self._given_topology = topology
        self.topology = self._build_topology(atoms)
        if atoms.calc is None:
            atoms.calc = PropagatorPlaceholderCalculator()
        super().__init__(atoms, timestep=self.delta_time * self.time_unit, trajectory=trajectory, logfile=logfile,
                         loginterval=loginterval, append_trajectory=append_trajectory, **kwargs)
        self._chain = None

    # -- topology ----------------------------------------------------------------------------------------
    def _build_topology(self, atoms) -> BatchTopology:
        n = len(atoms)
        spec = self.featurizer.spec
        if self._given_topology is not None:
            topo = self._given_topology
            if int(topo.ptr[-1]) != n or topo.num_graphs != 1:
                raise UserError(f"topology describes {int(topo.ptr[-1])} nodes in {topo.num_graphs} graphs; "
                                f"the atoms are one system of {n}")
            return topo.to(self.device)
        static_edges = [e for e in spec.edge if e not in _BUILTIN_EDGE and not e.startswith("same:")]
        if spec.global_graph.get("kind") == "static" or getattr(self.model, "uses_local_graph", False) or static_edges:
            raise UserError("this propagator uses static edge sets (local bonds/complexes, a static global graph or "
                            "stored edge properties) that cannot be read from an ASE Atoms object; pass "
                            "topology=BatchTopology(ptr=torch.tensor([0, N]), node_props=…, edge_sets=…)")
        props = {}
        for name in sorted(needed_node_properties(spec)):
            val = self._node_props[name] if name in self._node_props else _atoms_property(atoms, name)
            t = torch.as_tensor(np.asarray(val))
            if t.shape[0] != n:
                raise UserError(f"node property {name!r} has {t.shape[0]} values for {n} atoms")
            props[name] = t
        return BatchTopology(torch.tensor([0, n]), props).to(self.device)

    # -- ASE hooks ---------------------------------------------------------------------------------------
    def todict(self) -> dict:
        return super().todict() | {"checkpoint": str(self.checkpoint_path), "model": self.checkpoint.model_name}

    def _refresh_properties(self):
        # ASE asks for forces after each step for loggers/observers; placeholder forces are of no use to anyone.
        if isinstance(self.atoms.calc, PropagatorPlaceholderCalculator):
            return
        super()._refresh_properties()

    def step(self):
        """One propagator step: convert to the checkpoint's units, advance the chain by Δ, convert back."""
        atoms = self.atoms
        if int(self.topology.ptr[-1]) != len(atoms):
            self.topology = self._build_topology(atoms)
            self._chain = None
        lf, tf = self.length_unit, self.time_unit
        x = torch.as_tensor(atoms.get_positions() / lf, dtype=self.dtype, device=self.device)
        v = torch.as_tensor(atoms.get_velocities() * (tf / lf), dtype=self.dtype, device=self.device)
        if self._chain is None:
            self._chain = self.surrogate.chain(x, v, self.topology, guard=self.guard, seed=self.seed)
        else:
            self._chain.set_state(x, v)
        step = self._chain.advance()
        if step.stopped:
            raise RuntimeError(f"SurrogateDynamics stopped before step {self.nsteps + 1}: {step.stopped}; "
                               "the atoms keep the last good state")
        x_new, v_new = self._chain.x, self._chain.v
        x_ase = x_new.to("cpu", torch.float64).numpy() * lf
        v_ase = v_new.to("cpu", torch.float64).numpy() * (lf / tf)
        atoms.set_positions(x_ase)
        atoms.set_momenta(v_ase * self.masses)
