"""Reproduce a table of the papers: run (or reuse) the recipes of every model of the table over several seeds and
put our test MSE beside the published number.

Tables (the published numbers are data, below; docs/protocols.md §7 quotes them):

    egnn-nbody      EGNN paper (Satorras et al., ICML 2021), Table 2: charged N-body, test MSE
    eghn-mcomplex   EGHN paper (Han et al., NeurIPS 2022), Table 1: M-complex, one column (``config``, default
                    (3, 3) J = 1; any column whose recipes exist: 3_3_J1 … 10_10_J5)
    eghn-mocap      EGHN paper, Table 2: CMU motion capture, Run (subject 9) column

For every model of the table the shipped recipe ``<prefix>_<model>`` (by name; the M-complex ones are derived
from ``mcomplex_<model>`` and the column, see :mod:`mdsurrogate.catalog`) is trained with ``train.seed`` = 1 … runs
(the reported figure of a run is the papers' one: test MSE at the evaluation with the lowest validation MSE).
A model without a recipe is listed as skipped. A run directory is ``OUT/runs/<recipe>/seed<k>-<hash>``, the hash
being that of the resolved recipe; a run whose ``summary.json`` exists and whose ``recipe.toml`` equals the
resolved recipe is reused, an unfinished one is resumed from ``last.pt``. Datasets that are missing are ingested
first by the library's ingest functions with the generator settings of the recipes' comment commands (``ingest``
of each table; the report records the equivalent ``mdsurrogate ingest`` command line).

``quick``: a smoke version that finishes in minutes (small datasets through ingest options, 3 epochs).

Outputs: ``OUT/<table>[-<config>][-quick].md`` (the Markdown table, also returned) and ``.json`` with every figure:
per run the test and validation MSE, best epoch, epochs run, seconds, device and run directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import MCOMPLEX_CONFIGS, is_recipe_name
from ..config import dump_toml, load_recipe
from ..errors import ParameterError, UserError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
OOM = "OOM"  # the paper reports an out-of-memory failure instead of a number

# EGHN Table 1: (M, N/M, J) column → test MSE (the paper prints ×10⁻²; converted here)
_MCOMPLEX_COLUMNS = tuple(f"{m}_{a}_J{j}" for m, a, j in MCOMPLEX_CONFIGS)  # 3_3_J1 … 10_10_J5
_MCOMPLEX_ROWS = {
    "linear": (35.15, 35.22, 30.14, 31.44, 35.91, 35.29, 30.88, 32.49),
    "tfn": (25.11, 29.35, 26.01, OOM, 27.33, 29.01, 25.57, OOM),
    "se3_transformer": (27.12, 28.87, 24.48, OOM, 28.14, 28.66, 25.00, OOM),
    "gnn": (16.00, 17.55, 16.15, 15.91, 16.76, 17.58, 16.55, 16.05),  # "MPNN" in the paper
    "rf": (14.20, 18.37, 17.08, 18.57, 15.17, 18.55, 17.24, 19.34),
    "egnn": (12.69, 15.37, 15.12, 14.64, 13.33, 15.48, 15.29, 15.02),
    "eghn": (11.58, 14.42, 14.29, 13.09, 12.80, 14.85, 14.50, 13.11),
}


def _percent(v):
    return v if v == OOM else round(v / 100.0, 6)


@dataclass(frozen=True)
class PaperTable:
    """One table of a paper: its models (paper rows first, then ours), published numbers and how to run it.

    ``paper[config][model]``: the published test MSE (float), ``OOM``, or absent (no number). ``recipe`` is the
    recipe name pattern; ``ingest`` how the dataset is made (``{M}``, ``{A}``, ``{J}`` of the config and
    ``{mocap_npz}`` are filled in); the ``quick_*`` entries shrink data and schedule.
    """

    name: str
    title: str
    source: str
    models: tuple[str, ...]
    paper: dict[str, dict[str, float | str]]
    recipe: str
    ingest: Ingest
    default_config: str = ""
    quick_ingest: tuple[Arg, ...] = ()
    quick_overrides: tuple[str, ...] = ()
    paper_names: dict[str, str] = field(default_factory=dict)

    @property
    def configs(self) -> list[str]:
        return list(self.paper)


@dataclass(frozen=True)
class Arg:
    """One argument of an ingest: the library function's ``parameter``, the CLI ``flag`` and a value template."""

    parameter: str
    flag: str
    value: str


