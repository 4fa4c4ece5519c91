"""A learned potential as a TorchScript module for OpenMM's ``TorchForce`` (the openmm-torch plugin).

    from mdsurrogate.integrations.openmm import openmm_module, torch_force

    module = openmm_module("runs/cu_emt", atoms.numbers, periodic=True)   # torch.jit.ScriptModule
    module.save("cu_emt_openmm.pt")                                       # what TorchForce("…pt") loads
    system.addForce(torch_force("runs/cu_emt", atoms.numbers, periodic=True))   # needs openmmtorch

The module follows openmm-torch's contract: ``forward(positions [N, 3] in nm, boxvectors [3, 3] in nm) → energy``
(a scalar, kJ/mol); OpenMM gets the forces by back-propagating the energy. It is plain TorchScript (scripted, not
traced): it loads with ``torch.jit.load`` and runs without mdsurrogate.

Graph: a fixed system (OpenMM's atoms never change) gets a fixed complete graph of all N(N − 1) ordered pairs;
pairs beyond the cutoff carry the envelope u = 0 and contribute nothing, so the energy equals the potential's on
its radius graph. That costs O(N²) time and memory: meant for systems of up to a few thousand atoms. Periodic
boxes use the minimum image for OpenMM's reduced triclinic boxes, which needs the cutoff below half of every box
width (checked when the module is built from a box, and documented for a barostat that shrinks it).

Only this module imports OpenMM (lazily, in :func:`torch_force`); building and saving the TorchScript module needs
torch alone. Whether ``openmmtorch`` works here: see ``OPENMM_TORCH_NOTE``.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..training.checkpoint import Checkpoint

EV_TO_KJ_PER_MOL = 96.48533212331002  # 1 eV = 96.485 kJ/mol
NM_TO_ANGSTROM = 10.0

OPENMM_TORCH_NOTE = (
    "openmm-torch (the `openmmtorch` module) is needed to put the module into an OpenMM System: install a build "
    "made for your torch version (conda-forge's openmm-torch; on PyPI `acellera-openmmtorch-cpu` is built for "
    "torch < 2.13 and fails at its first force evaluation under torch 2.13 with an internal PyObjectSlot assertion)"
)

__all__ = ["EV_TO_KJ_PER_MOL", "OPENMM_TORCH_NOTE", "OpenMMPotential", "openmm_module", "torch_force"]


class OpenMMPotential(nn.Module):
    """TorchScript-ready energy of one fixed system for OpenMM: positions (nm) [, box (nm)] → energy (kJ/mol).

    Holds the potential's layers (embedding, radial basis, message-passing layers, readout), the species of the
    N atoms and the complete graph of all ordered pairs. The arithmetic is ``EGNNPotential.energies_from_edges``'s.
    """

    def __init__(self, potential: nn.Module, numbers, periodic: bool):
        super().__init__()
        species = potential.species(torch.as_tensor(numbers, dtype=torch.long)).cpu()
        n = int(species.numel())
        if n < 2:
            raise UserError("an OpenMM system for a learned potential needs at least two atoms")
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        keep = i != j
        self.register_buffer("edge_index", torch.stack([i[keep], j[keep]]))
        self.register_buffer("species", species)
        self.register_buffer("energy_scale", potential.energy_scale.detach().clone())
        self.register_buffer("reference", potential.reference_energies.detach()[species].clone())
        self.embedding = potential.embedding
        self.rbf = potential.rbf
        self.layers = potential.layers
        self.readout = potential.readout
        self.cutoff = float(potential.cutoff)
        self.inv_nu = 1.0 / max(float(potential.avg_neighbors), 1e-6)
        self.periodic = bool(periodic)

    def forward(self, positions: Tensor, boxvectors: Optional[Tensor] = None) -> Tensor:  # noqa: UP045 (TorchScript)
        x = positions.to(self.energy_scale.dtype) * 10.0  # nm → Å
        i = self.edge_index[0]
        j = self.edge_index[1]
        rel = x.index_select(0, i) - x.index_select(0, j)
        if self.periodic:
            if boxvectors is None:
                raise RuntimeError("a periodic OpenMMPotential needs the box vectors")
            box = boxvectors.to(x.dtype) * 10.0
            # minimum image for OpenMM's reduced triclinic box (a along x, b in the xy plane)
            rel = rel - torch.round(rel[:, 2:3] / box[2, 2]) * box[2]
            rel = rel - torch.round(rel[:, 1:2] / box[1, 1]) * box[1]
            rel = rel - torch.round(rel[:, 0:1] / box[0, 0]) * box[0]
        d = (rel * rel).sum(-1).clamp(min=1e-12).sqrt()
        rbf = self.rbf(d)
        t = (d / self.cutoff).clamp(max=1.0)
        env = (1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t)).unsqueeze(-1)
        h = self.embedding(self.species)
        for layer in self.layers:
            h = layer(h, self.edge_index, rbf, env, self.inv_nu)
        eps = self.readout(h).squeeze(-1) * self.energy_scale + self.reference
        return eps.sum() * 96.48533212331002  # eV → kJ/mol


def _box_widths(box: Tensor) -> list[float]:
    box = box.to(torch.float64)
    volume = float(torch.linalg.det(box).abs())
    return [volume / float(torch.linalg.cross(box[(k + 1) % 3], box[(k + 2) % 3]).norm()) for k in range(3)]


def openmm_module(checkpoint, numbers, *, periodic: bool, box_nm=None, dtype="float32") -> torch.jit.ScriptModule:
    """The scripted :class:`OpenMMPotential` of a potential checkpoint (file, run directory or ``Checkpoint``) for
    the atoms ``numbers`` [N] (atomic numbers, in OpenMM's particle order).

    ``box_nm`` [3, 3] (optional, nm): checks that the cutoff is below half of every box width (minimum image).
    ``dtype``: the precision the module computes in ("float32" or "float64").
    """
    from ..device import resolve_dtype

    ck = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint, kind="potential")
    potential = ck.build_model("cpu", resolve_dtype(dtype))
    if box_nm is not None and periodic:
        widths = _box_widths(torch.as_tensor(box_nm) * NM_TO_ANGSTROM)
        if not potential.cutoff < 0.5 * min(widths):
            raise UserError(f"the potential's cutoff ({potential.cutoff:g} Å) must be below half the smallest box "
                            f"width ({min(widths):.4g} Å) for the minimum image; use a larger periodic box")
    return torch.jit.script(OpenMMPotential(potential, numbers, periodic).eval())


def torch_force(checkpoint, numbers, *, periodic: bool, box_nm=None, dtype="float32"):
    """An ``openmmtorch.TorchForce`` for a potential checkpoint (see :func:`openmm_module`); needs openmmtorch."""
    try:
        import openmmtorch
    except ImportError:
        raise UserError(OPENMM_TORCH_NOTE) from None
    module = openmm_module(checkpoint, numbers, periodic=periodic, box_nm=box_nm, dtype=dtype)
    force = openmmtorch.TorchForce(module)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    return force
