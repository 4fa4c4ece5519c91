"""The model registry filled: imports every model module so that each registers itself, and builds models by
name (any propagator, optionally wrapped as a stochastic one)."""

from . import baselines, eghn, egnn, gmn, gnn, radial_field, segnn, tfn  # noqa: F401
from .base import MODELS, Propagator
from .stochastic import STOCHASTIC_KEYS, StochasticPropagator


def build_model(name: str, *, node_dim: int, edge_dim: int, local_edge_dim: int, **hparams) -> Propagator:
    """Instantiate a registered model; raises ``KeyError`` naming the known models for an unknown name.

    The keys of ``models.stochastic.STOCHASTIC_KEYS`` (``noise = "node" | "cluster" | "modes" | "none"``, …) wrap
    any model in a :class:`~mdsurrogate.models.stochastic.StochasticPropagator`."""

    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    noise = {k: hparams.pop(k) for k in STOCHASTIC_KEYS if k in hparams}
    dims = {"node_dim": node_dim, "edge_dim": edge_dim, "local_edge_dim": local_edge_dim}
    model = MODELS[name](**dims, **hparams)
    if noise.get("noise", "none") != "none":
        model = StochasticPropagator(model, **dims, **noise)
    return model
