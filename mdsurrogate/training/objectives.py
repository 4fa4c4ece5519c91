"""Training objectives of a propagator: the papers' single-step loss, and what rollouts need beyond it.

For a batch of samples with input state (x₀, v₀) and true positions x₁ … x_m after 1 … m model steps::

    L = Σ_k w_k ℓ_k / Σ_k w_k  +  λ_v · MSE(v̂₁, v₁)  +  λ_b · B  +  aux (e.g. EGHN's connectivity loss)

* ``rollout_steps`` m (with ``rollout_curriculum``: m grows linearly from 1 to its final value over that many
  epochs): the model is chained on its own predictions with gradients through the chain (x̂_k = model(x̂_{k−1},
  v̂_{k−1})), ℓ_k = MSE(x̂_k, x_k), weights w_k = γ^(k−1) (``rollout_discount`` γ, 1 by default: every step
  alike; γ < 1 keeps the first step, the papers' number, the main term). With m = 1 this is exactly the papers'
  loss.
* stochastic propagators: every ℓ_k is the Gaussian negative log-likelihood of x_k (per coordinate) given the
  chain's state, and with ``rollout_noise = "sample"`` the chain continues from a draw of the model's own noise
  (x̂_k = μ_k + stop_gradient(noise)), so the mean learns to bring the states its own noise produces back to
  the data (with ``"mean"`` it continues from μ_k);
* with ``model.flow``, every step adds the flow-matching loss of x_k from a draw of the Gaussian (its prior);
  training chains continue from Gaussian draws (the flow's transport is for sampling);
* ``noise_loss = "separate"``: the mean is trained by the MSE and the noise scales by the likelihood of the
  detached mean, so that heteroscedastic weighting (1/σ² on each residual) cannot trade the mean's accuracy for
  the scales' (``"joint"``, the default: one likelihood for both);
* ``input_noise`` σ: x₀ ← x₀ + σε before the first step (ε ~ N(0, I), seeded), so the model learns to bring a
  slightly wrong state back to the data (denoising); when the velocity is the displacement over one step
  (``lag``) it is perturbed consistently, v₀ ← v₀ + σε/Δ_frames;
* ``bond_weight`` λ_b: B = mean over local edges, and over steps with the weights w_k, of (‖x̂_i − x̂_j‖ −
  ‖x_i − x_j‖)², the error of bond (bone, virtual-bond) lengths;
* ``velocity_weight`` λ_v: the next-velocity MSE of the first step (the papers train positions only).

Positions in the dataset's length unit; every term is a mean per coordinate (or per edge), so the numbers
compare across batch sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.constraints import project_bond_lengths
from ..data.geometry import constraint_pairs
from ..models.stochastic import is_stochastic, unwrap


@dataclass
class RolloutObjective:
    """The propagator loss's settings (recipe keys of ``[train]`` with the same names)."""

    rollout_steps: int = 1
    rollout_curriculum: int = 0
    rollout_discount: float = 1.0
    input_noise: float = 0.0
    bond_weight: float = 0.0
    velocity_weight: float = 0.0
    rollout_noise: str = "sample"
    noise_loss: str = "joint"
    lag_velocity: bool = False
    delta_frames: int = 1

    def steps_at(self, epoch: int) -> int:
        """m at ``epoch``: the final value, reached linearly over ``rollout_curriculum`` epochs."""
        if self.rollout_steps <= 1 or self.rollout_curriculum <= 0:
            return max(1, self.rollout_steps)
        return min(self.rollout_steps, 1 + (self.rollout_steps - 1) * epoch // self.rollout_curriculum)

    def loss(self, model, featurizer, x0: Tensor, v0: Tensor, targets: Tensor, topo, *,
             v1: Tensor | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        """(loss, figures) for inputs x0, v0 [ΣN, 3], targets [m, ΣN, 3] (m ≥ 1; the chain runs m steps) and the
        static topology; v1 [ΣN, 3] the true next velocity (for ``velocity_weight``)."""
        steps = targets.shape[0]
        if self.input_noise > 0:
            eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) * self.input_noise
            x0 = x0 + eps
            if self.lag_velocity:
                v0 = v0 + eps / float(self.delta_frames)
        stochastic = is_stochastic(model)
        pairs = lengths = None
        project = getattr(unwrap(model), "project", "none") if stochastic else "none"
        local = topo.edge_sets.get("local")
        if project != "none" and self.rollout_noise == "sample" and local is not None and local.index.shape[1]:
            pairs = constraint_pairs(local.index, x0.shape[0], angles=project == "angles")
            lengths = (x0[pairs[0]] - x0[pairs[1]]).norm(dim=-1).detach()  # the data's own (before input noise)
        x, v = x0, v0
        total, parts = x0.new_zeros(()), {}
        bond = x0.new_zeros(())
        for k in range(steps):
            pred = model(featurizer(x, v, topo))
            x_new = pred.x.float() if pred.x.dtype == torch.bfloat16 else pred.x
            mse = ((x_new - targets[k]) ** 2).mean()
            if k == 0:
                parts["mse"] = mse.detach()
                if stochastic:
                    first, nll, flow = self._stochastic_terms(model, pred, mse, targets[0], topo, generator)
                    parts["nll"] = nll.detach()
                    if flow is not None:
                        parts["flow"] = flow.detach()
                else:
                    first = mse
                if v1 is not None:  # the papers' arithmetic: mse + λ_v·mse_v (+ aux)
                    mse_v = ((pred.v.float() - v1) ** 2).mean()
                    parts["mse_v"] = mse_v.detach()
                    first = first + self.velocity_weight * mse_v
                if pred.aux_loss is not None:
                    first = first + pred.aux_loss.float()
                total = first
            else:
                step_loss = self._stochastic_terms(model, pred, mse, targets[k], topo, generator)[0] if stochastic \
                    else mse
                total = total + self.rollout_discount ** k * step_loss
                parts[f"mse_{k + 1}"] = mse.detach()
            if self.bond_weight and local is not None and local.index.shape[1] > 0:
                i, j = local.index
                error = (x_new[i] - x_new[j]).norm(dim=-1) - (targets[k][i] - targets[k][j]).norm(dim=-1)
                bond = bond + self.rollout_discount ** k * (error ** 2).mean()
            if k + 1 < steps:
                if stochastic and self.rollout_noise == "sample":
                    draw, _ = unwrap(model).prior_draw(pred, topo.batch, topo.num_graphs, generator)
                    x_new = x_new + (draw - pred.x).detach()
                    if pairs is not None:  # as in a rollout: the draw projected onto the constraints
                        x_new, _ = project_bond_lengths(x_new, pairs, lengths, iterations=30, tol=0.0)
                v = (x_new - x) / float(self.delta_frames) if self.lag_velocity else pred.v
                x = x_new
        # keep the single-step loss on its usual scale: the chain's terms are a weighted mean over the steps
        weights = sum(self.rollout_discount ** k for k in range(steps))
        total = total / weights if steps > 1 else total
        if self.bond_weight:
            parts["bond"] = (bond / weights).detach()
            total = total + self.bond_weight * bond / weights
        return total, parts

    def _nll(self, model, pred, target: Tensor, topo) -> Tensor:
        """The likelihood term: of the prediction, or with ``noise_loss = "separate"`` of its detached mean."""
        if self.noise_loss == "separate":
            pred = dataclasses.replace(pred, x=pred.x.detach())
        return unwrap(model).nll(pred, target, topo.batch, topo.num_graphs)

    def _stochastic_terms(self, model, pred, mse: Tensor, target: Tensor, topo, generator
                          ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(loss of one chain step, its likelihood term, its flow-matching term or None) for a stochastic
        propagator: the likelihood (plus the MSE with ``noise_loss = "separate"``) plus, with a flow
        (``models.flow``), the flow-matching loss of ``target`` from a Gaussian draw."""
        nll = self._nll(model, pred, target, topo)
        loss = nll + mse if self.noise_loss == "separate" else nll
        inner = unwrap(model)
        flow = inner.flow_loss(pred, target, generator) if inner.flow is not None else None
        return (loss if flow is None else loss + flow), nll, flow
