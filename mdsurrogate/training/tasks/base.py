"""The task interface: what a kind of model brings to the one training loop (:mod:`..trainer`).

The trainer owns epochs, evaluation cadence, model selection, stopping, checkpoints, resumption, distribution,
schedules, EMA and logging. A task owns everything that depends on what is learned:

    build_model()                   the model, with whatever it needs from the training data (statistics)
    split(name)                     sample ids of "train" / "val" / "test"
    batch(ids)                      one training batch on the task's device and dtype
    loss(net, batch)                (scalar loss to minimise, {figure: detached scalar} per batch)
    evaluate(model, ids, …)         {figure: value} on a split (the papers' metric for propagators)
    selection_value(val, model)     the number model selection minimises (default: val[selection])
    summary(best)                   the run's headline figures for summary.json
    checkpoint_fields()             features, dataset information and ``extra`` for the checkpoints

Every per-batch figure is averaged over the epoch weighted by ``batch_weight(batch)`` (graphs per batch) and logged
as ``train_<figure>`` after :meth:`Task.train_record`; evaluation figures are logged as ``val_<figure>`` and
``test_<figure>``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from ...config import Recipe
from ...data.dataset import Dataset


class Task:
    """Base class; subclasses set the class attributes and implement the methods (see the module docstring)."""

    kind: str = ""
    selection: str = ""  # evaluation figure that model selection minimises
    selection_label: str = ""  # how people call it ("val MSE")
    test_each_evaluation: bool = True  # False: the test split is evaluated once, with the selected weights
    train_figures: tuple[str, ...] = ()
    eval_figures: tuple[str, ...] = ()

    def __init__(self, recipe: Recipe, data_path: str):
        self.recipe = recipe
        self.dataset = Dataset(data_path)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.amp = False

    # -- set-up -----------------------------------------------------------------------------------------------
    def configure(self, device: torch.device, dtype: torch.dtype, amp: bool = False) -> None:
        """Where and in which precision batches are made (called by the trainer before training)."""
        self.device, self.dtype, self.amp = device, dtype, amp

    def autocast(self):
        """bf16 autocast around the forward pass when AMP is on (CUDA only), else nothing."""
        if self.amp and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def split(self, name: str) -> np.ndarray:
        return self.dataset.split_indices(name)

    def build_model(self) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def hparams(self) -> dict:
        """The model constructor's hyper-parameters as the checkpoint stores them (after :meth:`build_model`)."""
        raise NotImplementedError  # pragma: no cover - interface

    # -- training ---------------------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        """Called by the trainer before the batches of ``epoch`` (e.g. for a curriculum); nothing by default."""

    def batch(self, ids: np.ndarray):  # pragma: no cover - interface
        raise NotImplementedError

    def batch_weight(self, batch) -> int:
        """How much a batch counts in the epoch's mean figures (its number of graphs)."""
        return int(batch.num_graphs)

    def loss(self, net: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def train_record(self, means: dict[str, float]) -> dict:
        """Epoch means of the per-batch figures → the ``train_*`` entries of the metrics line."""
        return {f"train_{k}": v for k, v in means.items()}

    # -- evaluation and reporting -----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, ids: np.ndarray, *, batch_size: int,
                 distributed: bool = False) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def selection_value(self, val: dict, model: nn.Module) -> float:
        """The number model selection minimises at an evaluation (override for e.g. a rollout metric)."""
        return float(val[self.selection])

    def selectable(self, epoch: int) -> bool:
        """Whether the weights of ``epoch`` are what the recipe trains for (override: e.g. not before a curriculum
        has reached its final setting). Until an evaluation of a selectable epoch, the best earlier one is kept
        provisionally; the first selectable one replaces it whatever its figure."""
        return True

    def summary(self, best: dict) -> dict:
        """Headline figures for summary.json from ``best = {"val": {…}, "test": {…}}`` of the selected weights."""
        return {"val": best.get("val", {}), "test": best.get("test", {})}

    def checkpoint_fields(self) -> dict:
        """``features``, ``dataset`` (DatasetInfo) and ``extra`` of this task's checkpoints."""
        raise NotImplementedError  # pragma: no cover - interface

    def csv_columns(self) -> list[str]:
        """The metrics.csv header after the trainer's own columns."""
        cols = list(self.train_record(dict.fromkeys(self.train_figures, 1.0)))
        cols += [f"val_{k}" for k in self.eval_figures]
        if self.test_each_evaluation:
            cols += [f"test_{k}" for k in self.eval_figures]
        return cols
