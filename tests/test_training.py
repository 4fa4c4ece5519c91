"""The one trainer: determinism, best-val selection, early stopping, time budget, resume (also after kill -9, for
propagators and potentials), safe checkpoints, schedules, EMA, gradient clipping and norms, float64, CSV and
TensorBoard logging, errors in parameter terms, DDP for both tasks."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mdsurrogate.config import dump_toml, recipe_from_dict
from mdsurrogate.errors import CheckpointError, ParameterError, UserError
from mdsurrogate.training.checkpoint import Checkpoint
from mdsurrogate.training.ema import EMA
from mdsurrogate.training.schedule import LRSchedule
from mdsurrogate.training.trainer import Trainer

from .conftest import invoke

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"name": "egnn", "hidden": 16, "layers": 2}
POTENTIAL = {"name": "egnn_potential", "hidden": 8, "layers": 1, "n_rbf": 4}


def recipe(path, **train):
    t = {"epochs": 6, "batch_size": 20, "lr": 1e-3, "eval_every": 2, "seed": 3, "velocity_weight": 0.1} | train
    return recipe_from_dict({"data": {"path": str(path)}, "model": dict(SMALL), "train": t})


def potential_recipe(path, **train):
    t = {"epochs": 6, "batch_size": 4, "eval_every": 2, "eval_batch_size": 8} | train
    return recipe_from_dict({"data": {"path": str(path)}, "model": dict(POTENTIAL), "train": t})


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_emt(tmp_path_factory):
    """EMT frames of a periodic 32-atom Cu cell: 16 train / 2 val / 2 test frames."""
    from mdsurrogate.data.ingest import ingest_emt

    path = tmp_path_factory.mktemp("emt") / "cu"
    return ingest_emt(path, size=2, temperatures=(300.0, 800.0), frames_per_temperature=10, stride=2, equilibrate=4,
                      val_fraction=0.1, test_fraction=0.1)


def env1():
    """Subprocesses on this checkout, one thread each (bitwise-equal numbers between them)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# -- protocol ----------------------------------------------------------------------------------------------------
def test_same_seed_same_numbers_and_best_val_protocol(tiny_nbody, tmp_path):
    a = Trainer(recipe(tiny_nbody), tmp_path / "a", device="cpu").run()
    b = Trainer(recipe(tiny_nbody), tmp_path / "b", device="cpu").run()
    assert a["test_mse"] == b["test_mse"] and a["best_val_mse"] == b["best_val_mse"]
    evals = [m for m in metrics(tmp_path / "a") if "val_mse" in m]
    assert [m["epoch"] for m in evals] == [0, 2, 4, 5]
    best = min(evals, key=lambda m: m["val_mse"])  # first minimum wins, as in the papers
    assert a["best_epoch"] == best["epoch"] and a["test_mse"] == best["test_mse"]
    for name in ("best.pt", "last.pt", "recipe.toml", "summary.json", "metrics.csv"):
        assert (tmp_path / "a" / name).exists()
    assert a["task"] == "propagator" and a["best_val"] == a["best_val_mse"]


def test_resume_continues_to_the_same_result(tiny_nbody, tmp_path):
    full = Trainer(recipe(tiny_nbody), tmp_path / "full", device="cpu").run()
    Trainer(recipe(tiny_nbody, epochs=3), tmp_path / "part", device="cpu").run()  # "killed" after epoch 2
    resumed = Trainer(recipe(tiny_nbody), tmp_path / "part", device="cpu", resume=True).run()
    assert resumed["test_mse"] == pytest.approx(full["test_mse"], rel=1e-6)
    assert resumed["epochs_run"] == 6
    with pytest.raises(UserError, match="already holds a run; pass resume=True"):
        Trainer(recipe(tiny_nbody), tmp_path / "part", device="cpu")


class Crash(Exception):
    pass


def _interrupt_at(epoch):
    def callback(ev):
        if ev.get("event") == "epoch" and ev["epoch"] == epoch:
            raise Crash

    return callback