@dataclass(frozen=True)
class Ingest:
    """How a table's dataset is made: ``mdsurrogate ingest SOURCE PATH`` and its arguments, called as the library
    function ``INGESTERS[ingester]`` of :mod:`mdsurrogate.data.ingest` (``ingester`` defaults to ``source``)."""

    source: str
    args: tuple[Arg, ...] = ()
    ingester: str = ""


def ingest_function(ingest: Ingest):
    """The library function behind ``mdsurrogate ingest SOURCE``."""
    from ..data.ingest import INGESTERS

    return INGESTERS[ingest.ingester or ingest.source]


QUICK_SCHEDULE = ("train.epochs=3", "train.eval_every=1", "train.patience=0", "train.batch_size=25")

TABLES: dict[str, PaperTable] = {
    t.name: t
    for t in (
        PaperTable(
            name="egnn-nbody",
            title="EGNN paper, Table 2: charged N-body, test MSE",
            source="Satorras, Hoogeboom & Welling, ICML 2021, Table 2 (docs/protocols.md §7). The SEGNN paper's number "
                   "for this task is not entered: it could not be checked against the paper here.",
            models=("linear", "se3_transformer", "tfn", "gnn", "rf", "egnn", "segnn", "gmn"),
            paper={"": {"linear": 0.0819, "se3_transformer": 0.0244, "tfn": 0.0155, "gnn": 0.0107, "rf": 0.0104,
                        "egnn": 0.0071}},
            recipe="nbody_{model}",
            ingest=Ingest("nbody"),
            quick_ingest=(Arg("n_train", "--train", "100"), Arg("n_val", "--val", "40"), Arg("n_test", "--test", "40"),
                          Arg("stream_train", "--stream-train", "100")),
            quick_overrides=QUICK_SCHEDULE,
        ),
        PaperTable(
            name="eghn-mcomplex",
            title="EGHN paper, Table 1: M-complex (M, N/M) = ({M}, {A}), J = {J}, test MSE",
            source="Han, Huang, Xu & Rong, NeurIPS 2022, Table 1 (docs/protocols.md §7; printed there ×10⁻², mean of 3 "
                   "runs)",
            models=("linear", "tfn", "se3_transformer", "gnn", "rf", "egnn", "eghn", "segnn", "gmn"),
            paper={c: {m: _percent(v[k]) for m, v in _MCOMPLEX_ROWS.items()} for k, c in enumerate(_MCOMPLEX_COLUMNS)},
            recipe="mcomplex_{config}_{model}",
            ingest=Ingest("mcomplex", (Arg("n_complexes", "--complexes", "{M}"), Arg("avg_size", "--size", "{A}"),
                                       Arg("n_types", "--systems", "{J}"))),
            default_config="3_3_J1",
            quick_ingest=(Arg("n_train", "--train", "50"), Arg("n_val", "--val", "25"), Arg("n_test", "--test", "25")),
            quick_overrides=QUICK_SCHEDULE,
            paper_names={"gnn": "MPNN", "se3_transformer": "SE(3)-Tr."},
        ),
        PaperTable(
            name="eghn-mocap",
            title="EGHN paper, Table 2: CMU motion capture, Run (subject 9), test MSE",
            source="Han, Huang, Xu & Rong, NeurIPS 2022, Table 2, Run column (docs/protocols.md §7; printed there "
                   "×10⁻², 3 runs). No Linear row in the paper.",
            models=("gnn", "rf", "tfn", "se3_transformer", "egnn", "gmn", "eghn", "linear", "segnn"),
            paper={"": {"gnn": 0.664, "rf": 5.213, "tfn": 0.566, "se3_transformer": 0.612, "egnn": 0.509,
                        "gmn": 0.441, "eghn": 0.259}},
            recipe="mocap_run_{model}",
            ingest=Ingest("mocap", (Arg("npz", "--positions", "{mocap_npz}"),), ingester="mocap_positions"),
            quick_overrides=QUICK_SCHEDULE + ("data.max_train_samples=100",),
            paper_names={"gnn": "MPNN", "se3_transformer": "SE(3)-Tr."},
        ),
    )
}

