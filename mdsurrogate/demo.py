"""The main job on an embedded default (no user data): simulate charged N-body systems, train EGNN (the
``nbody_demo`` recipe) and the Linear baseline, evaluate them (also after a random rotation, reflection and
translation: an equivariant model's error must not change), and roll EGNN out to a multi-MODEL PDB."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from .config import load_recipe
from .data.dataset import Dataset
from .data.ingest import ingest_nbody
from .training.checkpoint import load_checkpoint, model_from_checkpoint
from .training.loop import Trainer, resolve_device
from .training.metrics import evaluate


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
        recipe, _ = load_recipe(packaged_recipe(name), overrides + [f"data.path={str(ds_path)!r}"])
        run_dir = out_dir / "runs" / name
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        summary = Trainer(recipe, run_dir, device=str(dev), callback=None).run()
        ck = load_checkpoint(run_dir)
        net, feat = model_from_checkpoint(ck, device=dev)
        moved = evaluate(net, ds, ds.split_indices("test"), feat, device=dev, rotate=True, translate=True, seed=7)
        rows.append({"model": recipe.model.name, "recipe": name, "test_mse": summary["test_mse"],
                     "test_mse_rotated": moved["mse"], "seconds": summary["seconds"], "run_dir": str(run_dir)})
    say("[bold]4/4[/] rolling EGNN out for 4 steps from frame 0 of test sample 0")
    from .io.topology import AtomTopology
    from .io.writers import open_writer
    from .rollout import rollout

    ck = load_checkpoint(out_dir / "runs" / "nbody_demo")
    net, feat = model_from_checkpoint(ck, device=dev)
    traj = int(ds.samples[ds.split_indices("test")[0], 0])
    x0, v0 = ds.states([traj], [0])
    pdb = out_dir / "rollout_egnn.pdb"
    delta = ds.delta_frames
    with open_writer(pdb, AtomTopology.generic(x0.shape[0])) as w:
        res = rollout(net, feat, x0, v0, ds.topology([traj]), 4, delta_time=delta * ds.frame_dt, device=dev,
                      reference=lambda k: ds.frame(traj, k * delta)[0],
                      on_frame=lambda k, x, v, t, c: w.write(x, time_ps=t))
    return {"models": rows, "rollout": str(pdb), "rollout_mse_per_step": res.errors[1:].tolist(),
            "device": str(dev), "seconds": time.perf_counter() - t0}
