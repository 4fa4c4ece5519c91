"""Recipes: one TOML schema for every model, naming the dataset, the model and its hyper-parameters, and training.

    name = "nbody_egnn"                 # optional
    description = "…"                   # optional
    base = "other_recipe.toml"          # optional: start from another recipe (path relative to this file)
    [data]
    path = "data/nbody_small"           # a dataset made by `mdsurrogate ingest`
    max_train_samples = 3000            # optional cap (first samples/frames of the train split)
    [model]
    name = "egnn"                       # a registered propagator or potential; other keys: its hyper-parameters
    hidden = 64
    [train]
    epochs = 10000 …                    # see TrainConfig

The ``[model] name`` decides the *task*: a propagator (state at t → state at t + Δ, e.g. ``egnn``, ``eghn``) or a
learned potential (energy and forces, ``egnn_potential``). Both read the same ``[data]``, ``[model]`` and
``[train]`` sections; a few ``[train]`` keys belong to one task only (``TASK_KEYS``: the loss weights, AMP and
compilation) and are errors in a recipe of the other task. Keys a recipe leaves out take the defaults of
:class:`TrainConfig`, except where the task has its own (``TASK_DEFAULTS``: potentials keep their cosine decay and
gradient clipping). Unknown keys are errors that name the closest valid key. ``--set section.key=value``
overrides any entry (the value is parsed as TOML, so ``--set train.lr=1e-3`` is a float and
``--set model.name=linear`` a string).

A recipe is given as a path to a TOML file or as the name of a shipped recipe (``nbody_demo``; see
:mod:`mdsurrogate.catalog`).
"""

from __future__ import annotations

import difflib
import inspect
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .catalog import merge, read_recipe, read_recipe_file  # noqa: F401  (re-exported: the recipe readers)
from .errors import RecipeError

TASKS = ("propagator", "potential")
SCHEDULES = ("constant", "cosine", "plateau")
DTYPE_NAMES = ("float32", "float64")
DATA_VELOCITIES = ("", "lag", "difference", "trajectory")  # [data] velocities: what an MD dataset must hold


@dataclass
class DataConfig:
    path: str = ""
    max_train_samples: int | None = None
    #: the velocity convention of MD data the recipe was built for ("" = any): "lag" (the displacement over one
    #: model step, so a stochastic rollout's next velocity follows from its sampled positions), "difference" or
    #: "trajectory"; training refuses an MD dataset ingested otherwise
    velocities: str = ""
    #: false: the model sees positions only (its input velocities are zero and the node feature ``speed`` is
    #: dropped), a first-order Markov propagator x(t) → x(t + Δ) whose sampled chain cannot feed back on its own
    #: noisy displacements; the data and the rollout state keep their velocities for output
    velocity_input: bool = True