@pytest.mark.parametrize("settings", [
    {},
    {"schedule": "cosine", "warmup_epochs": 2, "ema_decay": 0.9, "grad_clip": 0.5},
    {"schedule": "plateau", "plateau_patience": 1, "plateau_factor": 0.5, "ema_decay": 0.8, "eval_every": 1},
])
def test_interrupted_run_resumes_exactly_and_logs_each_epoch_once(settings, tiny_nbody, tmp_path):
    """A crash after epoch 4 was logged but before its checkpoint (the last is at epoch 3): the resumed run cuts
    metrics.jsonl/csv back to epoch 3, trains 4… again, and ends with the numbers of an uninterrupted run (weights,
    optimiser, schedule, EMA and random state all continue)."""
    settings = dict(settings)
    r = recipe(tiny_nbody, epochs=8, eval_every=settings.pop("eval_every", 3), **settings)
    full = Trainer(r, tmp_path / "full", device="cpu").run()
    with pytest.raises(Crash):
        Trainer(r, tmp_path / "part", device="cpu", callback=_interrupt_at(4)).run()
    assert [m["epoch"] for m in metrics(tmp_path / "part")][-1] == 4
    resumed = Trainer(r, tmp_path / "part", device="cpu", resume=True).run()
    assert {k: resumed[k] for k in ("test_mse", "best_val_mse", "best_epoch", "epochs_run")} == \
        {k: full[k] for k in ("test_mse", "best_val_mse", "best_epoch", "epochs_run")}
    logged = metrics(tmp_path / "part")
    assert [m["epoch"] for m in logged] == list(range(8))
    reference = metrics(tmp_path / "full")
    for a, b in zip(logged, reference, strict=True):
        assert {k: v for k, v in a.items() if k != "time"} == {k: v for k, v in b.items() if k != "time"}
    with open(tmp_path / "part" / "metrics.csv") as fh:
        assert [int(row["epoch"]) for row in csv.DictReader(fh)] == list(range(8))
    best = Checkpoint.load(tmp_path / "part" / "best.pt")
    ref = Checkpoint.load(tmp_path / "full" / "best.pt")
    for k, v in ref.state_dict.items():
        assert torch.equal(best.state_dict[k], v), k


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
    ck = Checkpoint.load(tmp_path / "r", kind="propagator")
    ck.build_model()
    assert ck.dataset.delta_time == pytest.approx(1.0)
    assert ck.featurizer().spec.edge == ["charge_product", "dist2"]
    assert ck.optimizer is None and ck.metrics["val"]["mse"] == ck.train_state["best_val"]
    last = Checkpoint.load(tmp_path / "r" / "last.pt")
    assert last.optimizer is not None and "torch" in last.rng and last.extra["schedule"]["kind"] == "constant"
    # a pickle that would run code is refused by weights_only loading
    evil = tmp_path / "evil.pt"

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"format": "mdsurrogate-checkpoint", "x": Boom()}, evil)
    with pytest.raises(CheckpointError):
        Checkpoint.load(evil)
    assert not (tmp_path / "pwned").exists()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        Checkpoint.load(junk)
    Checkpoint(kind="potential", model_name="egnn_potential", hparams={}, state_dict={}, features={}).save(
        tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="potential"):
        Checkpoint.load(tmp_path / "other.pt", kind="propagator")


def test_errors_name_parameters_and_the_cli_maps_them_to_flags(tiny_nbody, tmp_path):
    with pytest.raises(ParameterError, match="resume=True: .* has no last.pt") as exc:
        Trainer(recipe(tiny_nbody), tmp_path / "none", device="cpu", resume=True)
    assert "--resume" not in str(exc.value)
    no_data = recipe_from_dict({"model": dict(SMALL)})
    with pytest.raises(ParameterError, match="pass data_path"):
        Trainer(no_data, tmp_path / "x", device="cpu")
    res = invoke("train", "nbody_demo", "--data", tiny_nbody, "--out", tmp_path / "none", "--resume", "--quiet")
    assert res.exit_code == 2 and "--resume: " in res.output and "resume=True" not in res.output
    assert "has no last.pt to continue from" in " ".join(res.output.split())
    Trainer(recipe(tiny_nbody, epochs=1), tmp_path / "done", device="cpu").run()
    res = invoke("train", ROOT / "recipes" / "nbody_demo.toml", "--data", tiny_nbody, "--out", tmp_path / "done",
                 "--set", "train.batch_size=20")
    assert res.exit_code == 2 and "already holds a run; pass --resume to continue it or choose another --out" in \
        " ".join(res.output.split())
    res = invoke("train", ROOT / "recipes" / "nbody_demo.toml", "--set", 'data.path=""', "--out", tmp_path / "y")
    assert res.exit_code == 2 and "pass --data" in res.output


