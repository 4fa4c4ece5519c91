"""`mdsurrogate reproduce`: quick mode end to end, reuse and resumption of finished runs, parallel jobs, failures,
bad input, and the tables' data (published numbers, ingest commands that match the recipes' comments)."""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mdsurrogate.apps import reproduce as rp

from .conftest import invoke, last_json

runner = CliRunner()




@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick reproduction of the N-body table with two trained models and one without a recipe."""
    out = tmp_path_factory.mktemp("repro")
    res = invoke("reproduce", "egnn-nbody", "--quick", "--runs", 2, "--models", "linear,rf,se3_transformer",
                 "--out", out, "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    return out, last_json(res), res.stdout


def test_quick_mode_on_two_models(quick):
    out, summary, stdout = quick
    rows = {r["model"]: r for r in summary["rows"]}
    assert [r["model"] for r in summary["rows"]] == ["linear", "rf", "se3_transformer"]
    for name, paper in (("linear", 0.0819), ("rf", 0.0104)):
        row = rows[name]
        assert row["status"] == "ok" and row["n"] == 2 and row["paper"] == paper
        mses = [r["test_mse"] for r in row["runs"]]
        assert [r["seed"] for r in row["runs"]] == [1, 2] and all(m > 0 for m in mses)
        assert row["mean"] == pytest.approx(sum(mses) / 2)
        assert row["std"] == pytest.approx(abs(mses[0] - mses[1]) / 2**0.5)
        assert row["ratio"] == pytest.approx(row["mean"] / paper)
        for r in row["runs"]:
            assert r["epochs_run"] == 3 and r["device"] == "cpu" and r["best_epoch"] in (0, 1, 2) and not r["reused"]
    assert rows["rf"]["runs"][0]["test_mse"] != rows["rf"]["runs"][1]["test_mse"]  # the seeds differ
    assert rows["se3_transformer"]["status"] == "skipped" and "no recipe" in rows["se3_transformer"]["reason"]
    md = (out / "egnn-nbody-quick.md").read_text()
    assert md == stdout[: len(md)]  # the printed table is the saved one
    assert re.search(r"\| rf \| [0-9.e-]+ ± [0-9.e-]+ \(2\) \| 0\.0104 \| [0-9.]+ \|", md)
    assert "| se3_transformer | skipped: no recipe nbody_se3_transformer | 0.0244 | – |" in md
    saved = json.loads((out / "egnn-nbody-quick.json").read_text())
    assert saved["rows"] == summary["rows"] and saved["quick"] is True
    assert saved["ingested"] == [f"mdsurrogate ingest nbody {out}/data/nbody_small-quick --train 100 --val 40 "
                                 "--test 40 --stream-train 100"]


def test_finished_runs_are_reused_and_unfinished_ones_resumed(quick):
    out, first, _ = quick
    runs = {r["run_dir"]: r for row in first["rows"] for r in row["runs"]}
    stamps = {d: (rp.Path(d) / "summary.json").stat().st_mtime_ns for d in runs}
    res = invoke("reproduce", "egnn-nbody", "--quick", "--runs", 2, "--models", "linear,rf", "--out", out,
                 "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    again = last_json(res)
    for row in again["rows"]:
        for r in row["runs"]:
            assert r["reused"] and r["test_mse"] == runs[r["run_dir"]]["test_mse"]
            assert (rp.Path(r["run_dir"]) / "summary.json").stat().st_mtime_ns == stamps[r["run_dir"]]
    assert again["ingested"] == []
    # an interrupted run (no summary.json yet) continues from last.pt instead of starting over
    victim = rp.Path(first["rows"][1]["runs"][0]["run_dir"])
    (victim / "summary.json").unlink()
    res = invoke("reproduce", "egnn-nbody", "--quick", "--runs", 1, "--models", "rf", "--out", out, "--json")
    resumed = last_json(res)["rows"][0]["runs"][0]
    assert not resumed["reused"] and resumed["test_mse"] == pytest.approx(runs[str(victim)]["test_mse"])
    assert "--resume" in (victim / "command.txt").read_text().splitlines()[-1]
    # another setting is another run (another directory), never a reuse
    res = invoke("reproduce", "egnn-nbody", "--quick", "--runs", 1, "--models", "linear", "--out", out, "--json",
                 "--set", "train.epochs=2")
    other = last_json(res)["rows"][0]["runs"][0]
    assert other["epochs_run"] == 2 and not other["reused"] and other["run_dir"] not in runs


def test_parallel_jobs_run_in_subprocesses(tmp_path):
    res = invoke("reproduce", "egnn-nbody", "--quick", "--runs", 1, "--models", "linear,gnn", "--out", tmp_path,
                 "--device", "cpu", "--jobs", 2, "--json")
    assert res.exit_code == 0, res.output
    rows = last_json(res)["rows"]
    assert [r["n"] for r in rows] == [1, 1]
    for row in rows:
        run = rp.Path(row["runs"][0]["run_dir"])
        assert (run.parent / f"{run.name}.log").exists()  # each job logs to its own file
        assert (run / "command.txt").read_text().startswith("mdsurrogate train ")


def test_failed_runs_are_reported_not_dropped(tmp_path):
    res = invoke("reproduce", "egnn-nbody", "--quick", "--runs", 1, "--models", "linear,rf", "--out", tmp_path,
                 "--set", "train.batch_size=1000")
    assert res.exit_code == 3
    md = (tmp_path / "egnn-nbody-quick.md").read_text()
    assert "| linear | failed: UserError: train.batch_size 1000 is larger" in md
    assert "2 run(s) failed" in res.output


@pytest.mark.parametrize("args, message", [
    (["reproduce", "egnn-nbdy"], "unknown table 'egnn-nbdy'; did you mean 'egnn-nbody'?"),
    (["reproduce", "nonsense"], "unknown table 'nonsense' (tables: egnn-nbody, eghn-mcomplex, eghn-mocap)"),
    (["reproduce", "eghn-mcomplex", "--config", "4_4_J1"], "unknown configuration '4_4_J1'"),
    (["reproduce", "egnn-nbody", "--config", "3_3_J1"], "has no configurations"),
    (["reproduce", "egnn-nbody", "--models", "egnn,fancy"], "unknown model(s) fancy"),
    (["reproduce", "egnn-nbody", "--runs", "0"], "--runs and --jobs must be at least 1"),
    (["reproduce", "egnn-nbody", "--set", "train.epoch=3"], "did you mean 'epochs'"),
])
def test_bad_input_is_one_sentence(args, message, tmp_path):
    res = invoke(*args, "--out", tmp_path)
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert not list(tmp_path.iterdir())  # nothing was trained or ingested


def test_tables_hold_the_published_numbers():
    nbody = rp.TABLES["egnn-nbody"].paper[""]
    assert nbody == {"linear": 0.0819, "se3_transformer": 0.0244, "tfn": 0.0155, "gnn": 0.0107, "rf": 0.0104,
                     "egnn": 0.0071}
    mc = rp.TABLES["eghn-mcomplex"].paper
    assert mc["3_3_J1"]["eghn"] == 0.1158 and mc["10_10_J5"]["rf"] == 0.1934 and mc["10_10_J1"]["tfn"] == rp.OOM
    assert rp.TABLES["eghn-mocap"].paper[""]["gmn"] == 0.441 and "linear" not in rp.TABLES["eghn-mocap"].paper[""]


@pytest.mark.parametrize("name", sorted(rp.TABLES))
def test_ingest_commands_match_the_recipes_comments(name, monkeypatch, tmp_path):
    """The ingest a table runs is the one the recipe names (its `# mdsurrogate ingest …` comment, or the derived
    M-complex configuration), and the library call has the same arguments as that command line."""
    from mdsurrogate.catalog import ingest_command, is_recipe_name

    table = rp.TABLES[name]
    monkeypatch.setattr(rp, "find_mocap_file", lambda: rp.Path("cmu_subject09_run.npz"))
    flags = {"n_complexes": "--complexes", "avg_size": "--size", "n_types": "--systems", "npz": "--positions"}
    checked = 0
    for config in table.configs:
        for model in table.models:
            recipe = table.recipe.format(model=model, config=config)
            if not is_recipe_name(recipe) or (expected := ingest_command(recipe)) is None:
                continue
            path = rp.load_recipe(recipe)[0].data.path
            argv = rp.ingest_argv(table, config, path, quick=False)
            assert ["mdsurrogate", *argv] == shlex.split(expected), recipe
            kwargs = rp.ingest_kwargs(table, config, quick=False)
            assert [x for k, v in kwargs.items() for x in (flags[k], str(v))] == argv[3:], recipe
            inspect.signature(rp.ingest_function(table.ingest)).bind(path, **kwargs)  # the library takes them
            quick = rp.ingest_kwargs(table, config, quick=True)
            inspect.signature(rp.ingest_function(table.ingest)).bind(path, **quick)
            checked += 1
    assert checked >= 3


def test_reproduce_calls_the_library_not_the_cli(tmp_path):
    """With the CLI package made unimportable, reproduce still ingests (through the library) and trains."""
    code = ("import sys; sys.modules['mdsurrogate.cli'] = None\n"
            "from mdsurrogate.apps.reproduce import reproduce\n"
            f"r = reproduce('egnn-nbody', quick=True, runs=1, models='linear', out={str(tmp_path)!r}, device='cpu')\n"
            "print(r.summary['ingested'][0]); print(r.summary['rows'][0]['status'])")
    env = {**os.environ, "PYTHONPATH": str(rp.Path(rp.__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[:2] == [f"mdsurrogate ingest nbody {tmp_path}/data/nbody_small-quick --train 100 "
                                          "--val 40 --test 40 --stream-train 100", "ok"]
    assert (tmp_path / "data" / "nbody_small-quick" / "meta.json").is_file()


def test_missing_mocap_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rp, "PACKAGE_ROOT", tmp_path)
    with pytest.raises(rp.UserError, match="cmu_subject09_run.npz not found"):
        rp.find_mocap_file()
