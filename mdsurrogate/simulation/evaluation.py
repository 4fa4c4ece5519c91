"""Evaluating a surrogate on a dataset: the papers' single-step metric (optionally after a random rigid motion)
and the hard cluster assignment of hierarchical models written as a structure file."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError


def check_features(surrogate, ds) -> None:
    """A dataset must give the model the inputs it was trained on (a positions-only model: the dataset's features
    without the velocity)."""
    spec = surrogate.featurizer.spec
    have = ds.features if spec.velocity else ds.features.without_velocity()
    if have.to_dict() != spec.to_dict():
        raise UserError(f"dataset {ds.path} has other features than the model was trained with")


def evaluate_split(surrogate, ds, split: str = "test", *, batch_size: int = 100, rotate: bool = False,
                   translate: bool = False, seed: int = 0) -> dict:
    """Position and velocity MSE (the papers' Σ batch MSE × graphs / Σ graphs, dataset units²) of ``surrogate`` on
    a split of ``ds``, optionally after a random rotation with reflection and/or translation."""
    from ..training.metrics import evaluate

    if batch_size < 1:
        raise UserError(f"batch_size must be ≥ 1, not {batch_size}")
    check_features(surrogate, ds)
    res = evaluate(surrogate.model, ds, ds.split_indices(split), surrogate.featurizer, device=surrogate.device,
                   batch_size=batch_size, dtype=surrogate.dtype, rotate=rotate, translate=translate, seed=seed)
    return {"model": surrogate.name, "split": split, "rotate": rotate, "translate": translate, **res}


def write_clusters(surrogate, ds, sample: int, path: str | os.PathLike, split: str = "test", *,
                   overwrite: bool = False) -> Path:
    """Write the input frame of one sample with the model's hard cluster assignment: B-factors in a PDB, a
    ``cluster`` column in extended XYZ."""
    from ..data.atoms import AtomTopology
    from ..io.writers import open_writer

    if not surrogate.produces_clusters:
        raise UserError(f"model {surrogate.name!r} has no cluster assignment to write (use a hierarchical model "
                        "such as eghn)")
    check_features(surrogate, ds)
    ids = ds.split_indices(split)[sample: sample + 1]
    if len(ids) == 0:
        raise UserError(f"split {split!r} of {ds.path} has no sample {sample}")
    x0, v0, _, _, topo = ds.gather(ids)
    pred = surrogate.predict(x0, v0, topo.to(surrogate.device))
    path = Path(path)
    # PDB maps the "cluster" array onto its B-factor column; formats with free columns store it by name
    with open_writer(path, AtomTopology.generic(x0.shape[0]), bfactors="cluster", overwrite=overwrite) as w:
        w.write(x0.numpy(), **({"cluster": pred.extras["clusters"].cpu().numpy()} if w.per_atom_columns else {}))
    return path
