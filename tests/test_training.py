"""The training loop: determinism, best-val selection, early stopping, resume, safe checkpoints, DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from mdsurrogate.config import recipe_from_dict
from mdsurrogate.errors import CheckpointError, UserError
from mdsurrogate.training.checkpoint import Checkpoint, load_checkpoint, model_from_checkpoint
from mdsurrogate.training.loop import Trainer

SMALL = {"name": "egnn", "hidden": 16, "layers": 2}


def recipe(path, **train):
    t = {"epochs": 6, "batch_size": 20, "lr": 1e-3, "eval_every": 2, "seed": 3, "velocity_weight": 0.1} | train
    return recipe_from_dict({"data": {"path": str(path)}, "model": dict(SMALL), "train": t})


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_same_seed_same_numbers_and_best_val_protocol(tiny_nbody, tmp_path):
    a = Trainer(recipe(tiny_nbody), tmp_path / "a", device="cpu").run()
    b = Trainer(recipe(tiny_nbody), tmp_path / "b", device="cpu").run()
    assert a["test_mse"] == b["test_mse"] and a["best_val_mse"] == b["best_val_mse"]
    evals = [m for m in metrics(tmp_path / "a") if "val_mse" in m]
    assert [m["epoch"] for m in evals] == [0, 2, 4, 5]
    best = min(evals, key=lambda m: m["val_mse"])  # first minimum wins, as in the papers
    assert a["best_epoch"] == best["epoch"] and a["test_mse"] == best["test_mse"]
    for name in ("best.pt", "last.pt", "recipe.toml", "summary.json"):
        assert (tmp_path / "a" / name).exists()


def test_resume_continues_to_the_same_result(tiny_nbody, tmp_path):
    full = Trainer(recipe(tiny_nbody), tmp_path / "full", device="cpu").run()
    Trainer(recipe(tiny_nbody, epochs=3), tmp_path / "part", device="cpu").run()  # "killed" after epoch 2
    resumed = Trainer(recipe(tiny_nbody), tmp_path / "part", device="cpu", resume=True).run()
    assert resumed["test_mse"] == pytest.approx(full["test_mse"], rel=1e-6)
    assert resumed["epochs_run"] == 6
    with pytest.raises(UserError, match="already holds a run"):
        Trainer(recipe(tiny_nbody), tmp_path / "part", device="cpu")


def test_early_stopping(tiny_nbody, tmp_path):
    # a frozen model never improves on its first evaluation: stop after `patience` more evaluations
    frozen = recipe_from_dict({"data": {"path": str(tiny_nbody)}, "model": {"name": "linear", "learn_tau": False},
                               "train": {"epochs": 200, "batch_size": 20, "eval_every": 1, "patience": 3}})
    s = Trainer(frozen, tmp_path / "es", device="cpu").run()
    assert s["stopped_early"] and s["epochs_run"] == 4 and s["best_epoch"] == 0


def test_time_budget_stops_at_an_evaluation(tiny_nbody, tmp_path):
    # a budget already spent after the first epoch: stop right after the first evaluation (epoch 0), with a summary
    r = recipe_from_dict({"data": {"path": str(tiny_nbody)}, "model": {"name": "linear"},
                          "train": {"epochs": 50, "batch_size": 20, "eval_every": 2, "max_minutes": 1e-9}})
    s = Trainer(r, tmp_path / "tb", device="cpu").run()
    assert s["stopped_by_time"] and s["stopped_early"] and s["epochs_run"] == 1 and s["best_epoch"] == 0
    assert (tmp_path / "tb" / "summary.json").exists() and np.isfinite(s["test_mse"])


def test_checkpoints_load_safely(tiny_nbody, tmp_path):
    Trainer(recipe(tiny_nbody, epochs=1), tmp_path / "r", device="cpu").run()
    ck = load_checkpoint(tmp_path / "r")
    model, feat = model_from_checkpoint(ck)
    assert ck["dataset"]["delta_time"] == pytest.approx(1.0)
    assert feat.spec.edge == ["charge_product", "dist2"]
    # a pickle that would run code is refused by weights_only loading
    evil = tmp_path / "evil.pt"

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"format": "mdsurrogate-checkpoint", "x": Boom()}, evil)
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_checkpoint(junk)
    Checkpoint(kind="potential", model_name="egnn_potential", hparams={}, state_dict={}, features={}).save(
        tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="potential"):
        load_checkpoint(tmp_path / "other.pt", kind="propagator")


def test_ddp_two_cpu_processes_gloo(tiny_nbody, tmp_path):
    """torchrun with 2 processes on gloo: trains, agrees across ranks, and matches the world size."""
    from mdsurrogate.config import dump_toml

    r = tmp_path / "r.toml"
    r.write_text(dump_toml(recipe(tiny_nbody, epochs=2).to_dict()))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port),
           "-m", "mdsurrogate", "train", str(r), "--out", str(tmp_path / "ddp"), "--device", "cpu", "--quiet",
           "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert load_checkpoint(tmp_path / "ddp")["train_state"]["epoch"] == 1
