"""Acceleration behind flags: ``torch.compile`` with a clean fallback, and edge padding to bucketed sizes.

Nothing here is on by default; each piece is opt-in and runs (and is tested) on CPU as on CUDA:

- ``compile_model(model, mode=...)``: ``torch.compile`` (CPU: Inductor's C++ kernels; CUDA:
  ``mode="reduce-overhead"``, i.e. CUDA graphs, for the small launch-bound batches). Compilation needs a C++
  toolchain (CPU) or Triton (CUDA) and can fail on an unsupported operation; the wrapper then warns once and runs
  the eager model, so a missing compiler never breaks a run. While Dynamo traces, the layers take the
  reference edge path (plain tensor operations, which Inductor fuses itself) instead of the hand-written
  ``fused.edge_pipeline``.
- ``pad_edges(batch, multiple)``: pads the global edge list to a multiple of ``multiple`` with edges of weight 0,
  so that a rollout, whose radius graph changes every step, shows a compiled or graphed model a few edge counts
  instead of a new one every step. Padded edges are exact no-ops for every model that honours
  ``GraphBatch.edge_weight`` (the weighted sums and soft-degree means ignore weight-0 edges; tested).
- bf16 autocast: ``fused.fused_enabled`` sends layers to the reference path under autocast, which autocast then
  runs in bf16 (GEMMs) and fp32 (reductions); the fused path itself computes in the input dtype.

No GPU figure has been taken for these paths (no GPU was available when they were written).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch
from torch import Tensor, nn

from ..data.graph import GraphBatch


def default_compile_mode(device: torch.device | str) -> str:
    """``"reduce-overhead"`` (CUDA graphs) on CUDA, ``"default"`` elsewhere."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"


class CompiledModel(nn.Module):
    """A model and its ``torch.compile``d version; calls go to the compiled one until it fails once, then to the
    eager model (with one warning). ``state_dict`` and parameters are the eager model's (shared)."""

    def __init__(self, model: nn.Module, compiled):
        super().__init__()
        self.model = model
        self._compiled = compiled
        self.failed: str | None = None

    def forward(self, *args, **kwargs):
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back to eager
                self.failed = f"{exc.__class__.__name__}: {exc}"
                self._compiled = None
                warnings.warn(f"torch.compile failed ({self.failed[:200]}); running the model eagerly",
                              RuntimeWarning, stacklevel=2)
        return self.model(*args, **kwargs)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None


def compile_model(model: nn.Module, *, mode: str | None = None, dynamic: bool | None = None,
                  backend: str = "inductor", device: torch.device | str | None = None) -> CompiledModel:
    """``torch.compile(model)`` with a fallback to eager (see the module docstring).

    Args: mode: a ``torch.compile`` mode (default ``default_compile_mode(device)``, the device of the model's
        first parameter); dynamic: as ``torch.compile`` (None lets it decide; rollouts with ``pad_edges`` see few
        shapes); backend: ``"inductor"``, or e.g. ``"eager"`` / ``"aot_eager"`` (tracing only, for tests).
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else "cpu"
    mode = mode or default_compile_mode(device)
    try:
        compiled = torch.compile(model, mode=None if backend != "inductor" else mode, dynamic=dynamic,
                                 backend=backend)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"torch.compile is not available ({exc.__class__.__name__}: {exc}); running eagerly",
                      RuntimeWarning, stacklevel=2)
        compiled = None
    return CompiledModel(model, compiled)


def padded_size(n: int, multiple: int) -> int:
    """n rounded up to a multiple of ``multiple`` (at least one multiple)."""
    return max(multiple, -(-n // multiple) * multiple)


def pad_edges(batch: GraphBatch, multiple: int = 4096) -> GraphBatch:
    """The batch with its global edges padded to ``padded_size(E, multiple)`` (see the module docstring).

    Padding edges are self loops of the last node (so the receiver order stays sorted) with zero attributes and
    weight 0; real edges keep their weights (1 when the batch had none). Local edges are static and not padded.
    """
    E = batch.edge_index.shape[1]
    n = batch.num_nodes
    pad = padded_size(E, multiple) - E
    weight = batch.edge_weight
    if weight is None:
        weight = batch.x.new_ones(E)
    if pad == 0 or n == 0:
        return replace(batch, edge_weight=weight)
    last = torch.full((2, pad), n - 1, dtype=batch.edge_index.dtype, device=batch.edge_index.device)
    attr = batch.edge_attr.new_zeros((pad,) + batch.edge_attr.shape[1:])
    return replace(batch, edge_index=torch.cat([batch.edge_index, last], dim=1),
                   edge_attr=torch.cat([batch.edge_attr, attr]), edge_weight=torch.cat([weight, weight.new_zeros(pad)]))


def unpadded(t: Tensor, n_edges: int) -> Tensor:
    """The first ``n_edges`` rows of a per-edge tensor of a padded batch."""
    return t[:n_edges]
