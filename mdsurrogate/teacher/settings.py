"""The settings of a `simulate` run and the choice of OpenMM platform. Units: ns, ps, fs, K, 1/ps, amu, nm."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from .systems import DEFAULT_FORCEFIELD, FORCEFIELDS, SimulateInputError, import_openmm

AUTO_REFERENCE_MAX_ATOMS = 60  # auto: the Reference platform up to this many atoms (faster than CPU there)


@dataclass
class SimulationSettings:
    """Everything that defines a run (recorded in simulate.json). Units: ns, ps, fs, K, 1/ps, amu, nm.

    Attributes:
        ns: production length; frame_ps: spacing of saved frames (a multiple of the time step).
        temperature: K; friction: Langevin collision rate in 1/ps; timestep_fs: integration step.
        hydrogen_mass: amu per hydrogen (repartitioned from its heavy atom); None or ≤ 1.008: off.
        constraints: none | hbonds | allbonds | hangles.
        forcefield: a key of systems.FORCEFIELDS (a prmtop input brings its own); solvent: implicit | vacuum.
        cutoff_nm: non-bonded cutoff (None: every pair, exact for small molecules).
        equilibration_ps: MD after minimisation, discarded; minimize_iterations: L-BFGS limit (0: converge).
        seed: initial velocities and Langevin noise (any integer ≥ 0).
        platform: auto | Reference | CPU | CUDA | OpenCL; threads: CPU platform threads (1: reproducible).
        checkpoint_ps: production time between checkpoints.
    """

    ns: float = 2.0
    frame_ps: float = 1.0
    temperature: float = 300.0
    friction: float = 1.0
    timestep_fs: float = 4.0
    hydrogen_mass: float | None = 1.5
    constraints: str = "hbonds"
    forcefield: str = DEFAULT_FORCEFIELD
    solvent: str = "implicit"
    cutoff_nm: float | None = None
    equilibration_ps: float = 20.0
    minimize_iterations: int = 1000
    seed: int = 0
    platform: str = "auto"
    threads: int = 1
    checkpoint_ps: float = 100.0

    @classmethod
    def from_dict(cls, data: dict) -> SimulationSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    # derived quantities ---------------------------------------------------------------------------------
    @property
    def timestep_ps(self) -> float:
        return self.timestep_fs / 1000.0

    def steps_per_frame(self) -> int:
        return int(round(self.frame_ps / self.timestep_ps))

    def n_frames(self) -> int:
        return int(round(self.ns * 1000.0 / self.frame_ps))

    def equilibration_steps(self) -> int:
        return int(round(self.equilibration_ps / self.timestep_ps))

    def checkpoint_frames(self) -> int:
        return max(1, int(round(self.checkpoint_ps / self.frame_ps)))

    def validate(self) -> None:
        """SimulateInputError naming the option for anything that cannot run."""
        def bad(msg):
            raise SimulateInputError(msg)

        for name in ("ns", "frame_ps", "temperature", "friction", "timestep_fs", "checkpoint_ps"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                bad(f"--{name.replace('_', '-')} must be a positive number, got {value}")
        if self.timestep_fs > 10:
            bad(f"--timestep-fs {self.timestep_fs} is far beyond what Langevin MD of atoms can take (≤ 5 fs)")
        spf = self.frame_ps / self.timestep_ps
        if abs(spf - round(spf)) > 1e-6 * max(1.0, spf) or round(spf) < 1:
            bad(f"--frame-ps {self.frame_ps} must be a whole number of time steps of {self.timestep_fs} fs")
        nf = self.ns * 1000.0 / self.frame_ps
        if abs(nf - round(nf)) > 1e-6 * max(1.0, nf) or round(nf) < 1:
            bad(f"--ns {self.ns} must be a whole number (≥ 1) of frames of {self.frame_ps} ps")
        if self.equilibration_ps < 0:
            bad(f"--equilibration-ps must be ≥ 0, got {self.equilibration_ps}")
        if self.minimize_iterations < 0:
            bad(f"--minimize-iterations must be ≥ 0, got {self.minimize_iterations}")
        if not 0 <= self.seed < 2**31 - 2:
            bad(f"--seed must be an integer in [0, {2**31 - 3}], got {self.seed}")
        if self.threads < 1:
            bad(f"--threads must be ≥ 1, got {self.threads}")
        if self.forcefield not in FORCEFIELDS:
            bad(f"unknown force field {self.forcefield!r}: choose one of {', '.join(FORCEFIELDS)}")
        if self.solvent not in ("implicit", "vacuum"):
            bad(f"--solvent must be implicit or vacuum, not {self.solvent!r}")
        if self.cutoff_nm is not None and not self.cutoff_nm > 0:
            bad(f"--cutoff must be positive, got {self.cutoff_nm}")


def available_platforms() -> list[str]:
    mm = import_openmm()
    return [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]


def platform_candidates(name: str, n_atoms: int, threads: int = 1) -> list[tuple[str, dict]]:
    """[(platform, properties)] to try in order for ``name`` (auto | Reference | CPU | CUDA | OpenCL).

    auto: CUDA, then OpenCL, when OpenMM has them; then Reference for systems of at most
    AUTO_REFERENCE_MAX_ATOMS atoms, else CPU. An explicit name that OpenMM lacks is a SimulateInputError."""
    have = {p.lower(): p for p in available_platforms()}

    def props(p):
        return {"CUDA": {"Precision": "mixed", "DeterministicForces": "true"}, "OpenCL": {"Precision": "mixed"},
                "CPU": {"Threads": str(threads)}}.get(p, {})

    if name.lower() == "auto":
        out = [(have[p], props(have[p])) for p in ("cuda", "opencl") if p in have]
        small = n_atoms <= AUTO_REFERENCE_MAX_ATOMS or "cpu" not in have
        out.append(("Reference", {}) if small else ("CPU", props("CPU")))
        return out
    if name.lower() not in have:
        hint = (" (no GPU platform here: OpenMM needs an NVIDIA GPU and its CUDA plugin, "
                "pip install 'openmm[cuda12]')" if name.lower() in ("cuda", "opencl") else "")
        raise SimulateInputError(f"--platform {name} is not available: OpenMM here has "
                                 f"{', '.join(have.values())}{hint}")
    p = have[name.lower()]
    return [(p, props(p))]