@dataclass
class TrainConfig:
    """Training settings. The defaults are the EGNN/EGHN papers' protocol for propagators (constant learning rate,
    no EMA, no clipping); ``TASK_DEFAULTS`` holds where potentials differ.

    Protocol: evaluate every ``eval_every`` epochs (epoch 0, k, 2k, … and the last) and keep the weights of the
    evaluation with the lowest validation figure (strict "<": the first best wins); with a rollout curriculum, among
    the evaluations after the chains reach ``rollout_steps`` (an earlier best is kept only until then).
    """

    # epochs, evaluations, stopping
    epochs: int = 10000
    batch_size: int = 100
    eval_batch_size: int | None = None  # default: batch_size
    eval_every: int = 5  # epochs between evaluations (epoch 0, k, 2k, … and the last)
    patience: int = 0  # evaluations without a better validation figure before stopping; 0 = never stop early
    max_minutes: float = 0.0  # wall-clock budget: stop at the first evaluation after it (0 = none)
    seed: int = 1  # initial weights and batch order
    init_from: str = ""  # start from the weights of this run directory or checkpoint (fine-tuning; same model)
    drop_last: bool = True  # drop the last incomplete training batch (the papers do)
    log_every: int = 1  # epochs between metrics lines for the training loss (evaluations are always logged)
    # optimiser (Adam) and learning-rate schedule
    lr: float = 5e-4
    weight_decay: float = 1e-12
    schedule: str = "constant"  # constant | cosine (to lr · lr_final_ratio at the last epoch) | plateau
    warmup_epochs: int = 0  # linear warm-up from lr / warmup_epochs to lr over these epochs (any schedule)
    lr_final_ratio: float = 0.02  # cosine: final lr / lr; plateau: the floor of lr / lr
    plateau_factor: float = 0.5  # plateau: lr ← lr · factor …
    plateau_patience: int = 10  # … after this many evaluations without a better validation figure
    grad_clip: float = 0.0  # maximum gradient norm; 0 = no clipping
    ema_decay: float = 0.0  # exponential moving average of the weights (evaluated, saved in best.pt); 0 = off
    dtype: str = "float32"  # float32 | float64: the model's and the data's precision in training
    amp: bool = False  # bf16 autocast (CUDA only; propagators)
    compile: bool = False  # torch.compile the model (CUDA only; propagators)
    # the loss
    velocity_weight: float = 0.0  # propagators: weight of the next-velocity MSE (the papers train positions only)
    rollout_steps: int = 1  # propagators: model steps chained with gradients per sample (1 = the papers' loss)
    rollout_curriculum: int = 0  # epochs over which the chain grows from 1 to rollout_steps (0 = at once)
    rollout_discount: float = 1.0  # weight γ^(k−1) of chain step k in the loss (1 = every step alike; < 1 favours
    #                                 the first step, the papers' number)
    rollout_noise: str = "sample"  # stochastic models: continue the chain from a draw (sample) or the mean (mean)
    input_noise: float = 0.0  # σ (length unit) of Gaussian noise added to the input positions (denoising)
    noise_loss: str = "joint"  # stochastic models: mean and scales by one likelihood (joint), or the mean by MSE and
    #                           the scales by the likelihood of the detached mean (separate)
    bond_weight: float = 0.0  # weight of the local-edge (bond, bone) length error
    select: str = "mse"  # model selection on the one-step val MSE (mse), the val rollout MSE (rollout) or, for a
    #                      stochastic propagator with a flow, the val flow-matching loss (flow)
    select_steps: int = 10  # select = "rollout": model steps of the validation rollouts
    select_after: int = 0  # evaluations before this epoch keep their best only provisionally: the first one at or
    #                        after it replaces it (a short validation span can favour an untrained epoch)
    calibrate_noise: int = 0  # stochastic propagators: after training, scale the noise so that K-step validation
    #                           ensembles have spread = error (simulation/calibration.py); K here, 0 = off
    calibrate_memory: bool = False  # with calibrate_noise: also fit the noise memory ρ (correlated draws along a
    #                                 rollout, so that the spread grows with k as the error does)
    calibrate_split: str = "val"  # the split the calibration's ensembles are judged on (train when the validation
    #                               trajectories are too short for K steps)
    energy_weight: float = 1.0  # potentials: w_E on the per-atom energy error (eV/atom)²
    force_weight: float = 1.0  # potentials: w_F on the force component error (eV/Å)²


# [train] keys that belong to one task only
TASK_KEYS: dict[str, str] = {"velocity_weight": "propagator", "amp": "propagator", "compile": "propagator",
                             **dict.fromkeys(("rollout_steps", "rollout_curriculum", "rollout_discount",
                                              "rollout_noise", "input_noise", "noise_loss", "bond_weight", "select",
                                              "select_steps", "calibrate_noise", "calibrate_memory",
                                              "calibrate_split"), "propagator"),
                             "energy_weight": "potential", "force_weight": "potential"}
# where a task's defaults differ from TrainConfig's
TASK_DEFAULTS: dict[str, dict] = {
    "propagator": {},
    "potential": {"epochs": 100, "batch_size": 8, "eval_batch_size": 32, "eval_every": 1, "seed": 0,
                  "drop_last": False, "lr": 2e-3, "weight_decay": 0.0, "schedule": "cosine", "grad_clip": 10.0},
}
# model constructor arguments the trainer derives from the dataset (not recipe keys)
DERIVED_MODEL_ARGS: dict[str, tuple[str, ...]] = {"propagator": ("node_dim", "edge_dim", "local_edge_dim"),
                                                  "potential": ("elements", "avg_neighbors")}


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
    task: str = "propagator"  # from the model name: "propagator" or "potential"

    def to_dict(self) -> dict:
        """The resolved recipe (every [train] key of its task, defaults included) as TOML-ready data."""
        train = {k: v for k, v in asdict(self.train).items()
                 if v is not None and TASK_KEYS.get(k, self.task) == self.task}
        return {"name": self.name, "description": self.description,
                "data": {k: v for k, v in asdict(self.data).items() if v is not None},
                "model": {"name": self.model.name, **self.model.params}, "train": train}


