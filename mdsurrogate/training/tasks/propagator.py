"""The propagator task: learn the state at t + Δ from the state at t (positions and velocities).

Loss of a batch (the EGHN paper's loss on Z = [x, v], eq. 16, with the velocity term weighted)::

    L = mean_{i,c} (x̂_ic − x_ic(t + Δ))²  +  w_v · mean_{i,c} (v̂_ic − v_ic(t + Δ))²  +  aux

with w_v = ``train.velocity_weight`` (0 in the papers' protocol: positions only) and ``aux`` a model's own
regulariser (EGHN's weighted connectivity loss). The reported figure is the papers' metric, the position MSE of a
split: per batch the MSE over (node, coordinate), averaged over batches weighted by graphs.

Training for rollouts (``train.rollout_steps``, ``rollout_curriculum``, ``rollout_noise``, ``input_noise``,
``bond_weight``) and stochastic propagators (``model.noise``) use :class:`~mdsurrogate.training.objectives.
RolloutObjective` instead (a batch then holds the true positions after 1 … m steps, from samples whose frames never
cross a split boundary); with none of them set the loss is exactly the papers'. ``train.select = "rollout"`` ranks
evaluations by the validation rollout MSE (the mean over k = 1 … ``select_steps`` of the position MSE of the model
chained on its own mean predictions) instead of the one-step validation MSE. A stochastic propagator with a flow
(``model.flow``) also reports the validation flow-matching loss (``val_flow``), and ``train.select = "flow"`` ranks
evaluations by it: the mean's one-step MSE levels off long before the flow has learned the law of the next state,
so selecting on it keeps an under-trained flow.

Every checkpoint also carries what the training data says a sane rollout looks like
(:func:`~mdsurrogate.training.limits.data_limits`): the stability guard's limits and the reference bond lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ...data.chains import chain_sample_ids, gather_chain
from ...data.featurize import Featurizer
from ...data.graph import GraphBatch
from ...data.topology import BatchTopology
from ...errors import UserError
from ...models.base import Prediction
from ...models.registry import build_model
from ...models.stochastic import unwrap
from ..checkpoint import DatasetInfo
from ..limits import data_limits
from ..metrics import evaluate
from ..objectives import RolloutObjective
from .base import Task

#: train.select = "rollout": a validation rollout's error is capped at this many times its stay-still error
DIVERGED_PENALTY = 100.0


def graph_mse(x: torch.Tensor, target: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """[B] position MSE per graph (per coordinate) of x against target [ΣN, 3]; batch [ΣN] graph of each node."""
    sq = ((x - target) ** 2).sum(-1)
    nodes = torch.bincount(batch, minlength=num_graphs).to(sq.dtype) * 3
    return sq.new_zeros(num_graphs).index_add_(0, batch, sq) / nodes


@dataclass
class PropagatorBatch:
    """One batch: ``graph`` (the featurised state at t), the raw state ``x0``, ``v0`` [ΣN, 3] and ``topo`` it was
    built from (for losses that chain the model on its own predictions and featurise again), and the targets
    ``x1``, ``v1`` [ΣN, 3] at t + Δ."""

    graph: GraphBatch
    x1: Tensor
    v1: Tensor
    num_graphs: int
    x0: Tensor | None = None
    v0: Tensor | None = None
    topo: BatchTopology | None = None
    targets: Tensor | None = None  # [m, ΣN, 3] true positions after 1 … m steps (rollout training)


class PropagatorTask(Task):
    kind = "propagator"
    selection = "mse"
    selection_label = "val MSE"
    test_each_evaluation = True  # the papers report the test MSE at the evaluation with the lowest val MSE
    train_figures = ("loss", "mse", "mse_v")
    eval_figures = ("mse", "mse_v")

    def __init__(self, recipe, data_path: str):
        super().__init__(recipe, data_path)
        if self.dataset.meta.get("task") == "potential":
            raise UserError(f"dataset {data_path} holds energies and forces for a learned potential, not "
                            "trajectories for a propagator; train it with a potential recipe (e.g. cu_emt_potential)")
        spec = self.dataset.features
        self.featurizer = Featurizer(spec if recipe.data.velocity_input else spec.without_velocity())
        t = recipe.train
        md = self.dataset.meta.get("md") or {}
        wanted = recipe.data.velocities
        if wanted and md and md.get("velocities") != wanted:
            raise UserError(f"recipe {recipe.name} is built for {wanted} velocities but dataset {data_path} holds "
                            f"{md.get('velocities')} velocities; ingest it again with velocities={wanted!r} "
                            f"(mdsurrogate ingest … --velocities {wanted})")
        self.objective = RolloutObjective(
            rollout_steps=t.rollout_steps, rollout_curriculum=t.rollout_curriculum,
            rollout_discount=t.rollout_discount, input_noise=t.input_noise,
            bond_weight=t.bond_weight, velocity_weight=t.velocity_weight, rollout_noise=t.rollout_noise,
            noise_loss=t.noise_loss, lag_velocity=md.get("velocities") == "lag", delta_frames=self.dataset.delta_frames)
        stochastic = recipe.model.params.get("noise", "none") != "none"
        self.for_rollouts = stochastic or t.rollout_steps > 1 or t.input_noise > 0 or t.bond_weight > 0
        if stochastic:
            flow = ("flow",) if recipe.model.params.get("flow") else ()
            self.train_figures = ("loss", "mse", "mse_v", "nll") + flow
        if t.select == "rollout":
            self.selection, self.selection_label = "rollout_mse", f"val rollout MSE ({t.select_steps} steps)"
            self.eval_figures = ("mse", "mse_v", "rollout_mse")
            self._check_selection_chains(t.select_steps)
        elif stochastic and recipe.model.params.get("flow"):
            self.eval_figures = ("mse", "mse_v", "flow")
            if t.select == "flow":
                self.selection, self.selection_label = "flow", "val flow-matching loss"
        self.generator = torch.Generator().manual_seed(int(t.seed))
        self.steps = 1

    def _check_selection_chains(self, steps: int) -> None:
        """Selection by rollouts needs validation samples (training ones where there is no validation split) with
        ``steps`` model steps of trajectory after them: refuse before training rather than select nothing."""
        split = "val" if len(self.dataset.split_indices("val")) else "train"
        if len(chain_sample_ids(self.dataset, split, steps)) == 0:
            most = max((k for k in range(1, steps) if len(chain_sample_ids(self.dataset, split, k))), default=0)
            raise UserError(f"train.select = 'rollout' needs {split} samples with train.select_steps = {steps} model "
                            f"steps of trajectory after them, and {self.dataset.path} has none (at most {most}): "
                            "lower train.select_steps")

    def split(self, name: str) -> np.ndarray:
        """Sample ids of a split; training on rollouts keeps the samples whose m later frames the split may see."""
        if name == "train" and self.recipe.train.rollout_steps > 1:
            ids = chain_sample_ids(self.dataset, "train", self.recipe.train.rollout_steps)
            if len(ids) == 0:
                raise UserError(f"no training sample of {self.dataset.path} has {self.recipe.train.rollout_steps} "
                                "model steps of trajectory after it: lower train.rollout_steps or store longer "
                                "trajectories (e.g. ingest nbody --train-horizon)")
            return ids
        return super().split(name)

    def selectable(self, epoch: int) -> bool:
        """Training for rollouts selects among the epochs trained on the final chain length (``rollout_steps``),
        not the curriculum's shorter chains: an early single-step checkpoint can have the best validation figure
        and still blow up when chained."""
        return self.objective.steps_at(epoch) == max(1, self.recipe.train.rollout_steps)

    def start_epoch(self, epoch: int) -> None:
        self.steps = self.objective.steps_at(epoch)

    def build_model(self) -> nn.Module:
        spec = self.featurizer.spec
        return build_model(self.recipe.model.name, node_dim=spec.node_dim, edge_dim=spec.edge_dim,
                           local_edge_dim=spec.local_edge_dim, **self.recipe.model.params)

    def hparams(self) -> dict:
        return dict(self.recipe.model.params)

    # -- training ---------------------------------------------------------------------------------------------
    def batch(self, ids: np.ndarray) -> PropagatorBatch:
        x0, v0, x1, v1, topo = self.dataset.gather(ids)
        x0, v0, x1, v1 = (a.to(self.device, self.dtype, non_blocking=True) for a in (x0, v0, x1, v1))
        topo = topo.to(self.device)
        targets = None
        if self.for_rollouts:
            targets = (gather_chain(self.dataset, ids, self.steps)[2].to(self.device, self.dtype)
                       if self.steps > 1 else x1.unsqueeze(0))
        return PropagatorBatch(self.featurizer(x0, v0, topo), x1, v1, len(ids), x0, v0, topo, targets)

    def forward(self, net: nn.Module, batch: PropagatorBatch) -> Prediction:
        with self.autocast():
            return net(batch.graph)

    def loss_terms(self, pred: Prediction, batch: PropagatorBatch) -> dict[str, Tensor]:
        """Named terms of one prediction against the batch's targets (scalars, with gradients)."""
        mse = ((pred.x.to(batch.x1.dtype) - batch.x1) ** 2).mean()
        mse_v = ((pred.v.to(batch.v1.dtype) - batch.v1) ** 2).mean()
        return {"mse": mse, "mse_v": mse_v}

    def loss(self, net: nn.Module, batch: PropagatorBatch) -> tuple[Tensor, dict[str, Tensor]]:
        if self.for_rollouts:
            with self.autocast():
                loss, parts = self.objective.loss(net, self.featurizer, batch.x0, batch.v0, batch.targets, batch.topo,
                                                  v1=batch.v1, generator=self.generator)
            parts.setdefault("mse_v", loss.new_zeros(()))
            return loss, {"loss": loss.detach(), **parts}
        pred = self.forward(net, batch)
        terms = self.loss_terms(pred, batch)
        loss = terms["mse"] + self.recipe.train.velocity_weight * terms["mse_v"]
        if pred.aux_loss is not None:
            loss = loss + pred.aux_loss.to(loss.dtype)
        return loss, {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, ids: np.ndarray, *, batch_size: int, distributed: bool = False) -> dict:
        out = evaluate(model, self.dataset, ids, self.featurizer, device=self.device, batch_size=batch_size,
                       dtype=self.dtype, autocast=self.amp and self.device.type == "cuda", distributed=distributed)
        res = {"mse": out["mse"], "mse_v": out["mse_v"]}
        if "rollout_mse" in self.eval_figures:
            res["rollout_mse"] = self.rollout_mse(model, ids, batch_size, distributed)
        if "flow" in self.eval_figures:
            res["flow"] = self.flow_loss(model, ids, batch_size, distributed)
        return res

    def _mean(self, total: float, count: float, distributed: bool) -> float:
        """total / count, summed over the ranks under DDP (every rank evaluates its shard of the samples)."""
        if distributed:
            sums = torch.tensor([total, count], device=self.device, dtype=torch.float64)
            torch.distributed.all_reduce(sums)
            total, count = sums.tolist()
        return total / count if count else float("nan")

    @torch.no_grad()
    def flow_loss(self, model: nn.Module, ids: np.ndarray, batch_size: int, distributed: bool = False) -> float:
        """The flow-matching loss (``models.flow``) of the one-step targets of ``ids``, per coordinate (Å²), from
        one prior draw and one flow time per sample. The draws come from a generator seeded alike at every
        evaluation, so that evaluations are compared on the same random numbers and differ by the weights only."""
        inner = unwrap(model)
        model.eval()
        generator = torch.Generator(device=self.device).manual_seed(int(self.recipe.train.seed))
        total, count = 0.0, 0
        for s in range(0, len(ids), batch_size):
            batch = self.batch(ids[s:s + batch_size])
            total += float(inner.flow_loss(model(batch.graph), batch.x1, generator)) * batch.x1.numel()
            count += batch.x1.numel()
        return self._mean(total, count, distributed)

    @torch.no_grad()
    def rollout_mse(self, model: nn.Module, ids: np.ndarray, batch_size: int, distributed: bool = False) -> float:
        """Mean over k = 1 … select_steps and over the samples (of ``ids``) whose split holds those frames of the
        position MSE of the model chained on its own mean predictions (NaN when no sample qualifies). A sample's
        error at step k is capped at ``DIVERGED_PENALTY`` × its stay-still error (or the batch's mean stay-still
        error when larger), which is also what a rollout that turns non-finite scores: one diverging rollout then
        ranks a checkpoint low instead of swamping every checkpoint's figure (10²⁴, or NaN that ranks nothing)."""
        split = {0: "train", 1: "val", 2: "test"}[int(self.dataset.split_codes[ids[0]])] if len(ids) else "val"
        steps = self.recipe.train.select_steps
        usable = np.intersect1d(ids, chain_sample_ids(self.dataset, split, steps))
        model.eval()
        total, count = 0.0, 0
        for s in range(0, len(usable), batch_size):
            chunk = usable[s:s + batch_size]
            x, v, targets, topo = gather_chain(self.dataset, chunk, steps)
            x, v, targets = (a.to(self.device, self.dtype) for a in (x, v, targets))
            topo = topo.to(self.device)
            x0 = x
            for k in range(steps):
                pred = model(self.featurizer(x, v, topo))
                x_new = pred.x.to(self.dtype)
                err = graph_mse(x_new, targets[k], topo.batch, topo.num_graphs)
                still = graph_mse(x0, targets[k], topo.batch, topo.num_graphs)
                penalty = DIVERGED_PENALTY * torch.maximum(still, still.mean()).clamp_min(torch.finfo(still.dtype).tiny)
                err = torch.where(torch.isfinite(err) & (err < penalty), err, penalty)
                total += float(err.sum())
                count += len(chunk)
                v = (x_new - x) / float(self.dataset.delta_frames) if self.objective.lag_velocity else pred.v
                x = x_new
        return self._mean(total, count, distributed)

    def summary(self, best: dict) -> dict:
        val, test = best.get("val", {}), best.get("test", {})
        return {"best_val_mse": val.get("mse", float("nan")), "test_mse": test.get("mse", float("nan")),
                "val": val, "test": test}

    def checkpoint_fields(self) -> dict:
        if not hasattr(self, "_limits"):
            self._limits = data_limits(self.dataset)
        guard, extra = self._limits
        return {"features": self.featurizer.spec.to_dict(), "dataset": DatasetInfo.from_dataset(self.dataset),
                "guard": guard, "extra": extra}
