"""Stochastic propagators: any registered propagator, plus an invariant noise scale, trained by Gaussian likelihood.

A deterministic propagator trained on MSE predicts the conditional mean of the next state; at a coarse Δ that
damps the motion (real MD moves atoms much further per Δ than the mean does) and a rollout of means drifts to
an unphysical calm. A stochastic propagator keeps the base model's mean μ and adds a learned noise scale, so a
rollout samples fluctuations of the right size:

    noise = "node":     x'_i = μ_i + σ_i ε_i                                 ε_i ~ N(0, I₃)
    noise = "cluster":  x'_i = μ_i + Σ_k S_ik τ_gk ξ_gk + σ_i ε_i            ξ_gk ~ N(0, I₃)
    noise = "modes":    x'_i = μ_i + Σ_m A_im ξ_gm + σ_i ε_i                 ξ_gm ~ N(0, I₃), m = 1 … M

with σ_i > 0 per node and, for hierarchical models (EGHN), τ_gk > 0 per cluster k of graph g and the model's
soft assignment S [ΣN, K]: atoms of one cluster move together, so bonds inside a cluster are not stretched by
the noise (independent per-atom noise of the right size breaks them). ``modes`` works with any base model: M
learned collective modes, A_im a signed invariant weight (length unit) of node i in mode m of its graph, so one
draw ξ_gm moves the atoms of a graph together, some one way and some the other (a group rotating about a bond,
after the projection onto bond lengths), which independent per-atom noise does only by chance. Every scale is
computed from invariants only, and the noise is isotropic, so the model is E(3)-equivariant *in distribution*:
rotating, reflecting, translating or permuting the input moves the distribution of the output the same way.

``noise_torsions`` (with any of the three) adds, for a molecule's rotatable bonds t (``data.torsions``: bridges of
the bond graph with atoms off the axis on both sides), one scalar draw θ_gt ~ N(0, 1) with a learned invariant
scale s_t (radians, from the scale network at the bond's two atoms), turning the bond's two sides against each
other about it (linearised about the mean):

    x'_i += Σ_t w_ti s_t θ_gt û_t × (μ_i − μ_j(t))    (û_t: unit axis j → k)

with w_ti = n_f / n on the smaller (turning) side and −n_t / n on the other, so the two sides turn against each
other without turning the molecule as a whole (as superposed frames see a torsion).

The columns û_t × (μ_i − μ_j) rotate with the state (a reflection flips their sign, and θ is symmetric), so the
noise stays equivariant in distribution. An isotropic draw on an atom that a torsion moves along one direction puts
two of its three components into directions the projection onto bonds and angles removes, so a likelihood fit of
isotropic noise leaves the torsions too still (alanine dipeptide at 2 ps: φ moved 27° RMS per step against the
MD's 40°; with torsion noise 34°).

Training maximises the Gaussian likelihood of the target positions (per coordinate; the three Cartesian
components share one covariance). Both correlated modes have a per-graph covariance D + A Aᵀ (D = diag σ²; A
[ΣN, K] the mixing: A = S diag τ for ``cluster``, the learned weights for ``modes``), handled with the Woodbury
identity on [B, K, K] matrices, never an N × N one:

    NLL = ½ [ rᵀ(D + AAᵀ)⁻¹r + log det(D + AAᵀ) + log 2π ]  per coordinate, r = x_target − μ,
    (D + AAᵀ)⁻¹ = D⁻¹ − D⁻¹A M⁻¹ AᵀD⁻¹,   M = I + AᵀD⁻¹A,   log det = log det D + log det M.

With torsions the three components no longer separate (a column moves atoms in different directions): the
covariance is D ⊗ I₃ + W Wᵀ with W [3N, 3K + T] per graph and the same identity on [B, 3K + T, 3K + T] matrices.

``flow = true`` adds a generative step (``models.flow``): each Gaussian draw above is the prior of a learned
equivariant conditional flow, trained by flow matching beside the likelihood, that carries it to the data's law of
next states, which may have several modes where a Gaussian has one (``draw``; ``prior_draw`` is the Gaussian).

The scales come from a small invariant message-passing network on the same graphs as the base model (node
features, edge features, squared distances; global and local edge sets), fed also with the size of the mean
displacement ‖μ_i − x_i‖ (detached).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.graph import GraphBatch
from .base import Prediction, Propagator
from .flow import FlowField
from .layers import mlp
from .scatter import Aggregator, scatter_sum

NOISE_MODES = ("node", "cluster", "modes")
#: hyper-parameters the stochastic wrapper takes (any propagator's recipe may set them)
STOCHASTIC_KEYS = ("noise", "noise_init", "noise_hidden", "noise_layers", "noise_min", "noise_modes", "noise_torsions",
                   "project", "flow", "flow_hidden", "flow_layers", "flow_steps", "flow_length")
PROJECTIONS = ("none", "bonds", "angles")


class ScaleNet(nn.Module):
    """Invariant per-node scalars from an invariant message-passing network.

    Forward: batch (GraphBatch), disp [ΣN] ‖μ_i − x_i‖ → [ΣN, n_out] (unconstrained).
    """

    def __init__(self, node_dim: int, edge_dim: int, local_edge_dim: int, hidden: int, layers: int, n_out: int):
        super().__init__()
        self.embed = mlp(node_dim + 1, hidden, hidden)
        self.edge = nn.ModuleList(mlp(2 * hidden + 1 + edge_dim, hidden, hidden, act_last=True)
                                  for _ in range(layers))
        self.local = nn.ModuleList(mlp(2 * hidden + 1 + local_edge_dim, hidden, hidden, act_last=True)
                                   for _ in range(layers))
        self.node = nn.ModuleList(mlp(3 * hidden, hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, n_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @staticmethod
    def _messages(net, h, x, edge_index, edge_attr):
        i, j = edge_index
        d2 = (x[i] - x[j]).square().sum(-1, keepdim=True)
        return net(torch.cat([h[i], h[j], d2, edge_attr], dim=-1))

    def forward(self, batch: GraphBatch, disp: Tensor) -> Tensor:
        x = batch.x
        h = self.embed(torch.cat([batch.h, disp.unsqueeze(-1)], dim=-1))
        glob = Aggregator(batch.edge_index[0], x.shape[0])
        loc = Aggregator(batch.local_edge_index[0], x.shape[0])
        for edge, local, node in zip(self.edge, self.local, self.node, strict=True):
            mg = glob.mean(self._messages(edge, h, x, batch.edge_index, batch.edge_attr))
            ml = loc.mean(self._messages(local, h, x, batch.local_edge_index, batch.local_edge_attr))
            h = h + node(torch.cat([h, mg, ml], dim=-1))
        return self.out(h)


class StochasticPropagator(Propagator):
    """A propagator's mean next state plus invariant noise scales (see the module docstring).

    Args:
        base: the mean propagator (any registered model).
        noise: "node", "cluster" (the base must return ``extras["cluster_scores"]``, as EGHN does) or "modes".
        noise_init: initial σ (and τ) in the dataset's length unit; noise_min: floor added to every scale.
        noise_modes: M, the number of collective modes of ``modes`` (their weights start small and random: A = 0
            would be a stationary point of the likelihood).
        noise_hidden, noise_layers: size of the invariant scale network.
        noise_torsions: add one scalar draw θ_t ~ N(0, 1) per rotatable bond t of the local (bond) graph
            (``data.torsions``) with a learned invariant scale s_t (radians), turning the bond's two sides
            against each other about its axis (linearised: atom i moves w_ti s_t θ_t û_t × (μ_i − μ_j)): noise
            along the torsions a small molecule's motion lives in, which isotropic noise can only reach by wasting
            variance on the directions the projection removes. The likelihood then uses the general Woodbury form
            (module docstring). For small molecules: on a Cα trace every virtual bond is a bridge.
        flow: transport every Gaussian draw through a learned conditional flow (``models.flow``): the Gaussian
            becomes the prior of a generative step trained by flow matching (``flow_loss``), whose draws can be
            multimodal; flow_hidden, flow_layers: the field's size; flow_steps: midpoint steps per draw;
            flow_length: the length (dataset unit) that scales the field's distance inputs.
        project: what a sampled state is projected onto in rollouts and in training chains: "bonds" (the local
            edges' reference lengths), "angles" (bonds and 1-3 distances: rigid bond angles, for small molecules
            whose motion lives in their torsions) or "none".
    ``forward`` returns the base model's Prediction (x = the mean μ) with ``extras["noise_scale"]`` σ [ΣN] and,
    for ``cluster``, ``extras["cluster_noise_scale"]`` τ [B·K]; for ``modes``, ``extras["noise_modes"]`` A [ΣN, M];
    with torsions, ``extras["torsion_scale"]`` s [T] (radians) and ``extras["torsions"]`` (``data.torsions.Torsions``).
    """

    def __init__(self, base: Propagator, *, node_dim: int, edge_dim: int, local_edge_dim: int, noise: str = "node",
                 noise_init: float = 0.1, noise_hidden: int = 32, noise_layers: int = 2, noise_min: float = 1e-4,
                 noise_modes: int = 4, noise_torsions: bool = False, project: str = "bonds", flow: bool = False,
                 flow_hidden: int = 64, flow_layers: int = 3, flow_steps: int = 5, flow_length: float = 5.0):
        super().__init__()
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)} (or 'none'), not {noise!r}")
        if noise == "cluster" and not base.produces_clusters:
            raise ValueError(f"noise = 'cluster' needs a hierarchical model (such as eghn); {base.name!r} has no "
                             "clusters: use noise = 'node'")
        if project not in PROJECTIONS:
            raise ValueError(f"project must be one of {', '.join(PROJECTIONS)}, not {project!r}")
        self.project = project
        if not noise_init > 0 or not noise_min >= 0:
            raise ValueError("noise_init must be > 0 and noise_min ≥ 0")
        if noise == "modes" and int(noise_modes) < 1:
            raise ValueError(f"noise_modes must be ≥ 1, not {noise_modes}")
        self.base, self.noise, self.noise_min = base, noise, float(noise_min)
        self.name = base.name
        self.uses_local_graph = base.uses_local_graph
        self.produces_clusters = base.produces_clusters
        self.n_modes = int(noise_modes) if noise == "modes" else 0
        self.torsions = bool(noise_torsions)
        self.scales = ScaleNet(node_dim, edge_dim, local_edge_dim, noise_hidden, noise_layers,
                               (2 if noise == "cluster" else 1 + self.n_modes) + self.torsions)
        if self.n_modes:  # small random mode weights: A = 0 is a stationary point of the likelihood
            with torch.no_grad():
                self.scales.out.weight[1:].normal_(0.0, 0.3 * float(noise_init) / math.sqrt(noise_hidden))
        # softplus(raw + bias0) = noise_init − noise_min at initialisation
        init = max(float(noise_init) - self.noise_min, 1e-6)
        self.register_buffer("bias0", torch.tensor(math.log(math.expm1(init))), persistent=False)
        # torsion scales start at 0.3 rad
        self.register_buffer("bias_torsion", torch.tensor(math.log(math.expm1(0.3))), persistent=False)
        if int(flow_steps) < 1:
            raise ValueError(f"flow_steps must be ≥ 1, not {flow_steps}")
        self.flow_steps = int(flow_steps)
        self.flow = FlowField(node_dim, edge_dim, local_edge_dim, flow_hidden, flow_layers, flow_length) if flow \
            else None

    def forward(self, batch: GraphBatch) -> Prediction:
        pred = self.base(batch)
        disp = (pred.x.detach() - batch.x).norm(dim=-1)
        raw = self.scales(batch, disp)
        sigma = F.softplus(raw[:, 0] + self.bias0) + self.noise_min
        pred.extras["noise_scale"] = sigma
        if self.noise == "cluster":
            S = pred.extras["cluster_scores"]  # [ΣN, K]
            K = S.shape[1]
            graphs = batch.num_graphs
            weight = scatter_sum(S, batch.batch, graphs).reshape(-1).clamp_min(1e-12)  # [B·K] Σ_i S_ik
            cluster_of = batch.batch.unsqueeze(1) * K + torch.arange(K, device=S.device)  # [ΣN, K] flat cluster id
            pooled = scatter_sum((S * raw[:, 1:2]).reshape(-1), cluster_of.reshape(-1), graphs * K) / weight
            pred.extras["cluster_noise_scale"] = F.softplus(pooled + self.bias0) + self.noise_min
        elif self.noise == "modes":
            pred.extras["noise_modes"] = raw[:, 1 : 1 + self.n_modes]
        if self.torsions:
            from ..data.torsions import rotatable_bonds

            tors = rotatable_bonds(batch.local_edge_index, batch.ptr)
            j, k = tors.axis
            pred.extras["torsions"] = tors
            pred.extras["torsion_scale"] = F.softplus(0.5 * (raw[j, -1] + raw[k, -1]) + self.bias_torsion)
        if self.flow is not None:
            pred.extras["inputs"] = batch  # the state the flow is conditioned on
        return pred

    def torsion_columns(self, pred: Prediction) -> tuple[Tensor, Tensor, Tensor] | None:
        """The torsion noise as (atom [P], torsion [P], displacement per unit draw [P, 3]): atom i of torsion t's
        molecule moves w_ti s_t û_t × (μ_i − μ_j) per unit θ_t (û_t the unit axis from μ_j to μ_k; w_ti the share
        of the turn, ``Torsions.weight``: the two sides turn against each other; μ detached).
        None without torsions (or when the batch has none)."""
        tors = pred.extras.get("torsions")
        if tors is None or tors.axis.shape[1] == 0:
            return None
        mu = pred.x.detach()
        j, k = tors.axis
        axis = mu[k] - mu[j]
        axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        t, atom = tors.members
        share = tors.weight.to(mu.dtype) * pred.extras["torsion_scale"][t]
        vec = torch.linalg.cross(axis[t], mu[atom] - mu[j[t]]) * share.unsqueeze(-1)
        return atom, t, vec

    def mixing(self, pred: Prediction, batch: Tensor, num_graphs: int) -> Tensor | None:
        """A [ΣN, K]: node i's weight on the K shared draws of its graph (``cluster``: S_ik τ_gk; ``modes``: the
        learned weights), so that the correlated part of the covariance is A Aᵀ per graph; None for ``node``."""
        if self.noise == "cluster":
            S, tau = pred.extras["cluster_scores"], pred.extras["cluster_noise_scale"]
            K = S.shape[1]
            return S * tau.view(num_graphs, K).index_select(0, batch)
        if self.noise == "modes":
            return pred.extras["noise_modes"]
        return None

    # -- sampling and likelihood ------------------------------------------------------------------------------
    def sample(self, pred: Prediction, batch: Tensor, num_graphs: int, generator: torch.Generator | None = None,
               gain: float = 1.0) -> Tensor:
        """One draw of the next positions [ΣN, 3] given the prediction (batch: [ΣN] graph of each node); ``gain``
        multiplies every noise scale (σ and τ; a calibration, see ``simulation.calibration``)."""
        return self.draw(pred, batch, num_graphs, generator, gain)[0]

    def draw(self, pred: Prediction, batch: Tensor, num_graphs: int, generator: torch.Generator | None = None,
             gain: float = 1.0, memory: float = 0.0, previous: tuple[Tensor, Tensor | None] | None = None,
             flow_steps: int | None = None) -> tuple[Tensor, tuple[Tensor, Tensor | None]]:
        """``sample`` with temporally correlated noise: the standard normal draws (ε [ΣN, 3] per node, ξ [B·K, 3]
        per cluster) follow an AR(1) process along a chain, ε_k = ρ ε_{k−1} + √(1 − ρ²) η_k with fresh η_k and
        ρ = ``memory`` ∈ [0, 1), so that each draw is still N(0, I) (the one-step law is unchanged) while
        consecutive steps are correlated by ρ and the spread of a k-step ensemble grows faster than √k, as
        unresolved slow motions make it. ``previous``: the last call's standard draws (None: the chain's first
        step, or ρ = 0). Returns (positions [ΣN, 3], this call's standard draws for the next call). Isotropic
        and rotated with the state, so the chain stays E(3)-equivariant in distribution. With a flow, the
        Gaussian draw is the prior the flow transports (``flow_steps`` midpoint steps; None: the model's)."""
        x, standard = self.prior_draw(pred, batch, num_graphs, generator, gain, memory, previous)
        if self.flow is not None:  # a sampler, not a differentiable draw
            with torch.no_grad():
                x = self.flow.transport(pred.extras["inputs"], x.detach(), pred.x, flow_steps or self.flow_steps)
        return x, standard

    def prior_draw(self, pred: Prediction, batch: Tensor, num_graphs: int, generator: torch.Generator | None = None,
                   gain: float = 1.0, memory: float = 0.0,
                   previous: tuple[Tensor, Tensor | None] | None = None) -> tuple[Tensor, tuple]:
        """The Gaussian draw (``draw`` without the flow): μ plus the node, shared and torsion noise."""
        if not 0.0 <= memory < 1.0:
            raise ValueError(f"memory must be in [0, 1), not {memory}")
        mu, sigma = pred.x, pred.extras["noise_scale"] * gain

        def standard(shape, last):
            fresh = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
            if memory == 0.0 or last is None or last.shape != fresh.shape:
                return fresh
            return memory * last.to(fresh.dtype) + math.sqrt(1.0 - memory * memory) * fresh

        eps = standard(mu.shape, None if previous is None else previous[0])
        x = mu + sigma.unsqueeze(-1) * eps
        xi = None
        A = self.mixing(pred, batch, num_graphs)
        if A is not None:
            K = A.shape[1]
            xi = standard((num_graphs * K, 3), None if previous is None else previous[1])
            shared = xi.view(num_graphs, K, 3).index_select(0, batch)  # [ΣN, K, 3] the draws of each node's graph
            x = x + gain * torch.einsum("nk,nkc->nc", A.to(mu.dtype), shared)
        theta = None
        columns = self.torsion_columns(pred)
        if columns is not None:
            tors = pred.extras["torsions"]
            atom, t, vec = columns
            theta = standard((tors.axis.shape[1],), None if previous is None else previous[2])
            x = x.index_add(0, atom, gain * theta[t].unsqueeze(-1) * vec.to(mu.dtype))
        return x, (eps, xi, theta)

    def flow_loss(self, pred: Prediction, target: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The flow-matching loss (``models.flow``) of ``target`` [ΣN, 3] from a Gaussian draw of ``pred`` (no
        gradient into the draw or the mean: they are trained by their own terms)."""
        inputs = pred.extras["inputs"]
        with torch.no_grad():
            x0, _ = self.prior_draw(pred, inputs.batch, inputs.num_graphs, generator)
        return self.flow.loss(inputs, x0, target, pred.x, generator)

    def nll(self, pred: Prediction, target: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Mean Gaussian negative log-likelihood per coordinate of ``target`` [ΣN, 3] (nats)."""
        r = target - pred.x
        sigma = pred.extras["noise_scale"]
        var = sigma.square().unsqueeze(-1)  # [ΣN, 1]
        if self.torsions and pred.extras["torsions"].axis.shape[1] > 0:
            return self._nll_general(pred, r, var, batch, num_graphs)
        if self.noise == "node":
            return 0.5 * (r.square() / var + var.log() + math.log(2 * math.pi)).mean()
        # the K×K algebra in float64: M mixes terms of very different size (τ²/σ² can be large)
        out_dtype = r.dtype
        r, var = r.double(), var.double()
        A = self.mixing(pred, batch, num_graphs).double()
        K = A.shape[1]
        Ad = A / var  # D⁻¹A  [ΣN, K]
        # per graph: AᵀD⁻¹A [B, K, K] and AᵀD⁻¹r [B, K, 3] (the three coordinates share M: log det M counts 3×)
        outer = scatter_sum((Ad.unsqueeze(2) * A.unsqueeze(1)).reshape(-1, K * K), batch, num_graphs)
        u = scatter_sum((Ad.unsqueeze(-1) * r.unsqueeze(1)).reshape(-1, K * 3), batch, num_graphs)
        return low_rank_nll(r, var, outer.view(num_graphs, K, K), u.view(num_graphs, K, 3), copies=3).to(out_dtype)

    def _nll_general(self, pred: Prediction, r: Tensor, var: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """The NLL with the covariance D ⊗ I₃ + W Wᵀ, W [3ΣN, C] per graph: the mode or cluster columns
        A ⊗ I₃ (3K of them) and one column per torsion slot (``torsion_columns``), through Woodbury on
        [B, C, C] (the coordinates no longer separate: a torsion moves atoms in directions that differ)."""
        out_dtype = r.dtype
        r, var = r.double(), var.double()
        n = r.shape[0]
        parts = []
        A = self.mixing(pred, batch, num_graphs)
        if A is not None:
            eye = torch.eye(3, dtype=r.dtype, device=r.device)
            parts.append((A.double()[:, None, :, None] * eye[None, :, None, :]).reshape(n, 3, -1))  # [ΣN, 3, 3K]
        tors = pred.extras["torsions"]
        T = tors.max_per_graph
        atom, t, vec = self.torsion_columns(pred)
        cols = torch.zeros(n * T, 3, dtype=r.dtype, device=r.device)
        cols.index_add_(0, atom * T + tors.slot[t], vec.double())
        parts.append(cols.view(n, T, 3).transpose(1, 2))  # [ΣN, 3, T]
        W = torch.cat(parts, dim=2)
        C = W.shape[2]
        Wd = W / var.unsqueeze(-1)  # D⁻¹W
        outer = scatter_sum((Wd.transpose(1, 2) @ W).reshape(n, C * C), batch, num_graphs).view(num_graphs, C, C)
        u = scatter_sum(torch.einsum("nac,na->nc", Wd, r), batch, num_graphs).unsqueeze(-1)  # [B, C, 1] WᵀD⁻¹r
        return low_rank_nll(r, var, outer, u, copies=1).to(out_dtype)


def low_rank_nll(r: Tensor, var: Tensor, outer: Tensor, u: Tensor, *, copies: int) -> Tensor:
    """Mean Gaussian NLL per coordinate of residuals r [ΣN, 3] under D + W Wᵀ (D = diag ``var`` [ΣN, 1] on every
    coordinate) by the Woodbury identity, given per graph ``outer`` = WᵀD⁻¹W [B, C, C] and ``u`` = WᵀD⁻¹r
    [B, C, R]: with M = I + WᵀD⁻¹W, rᵀΣ⁻¹r = rᵀD⁻¹r − uᵀM⁻¹u and log det Σ = log det D + ``copies`` · log det M
    (3 when the three coordinates each have the covariance D + AAᵀ, R = 3; 1 for one 3N-dimensional W, R = 1)."""
    M = outer + torch.eye(outer.shape[-1], dtype=outer.dtype, device=outer.device)
    L = torch.linalg.cholesky(M)
    w = torch.cholesky_solve(u, L)  # M⁻¹u
    quad = (r.square() / var).sum() - (u * w).sum()
    logdet = 3 * var.log().sum() + copies * 2 * torch.diagonal(L, dim1=-2, dim2=-1).log().sum()
    return 0.5 * (quad + logdet) / r.numel() + 0.5 * math.log(2 * math.pi)


def is_stochastic(model: nn.Module) -> bool:
    """True for a propagator that samples its next state (possibly wrapped, e.g. by DDP or torch.compile)."""
    inner = getattr(model, "module", getattr(model, "_orig_mod", model))
    return isinstance(inner, StochasticPropagator)


def unwrap(model: nn.Module) -> nn.Module:
    """The propagator under a DDP / torch.compile wrapper."""
    return getattr(model, "module", getattr(model, "_orig_mod", model))
