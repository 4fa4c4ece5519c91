"""The command line end to end on a tiny dataset, and bad input: one clear sentence, non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from .conftest import invoke, last_json

runner = CliRunner()




@pytest.fixture(scope="module")
def trained(tiny_nbody, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "egnn"
    res = invoke("train", "recipes/nbody_egnn.toml", "--data", tiny_nbody, "--out", run, "--quiet", "--json",
                 "--set", "train.epochs=3", "--set", "model.hidden=16", "--set", "train.batch_size=20",
                 "--set", "data.max_train_samples=40")
    assert res.exit_code == 0, res.output
    return run, last_json(res)


def test_ingest_train_eval_rollout(tiny_nbody, trained, tmp_path):
    run, summary = trained
    assert summary["epochs_run"] == 3 and np.isfinite(summary["test_mse"])
    res = invoke("eval", run, "--json")
    assert res.exit_code == 0
    plain = last_json(res)
    assert plain["mse"] == pytest.approx(summary["test_mse"], rel=1e-5)
    moved = last_json(invoke("eval", run, "--rotate", "--translate", "--json"))
    assert moved["mse"] == pytest.approx(plain["mse"], rel=1e-4)  # equivariant model: unchanged (float32)
    for ext in ("pdb", "xyz", "dcd"):
        out = tmp_path / f"roll.{ext}"
        res = invoke("rollout", tiny_nbody, "--model", run, "--steps", 3, "--frame", 0, "--out", out, "--json")
        assert res.exit_code == 0, res.output
        info = last_json(res)
        assert info["steps"] == 3 and info["times"] == pytest.approx([0, 1, 2, 3])
        assert all(e is not None and e > 0 for e in info["errors"][1:])  # references exist at frames 10, 20, 30
    from ase.io import read

    frames = read(tmp_path / "roll.xyz", index=":")
    assert len(frames) == 4 and frames[0].positions.shape == (5, 3)


def test_ingest_nbody_cli(tmp_path):
    res = invoke("ingest", "nbody", tmp_path / "ds", "--train", 4, "--val", 2, "--test", 2, "--json")
    assert res.exit_code == 0
    assert last_json(res)["samples"] == {"test": 2, "train": 4, "val": 2}
    again = invoke("ingest", "nbody", tmp_path / "ds", "--train", 4, "--val", 2, "--test", 2)
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "{tmp}/nothing"], "does not exist"),
        (["eval", "{tmp}/junk.pt"], "not a loadable mdsurrogate checkpoint"),
        (["train", "{tmp}/bad.toml", "--data", "{tiny}"], "did you mean 'epochs'"),
        (["train", "recipes/nbody_egnn.toml", "--data", "{tmp}/nowhere"], "no dataset at"),
        (["train", "recipes/nbody_egnn.toml", "--data", "{tiny}", "--set", "model.name=egnnn"], "unknown model"),
        (["train", "{tmp}/corrupt_ds_recipe.toml"], "corrupt"),
        (["rollout", "{tiny}", "--model", "{tmp}/junk.pt", "--out", "{tmp}/x.pdb"], "not a loadable"),
        (["rollout", "{tiny}", "--model", "{run}", "--out", "{tmp}/x.mp4"], "extension must be"),
        (["rollout", "{tiny}", "--model", "{run}", "--out", "{tmp}/x.pdb", "--sample", "999"], "out of range"),
    ],
)
def test_bad_input_is_one_sentence(args, message, tmp_path, tiny_nbody, trained):
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    (tmp_path / "bad.toml").write_text("[train]\nepoch = 3\n")
    corrupt = tmp_path / "corrupt_ds"
    corrupt.mkdir()
    (corrupt / "meta.json").write_text("{broken")
    (tmp_path / "corrupt_ds_recipe.toml").write_text(f'[data]\npath = "{corrupt}"\n')
    args = [a.format(tmp=tmp_path, tiny=tiny_nbody, run=trained[0]) for a in args]
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mdsurrogate", "eval", str(tmp_path / "missing.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2
