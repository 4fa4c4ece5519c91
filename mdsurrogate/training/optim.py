"""The optimizer every training uses (and the benchmarks measure): Adam with one fused kernel per step.

``torch.optim.Adam(..., fused=True)`` updates every parameter in one kernel (CPU and CUDA, torch ≥ 2.4) instead
of a loop of small element-wise ops, the same update up to float rounding; where the fused kernel does not take
the parameters (another device or dtype) the multi-tensor ``foreach`` implementation does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def make_adam(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam over the trainable ``params`` (fused where possible, else foreach)."""
    params = [p for p in params if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)