MOCAP_RUN_FILE = "cmu_subject09_run.npz"


# ------------------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    """One training run: a model's recipe with one seed, and where it lives."""

    model: str
    recipe: str  # a shipped recipe's name
    seed: int
    overrides: list[str]
    run_dir: Path
    resolved: dict
    state: str = "new"  # new, finished (reusable), unfinished (resume)

    @property
    def data_path(self) -> str:
        return str(self.resolved["data"]["path"])

    def train_argv(self, device: str) -> list[str]:
        """The equivalent ``mdsurrogate train`` command line (without the program name)."""
        argv = ["train", str(self.recipe), "--out", str(self.run_dir), "--device", device, "--quiet"]
        for o in self.overrides:
            argv += ["--set", o]
        if self.state == "unfinished":
            argv.append("--resume")
        return argv


def get_table(name: str) -> PaperTable:
    if name not in TABLES:
        import difflib

        hint = difflib.get_close_matches(name, list(TABLES), n=1, cutoff=0.4)
        raise UserError(f"unknown table {name!r}{f'; did you mean {hint[0]!r}?' if hint else ''} "
                        f"(tables: {', '.join(TABLES)})")
    return TABLES[name]


def resolve_config(table: PaperTable, config: str | None) -> str:
    if not table.default_config:
        if config:
            raise ParameterError(f"table {table.name} has no configurations; drop {{config}}", config="config")
        return ""
    config = config or table.default_config
    if config not in table.paper:
        raise UserError(f"unknown configuration {config!r} for {table.name}; choose one of {', '.join(table.configs)}")
    return config


def config_fields(config: str) -> dict[str, str]:
    """'5_10_J5' → {'M': '5', 'A': '10', 'J': '5'} (empty for tables without configurations)."""
    if not config:
        return {}
    m, a, j = config.split("_")
    return {"M": m, "A": a, "J": j.lstrip("J")}


def normalised(d: dict) -> dict:
    """A resolved recipe as the run directory stores it (TOML round trip: lists, floats, no None)."""
    return tomllib.loads(dump_toml(d))


def recipe_hash(d: dict) -> str:
    return hashlib.sha1(json.dumps(normalised(d), sort_keys=True).encode()).hexdigest()[:10]


def select_models(table: PaperTable, models: str | list[str] | None) -> list[str]:
    if models is None:
        return list(table.models)
    wanted = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
    if not wanted:
        raise ParameterError("{models} is empty; give model names separated by commas", models="models")
    from ..models import registry  # noqa: F401
    from ..models.base import MODELS

    known = set(table.models) | set(MODELS)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)} for {table.name}; "
                        f"its models: {', '.join(table.models)}")
    return list(dict.fromkeys(wanted))


def plan_runs(table: PaperTable, config: str, models: list[str], runs: int, out: Path, quick: bool,
              overrides: list[str]) -> tuple[list[RunSpec], dict[str, str]]:
    """Resolve every (model, seed) run. Returns the runs and {model: reason} for the skipped models."""
    specs, skipped = [], {}
    for model in models:
        name = table.recipe.format(model=model, config=config)
        if not is_recipe_name(name):
            skipped[model] = f"no recipe {name}"
            continue
        base_over = []
        if quick:
            rec, _ = load_recipe(name)
            base_over = list(table.quick_overrides) + [f"data.path={quick_data_path(out, rec.data.path)}"]
        for seed in range(1, runs + 1):
            over = base_over + list(overrides) + [f"train.seed={seed}"]
            rec, _ = load_recipe(name, [_quote(o) for o in over])
            resolved = rec.to_dict()
            run_dir = out / "runs" / name / f"seed{seed}-{recipe_hash(resolved)}"
            spec = RunSpec(model, name, seed, [_quote(o) for o in over], run_dir, resolved)
            spec.state = run_state(spec)
            specs.append(spec)
    return specs, skipped


def _quote(override: str) -> str:
    """``data.path=some/dir`` → ``data.path="some/dir"`` (a bare path is not a TOML value)."""
    key, _, value = override.partition("=")
    if key.strip() == "data.path" and not value.strip().startswith(('"', "'")):
        return f'{key}={json.dumps(value.strip())}'
    return override


