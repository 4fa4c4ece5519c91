"""CLI polish: ``--version``, shell completion, ``info`` as a table for people and JSON for machines."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from mdsurrogate import __version__
from mdsurrogate.training.checkpoint import Checkpoint, DatasetInfo

from .conftest import invoke, last_json
from .test_ase_integration import random_potential, save_potential


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"mdsurrogate {__version__} (torch {torch.__version__}, Python {sys.version.split()[0]})"


def test_no_arguments_still_prints_help_and_completion_options_are_listed():
    r = invoke()
    assert r.exit_code in (0, 2)  # click ≥ 8.2 exits 2 after printing help for a bare group
    assert "Usage" in r.output and "ingest" in r.output and "export" in r.output
    assert "--install-completion" in r.output and "--show-completion" in r.output and "--version" in r.output


def test_shell_completion_completes_commands(tmp_path):
    """The completion protocol bash uses: the console script called with _MDSURROGATE_COMPLETE set."""
    env = {**os.environ, "_MDSURROGATE_COMPLETE": "complete_bash", "COMP_WORDS": "mdsurrogate in", "COMP_CWORD": "1",
           "PYTHONPATH": os.pathsep.join(p for p in [os.getcwd(), os.environ.get("PYTHONPATH", "")] if p)}
    code = "import sys; sys.argv[0] = 'mdsurrogate'; from mdsurrogate.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["info", "ingest"]
    # the script --show-completion prints for bash (what --install-completion sources from ~/.bashrc), asked for
    # by name: --show-completion itself detects the user's shell from the process tree, which a test cannot fix
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "_MDSURROGATE_COMPLETE": "source_bash"},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "_MDSURROGATE_COMPLETE=complete_bash" in proc.stdout and "complete -o" in proc.stdout


def propagator_checkpoint(path):
    from mdsurrogate.models.baselines import LinearDynamics

    ck = Checkpoint(kind="propagator", model_name="linear", hparams={"tau": 0.5}, n_parameters=1,
                    state_dict=LinearDynamics(tau=0.5).state_dict(),
                    features={"global_graph": {"kind": "radius", "cutoff": 10.0}, "node": ["speed"],
                              "edge": ["dist2"]},
                    dataset=DatasetInfo(name="adk", source="md", units={"length": "Å", "time": "ps"}, frame_dt=240.0,
                                        delta_frames=15, delta_time=3600.0),
                    train_state={"epoch": 12, "best_val": 0.125, "best_epoch": 10})
    return ck.save(path)


def test_info_prints_a_table_of_a_checkpoint(tmp_path):
    path = propagator_checkpoint(tmp_path / "prop.pt")
    r = invoke("info", path)
    assert r.exit_code == 0, r.output
    text = r.stdout
    for needle in ("propagator checkpoint", "kind", "linear", "parameters", "units", "length Å, time ps",
                   "Δ (one step)", "3600 ps = 15 frames × 240 ps", "radius, cutoff 10", "node features", "speed",
                   "training", "best_val 0.125", "versions", f"mdsurrogate {__version__}", "created"):
        assert needle in text, (needle, text)
    assert not text.lstrip().startswith("{")  # a table, not JSON
    created = Checkpoint.load(path).versions["created"]
    assert created[:4] in text


def test_info_json_keeps_the_machine_record(tmp_path):
    path = propagator_checkpoint(tmp_path / "prop.pt")
    d = last_json(invoke("info", path, "--json"))
    assert d["kind"] == "propagator" and d["model"] == {"name": "linear", "hparams": {"tau": 0.5}}
    assert d["dataset"]["delta_time"] == 3600.0 and d["versions"]["mdsurrogate"] == __version__
    assert set(d) >= {"features", "dataset", "train_state", "n_parameters", "versions"}


def test_info_of_a_potential_and_of_a_dataset(tmp_path, tiny_nbody):
    ck = save_potential(tmp_path / "pot.pt", random_potential())
    r = invoke("info", ck)
    assert r.exit_code == 0
    assert "potential checkpoint" in r.stdout and "Cu, Ag" in r.stdout and "cutoff" in r.stdout
    r = invoke("info", tiny_nbody)
    assert r.exit_code == 0
    for needle in ("dataset", "trajectories", "samples", "train 60", "Δ (one step)", "complete", "charge"):
        assert needle in r.stdout, (needle, r.stdout)
    d = last_json(invoke("info", tiny_nbody, "--json"))
    assert d["trajectories"] == 100 and d["samples"]["train"] == 60
    r = invoke("info", tmp_path / "nothing")
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_train_out_below_a_file_is_one_sentence(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    r = invoke("train", "nbody_demo", "--data", tmp_path / "nope", "--out", blocker / "run")
    assert r.exit_code == 2 and "is a file" in r.output and "Errno" not in r.output
    r = invoke("train", "nbody_demo", "--data", tmp_path / "nope", "--out", blocker)
    assert r.exit_code == 2 and "is a file" in r.output
    assert blocker.read_text() == "keep me"


def test_train_init_from_a_missing_run_is_one_sentence(tiny_nbody, tmp_path):
    r = invoke("train", "nbody_demo", "--data", tiny_nbody, "--out", tmp_path / "run", "--set",
               "train.batch_size=10", "--init-from", tmp_path / "nothing")
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_failed_train_leaves_no_empty_run_folder(tmp_path):
    """A train that fails before its first write (no dataset here) leaves no folder behind, nested or not."""
    r = invoke("train", "nbody_demo", "--data", tmp_path / "nope", "--out", tmp_path / "new" / "deeper" / "run")
    assert r.exit_code == 2 and "no dataset" in r.output
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    r = invoke("train", "nbody_demo", "--data", tmp_path / "nope", "--out", tmp_path / "kept")
    assert r.exit_code == 2 and (tmp_path / "kept").is_dir()  # a folder the user had stays


def test_checkpoint_without_features_names_what_it_lacks(tmp_path):
    from mdsurrogate.errors import CheckpointError

    ck = Checkpoint(kind="propagator", model_name="linear", hparams={}, state_dict={}, features={},
                    dataset=DatasetInfo(units={}, frame_dt=1.0, delta_frames=1, delta_time=1.0))
    path = ck.save(tmp_path / "ok.pt")
    data = torch.load(path, weights_only=True)
    del data["features"]
    torch.save(data, tmp_path / "nofeat.pt")
    try:
        Checkpoint.load(tmp_path / "nofeat.pt")
    except CheckpointError as exc:
        assert str(exc).endswith("incomplete mdsurrogate checkpoint: it lacks features")
        assert "__init__" not in str(exc)
    else:
        raise AssertionError("an incomplete checkpoint loaded")