def closest(key: str, valid: list[str]) -> str:
    """"; did you mean 'x'?" for the closest valid key, else the list of valid keys."""
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(valid))}"


_closest = closest  # the former private name


def _check_type(where: str, value, default):
    """``value`` for a key whose default is ``default``, type-checked (ints are accepted for floats)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RecipeError(f"{where} must be true or false, not {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where} must be an integer, not {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where} must be a number, not {value!r}")
        return float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise RecipeError(f"{where} must be a string, not {value!r}")
    return value


def _coerce(section: str, cls, raw: dict, defaults: dict | None = None, optional_ints=()):
    valid = {f.name for f in fields(cls)}
    base = cls(**(defaults or {}))
    out = dict(defaults or {})
    for key, value in raw.items():
        if key not in valid:
            if section == "train" and key == "max_seconds":
                raise RecipeError("unknown key train.max_seconds; the wall-clock budget is train.max_minutes (in "
                                  "minutes)")
            raise RecipeError(f"unknown key {section}.{key}{closest(key, list(valid))}")
        default = 0 if key in optional_ints else getattr(base, key)
        out[key] = _check_type(f"{section}.{key}", value, default)
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
            raise RecipeError(f"unknown recipe section {key!r}{closest(key, valid_top)}")
    for sec in ("data", "model", "train"):
        if sec in raw and not isinstance(raw[sec], dict):
            raise RecipeError(f"[{sec}] must be a table")


def model_task(name: str) -> str:
    """"propagator" or "potential" for a registered model name; a RecipeError naming the closest otherwise."""
    from .models import registry  # noqa: F401  (registers the propagators)
    from .models.base import MODELS
    from .models.potential import POTENTIALS

    if name in POTENTIALS:
        return "potential"
    if name in MODELS:
        return "propagator"
    raise RecipeError(f"unknown model {name!r}{closest(name, list(MODELS) + list(POTENTIALS))}")


def recipe_from_dict(raw: dict) -> Recipe:
    """Validate a raw recipe dict (``base`` already resolved) into a :class:`Recipe` with its task's defaults."""
    check_sections(raw, ["data", "model", "train", "name", "description", "base"])
    model_raw = dict(raw.get("model", {}))
    name = model_raw.pop("name", "egnn")
    if not isinstance(name, str):
        raise RecipeError(f"model.name must be a string, not {name!r}")
    task = model_task(name)
    train_raw = dict(raw.get("train", {}))
    for key in train_raw:
        owner = TASK_KEYS.get(key)
        if owner is not None and owner != task:
            raise RecipeError(f"train.{key} applies to {owner} models only; model {name!r} is a {task}")
    recipe = Recipe(
        data=_coerce("data", DataConfig, raw.get("data", {}), optional_ints=("max_train_samples",)),
        model=ModelConfig(name=name, params=model_raw),
        train=_coerce("train", TrainConfig, train_raw, TASK_DEFAULTS[task], optional_ints=("eval_batch_size",)),
        name=str(raw.get("name", "")),
        description=str(raw.get("description", "")),
        task=task,
    )
    validate_model(recipe.model, task)
    validate_train(recipe.train)
    if recipe.train.calibrate_noise and recipe.model.params.get("noise", "none") == "none":
        raise RecipeError("train.calibrate_noise needs a stochastic model: set model.noise (node, cluster or modes)")
    if recipe.train.select == "flow" and not recipe.model.params.get("flow"):
        raise RecipeError("train.select = 'flow' ranks epochs by the validation flow-matching loss: it needs a "
                          "stochastic model with a flow (model.flow = true)")
    if recipe.train.calibrate_memory and recipe.train.calibrate_noise < 2:
        raise RecipeError("train.calibrate_memory needs train.calibrate_noise ≥ 2 (the memory sets how the spread "
                          "grows with the horizon)")
    if recipe.data.max_train_samples is not None and recipe.data.max_train_samples < 1:
        raise RecipeError("data.max_train_samples must be ≥ 1")
    if recipe.data.velocities not in DATA_VELOCITIES:
        raise RecipeError(f"data.velocities must be one of {', '.join(v for v in DATA_VELOCITIES if v)} (or absent), "
                          f"not {recipe.data.velocities!r}")
    return recipe