# -- schedules, EMA, clipping, precision -------------------------------------------------------------------------
def test_schedule_factors():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    cos = LRSchedule(opt, kind="cosine", lr=2.0, epochs=12, warmup_epochs=2, lr_final_ratio=0.1)
    assert [cos.factor_at(e) for e in (0, 1)] == [0.5, 1.0]  # linear warm-up
    assert cos.factor_at(2) == 1.0 and cos.factor_at(7) == pytest.approx(0.55) and cos.factor_at(12) == 0.1
    assert cos.start_epoch(7) == pytest.approx(1.1) and opt.param_groups[0]["lr"] == pytest.approx(1.1)
    # without warm-up: the potentials' cosine, r + (1 − r)·½(1 + cos(π e / E))
    plain = LRSchedule(opt, kind="cosine", lr=1.0, epochs=40, lr_final_ratio=0.02)
    assert plain.factor_at(10) == 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * 10 / 40))
    plat = LRSchedule(opt, kind="plateau", lr=1.0, epochs=100, plateau_patience=2, plateau_factor=0.5,
                      lr_final_ratio=0.2)
    for v in (1.0, 0.5, 0.6, 0.7):  # two evaluations without improvement → halve
        plat.observe(v)
    assert plat.factor_at(50) == 0.5
    for v in (0.6, 0.6, 0.6, 0.6, 0.6, 0.6):
        plat.observe(v)
    assert plat.factor_at(50) == 0.2  # the floor lr_final_ratio
    state = plat.state_dict()
    other = LRSchedule(opt, kind="plateau", lr=1.0, epochs=100, plateau_patience=2, lr_final_ratio=0.2)
    other.load_state_dict(state)
    assert other.factor_at(50) == 0.2 and other.best == plat.best and other.bad == plat.bad
    const = LRSchedule(opt, kind="constant", lr=3.0, epochs=5)
    opt.param_groups[0]["lr"] = 0.25
    assert const.is_static and const.start_epoch(3) == 0.25  # the papers' protocol never touches the optimiser


def test_trainer_logs_the_scheduled_learning_rate(tiny_nbody, tmp_path):
    Trainer(recipe(tiny_nbody, epochs=5, schedule="cosine", warmup_epochs=2, lr_final_ratio=0.1), tmp_path / "c",
            device="cpu").run()
    lrs = [m["lr"] for m in metrics(tmp_path / "c")]
    assert lrs[:2] == [pytest.approx(5e-4), pytest.approx(1e-3)]
    assert lrs[2] == pytest.approx(1e-3) and lrs[4] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(
        math.pi * 2 / 3))))
    Trainer(recipe(tiny_nbody, epochs=3), tmp_path / "k", device="cpu").run()
    assert [m["lr"] for m in metrics(tmp_path / "k")] == [1e-3] * 3


