"""Learned interatomic potentials: an E(n)-invariant EGNN energy model with forces by autograd.

A *potential* is not a propagator: it maps a configuration (atomic numbers, positions, cell, pbc) to a total
energy per graph, and forces are its negative gradient. Potentials have their own small registry
(:data:`POTENTIALS`), so the propagator machinery (``build_model``, the generic propagator equivariance test)
never sees them; checkpoints of potentials carry ``kind = "potential"``.

Units: positions and cells in Å, energies in eV, forces in eV/Å, stress in eV/Å³. Float32 or float64
(``model.double()``).

``EGNNPotential`` ("egnn_potential"), per layer l (hidden width H, K radial functions)::

    r_ij = x_i − x_j − s_ij·C_g                    edge to an image of j: shift s_ij ∈ ℤ³, C_g the cell
    d_ij = ‖r_ij‖,   e_ij = ρ(d_ij) ∈ ℝᴷ             Gaussian radial basis on [0, r_c]
    u(d) = 1 − 10t³ + 15t⁴ − 6t⁵,  t = d / r_c       envelope: u(r_c) = u'(r_c) = u''(r_c) = 0
    m_ij = u(d_ij) · φ_e(h_i, h_j, e_ij)             [E, H]   scalar messages on distances only
    h_i ← h_i + φ_h(h_i, (1/ν) Σ_j m_ij)              [N, H]   ν: a fixed average neighbour count
    ε_i = σ · φ_out(h_i) + μ_{Z_i}                    per-atom energy; σ an energy scale, μ_Z reference energies
    E_g = Σ_{i∈g} ε_i,    F_i = −∂E/∂x_i,    σ_g = (1/V_g) ∂E/∂ε     (ε: symmetric strain of positions and cell)

h⁰_i is a learned embedding of the element Z_i. Edges are all images within r_c
(:func:`mdsurrogate.data.neighbors.neighbor_list`, the periodic search that ingest uses too): the minimum image
when the cell holds the cutoff, several images (and an atom's own) in smaller cells. There are
no coordinate updates: every quantity the energy depends on is a function of interatomic distances, so E is
invariant under rotations, reflections, translations, permutations of atoms and lattice translations of single
atoms, and F = −∇E is equivariant.
Messages are *summed* (divided by a constant ν, not by the actual degree), and every message carries the
envelope, so E is twice continuously differentiable when a neighbour crosses the cutoff: no jumps in energy or
forces in MD.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.neighbors import graph_cells, mean_degree, neighbor_list
from ..errors import UserError
from .base import Registry
from .layers import PairLinear, activation, mlp
from .scatter import scatter_sum

MAX_Z = 118


class UnknownElementError(UserError, ValueError):
    """A structure contains elements the potential was never trained on."""


def element_names(numbers) -> str:
    """'Ag, Au' for atomic numbers (chemical symbols when ASE is installed, else 'Z=47, Z=79')."""
    zs = sorted({int(z) for z in numbers})
    try:
        from ase.data import chemical_symbols
    except ImportError:  # the core works without ASE
        return ", ".join(f"Z={z}" for z in zs)
    return ", ".join(chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}" for z in zs)


# ----------------------------------------------------------------------------------------------------------
# the potential interface and its registry
# ----------------------------------------------------------------------------------------------------------


class Potential(nn.Module):
    """Base class of learned potentials. Subclasses set ``name`` and implement ``forward`` as below.

    ``forward(numbers [N], positions [N, 3], batch [N] | None, cell [B, 3, 3] | [3, 3] | None,
    pbc [B, 3] | [3] | bool | None, num_graphs=None, *, compute_forces=True, compute_stress=False,
    create_graph=None)`` returns ``{"energy": [B], "atom_energies": [N], "forces": [N, 3], "virial": [B, 3, 3],
    "stress": [B, 3, 3]}`` (forces, virial and stress only when asked). ``evaluate(species, positions, batch, cell,
    edge_index, shifts, num_graphs, …)`` computes the same on a given graph (what an exported potential runs).
    """

    name: str = ""
    kind = "potential"
    cutoff: float = 0.0


POTENTIALS: Registry = Registry()
register_potential = POTENTIALS.register


def build_potential(name: str, **hparams) -> Potential:
    """Instantiate a registered potential; ``KeyError`` naming the known ones for an unknown name."""
    if name not in POTENTIALS:
        raise KeyError(f"unknown potential {name!r}; known potentials: {', '.join(sorted(POTENTIALS))}")
    return POTENTIALS[name](**hparams)


def potential_from_checkpoint(data: dict, device="cpu", dtype: torch.dtype | None = None) -> Potential:  # noqa: E501
    """Rebuild a potential (eval mode) from a checkpoint dict loaded with ``load_checkpoint(kind="potential")``."""
    from ..errors import CheckpointError

    m = data.get("model", {})
    try:
        model = build_potential(m["name"], **m.get("hparams", {}))
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint names a potential this version cannot build ({exc})") from None
    try:
        model.load_state_dict(data["state_dict"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not fit potential {m['name']!r} ({first})") from None
    model.to(device=device, dtype=dtype)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------
# the EGNN potential
# ----------------------------------------------------------------------------------------------------------


def cutoff_envelope(d: Tensor, cutoff: float) -> Tensor:
    """u(d) = 1 − 10t³ + 15t⁴ − 6t⁵ with t = min(d / r_c, 1): 1 at d = 0, and value, slope and curvature 0 at r_c."""
    t = (d / cutoff).clamp(max=1.0)
    t3 = t * t * t
    return 1.0 - t3 * (10.0 - 15.0 * t + 6.0 * t * t)


class GaussianBasis(nn.Module):
    """ρ_k(d) = exp(−(d − μ_k)² / (2w²)), μ_k evenly spaced on [0, r_c], w the spacing. [E] → [E, K]."""

    def __init__(self, cutoff: float, n: int):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, n), persistent=False)
        self.inv_two_w2 = 1.0 / (2.0 * (cutoff / max(n - 1, 1)) ** 2)

    def forward(self, d: Tensor) -> Tensor:
        return torch.exp(-((d.unsqueeze(-1) - self.centers.to(d.dtype)) ** 2) * self.inv_two_w2)


class InvariantLayer(nn.Module):
    """One EGNN layer without coordinate updates: m_ij = u(d_ij)·φ_e(h_i, h_j, ρ(d_ij)); h ← h + φ_h(h, Σm/ν).

    Forward: h [N, H], edge_index [2, E], rbf [E, K], env [E, 1], inv_nu (float) → h [N, H].
    """

    def __init__(self, hidden: int, n_rbf: int, act: str = "silu"):
        super().__init__()
        self.edge_in = PairLinear(hidden, n_rbf, hidden)
        self.edge_out = nn.Sequential(activation(act), nn.Linear(hidden, hidden), activation(act))
        self.node = mlp(2 * hidden, hidden, hidden, act)

    def forward(self, h: Tensor, edge_index: Tensor, rbf: Tensor, env: Tensor, inv_nu: float) -> Tensor:
        m = self.edge_out(self.edge_in(h, edge_index, rbf)) * env
        agg = scatter_sum(m, edge_index[0], h.shape[0]) * inv_nu  # index_add: twice differentiable
        return h + self.node(torch.cat([h, agg], dim=-1))


@register_potential
class EGNNPotential(Potential):
    """E(n)-invariant EGNN energy model (see the module docstring for the equations).

    Args:
        elements: atomic numbers the model knows (its embedding rows, in this order); any other element is
            rejected with :class:`UnknownElementError`.
        cutoff: r_c in Å. hidden: H. layers: number of message-passing layers. n_rbf: K.
        avg_neighbors: ν, the constant the message sums are divided by (the training set's mean degree).
        act: activation name.
    Buffers (set by the trainer, saved in the state dict): ``reference_energies`` μ [n_elements] (eV) and
    ``energy_scale`` σ (eV).
    """

    name = "egnn_potential"

    def __init__(self, *, elements: list[int], cutoff: float = 5.0, hidden: int = 64, layers: int = 3,
                 n_rbf: int = 16, avg_neighbors: float = 10.0, act: str = "silu"):
        super().__init__()
        elements = [int(z) for z in elements]
        if not elements or len(set(elements)) != len(elements) or not all(1 <= z <= MAX_Z for z in elements):
            raise ValueError(f"elements must be distinct atomic numbers in 1…{MAX_Z}, got {elements}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        self.elements = elements
        self.cutoff = float(cutoff)
        self.avg_neighbors = float(avg_neighbors)
        lookup = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("z_to_index", lookup, persistent=False)
        self.register_buffer("reference_energies", torch.zeros(len(elements)))
        self.register_buffer("energy_scale", torch.tensor(1.0))
        self.embedding = nn.Embedding(len(elements), hidden)
        self.rbf = GaussianBasis(self.cutoff, n_rbf)
        self.layers = nn.ModuleList(InvariantLayer(hidden, n_rbf, act) for _ in range(layers))
        self.readout = mlp(hidden, hidden, 1, act)
        nn.init.zeros_(self.readout[-1].bias)

    # -- inputs ------------------------------------------------------------------------------------------
    def species(self, numbers: Tensor) -> Tensor:
        """[N] element indices into ``elements``; :class:`UnknownElementError` naming any unknown element."""
        numbers = numbers.to(device=self.z_to_index.device, dtype=torch.long)
        bad = (numbers < 0) | (numbers > MAX_Z)
        idx = self.z_to_index[numbers.clamp(0, MAX_Z)]
        bad = bad | (idx < 0)
        if bool(bad.any()):
            raise UnknownElementError(
                f"the potential was trained on {element_names(self.elements)} only; the structure also contains "
                f"{element_names(numbers[bad].tolist())}, which it has never seen"
            )
        return idx

    # -- energy, forces, stress ---------------------------------------------------------------------------
    def forward(self, numbers: Tensor, positions: Tensor, batch: Tensor | None = None, cell=None, pbc=None,
                num_graphs: int | None = None, *, compute_forces: bool = True, compute_stress: bool = False,
                create_graph: bool | None = None) -> dict[str, Tensor]:
        """Energies [B] (eV), per-atom energies [N] and, if asked, forces [N, 3] (eV/Å) = −∂E/∂x and the strain
        derivatives ``virial`` [B, 3, 3] (eV) and ``stress`` [B, 3, 3] (eV/Å³).

        Builds the neighbour list (all periodic images within the cutoff) and calls :meth:`evaluate`.
        ``create_graph`` (default: ``self.training``) keeps the derivative graph so that a loss on forces can be
        back-propagated into the parameters.
        """
        device = self.energy_scale.device
        n = positions.shape[0]
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=device)
        batch = batch.to(device=device, dtype=torch.long)
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if n else 1
        cell64, pbc_t = graph_cells(cell, pbc, num_graphs, device)
        species = self.species(numbers)
        x = positions.to(device=device, dtype=self.energy_scale.dtype)
        edge_index, shifts = neighbor_list(x, self.cutoff, batch, cell64, pbc_t)
        return self.evaluate(species, x, batch, cell64, edge_index, shifts, num_graphs,
                             compute_forces=compute_forces, compute_stress=compute_stress, create_graph=create_graph)

    def evaluate(self, species: Tensor, positions: Tensor, batch: Tensor, cell: Tensor, edge_index: Tensor,
                 shifts: Tensor, num_graphs: int, *, compute_forces: bool = True, compute_stress: bool = False,
                 create_graph: bool | None = None) -> dict[str, Tensor]:
        """The model on a given graph: what :meth:`forward` computes once the neighbour list is built (and what an
        exported potential runs, with the graph as an input).

        Args:
            species: [N] indices into ``elements`` (:meth:`species`); positions: [N, 3] Å; batch: [N] sorted graph
                ids; cell: [B, 3, 3] lattice rows (Å; zeros for free graphs); edge_index: [2, E] (receiver,
                sender); shifts: [E, 3] lattice shifts with r_ij = x_i − x_j − s_ij·C_g; num_graphs: B.
            compute_forces: add ``forces`` [N, 3] = −∂E/∂x. compute_stress: add ``virial`` [B, 3, 3] = −∂E/∂ε and
                ``stress`` [B, 3, 3] = (1/V) ∂E/∂ε (ASE's sign: positive under tension), where ε is a symmetric
                homogeneous strain applied to positions and cell, x → x(1 + ε), C → C(1 + ε), and V = |det C|
                (NaN for graphs without a cell volume).

        Forces and strain derivatives come from one backward pass.
        """
        dtype = self.energy_scale.dtype
        create_graph = self.training if create_graph is None else create_graph
        x_in = positions.to(dtype)
        need_grad = compute_forces or compute_stress
        if need_grad and not x_in.requires_grad:
            x_in = x_in.detach().requires_grad_(True)
        cell_t = cell.to(dtype)
        with torch.set_grad_enabled(need_grad or torch.is_grad_enabled()):
            x, cell_s = x_in, cell_t
            strain = None
            if compute_stress:
                strain = torch.zeros(num_graphs, 3, 3, dtype=dtype, device=x_in.device, requires_grad=True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                x = x_in + torch.bmm(x_in.unsqueeze(1), sym.index_select(0, batch)).squeeze(1)
                cell_s = cell_t + torch.bmm(cell_t, sym)
            eps = self.atom_energies(species, x, batch, cell_s, edge_index, shifts)
            energy = scatter_sum(eps, batch, num_graphs)
            out = {"energy": energy, "atom_energies": eps}
            if need_grad:
                inputs = [x_in] + ([strain] if strain is not None else [])
                grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
                if compute_forces:
                    out["forces"] = -grads[0]
                if strain is not None:
                    de = grads[1]
                    volume = torch.linalg.det(cell_t).abs()
                    volume = torch.where(volume > 0, volume, torch.full_like(volume, float("nan")))
                    out["virial"] = -de
                    out["stress"] = de / volume.view(-1, 1, 1)
        return out

    def atom_energies(self, species: Tensor, x: Tensor, batch: Tensor, cell: Tensor, edge_index: Tensor,
                      shifts: Tensor) -> Tensor:
        """ε_i [N] (eV) for positions x [N, 3] and cells [B, 3, 3] (both in the model dtype, differentiable)."""
        i, j = edge_index[0], edge_index[1]
        offset = torch.bmm(shifts.to(x.dtype).unsqueeze(1), cell.index_select(0, batch.index_select(0, i))).squeeze(1)
        rel = x.index_select(0, i) - x.index_select(0, j) - offset  # r_ij [E, 3]
        return self.energies_from_edges(species, edge_index, rel)

    def energies_from_edges(self, species: Tensor, edge_index: Tensor, rel: Tensor) -> Tensor:
        """ε_i [N] (eV) from the edge vectors r_ij [E, 3] (Å) of ``edge_index`` [2, E].

        Edges longer than the cutoff may be included: their messages carry the envelope u = 0 and contribute
        nothing (nor to the gradient), so a complete graph gives the radius graph's energy (what the TorchScript
        module for OpenMM uses: a fixed-size graph for a fixed system).
        """
        d = (rel * rel).sum(-1).clamp(min=1e-12).sqrt()
        rbf = self.rbf(d)
        env = cutoff_envelope(d, self.cutoff).unsqueeze(-1)
        h = self.embedding(species)
        inv_nu = 1.0 / max(self.avg_neighbors, 1e-6)
        for layer in self.layers:
            h = layer(h, edge_index, rbf, env, inv_nu)
        return self.readout(h).squeeze(-1) * self.energy_scale + self.reference_energies[species]


def fit_reference_energies(counts: Tensor, energies: Tensor) -> Tensor:
    """Least-squares μ [n_elements] with E_g ≈ Σ_Z count_gZ μ_Z (counts [B, n_elements], energies [B])."""
    counts = counts.to(torch.float64)
    energies = energies.to(torch.float64)
    sol = torch.linalg.lstsq(counts, energies.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
    return torch.where(torch.isfinite(sol), sol, torch.zeros_like(sol))


__all__ = ["POTENTIALS", "EGNNPotential", "Potential", "UnknownElementError", "build_potential",
           "cutoff_envelope", "fit_reference_energies", "mean_degree", "neighbor_list", "potential_from_checkpoint",
           "register_potential"]