def validate_train(t: TrainConfig) -> None:
    """Ranges and choices of the [train] values."""
    for key in ("epochs", "batch_size", "eval_every", "log_every", "rollout_steps", "select_steps"):
        if getattr(t, key) < 1:
            raise RecipeError(f"train.{key} must be ≥ 1")
    if t.eval_batch_size is not None and t.eval_batch_size < 1:
        raise RecipeError("train.eval_batch_size must be ≥ 1")
    if not t.lr > 0:
        raise RecipeError(f"train.lr must be positive, not {t.lr}")
    for key in ("patience", "warmup_epochs", "plateau_patience", "max_minutes", "grad_clip", "weight_decay",
                "velocity_weight", "energy_weight", "force_weight", "rollout_curriculum", "input_noise",
                "bond_weight", "calibrate_noise", "select_after"):
        if not getattr(t, key) >= 0:  # NaN too
            raise RecipeError(f"train.{key} must be ≥ 0, not {getattr(t, key)}")
    if t.calibrate_split not in ("train", "val", "test"):
        raise RecipeError(f"train.calibrate_split must be train, val or test, not {t.calibrate_split!r}")
    if not 0 < t.rollout_discount <= 1:
        raise RecipeError(f"train.rollout_discount must be in (0, 1], not {t.rollout_discount}")
    if t.rollout_noise not in ("sample", "mean"):
        raise RecipeError(f"train.rollout_noise must be 'sample' or 'mean', not {t.rollout_noise!r}")
    if t.noise_loss not in ("joint", "separate"):
        raise RecipeError(f"train.noise_loss must be 'joint' or 'separate', not {t.noise_loss!r}")
    if t.select not in ("mse", "rollout", "flow"):
        raise RecipeError(f"train.select must be 'mse', 'rollout' or 'flow', not {t.select!r}")
    if t.schedule not in SCHEDULES:
        raise RecipeError(f"train.schedule must be one of {', '.join(SCHEDULES)}, not {t.schedule!r}")
    if t.dtype not in DTYPE_NAMES:
        raise RecipeError(f"train.dtype must be 'float32' or 'float64', not {t.dtype!r}")
    if not 0 <= t.lr_final_ratio <= 1:
        raise RecipeError(f"train.lr_final_ratio must be in [0, 1], not {t.lr_final_ratio}")
    if not 0 < t.plateau_factor < 1:
        raise RecipeError(f"train.plateau_factor must be in (0, 1), not {t.plateau_factor}")
    if not 0 <= t.ema_decay < 1:
        raise RecipeError(f"train.ema_decay must be in [0, 1) (0 = off), not {t.ema_decay}")


def validate_model(model: ModelConfig, task: str | None = None) -> None:
    """Check that the model exists and that every hyper-parameter is one its constructor takes, of its type."""
    from .models.base import MODELS
    from .models.potential import POTENTIALS

    task = task or model_task(model.name)
    cls = POTENTIALS[model.name] if task == "potential" else MODELS[model.name]
    skip = ("self",) + DERIVED_MODEL_ARGS[task]
    valid = {k: p for k, p in inspect.signature(cls.__init__).parameters.items()
             if k not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if task == "propagator":  # any propagator may be wrapped in a stochastic one (models.stochastic)
        from .models.stochastic import STOCHASTIC_KEYS, StochasticPropagator

        wrapper = inspect.signature(StochasticPropagator.__init__).parameters
        valid |= {k: wrapper[k] for k in STOCHASTIC_KEYS}
    for key, value in model.params.items():
        if key not in valid:
            if key in DERIVED_MODEL_ARGS[task]:
                raise RecipeError(f"model.{key} is derived from the dataset for {task}s; remove it from the recipe")
            raise RecipeError(f"unknown key model.{key} for model {model.name!r}{closest(key, list(valid))}")
        default = valid[key].default
        if default is not inspect.Parameter.empty and default is not None:
            model.params[key] = _check_type(f"model.{key}", value, default)
    for key in ("hidden", "layers", "n_rbf"):
        if isinstance(model.params.get(key), int) and model.params[key] < 1:
            raise RecipeError(f"model.{key} must be ≥ 1")
    if "cutoff" in model.params and not model.params["cutoff"] > 0:
        raise RecipeError("model.cutoff must be positive")


def load_recipe(recipe: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, dict]:
    """Read a recipe (a TOML file or a shipped recipe's name), apply overrides, validate.

    Returns (recipe, resolved dict: every key of its task, defaults included).
    """
    raw = apply_overrides(read_recipe(recipe), overrides or [])
    rec = recipe_from_dict(raw)
    return rec, rec.to_dict()


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
