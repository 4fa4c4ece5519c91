"""The main job on embedded defaults (no user data).

``run_demo_adk`` (the default): the real AdK trajectories that MDAnalysisTests ships (two DIMS closed → open
transitions of adenylate kinase), Cα atoms; trains a small EGHN (the ``adk_quick_eghn`` recipe) on the first
trajectory and tests it on the second, held out whole, beside the Linear baseline; checks that a random rotation,
reflection and translation of the test set leaves EGHN's error unchanged; rolls EGHN out from the last frame of the
held-out DCD into a multi-MODEL PDB (B-factor = EGHN cluster) that PyMOL or VMD opens.

``run_demo`` (``--system nbody``): simulate charged N-body systems, train EGNN and Linear, roll EGNN out.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from ..config import load_recipe
from ..data.dataset import Dataset
from ..data.ingest import ingest_nbody
from ..device import resolve_device
from ..simulation.evaluation import evaluate_split
from ..simulation.surrogate import Surrogate
from ..training.trainer import Trainer


def packaged_recipe(name: str) -> Path:
    """Path of a recipe shipped with the package (``recipes/NAME.toml``)."""
    return Path(str(resources.files("mdsurrogate") / "recipes" / f"{name}.toml"))


def run_demo(out_dir: str | Path, *, device: str = "auto", console=None, n_train: int = 1000,
             n_eval: int = 500) -> dict:
    say = console.print if console is not None else (lambda *a, **k: None)
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    ds_path = out_dir / "nbody"
    say(f"[bold]1/4[/] simulating {n_train + 2 * n_eval} charged N-body systems → {ds_path}")
    ingest_nbody(ds_path, n_train=n_train, n_val=n_eval, n_test=n_eval, overwrite=True)
    ds = Dataset(ds_path)
    rows = []
    for i, (name, overrides) in enumerate([("nbody_demo", []), ("nbody_linear", ["train.epochs=30"])]):
        say(f"[bold]{2 + i}/4[/] training {name}")
        rows.append(_train_and_evaluate(name, ds, out_dir, dev, overrides))
    say("[bold]4/4[/] rolling EGNN out for 4 steps from frame 0 of test sample 0")
    from ..simulation import initial_state
    from ..simulation.rollout import rollout_to_file

    sur = Surrogate.load(out_dir / "runs" / "nbody_demo", device=dev)
    start = initial_state.from_dataset(ds, sur, split="test", sample=0, frame=0)
    pdb = out_dir / "rollout_egnn.pdb"
    res = rollout_to_file(sur, start, 4, pdb, overwrite=True)
    return {"system": "nbody", "models": rows, "rollout": str(pdb), "rollout_mse_per_step": res.errors[1:].tolist(),
            "device": str(dev), "seconds": time.perf_counter() - t0}


def run_demo_adk(out_dir: str | Path, *, device: str = "auto", console=None, steps: int = 10) -> dict:
    """Ingest the embedded AdK data, train EGHN and Linear, evaluate, and roll EGHN out from a DCD (see module)."""
    from ..data.ingest import ingest_adk
    from ..data.sources.adk import embedded_adk_files
    from ..simulation import initial_state
    from ..simulation.rollout import rollout_to_file

    say = console.print if console is not None else (lambda *a, **k: None)
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    top, (dcd, dcd2) = embedded_adk_files()
    ds_path = out_dir / "adk"
    say(f"[bold]1/4[/] AdK (MDAnalysisTests): Cα atoms of {Path(dcd).name} (train/val) and {Path(dcd2).name} "
        f"(test) → {ds_path}")
    ingest_adk(ds_path, source="embedded", select="name CA", overwrite=True)
    ds = Dataset(ds_path)
    rows = []
    for i, name in enumerate(("adk_quick_eghn", "adk_quick_linear")):
        say(f"[bold]{2 + i}/4[/] training {name}")
        rows.append(_train_and_evaluate(name, ds, out_dir, dev))
    say(f"[bold]4/4[/] rolling EGHN out for {steps} steps from the last frame of {Path(dcd2).name}")
    sur = Surrogate.load(out_dir / "runs" / "adk_quick_eghn", device=dev)
    start = initial_state.from_trajectory(dcd2, sur, top=top, frame=-1)
    pdb = out_dir / "rollout_eghn.pdb"
    res = rollout_to_file(sur, start, steps, pdb, overwrite=True)
    return {"system": "adk", "models": rows, "rollout": str(pdb), "rollout_frames": res.steps_done + 1,
            "rollout_stopped": res.stopped, "device": str(dev), "seconds": time.perf_counter() - t0}


def _train_and_evaluate(recipe_name: str, ds: Dataset, out_dir: Path, dev, overrides=()) -> dict:
    """Train a packaged recipe on ``ds`` into out_dir/runs/NAME; test MSE, also after a random rigid motion."""
    import shutil

    recipe, _ = load_recipe(packaged_recipe(recipe_name), list(overrides) + [f"data.path={str(ds.path)!r}"])
    run_dir = out_dir / "runs" / recipe_name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    summary = Trainer(recipe, run_dir, device=str(dev), callback=None).run()
    moved = evaluate_split(Surrogate.load(run_dir, device=dev), ds, "test", rotate=True, translate=True, seed=7)
    return {"model": recipe.model.name, "recipe": recipe_name, "test_mse": summary["test_mse"],
            "test_mse_rotated": moved["mse"], "seconds": summary["seconds"], "run_dir": str(run_dir)}
