"""The propagator interface and the model registry.

A propagator maps a batch of states at time t to the states at t + Δ, equivariantly: rotating, reflecting,
translating or permuting the input moves the output the same way. It returns the whole next state, position
and velocity, so rollouts can chain it (see design notes in the README).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from ..data.graph import GraphBatch


@dataclass
class Prediction:
    """What a propagator returns.

    Attributes:
        x: [ΣN, 3] predicted positions at t + Δ.
        v: [ΣN, 3] predicted velocities at t + Δ.
        aux_loss: scalar training regulariser already weighted (e.g. EGHN's λ·connectivity loss), or None.
        extras: model-specific outputs, e.g. ``"cluster_scores"`` [ΣN, K] soft assignment S and
            ``"clusters"`` [ΣN] hard assignment argmax_k S_ik for EGHN.
    """

    x: Tensor
    v: Tensor
    aux_loss: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


class Propagator(nn.Module):
    """Base class. Subclasses set ``name`` and implement ``forward(batch) -> Prediction``.

    Constructor contract: ``Model(node_dim=F, edge_dim=A, local_edge_dim=A_l, **hyperparameters)``, where the
    three dimensions come from the dataset's featurizer and the rest from the recipe's ``[model]`` table.
    ``uses_local_graph`` tells the data pipeline whether local (connectivity) edges are needed;
    ``produces_clusters`` that ``Prediction.extras`` holds ``"clusters"`` (hard assignment [ΣN]).
    """

    name: str = ""
    uses_local_graph: bool = False
    produces_clusters: bool = False

    def forward(self, batch: GraphBatch) -> Prediction:  # pragma: no cover - interface
        raise NotImplementedError


class Registry(dict):
    """name → class for one family of models (propagators, potentials); ``register`` is a class decorator."""

    def register(self, cls):
        if not getattr(cls, "name", ""):
            raise ValueError(f"{cls.__qualname__} needs a non-empty `name` to be registered")
        self[cls.name] = cls
        return cls


MODELS: Registry = Registry()
register = MODELS.register  # make a propagator available to recipes under ``cls.name``


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


