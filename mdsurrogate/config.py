"""Recipes: one TOML file naming the dataset, the model and its hyper-parameters, and the training schedule.

    name = "nbody_egnn"                 # optional
    description = "…"                   # optional
    base = "other_recipe.toml"          # optional: start from another recipe (path relative to this file)
    [data]
    path = "data/nbody_small"           # a dataset made by `mdsurrogate ingest`
    max_train_samples = 3000            # optional cap (first samples of the train split)
    [model]
    name = "egnn"                       # any registered model; other keys are its hyper-parameters
    hidden = 64
    [train]
    epochs = 10000 …                    # see TrainConfig

Unknown keys are errors that name the closest valid key. ``--set section.key=value`` overrides any entry
(the value is parsed as TOML, so ``--set train.lr=1e-3`` is a float and ``--set model.name=linear`` a string).
"""

from __future__ import annotations

import difflib
import inspect
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import RecipeError


@dataclass
class DataConfig:
    path: str = ""
    max_train_samples: int | None = None


@dataclass
class TrainConfig:
    """Training schedule. Defaults are the EGNN/EGHN papers' protocol (protocols.md §0)."""

    epochs: int = 10000
    batch_size: int = 100
    eval_batch_size: int | None = None  # default: batch_size
    lr: float = 5e-4
    weight_decay: float = 1e-12
    seed: int = 1
    eval_every: int = 5  # epochs between val/test evaluations (epoch 0, k, 2k, …)
    patience: int = 0  # evaluations without val improvement before stopping; 0 = never stop early
    max_minutes: float = 0.0  # wall-clock budget: stop at the first evaluation after it (0 = none)
    velocity_weight: float = 0.0  # weight of the next-velocity MSE in the loss (the papers train positions only)
    grad_clip: float | None = None  # max gradient norm; None = no clipping (papers)
    drop_last: bool = True  # the papers drop the last incomplete training batch
    amp: bool = False  # bf16 autocast (CUDA only)
    compile: bool = False  # torch.compile the model (CUDA only)
    log_every: int = 1  # epochs between metrics lines for training loss


@dataclass
class ModelConfig:
    name: str = "egnn"
    params: dict = field(default_factory=dict)


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = ""
    description: str = ""

    def to_dict(self) -> dict:
        d = {"name": self.name, "description": self.description, "data": asdict(self.data),
             "model": {"name": self.model.name, **self.model.params}, "train": asdict(self.train)}
        d["data"] = {k: v for k, v in d["data"].items() if v is not None}
        d["train"] = {k: v for k, v in d["train"].items() if v is not None}
        return d


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _coerce(section: str, cls, raw: dict):
    valid = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in raw.items():
        if key not in valid:
            raise RecipeError(f"unknown key {section}.{key}{_closest(key, list(valid))}")
        default = getattr(cls(), key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise RecipeError(f"{section}.{key} must be true or false, not {value!r}")
        elif isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecipeError(f"{section}.{key} must be an integer, not {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecipeError(f"{section}.{key} must be a number, not {value!r}")
            value = float(value)
        out[key] = value
    return cls(**out)


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides to a raw recipe dict (in place, returned)."""
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise RecipeError(f"override {item!r} must look like section.key=value (e.g. train.lr=1e-3)")
        dotted, text = item.split("=", 1)
        *path, key = dotted.strip().split(".")
        node = raw
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {item!r}: {part} is not a section")
        node[key] = _parse_value(text.strip())
    return raw


def check_sections(raw: dict, valid_top: list[str]) -> None:
    """Unknown top-level keys name the closest valid one; [data], [model] and [train] must be tables."""
    for key in raw:
        if key not in valid_top:
            raise RecipeError(f"unknown recipe section {key!r}{_closest(key, valid_top)}")
    for sec in ("data", "model", "train"):
        if sec in raw and not isinstance(raw[sec], dict):
            raise RecipeError(f"[{sec}] must be a table")


def recipe_from_dict(raw: dict) -> Recipe:
    check_sections(raw, ["data", "model", "train", "name", "description", "base"])
    raw = {k: v for k, v in raw.items() if k != "base"}
    model_raw = dict(raw.get("model", {}))
    name = model_raw.pop("name", "egnn")
    recipe = Recipe(
        data=_coerce("data", DataConfig, raw.get("data", {})),
        model=ModelConfig(name=name, params=model_raw),
        train=_coerce("train", TrainConfig, raw.get("train", {})),
        name=str(raw.get("name", "")),
        description=str(raw.get("description", "")),
    )
    validate_model(recipe.model)
    t = recipe.train
    if t.epochs < 1 or t.batch_size < 1 or t.eval_every < 1 or t.lr <= 0:
        raise RecipeError("train.epochs, train.batch_size and train.eval_every must be ≥ 1 and train.lr > 0")
    return recipe


def validate_model(model: ModelConfig) -> None:
    """Check that the model exists and that every hyper-parameter is one its constructor takes."""
    from .models import registry  # noqa: F401
    from .models.base import MODELS

    if model.name not in MODELS:
        raise RecipeError(f"unknown model {model.name!r}{_closest(model.name, list(MODELS))}")
    from .models.stochastic import STOCHASTIC_KEYS

    sig = inspect.signature(MODELS[model.name].__init__)
    valid = [p for p in sig.parameters if p not in ("self", "node_dim", "edge_dim", "local_edge_dim")]
    valid += list(STOCHASTIC_KEYS)
    for key in model.params:
        if key not in valid:
            raise RecipeError(f"unknown key model.{key} for model {model.name!r}{_closest(key, valid)}")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, dict]:
    """Read a TOML recipe, apply overrides, validate. Returns (recipe, resolved raw dict)."""
    raw = apply_overrides(read_recipe_file(Path(path)), overrides or [])
    recipe = recipe_from_dict(raw)
    return recipe, recipe.to_dict()


def merge(base: dict, top: dict) -> dict:
    """Recursive dict merge: tables merge key by key, anything else in ``top`` replaces ``base``."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_recipe_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Parse a recipe, resolving ``base = "…"`` chains (relative to the including file)."""
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    if path.resolve() in _seen:
        raise RecipeError(f"recipe {path} includes itself through `base`")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {path} is not valid TOML ({exc})") from None
    base = raw.pop("base", None)
    if base is None:
        return raw
    parent = read_recipe_file(path.parent / str(base), _seen + (path.resolve(),))
    parent.pop("name", None)
    parent.pop("description", None)
    return merge(parent, raw)


def dump_toml(d: dict) -> str:
    """Minimal TOML writer for resolved recipes (scalars, lists, one level of tables)."""

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {fmt(x)}" for k, x in v.items()) + " }"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{k} = {fmt(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {fmt(vv)}" for kk, vv in v.items() if vv is not None]
    return "\n".join(lines) + "\n"