def quick_data_path(out: Path, recipe_path: str) -> str:
    return str(out / "data" / f"{Path(recipe_path).name}-quick")


def run_state(spec: RunSpec) -> str:
    stored = spec.run_dir / "recipe.toml"
    if not stored.exists():
        return "new"
    try:
        same = tomllib.loads(stored.read_text()) == normalised(spec.resolved)
    except tomllib.TOMLDecodeError:
        same = False
    if not same:
        raise ParameterError("{run_dir} holds a run of another recipe; remove it or choose another {out}",
                             run_dir=str(spec.run_dir), out="out")
    if (spec.run_dir / "summary.json").exists():
        return "finished"
    return "unfinished" if (spec.run_dir / "last.pt").exists() else "new"


# ------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------
def find_mocap_file() -> Path:
    """The published Run joint positions: ./, ./shared/data/mocap, ../shared/data/mocap, or beside the package."""
    places = [Path.cwd(), Path("shared/data/mocap"), Path("../shared/data/mocap"),
              PACKAGE_ROOT / "shared" / "data" / "mocap", PACKAGE_ROOT.parent / "shared" / "data" / "mocap"]
    for p in places:
        if (p / MOCAP_RUN_FILE).is_file():
            return (p / MOCAP_RUN_FILE).resolve()
    raise UserError(f"{MOCAP_RUN_FILE} not found (looked in ./, shared/data/mocap, ../shared/data/mocap); put it "
                    f"there or ingest the dataset yourself: mdsurrogate ingest mocap DATA --positions FILE")


def ingest_args(table: PaperTable, config: str, quick: bool) -> list[tuple[Arg, str]]:
    """The table's ingest arguments for ``config`` (quick ones appended) with their values filled in."""
    fields_ = dict(config_fields(config))
    args = list(table.ingest.args) + (list(table.quick_ingest) if quick else [])
    if any("{mocap_npz}" in a.value for a in args):
        fields_["mocap_npz"] = str(find_mocap_file())
    return [(a, a.value.format(**fields_)) for a in args]


def ingest_argv(table: PaperTable, config: str, path: str, quick: bool) -> list[str]:
    """The equivalent ``mdsurrogate ingest …`` command line (without the program name)."""
    argv = ["ingest", table.ingest.source, path]
    for arg, value in ingest_args(table, config, quick):
        argv += [arg.flag, value]
    return argv


def ingest_kwargs(table: PaperTable, config: str, quick: bool) -> dict:
    """The keyword arguments of the ingest function (numbers as ints, file names as strings)."""
    return {a.parameter: int(v) if v.isdigit() else v for a, v in ingest_args(table, config, quick)}


def ensure_datasets(table: PaperTable, config: str, specs: list[RunSpec], quick: bool, log) -> list[list[str]]:
    """Ingest every dataset a pending run needs and that does not exist yet, through the library. Returns the
    equivalent command lines."""
    done = []
    for path in dict.fromkeys(s.data_path for s in specs if s.state != "finished"):
        if (Path(path) / "meta.json").exists():
            continue
        argv = ingest_argv(table, config, path, quick)
        log(f"dataset {path} is missing: making it (mdsurrogate {shlex.join(argv)})")
        try:
            ingest_function(table.ingest)(path, **ingest_kwargs(table, config, quick))
        except ValueError as exc:
            raise UserError(f"could not make the dataset {path} ({exc})") from None
        done.append(argv)
    return done


# ------------------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------------------
RUN_FIGURES = ("test_mse", "best_val_mse", "best_epoch", "epochs_run", "stopped_early", "seconds", "device")


def read_summary(spec: RunSpec) -> dict:
    return json.loads((spec.run_dir / "summary.json").read_text())


def run_inprocess(spec: RunSpec, device: str, log) -> None:
    from ..training.trainer import Trainer

    rec, _ = load_recipe(spec.recipe, spec.overrides)
    command = "mdsurrogate " + shlex.join(spec.train_argv(device))

    def callback(ev):
        if ev.get("event") == "start":
            log(f"{spec.model} seed {spec.seed}: {ev['parameters']:,} parameters on {ev['device']}, "
                f"{ev['train_samples']} training samples, epochs {ev['start_epoch']}…{ev['epochs'] - 1}")

    Trainer(rec, spec.run_dir, device=device, resume=spec.state == "unfinished", command=command,
            callback=callback).run()


