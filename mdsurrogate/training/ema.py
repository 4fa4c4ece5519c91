"""Exponential moving average (EMA) of the weights.

After every optimiser step n = 1, 2, …::

    θ̄ ← d_n · θ̄ + (1 − d_n) · θ,      d_n = min(d, (1 + n) / (10 + n))

(the warm-up of d_n keeps the first averages from being dominated by the random initial weights). Buffers are
copied, not averaged. The averaged model is what the trainer evaluates and saves in ``best.pt``; the raw weights
and the average both go into ``last.pt`` so that a resumed run continues both.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A shadow copy of ``model`` holding θ̄ (``.model``: evaluation mode, no gradients)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        shadow = [p for p in self.model.parameters() if p.dtype.is_floating_point]
        live = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
        if shadow:
            torch._foreach_lerp_(shadow, live, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates,
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["state_dict"])
