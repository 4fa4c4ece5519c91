"""The main job on embedded defaults (no user data).

``run_demo_adk`` (the default): the real AdK trajectories that MDAnalysisTests ships (two DIMS closed → open
transitions of adenylate kinase), Cα atoms; trains a small EGHN (the ``adk_quick_eghn`` recipe; ``recipe=
"adk_quick_eghn_stochastic"`` for the stochastic one) on the first trajectory, forwards and backwards, and tests it
on the second, held out whole, beside the Linear baseline; checks that a random rotation, reflection and translation of
the test set leaves EGHN's error unchanged; measures the rollout fidelity over a few steps from many starts of the
held-out DCD (skill against stay-still, Linear and drift, spread–skill, bond and step checks); rolls EGHN out from
the last frame of the held-out DCD into a multi-MODEL PDB (B-factor = EGHN cluster) that PyMOL or VMD opens, and
reports its geometry against the data's.

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
from ..simulation.calibration import calibrate_if_asked
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


def run_demo_adk(out_dir: str | Path, *, device: str = "auto", console=None, steps: int = 100,
                 fidelity_steps: int = 5, starts: int = 20, replicas: int = 16,
                 recipe: str = "adk_quick_eghn") -> dict:
    """Ingest the embedded AdK data, train EGHN (``recipe``; ``adk_quick_eghn_stochastic`` for the stochastic one)
    and Linear, evaluate, measure the short-horizon rollout fidelity on the held-out DCD, and roll EGHN out from its
    last frame (see module). The fidelity measures the model as it predicts; the long rollout projects every state
    onto the data's bond and 1-3 distances and keeps the data's excluded volume (``Surrogate.project``)."""
    from ..data.ingest import ingest_adk
    from ..data.sources.adk import embedded_adk_files
    from ..simulation import initial_state
    from ..simulation.fidelity import rollout_fidelity
    from ..simulation.rollout import rollout_to_file

    say = console.print if console is not None else (lambda *a, **k: None)
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    top, (dcd, dcd2) = embedded_adk_files()
    ds_path = out_dir / "adk"
    say(f"[bold]1/5[/] AdK (MDAnalysisTests): Cα atoms of {Path(dcd).name} (train/val, also played backwards) and "
        f"{Path(dcd2).name} (test) → {ds_path}")
    velocities = load_recipe(packaged_recipe(recipe))[0].data.velocities or "auto"  # the recipe's convention
    ingest_adk(ds_path, source="embedded", select="name CA", velocities=velocities, overwrite=True)
    ds = Dataset(ds_path)
    rows = []
    for i, name in enumerate((recipe, "adk_quick_linear")):
        say(f"[bold]{2 + i}/5[/] training {name}")
        rows.append(_train_and_evaluate(name, ds, out_dir, dev))
    sur = Surrogate.load(out_dir / "runs" / recipe, device=dev)
    linear = Surrogate.load(out_dir / "runs" / "adk_quick_linear", device=dev)
    each = f", {replicas} replicas each" if sur.stochastic else ""
    say(f"[bold]4/5[/] rollout fidelity: {starts} starts of {Path(dcd2).name}, k = 1…{fidelity_steps} steps{each}")
    fidelity = rollout_fidelity(sur, steps=fidelity_steps, traj=dcd2, top=top, starts=starts, replicas=replicas,
                                baseline=linear, n_boot=1000)
    say(f"[bold]5/5[/] rolling EGHN out for {steps} steps from the last frame of {Path(dcd2).name}, every state "
        "projected onto the data's Cα–Cα and i,i+2 distances and out of its excluded volume")
    sur.project = "angles"
    start = initial_state.from_trajectory(dcd2, sur, top=top, frame=-1)
    pdb = out_dir / "rollout_eghn.pdb"
    res = rollout_to_file(sur, start, steps, pdb, overwrite=True, seed=0, keep=True)
    return {"system": "adk", "models": rows, "fidelity": fidelity_summary(fidelity), "stochastic": sur.stochastic,
            "fidelity_starts": fidelity["starts"], "fidelity_replicas": fidelity["replicas"],
            "rollout": str(pdb), "rollout_frames": res.steps_done + 1, "rollout_stopped": res.stopped,
            "rollout_geometry": chain_geometry(res.positions, sur, start.topo),
            "delta_ps": sur.delta_time, "device": str(dev), "seconds": time.perf_counter() - t0}


def fidelity_summary(rec: dict, horizons=(1, 5)) -> dict:
    """The figures the demo prints from a ``rollout_fidelity`` record, per horizon k: RMSD of the ensemble mean and
    of the null models (Å), skill against stay-still / the baseline / drift with 90 % intervals, spread–skill,
    local-edge deviation over the data's spread, RMS step over the data's."""
    out = {}
    for k in horizons:
        if k > rec["steps"]:
            continue
        i = k - 1
        row = {"rmsd": {m: rec["methods"][m]["rmsd"][i] for m in rec["methods"]}}
        row["skill"] = {n: [s["rmsd"][i], s["rmsd_lo"][i], s["rmsd_hi"][i]] for n, s in rec["skill"].items()}
        ens = rec["ensemble"]
        row["spread_skill"] = ens["spread_skill"][i] if ens.get("spread_skill") else None
        row["energy_score_skill"] = ens["energy_score_skill"][i] if ens.get("energy_score_skill") else None
        row["bond_dev_rel"] = rec["methods"]["model"]["bond_dev_rel"][i]
        row["step_ratio"] = rec["methods"]["model"]["step_ratio"][i]
        out[k] = row
    return out


def chain_geometry(positions, sur, topo) -> dict:
    """Geometry of a rollout [F, N, 3] (Å) against the training data: the largest per-frame RMS deviation of the
    bonds from the data's mean lengths, the closest pair neither bonded nor 1-3, and the Rg range."""
    import numpy as np
    import torch

    from ..analysis.fidelity import edge_deviation, radius_of_gyration
    from ..data.geometry import constraint_pairs
    from ..training.limits import closest_contact

    x = np.asarray(positions, np.float64)
    local = topo.edge_sets["local"].index
    n = x.shape[1]
    bonds = constraint_pairs(local, n).T.numpy()
    ref = sur.checkpoint.extra.get("bond_lengths") if sur.checkpoint is not None else None
    ref = np.asarray(ref, np.float64) if ref is not None else np.linalg.norm(x[0, bonds[:, 0]] - x[0, bonds[:, 1]],
                                                                            axis=-1)
    exempt, batch = constraint_pairs(local, n, angles=True), torch.zeros(n, dtype=torch.long)
    closest = min(closest_contact(torch.from_numpy(f), batch, exempt) for f in x)
    rg = radius_of_gyration(x)
    data = sur.checkpoint.guard.get("data", {}) if sur.checkpoint is not None else {}
    return {"bond_rms_dev_max": float(edge_deviation(x, bonds, ref).max()), "closest_contact": float(closest),
            "data_closest_contact": data.get("closest_contact"), "rg_min": float(rg.min()), "rg_max": float(rg.max()),
            "data_rg": [data.get("rg_min"), data.get("rg_max")], "data_bond_std": data.get("bond_std")}


def _train_and_evaluate(recipe_name: str, ds: Dataset, out_dir: Path, dev, overrides=()) -> dict:
    """Train a packaged recipe on ``ds`` into out_dir/runs/NAME; test MSE, also after a random rigid motion."""
    import shutil

    recipe, _ = load_recipe(packaged_recipe(recipe_name), list(overrides) + [f"data.path={str(ds.path)!r}"])
    run_dir = out_dir / "runs" / recipe_name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    summary = Trainer(recipe, run_dir, device=str(dev), callback=None).run()
    calibrate_if_asked(recipe, run_dir, device=dev)
    moved = evaluate_split(Surrogate.load(run_dir, device=dev), ds, "test", rotate=True, translate=True, seed=7)
    return {"model": recipe.model.name, "recipe": recipe_name, "test_mse": summary["test_mse"],
            "test_mse_rotated": moved["mse"], "seconds": summary["seconds"], "run_dir": str(run_dir)}