def run_subprocesses(specs: list[RunSpec], device: str, jobs: int, log) -> dict[int, str]:
    """Run ``mdsurrogate train`` for every spec, ``jobs`` at a time. Returns {index: error} for failed runs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if "OMP_NUM_THREADS" not in env and not device.startswith("cuda"):
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    pending = list(enumerate(specs))
    running: dict[int, tuple[subprocess.Popen, Path]] = {}
    errors: dict[int, str] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                k, spec = pending.pop(0)
                spec.run_dir.mkdir(parents=True, exist_ok=True)
                logfile = spec.run_dir.parent / f"{spec.run_dir.name}.log"
                with open(logfile, "w") as fh:
                    proc = subprocess.Popen([sys.executable, "-m", "mdsurrogate", *spec.train_argv(device)],
                                            stdout=fh, stderr=subprocess.STDOUT, env=env)
                running[k] = (proc, logfile)
                log(f"started {spec.model} seed {spec.seed} (pid {proc.pid}, log {logfile})")
            time.sleep(0.2)
            for k, (proc, logfile) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[k]
                spec = specs[k]
                if proc.returncode != 0:
                    tail = logfile.read_text().strip().splitlines()[-1:] if logfile.exists() else []
                    errors[k] = f"exit code {proc.returncode}: {' '.join(tail)}"
                log(f"finished {spec.model} seed {spec.seed}" + (f" ({errors[k]})" if k in errors else ""))
    finally:
        for proc, _ in running.values():  # interrupted: stop the runs this call started
            proc.terminate()
    return errors


def execute(todo: list[RunSpec], device: str, jobs: int, log) -> dict[Path, str]:
    """Train the runs (in this process when ``jobs`` = 1, else in ``jobs`` subprocesses); {run_dir: error}."""
    if jobs > 1:
        return {todo[k].run_dir: e for k, e in run_subprocesses(todo, device, jobs, log).items()}
    errors = {}
    for s in todo:
        try:
            run_inprocess(s, device, log)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            errors[s.run_dir] = f"{exc.__class__.__name__}: {exc}"
            log(f"{s.model} seed {s.seed} failed: {errors[s.run_dir]}")
    return errors


def table_row(model: str, specs: list[RunSpec], failed: dict[Path, str], paper, paper_name: str | None,
              skipped: str | None) -> dict:
    """One model's row: every run's figures (or error), mean ± std over the finished runs, ratio to the paper."""
    row = {"model": model, "paper_name": paper_name, "paper": paper, "recipe": None, "status": "skipped",
           "reason": skipped, "runs": [], "n": 0, "failed": 0, "mean": None, "std": None, "ratio": None}
    if not specs:
        return row
    row["recipe"] = str(specs[0].recipe)
    for s in specs:
        entry = {"seed": s.seed, "run_dir": str(s.run_dir), "reused": s.state == "finished"}
        if s.run_dir in failed or not (s.run_dir / "summary.json").exists():
            entry.update(status="failed", error=failed.get(s.run_dir, "no summary.json"))
            row["failed"] += 1
        else:
            sm = read_summary(s)
            entry.update(status="ok", **{k: sm.get(k) for k in RUN_FIGURES})
        row["runs"].append(entry)
    values = [r["test_mse"] for r in row["runs"] if r["status"] == "ok"]
    row["n"] = len(values)
    row["mean"], row["std"] = mean_std(values)
    row["status"] = "ok" if row["n"] and not row["failed"] else ("partial" if row["n"] else "failed")
    if row["mean"] is not None and isinstance(paper, float):
        row["ratio"] = row["mean"] / paper
    return row


# ------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _fmt(v, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def markdown(result: dict) -> str:
    lines = [f"## {result['title']}", "",
             f"Seeds 1–{result['runs']} · device {', '.join(result['devices']) or result['device']} · "
             f"quick {'yes' if result['quick'] else 'no'}"
             + (f" · settings {', '.join(result['overrides'])}" if result["overrides"] else ""), "",
             "| model | ours: test MSE (mean ± std, runs) | paper | ours / paper |", "|---|---|---|---|"]
    for row in result["rows"]:
        name = row["model"] + (f" ({row['paper_name']})" if row.get("paper_name") else "")
        paper = row["paper"]
        paper_s = "–" if paper is None else (paper if isinstance(paper, str) else _fmt(paper))
        if row["status"] == "skipped":
            ours = f"skipped: {row['reason']}"
        elif row["n"] == 0:
            ours = "failed: " + "; ".join(r["error"] for r in row["runs"] if r.get("error"))[:200].replace("|", "/")
        else:
            spread = f" ± {_fmt(row['std'], 2)}" if row["std"] is not None else ""
            ours = f"{_fmt(row['mean'])}{spread} ({row['n']})"
            if row["failed"]:
                ours += f", {row['failed']} failed"
        ratio = "–" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(f"| {name} | {ours} | {paper_s} | {ratio} |")
    lines += ["", f"Paper: {result['source'].rstrip('.')}. Ours: test MSE at the evaluation with the lowest "
              "validation MSE, in the dataset's units (EGHN's ×10⁻² figures converted)."]
    return "\n".join(lines) + "\n"


@dataclass
class ReproduceResult:
    summary: dict
    markdown: str
    markdown_file: Path
    json_file: Path

    @property
    def failed(self) -> int:
        return sum(r["failed"] for r in self.summary["rows"])


def reproduce(table: str, *, device: str = "auto", runs: int = 3, quick: bool = False, out: str | Path | None = None,
              models: str | list[str] | None = None, overrides: list[str] | None = None, config: str | None = None,
              jobs: int = 1, log=None) -> ReproduceResult:
    """Run (or reuse) every run of a table and write its Markdown and JSON reports (see the module docstring).

    Args:
        table: egnn-nbody, eghn-mcomplex or eghn-mocap. device: auto, cpu or cuda[:i]. runs: seeds 1 … runs.
        quick: the minutes-long smoke version. out: output directory (default ``reproduce/<table>``).
        models: a subset of the table's models (comma-separated or a list). overrides: ``section.key=value``
            settings applied to every recipe (e.g. ``train.epochs=500``). config: M-complex column, e.g. 5_5_J1.
        jobs: runs trained at the same time, each in its own process (1: in this process).
        log: callable receiving progress lines (default: silent).
    """
    from ..device import resolve_device

    log = log or (lambda line: None)
    spec_table = get_table(table)
    config = resolve_config(spec_table, config)
    if runs < 1 or jobs < 1:
        raise ParameterError("{runs} and {jobs} must be at least 1", runs="runs", jobs="jobs")
    resolve_device(device)  # a bad --device fails before any work
    chosen = select_models(spec_table, models)
    out = Path(out) if out is not None else Path("reproduce") / table
    overrides = list(overrides or [])
    specs, skipped = plan_runs(spec_table, config, chosen, runs, out, quick, overrides)
    ingested = ensure_datasets(spec_table, config, specs, quick, log)

    for s in specs:
        if s.state == "finished":
            log(f"reusing {s.run_dir}")
    failed = execute([s for s in specs if s.state != "finished"], device, jobs, log)
    paper = spec_table.paper[config]
    rows = [table_row(model, [s for s in specs if s.model == model], failed, paper.get(model),
                      spec_table.paper_names.get(model), skipped.get(model)) for model in chosen]

    fields_ = config_fields(config)
    import torch

    result = {
        "table": spec_table.name, "title": spec_table.title.format(**fields_), "config": config or None,
        "source": spec_table.source, "runs": runs, "quick": quick, "device": device, "overrides": overrides,
        "models": chosen, "rows": rows,
        "devices": sorted({r["device"] for row in rows for r in row["runs"] if r.get("device")}),
        "ingested": [shlex.join(["mdsurrogate", *a]) for a in ingested],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch": torch.__version__,
    }
    stem = spec_table.name + (f"-{config}" if config else "") + ("-quick" if quick else "")
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(result)
    md_file, json_file = out / f"{stem}.md", out / f"{stem}.json"
    result["markdown_file"], result["json_file"] = str(md_file), str(json_file)
    md_file.write_text(md)
    json_file.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return ReproduceResult(result, md, md_file, json_file)
