"""Learned potentials through the command line: `ingest emt` (seeded EMT frames → dataset), `train` on a potential
recipe (the shipped Cu EMT recipes, tiny sizes), the calculator on the result, bad input, and the calculator
benchmark script (a smoke run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from typer.testing import CliRunner

from mdsurrogate.config import RecipeError, load_recipe, recipe_from_dict
from mdsurrogate.data.dataset import Dataset
from mdsurrogate.training.checkpoint import Checkpoint

from .conftest import invoke, last_json

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
TINY_EMT = ["--temperatures", "300,800", "--frames-per-temperature", "5", "--stride", "2", "--equilibrate", "4"]
TINY_MODEL = ["--set", "train.epochs=2", "--set", "model.hidden=8", "--set", "model.layers=1", "--set",
              "model.n_rbf=4", "--set", "train.batch_size=4"]




@pytest.fixture(scope="module")
def emt_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("emt_cli")
    bulk = invoke("ingest", "emt", root / "bulk", "--size", "2", "--frames", root / "bulk.xyz", "--json", *TINY_EMT)
    assert bulk.exit_code == 0, bulk.output
    cluster = invoke("ingest", "emt", root / "cluster", "--system", "cluster", "--size", "1", "--seed", "1",
                     "--val-fraction", "0.2", "--test-fraction", "0.2", *TINY_EMT)
    assert cluster.exit_code == 0, cluster.output
    return root, last_json(bulk)


def test_ingest_emt_writes_a_seeded_potential_dataset(emt_data, tmp_path):
    root, summary = emt_data
    assert summary["samples"] == {"train": 8, "val": 1, "test": 1} and summary["nodes"] == [32]
    ds = Dataset(root / "bulk")
    assert ds.meta["task"] == "potential" and ds.meta["source"] == "ase-emt" and ds.meta["elements"] == [29]
    md = ds.meta["generator"]["emt_md"]
    assert md["temperatures_K"] == [300.0, 800.0] and md["system"] == "bulk" and md["size"] == 2
    assert ds.meta["files"] == [str(root / "bulk.xyz")]
    frames = ase.io.read(root / "bulk.xyz", ":")  # the kept frames: readable, labelled, periodic
    assert len(frames) == 10 and all(f.pbc.all() for f in frames)
    np.testing.assert_allclose(np.load(root / "bulk" / "energy.npy"), [f.get_potential_energy() for f in frames])
    cluster = Dataset(root / "cluster")
    assert set(cluster.traj_nodes) == {13} and not cluster.node_property("pbc", 0).any()
    assert cluster.meta["files"] == [] and cluster.meta["generator"]["emt_md"]["system"] == "cluster"
    # same seed → the same frames; another seed → other frames
    again = invoke("ingest", "emt", tmp_path / "again", "--size", "2", *TINY_EMT)
    assert again.exit_code == 0, again.output
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "energy.npy"), np.load(root / "bulk" / "energy.npy"))
    other = invoke("ingest", "emt", tmp_path / "other", "--size", "2", "--seed", "5", *TINY_EMT)
    assert other.exit_code == 0
    assert not np.allclose(np.load(tmp_path / "other" / "energy.npy"), np.load(root / "bulk" / "energy.npy"))


def test_shipped_potential_recipes_are_valid():
    for name, path in (("cu_emt_potential", "data/cu_emt"), ("cu_emt_cluster_potential", "data/cu_emt_cluster")):
        rec, resolved = load_recipe(ROOT / "recipes" / f"{name}.toml")
        assert rec.task == "potential" and rec.model.name == "egnn_potential"
        assert rec.data.path == path and rec.model.params["cutoff"] == 5.0 and rec.train.epochs >= 1
        # today's numbers: cosine decay to 2 % and clipping at 10 stay the potentials' settings
        t = rec.train
        assert (t.schedule, t.lr_final_ratio, t.grad_clip, t.drop_last, t.ema_decay) == ("cosine", 0.02, 10.0,
                                                                                          False, 0.0)
        assert "velocity_weight" not in resolved["train"] and resolved["train"]["force_weight"] == 1.0
    assert load_recipe(ROOT / "recipes" / "nbody_egnn.toml")[0].task == "propagator"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"model": {"name": "egnn_potential"}, "train": {"velocity_weight": 1.0}},
         "train.velocity_weight applies to propagator models only; model 'egnn_potential' is a potential"),
        ({"model": {"name": "egnn_potential"}, "train": {"amp": True}}, "train.amp applies to propagator models"),
        ({"model": {"name": "egnn_potential", "hiden": 3}}, "did you mean 'hidden'"),
        ({"model": {"name": "egnn_potential", "elements": [29]}}, "model.elements is derived from the dataset"),
        ({"model": {"name": "egnn_potential"}, "train": {"dtype": "float16"}}, "train.dtype"),
        ({"model": {"name": "egnn_potential"}, "train": {"epochs": 1.5}}, "must be an integer"),
        ({"model": {"name": "egnn_potential"}, "train": {"lr": -1}}, "train.lr must be positive"),
        ({"model": {"name": "egnn_potential"}, "train": {"max_seconds": 60}}, "train.max_minutes"),
        ({"model": {"name": "egnn_potential", "cutoff": 0}}, "model.cutoff must be positive"),
        ({"model": {"name": "egnn_potential"}, "data": {"max_train_frames": 3}}, "did you mean 'max_train_samples'"),
    ],
)
def test_potential_recipe_validation(raw, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(raw)


@pytest.mark.parametrize("recipe, data", [("cu_emt_potential", "bulk"), ("cu_emt_cluster_potential", "cluster")])
def test_train_potential_recipe_end_to_end(recipe, data, emt_data, tmp_path):
    from mdsurrogate.integrations.ase import SurrogateCalculator

    root, _ = emt_data
    run = tmp_path / "run"
    res = invoke("train", f"recipes/{recipe}.toml", "--data", root / data, "--out", run, "--quiet", "--json",
                 "--device", "cpu", *TINY_MODEL)
    assert res.exit_code == 0, res.output
    summary = last_json(res)
    assert summary["model"] == "egnn_potential" and summary["epochs_run"] == 2
    assert np.isfinite(summary["test"]["force_mae"]) and summary["test"]["frames"] >= 1
    assert "force MAE" in res.stderr
    for f in ("best.pt", "last.pt", "metrics.jsonl", "summary.json", "recipe.toml", "command.txt"):
        assert (run / f).is_file(), f
    assert 'name = "egnn_potential"' in (run / "recipe.toml").read_text()
    assert "hidden = 8" in (run / "recipe.toml").read_text()  # the --set overrides are in the resolved recipe
    ck = Checkpoint.load(run, kind="potential")
    assert ck.hparams["hidden"] == 8 and ck.hparams["layers"] == 1 and ck.metrics["test"] == summary["test"]
    # the calculator reproduces the reported held-out force MAE
    ds = Dataset(root / data)
    forces = np.load(root / data / "forces.npy")
    calc = SurrogateCalculator(run, dtype="float32")
    errs = []
    for t in ds.samples[ds.split_indices("test"), 0]:
        atoms = ase.Atoms(numbers=ds.node_property("Z", t), positions=ds.frame(t, 0)[0],
                          cell=ds.node_property("cell", t)[0], pbc=ds.node_property("pbc", t)[0], calculator=calc)
        start = int(ds.row_offset[t])
        errs.append(np.abs(atoms.get_forces() - forces[start : start + len(atoms)]).ravel())
    assert np.concatenate(errs).mean() == pytest.approx(summary["test"]["force_mae"], rel=1e-3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "recipes/cu_emt_potential.toml", "--data", "{bulk}", "--set", "train.velocity_weight=2"],
         "train.velocity_weight applies to propagator models only"),
        (["train", "recipes/cu_emt_potential.toml", "--data", "{bulk}", "--out", "{tmp}/r", "--resume"],
         "has no last.pt to continue from"),
        (["train", "recipes/cu_emt_potential.toml", "--data", "{nbody}", "--out", "{tmp}/r"],
         "is not a potential dataset"),
        (["train", "recipes/nbody_egnn.toml", "--data", "{bulk}", "--out", "{tmp}/r"],
         "holds energies and forces for a learned potential"),
        (["ingest", "emt", "{tmp}/x", "--system", "slab"], "system must be 'bulk' or 'cluster'"),
        (["ingest", "emt", "{tmp}/x", "--temperatures", "300,hot"], "--temperatures must be"),
        (["ingest", "emt", "{tmp}/x", "--temperatures=-5"], "temperatures positive"),
        (["ingest", "emt", "{bulk}"], "already exists"),
    ],
)
def test_bad_input_is_one_sentence(args, message, emt_data, tiny_nbody, tmp_path):
    root, _ = emt_data
    fill = {"bulk": str(root / "bulk"), "nbody": str(tiny_nbody), "tmp": str(tmp_path)}
    res = invoke(*[a.format(**fill) for a in args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_calculator_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # this checkout, not an installed copy
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_ase_calculator.py"), "--sizes", "32", "108",
                          "--min-seconds", "0.05", "--rounds", "1", "--warmup", "1", "--threads", "1", "--json",
                          str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result == json.loads(out.read_text())
    assert [r["atoms"] for r in result["rows"]] == [32, 108] and result["device"] == "cpu"
    for row in result["rows"]:
        assert row["surrogate"]["calls_per_s"] > 0 and row["emt"]["calls_per_s"] > 0
        assert row["surrogate_over_emt"] == pytest.approx(row["surrogate"]["calls_per_s"] / row["emt"]["calls_per_s"])
    assert "EMT" in res.stderr and "calls/s" in res.stderr
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_ase_calculator.py"), "--sizes", "100"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert bad.returncode != 0 and "4·k³" in bad.stderr
