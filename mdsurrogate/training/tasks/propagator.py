"""The propagator task: learn the state at t + Δ from the state at t (positions and velocities).

Loss of a batch (the EGHN paper's loss on Z = [x, v], eq. 16, with the velocity term weighted)::

    L = mean_{i,c} (x̂_ic − x_ic(t + Δ))²  +  w_v · mean_{i,c} (v̂_ic − v_ic(t + Δ))²  +  aux

with w_v = ``train.velocity_weight`` (0 in the papers' protocol: positions only) and ``aux`` a model's own
regulariser (EGHN's weighted connectivity loss). The reported figure is the papers' metric, the position MSE of a
split: per batch the MSE over (node, coordinate), averaged over batches weighted by graphs.

Extension points for training that sees its own predictions (multi-step unrolling, input noise, extra geometric
terms, a likelihood head): :meth:`PropagatorTask.batch` decides what a batch holds, :meth:`PropagatorTask.forward`
runs the model on it, :meth:`PropagatorTask.loss_terms` turns one prediction into named terms and
:meth:`PropagatorTask.loss` combines them; ``selection_value`` may rank evaluations by something other than the
one-step validation MSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn

from ...data.featurize import Featurizer
from ...data.graph import GraphBatch
from ...data.topology import BatchTopology
from ...errors import UserError
from ...models.base import Prediction
from ...models.registry import build_model
from ..checkpoint import DatasetInfo
from ..metrics import evaluate
from .base import Task


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
        self.featurizer = Featurizer(self.dataset.features)

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
        return PropagatorBatch(self.featurizer(x0, v0, topo), x1, v1, len(ids), x0, v0, topo)

    def forward(self, net: nn.Module, batch: PropagatorBatch) -> Prediction:
        with self.autocast():
            return net(batch.graph)

    def loss_terms(self, pred: Prediction, batch: PropagatorBatch) -> dict[str, Tensor]:
        """Named terms of one prediction against the batch's targets (scalars, with gradients)."""
        mse = ((pred.x.to(batch.x1.dtype) - batch.x1) ** 2).mean()
        mse_v = ((pred.v.to(batch.v1.dtype) - batch.v1) ** 2).mean()
        return {"mse": mse, "mse_v": mse_v}

    def loss(self, net: nn.Module, batch: PropagatorBatch) -> tuple[Tensor, dict[str, Tensor]]:
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
        return {"mse": out["mse"], "mse_v": out["mse_v"]}

    def summary(self, best: dict) -> dict:
        val, test = best.get("val", {}), best.get("test", {})
        return {"best_val_mse": val.get("mse", float("nan")), "test_mse": test.get("mse", float("nan")),
                "val": val, "test": test}

    def checkpoint_fields(self) -> dict:
        return {"features": self.featurizer.spec.to_dict(), "dataset": DatasetInfo.from_dataset(self.dataset),
                "extra": {}}
