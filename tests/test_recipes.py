"""Recipes by name: `mdsurrogate recipes`, `recipes show NAME` and `train NAME` from an empty folder outside the
clone (the recipes come from the package, not the working directory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd: Path, timeout: int = 300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mdsurrogate", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_recipes_by_name_from_an_empty_folder(tmp_path, tiny_nbody):
    here = tmp_path / "elsewhere"
    here.mkdir()
    listing = cli("recipes", "--json", cwd=here)
    assert listing.returncode == 0, listing.stderr
    rows = {r["name"]: r for r in json.loads(listing.stdout.splitlines()[-1])["recipes"]}
    assert {"nbody_demo", "nbody_egnn", "cu_emt_potential", "mcomplex_eghn", "mcomplex_5_5_J1_eghn",
            "mcomplex_10_10_J5_rf", "adk_quick_eghn"} <= set(rows)
    assert rows["cu_emt_potential"]["model"] == "egnn_potential" and rows["nbody_demo"]["description"]
    table = cli("recipes", cwd=here)
    assert table.returncode == 0 and "nbody_demo" in table.stdout and "recipes show NAME" in table.stdout

    shown = cli("recipes", "show", "mcomplex_5_10_J1_eghn", cwd=here)
    assert shown.returncode == 0, shown.stderr
    assert "# dataset: mdsurrogate ingest mcomplex data/mcomplex_5_10_J1 --complexes 5 --size 10 --systems 1" in \
        shown.stdout
    resolved = tomllib.loads(shown.stdout)
    assert resolved["data"]["path"] == "data/mcomplex_5_10_J1" and resolved["model"]["n_clusters"] == 5
    assert resolved["train"]["schedule"] == "constant" and resolved["train"]["patience"] == 50

    run = here / "RUN"
    res = cli("train", "nbody_demo", "--data", tiny_nbody, "--out", run, "--set", "train.epochs=1", "--set",
              "train.batch_size=20", "--quiet", "--json", "--device", "cpu", cwd=here)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["epochs_run"] == 1
    assert (run / "best.pt").is_file() and 'name = "nbody_demo"' in (run / "recipe.toml").read_text()
    assert sorted(p.name for p in here.iterdir()) == ["RUN"]  # nothing else appeared in the folder


def test_unknown_recipe_names_are_one_sentence(tmp_path):
    res = cli("train", "nbody_dem", "--data", tmp_path, cwd=tmp_path)
    assert res.returncode == 2
    assert "unknown recipe 'nbody_dem'; did you mean 'nbody_demo'?" in " ".join(res.stderr.split())
    res = cli("recipes", "show", "nope.toml", cwd=tmp_path)
    assert res.returncode == 2 and "recipe nope.toml does not exist" in res.stderr
    assert "Traceback" not in res.stderr