def test_ema_update_rule():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    shadow = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(1, 30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        shadow = {k: d * shadow[k] + (1 - d) * v for k, v in model.state_dict().items()}
    for k, v in ema.model.state_dict().items():
        torch.testing.assert_close(v, shadow[k])
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_weights_are_evaluated_and_saved_in_best_raw_in_last(tiny_nbody, tmp_path):
    from mdsurrogate.data.dataset import Dataset
    from mdsurrogate.training.metrics import evaluate

    run = tmp_path / "ema"
    s = Trainer(recipe(tiny_nbody, epochs=4, eval_every=1, ema_decay=0.9), run, device="cpu").run()
    best, last = Checkpoint.load(run / "best.pt"), Checkpoint.load(run / "last.pt")
    ema = last.extra["ema"]
    assert ema["decay"] == 0.9 and ema["updates"] == 4 * 3  # 3 batches of 20 per epoch
    if s["best_epoch"] == 3:  # best.pt holds the average of the same moment as last.pt
        for k, v in best.state_dict.items():
            assert torch.equal(v, ema["state_dict"][k])
    assert any(not torch.equal(last.state_dict[k], ema["state_dict"][k]) for k in last.state_dict)
    ds = Dataset(tiny_nbody)
    again = evaluate(best.build_model(), ds, ds.split_indices("val"), best.featurizer(), batch_size=20)
    assert again["mse"] == pytest.approx(s["best_val_mse"], rel=1e-6)


def test_grad_clip_and_logged_gradient_norm(tiny_nbody, tmp_path):
    # one batch of all 60 samples per epoch: the first step's gradient is the same with and without clipping
    free = Trainer(recipe(tiny_nbody, epochs=2, eval_every=1, batch_size=60), tmp_path / "free", device="cpu").run()
    clipped = Trainer(recipe(tiny_nbody, epochs=2, eval_every=1, batch_size=60, grad_clip=1e-3), tmp_path / "clip",
                      device="cpu").run()
    norms = [m["grad_norm"] for m in metrics(tmp_path / "free")]
    assert all(np.isfinite(n) and n > 1e-3 for n in norms)
    assert metrics(tmp_path / "clip")[0]["grad_norm"] == norms[0]  # the norm before clipping is logged
    assert clipped["test_mse"] != free["test_mse"]


def test_float64_training(tiny_nbody, tmp_path):
    s = Trainer(recipe(tiny_nbody, epochs=2, dtype="float64"), tmp_path / "f64", device="cpu").run()
    ck = Checkpoint.load(tmp_path / "f64")
    assert all(v.dtype == torch.float64 for v in ck.state_dict.values() if v.is_floating_point())
    assert np.isfinite(s["test_mse"])


# -- logging -------------------------------------------------------------------------------------------------------
def test_metrics_csv_mirrors_the_json_lines(tiny_nbody, tiny_emt, tmp_path):
    Trainer(recipe(tiny_nbody, epochs=4), tmp_path / "p", device="cpu").run()
    Trainer(potential_recipe(tiny_emt, epochs=2, eval_every=1), tmp_path / "e", device="cpu").run()
    for run in (tmp_path / "p", tmp_path / "e"):
        rows = metrics(run)
        with open(run / "metrics.csv") as fh:
            reader = csv.DictReader(fh)
            table = list(reader)
            header = reader.fieldnames
        assert {k for r in rows for k in r} - {"event"} <= set(header), run
        assert len(table) == len(rows)
        for r, c in zip(rows, table, strict=True):
            for k, v in r.items():
                if k != "event":
                    assert float(c[k]) == pytest.approx(v, rel=1e-12), (run, k)
            assert {"lr", "grad_norm"} <= set(r)
    assert "train_force_rmse" in header and "val_force_mae" in header


def test_tensorboard_missing_is_one_clear_sentence(tiny_nbody, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(UserError, match=r"tensorboard=True needs the tensorboard package: pip install"):
        Trainer(recipe(tiny_nbody), tmp_path / "tb", device="cpu", tensorboard=True)


def test_tensorboard_event_files(tiny_nbody, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(recipe(tiny_nbody, epochs=3, eval_every=1), tmp_path / "tb", device="cpu", tensorboard=True).run()
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "val/mse", "lr", "grad_norm"} <= set(tags)
    assert [e.step for e in acc.Scalars("val/mse")] == [0, 1, 2]


# -- potentials ----------------------------------------------------------------------------------------------------
def test_potential_resume_and_max_minutes(tiny_emt, tmp_path):
    full = Trainer(potential_recipe(tiny_emt), tmp_path / "full", device="cpu").run()
    with pytest.raises(Crash):
        Trainer(potential_recipe(tiny_emt), tmp_path / "part", device="cpu", callback=_interrupt_at(3)).run()
    resumed = Trainer(potential_recipe(tiny_emt), tmp_path / "part", device="cpu", resume=True).run()
    assert resumed["test"] == full["test"] and resumed["val"] == full["val"] and resumed["epochs_run"] == 6
    assert [m["epoch"] for m in metrics(tmp_path / "part")] == list(range(6))
    assert full["task"] == "potential" and full["test"]["frames"] == 2 and "best_test" not in metrics(
        tmp_path / "full")[0]
    s = Trainer(potential_recipe(tiny_emt, epochs=50, max_minutes=1e-9), tmp_path / "tb", device="cpu").run()
    assert s["stopped_by_time"] and s["epochs_run"] == 1 and s["test"]["frames"] == 2
    ck = Checkpoint.load(tmp_path / "full", kind="potential")
    assert ck.metrics["test"] == full["test"] and ck.dataset.elements == [29]
    assert ck.hparams["elements"] == [29] and ck.hparams["hidden"] == 8 and ck.hparams["avg_neighbors"] > 1


def _kill_mid_run(cmd, run: Path, after_epoch: int, timeout: float = 240.0):
    """Start ``cmd``; SIGKILL it once last.pt exists and metrics.jsonl shows ``after_epoch``; the run must not have
    finished."""
    proc = subprocess.Popen(cmd, env=env1(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}")
            if (run / "last.pt").exists() and (run / "metrics.jsonl").exists():
                epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
                          if line.endswith("}")]
                if epochs and epochs[-1] >= after_epoch:
                    break
            time.sleep(0.01)
        else:
            raise AssertionError("the run did not get far enough in time")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (run / "summary.json").exists()


@pytest.mark.parametrize("task", ["propagator", "potential"])
def test_kill_9_then_resume_gives_the_numbers_of_an_uninterrupted_run(task, tiny_nbody, tiny_emt, tmp_path):
    if task == "propagator":
        r = recipe(tiny_nbody, epochs=150, eval_every=4, schedule="cosine", ema_decay=0.9)
        keys = ("test_mse", "best_val_mse", "best_epoch", "epochs_run")
        after = 21  # not an evaluation epoch: lines beyond the last checkpoint are in metrics.jsonl at the kill
    else:
        r = potential_recipe(tiny_emt, epochs=60, eval_every=3, ema_decay=0.8)
        keys = ("test", "val", "best_epoch", "epochs_run")
        after = 8  # likewise (evaluations at 0, 3, 6, 9, …)
    rfile = tmp_path / "r.toml"
    rfile.write_text(dump_toml(r.to_dict()))
    train = [sys.executable, "-m", "mdsurrogate", "train", str(rfile), "--device", "cpu", "--quiet", "--json"]
    full = subprocess.run(train + ["--out", str(tmp_path / "full")], env=env1(), capture_output=True, text=True,
                          timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    run = tmp_path / "killed"
    _kill_mid_run(train + ["--out", str(run)], run, after)
    resumed = subprocess.run(train + ["--out", str(run), "--resume"], env=env1(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = json.loads(full.stdout.splitlines()[-1]), json.loads(resumed.stdout.splitlines()[-1])
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    epochs = [m["epoch"] for m in metrics(run)]
    assert epochs == list(range(r.train.epochs))  # each epoch logged once
    assert "--resume" in (run / "command.txt").read_text().splitlines()[-1]


# -- distributed ---------------------------------------------------------------------------------------------------
def _torchrun(recipe_file: Path, out: Path, extra=()):
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "mdsurrogate", "train", str(recipe_file), "--out", str(out),
           "--device", "cpu", "--quiet", "--json", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env1(), timeout=600)


def test_ddp_two_cpu_processes_gloo(tiny_nbody, tmp_path):
    """torchrun with 2 processes on gloo: trains, agrees across ranks, and matches the world size."""
    r = tmp_path / "r.toml"
    r.write_text(dump_toml(recipe(tiny_nbody, epochs=2).to_dict()))
    proc = _torchrun(r, tmp_path / "ddp")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert Checkpoint.load(tmp_path / "ddp").train_state["epoch"] == 1


def test_potential_ddp_two_cpu_processes_gloo(tiny_emt, tmp_path):
    """A potential under torchrun (2 processes, gloo): forces by autograd through DDP, sharded evaluation; with
    one batch per process per step the two processes see the single-process run's batches of half the size."""
    r = tmp_path / "r.toml"
    r.write_text(dump_toml(potential_recipe(tiny_emt, epochs=3, eval_every=1).to_dict()))
    proc = _torchrun(r, tmp_path / "ddp")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["epochs_run"] == 3 and summary["task"] == "potential"
    assert summary["test"]["frames"] == 2 and summary["val"]["frames"] == 2  # every frame evaluated once
    assert np.isfinite(summary["test"]["force_mae"])
    assert [m["epoch"] for m in metrics(tmp_path / "ddp")] == [0, 1, 2]
    single = Trainer(potential_recipe(tiny_emt, epochs=3, eval_every=1), tmp_path / "one", device="cpu").run()
    assert summary["test"]["force_mae"] != single["test"]["force_mae"]  # another batching, another model
    assert summary["test"]["zero_force_mae"] == pytest.approx(single["test"]["zero_force_mae"], rel=1e-12)
