"""Learning-rate schedules, per epoch: constant, cosine decay or reduce-on-plateau, each with a linear warm-up.

The learning rate of epoch e (0-based) is lr · f(e) with

    warm-up (e < W):   f = (e + 1) / W
    constant:          f = 1
    cosine:            f = r + (1 − r) · ½ · (1 + cos(π · min(e − W, E − W) / (E − W)))
    plateau:           f = max(s, r),  s ← s · factor after ``patience`` evaluations without a better validation
                       figure (strict "<"), s = 1 at the start

(W = ``warmup_epochs``, E = ``epochs``, r = ``lr_final_ratio``). With W = 0 the cosine is the one the learned
potentials have always used. The constant schedule without warm-up never touches the optimiser, so a recipe of the
papers' protocol trains bit for bit as before schedules existed.
"""

from __future__ import annotations

import math

import torch


class LRSchedule:
    """Sets the optimiser's learning rate at the start of every epoch (:meth:`start_epoch`); the plateau schedule
    also needs the validation figure of every evaluation (:meth:`observe`). Resumable: ``state_dict``."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, kind: str = "constant", lr: float, epochs: int,
                 warmup_epochs: int = 0, lr_final_ratio: float = 0.02, plateau_factor: float = 0.5,
                 plateau_patience: int = 10):
        if kind not in ("constant", "cosine", "plateau"):
            raise ValueError(f"unknown schedule {kind!r}")
        self.optimizer = optimizer
        self.kind, self.base_lr, self.epochs = kind, lr, epochs
        self.warmup, self.final_ratio = warmup_epochs, lr_final_ratio
        self.factor, self.patience = plateau_factor, plateau_patience
        self.scale, self.best, self.bad = 1.0, math.inf, 0

    @property
    def is_static(self) -> bool:
        """A constant learning rate that is never set (constant schedule, no warm-up)."""
        return self.kind == "constant" and self.warmup == 0

    def factor_at(self, epoch: int) -> float:
        """f(epoch), see the module docstring."""
        w = self.warmup
        if epoch < w:
            return (epoch + 1) / w
        if self.kind == "cosine":
            r, span = self.final_ratio, max(self.epochs - w, 1)
            return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * min(epoch - w, span) / span))
        if self.kind == "plateau":
            return max(self.scale, self.final_ratio)
        return 1.0

    def start_epoch(self, epoch: int) -> float:
        """Set (unless static) and return the learning rate of ``epoch``."""
        if self.is_static:
            return self.optimizer.param_groups[0]["lr"]
        lr = self.base_lr * self.factor_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def observe(self, value: float) -> None:
        """The validation figure of an evaluation (lower is better); drives the plateau schedule."""
        if self.kind != "plateau":
            return
        if value < self.best:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                self.scale *= self.factor
                self.bad = 0

    def state_dict(self) -> dict:
        return {"kind": self.kind, "scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state.get("scale", 1.0))
        self.best = float(state.get("best", math.inf))
        self.bad = int(state.get("bad", 0))
