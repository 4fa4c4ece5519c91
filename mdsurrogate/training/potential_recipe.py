"""Recipes for learned potentials: the same TOML file shape as propagator recipes, trained by ``train_potential``.

``mdsurrogate train RECIPE`` reads the recipe (``base =`` chains and ``--set`` overrides included) and, when its
``[model] name`` is a registered *potential* (``egnn_potential``), trains it here instead of with the propagator
loop. Every key maps onto an argument of :func:`~mdsurrogate.training.potential.train_potential`::

    name = "cu_emt_potential"
    [data]
    path = "data/cu_emt"            # a potential dataset: `mdsurrogate ingest emt` or `mdsurrogate ingest ase`
    [model]
    name = "egnn_potential"
    hidden = 64                     # H
    layers = 3                      # message-passing layers
    n_rbf = 16                      # radial basis functions
    cutoff = 5.0                    # Å; omit to use the dataset's
    [train]
    epochs = 100                    # cosine decay of lr to lr · lr_final_ratio over these epochs
    batch_size = 8                  # frames per batch
    lr = 2e-3
    lr_final_ratio = 0.02
    energy_weight = 1.0             # w_E on (eV/atom)²
    force_weight = 1.0              # w_F on (eV/Å)² per component
    seed = 0
    dtype = "float32"               # or "float64"
    grad_clip = 10.0                # 0 = no clipping
    eval_every = 1                  # epochs between validation evaluations (best validation loss is kept)
    eval_batch_size = 32
    max_seconds = 300               # optional wall-clock budget: stop after the epoch that crosses it

Unknown keys are errors naming the closest valid key, as for propagator recipes. The run directory gets what
``train_potential`` writes (best.pt, last.pt, metrics.jsonl, config.json, summary.json) plus the resolved
``recipe.toml`` and ``command.txt``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from ..config import _closest, apply_overrides, check_sections, dump_toml, read_recipe_file
from ..errors import RecipeError, UserError

MODEL_KEYS = ("hidden", "layers", "n_rbf", "cutoff")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "lr_final_ratio", "energy_weight", "force_weight", "seed", "dtype",
              "grad_clip", "eval_every", "eval_batch_size", "max_seconds")
OPTIONAL_NUMBERS = ("cutoff", "grad_clip", "max_seconds")  # default None in train_potential: any number or absent


def potential_names() -> list[str]:
    from ..models.potential import POTENTIALS

    return sorted(POTENTIALS)


def read_raw_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    """The recipe as a dict, ``base`` resolved and ``--set`` overrides applied (not yet validated)."""
    return apply_overrides(read_recipe_file(Path(path)), overrides or [])


def is_potential_recipe(raw: dict) -> bool:
    """True when the recipe's ``[model] name`` is a learned potential rather than a propagator."""
    model = raw.get("model", {})
    return isinstance(model, dict) and model.get("name") in potential_names()


def _defaults() -> dict:
    from .potential import train_potential

    return {k: p.default for k, p in inspect.signature(train_potential).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _check_type(section: str, key: str, value, default):
    where = f"{section}.{key}"
    if key in OPTIONAL_NUMBERS or isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where} must be a number, not {value!r}")
        return float(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RecipeError(f"{where} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where} must be an integer, not {value!r}")
        return value
    if isinstance(default, str) and not isinstance(value, str):
        raise RecipeError(f"{where} must be a string, not {value!r}")
    return value


def potential_arguments(raw: dict) -> dict:
    """Validate a potential recipe dict and return the keyword arguments of ``train_potential`` it sets
    (plus ``dataset`` from ``[data] path`` when given)."""
    check_sections(raw, ["data", "model", "train", "name", "description"])
    model = dict(raw.get("model", {}))
    name = model.pop("name", None)
    if name != "egnn_potential":
        raise RecipeError(f"model {name!r} is not a potential this trainer can train; use 'egnn_potential'")
    defaults = _defaults()
    args: dict = {}
    for section, table, valid in (("model", model, MODEL_KEYS), ("train", raw.get("train", {}), TRAIN_KEYS)):
        for key, value in table.items():
            if key not in valid:
                hint = _closest(key, list(valid))
                if section == "train" and key in ("patience", "velocity_weight", "weight_decay", "amp", "compile"):
                    hint = f" for potentials (valid keys: {', '.join(valid)})"
                raise RecipeError(f"unknown key {section}.{key}{hint}")
            args[key] = _check_type(section, key, value, defaults[key])
    data = raw.get("data", {})
    for key in data:
        if key != "path":
            raise RecipeError(f"unknown key data.{key} for a potential recipe (only data.path)")
    if data.get("path"):
        args["dataset"] = str(data["path"])
    if args.get("dtype", "float32") not in ("float32", "float64"):
        raise RecipeError(f"train.dtype must be 'float32' or 'float64', not {args['dtype']!r}")
    for key in ("epochs", "batch_size", "eval_every", "eval_batch_size", "hidden", "layers", "n_rbf"):
        if key in args and args[key] < 1:
            raise RecipeError(f"{'model' if key in MODEL_KEYS else 'train'}.{key} must be ≥ 1")
    for key in ("lr", "cutoff", "max_seconds"):
        if key in args and not args[key] > 0:
            raise RecipeError(f"{'model' if key in MODEL_KEYS else 'train'}.{key} must be positive")
    return args


def train_potential_recipe(raw: dict, out_dir: str | os.PathLike, *, data: str | None = None, device: str = "auto",
                           command: str = "", callback=None) -> dict:
    """Train the potential a validated recipe dict describes into ``out_dir``; returns ``train_potential``'s
    summary. ``data`` overrides ``[data] path``."""
    from ..data.dataset import Dataset
    from .potential import PotentialFrames, train_potential

    args = potential_arguments(raw)
    dataset = data or args.pop("dataset", None)
    args.pop("dataset", None)
    if not dataset:
        raise UserError("no dataset given: set [data] path in the recipe or pass --data")
    ds = Dataset(dataset)
    PotentialFrames(ds)  # a clear error for a dataset without energies and forces, before the run dir exists
    run = Path(out_dir)
    if (run / "last.pt").exists():
        raise UserError(f"{run} already holds a run; choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    resolved = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    resolved |= {"data": {"path": str(dataset)}, "model": dict(raw.get("model", {})),
                 "train": dict(raw.get("train", {}))}
    (run / "recipe.toml").write_text(dump_toml(resolved))
    if command:
        with open(run / "command.txt", "a") as fh:
            fh.write(command + "\n")
    return train_potential(ds, run, device=device, callback=callback, **args)
