"""Noise calibration of a stochastic propagator: on a random walk of known step, a "stay still + noise" model whose
noise is c times too large is scaled by 1/c, the gain is stored in the checkpoint and used by later rollouts, and
bad input is one sentence."""

from __future__ import annotations

import numpy as np
import pytest

from mdsurrogate.config import recipe_from_dict
from mdsurrogate.data.dataset import EdgeSetData, write_dataset
from mdsurrogate.errors import ParameterError, RecipeError
from mdsurrogate.simulation.calibration import calibrate_noise
from mdsurrogate.simulation.ensemble import ensemble_rollout
from mdsurrogate.simulation.surrogate import Surrogate
from mdsurrogate.training.checkpoint import Checkpoint

from .conftest import invoke, last_json

STEP = 0.1          # Å per coordinate per frame of the random walk
NOISE = 0.3         # the model's noise: 3× too large


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """Two 80-frame random walks of 10 free atoms (train/val: trajectory 0, test: trajectory 1; Δ = 1 frame)."""
    root = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(5)
    n, frames = 10, 80
    pos = [(rng.normal(size=(1, n, 3)) * 4 + np.cumsum(rng.normal(size=(frames, n, 3)) * STEP, 0)).astype(np.float32)
           for _ in range(2)]
    vel = [np.zeros_like(p) for p in pos]
    samples = [(t, f, f + 1) for t in range(2) for f in range(frames - 1)]
    split = [2 if t == 1 else 0 if f < 40 else 1 for t, f, _ in samples]
    empty = np.zeros((0, 2), dtype=np.int64)
    meta = {"name": "walk", "source": "toy", "frame_dt": 1.0, "delta_frames": 1,
            "features": {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": ["dist2"]},
            "units": {"length": "Å", "time": "ps", "velocity": "Å per frame (1 ps)"}}
    path = write_dataset(root / "ds", positions=pos, velocities=vel, samples=np.array(samples),
                         split=np.array(split), meta=meta, edge_sets={"local": EdgeSetData([empty, empty], {})})
    return root, path


def stay_still_recipe(path, **train):
    """A Linear propagator frozen at x' = x (τ = 0, lr ≈ 0) with node noise NOISE (its scale net starts constant)."""
    return {"data": {"path": str(path)}, "model": {"name": "linear", "tau": 0.0, "noise": "node",
                                                   "noise_init": NOISE, "project": "none"},
            "train": {"epochs": 1, "batch_size": 16, "lr": 1e-12, "eval_every": 1, **train}}


def toml(recipe: dict) -> str:
    """The recipe as TOML (sections of plain values)."""
    def value(v):
        return repr(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    return "\n".join(f"[{name}]\n" + "\n".join(f"{k} = {value(v)}" for k, v in section.items())
                     for name, section in recipe.items()) + "\n"


def test_gain_brings_spread_skill_to_one(walk, tmp_path):
    root, path = walk
    from mdsurrogate.training.trainer import Trainer

    run = tmp_path / "run"
    Trainer(recipe_from_dict(stay_still_recipe(path)), run, device="cpu").run()
    sur = Surrogate.load(run, device="cpu", dtype="float64")
    assert sur.noise_gain == 1.0
    rec = calibrate_noise(sur, steps=4, starts=12, replicas=32, rounds=2, seed=3)
    first = np.array(rec["rounds"][0]["spread_skill"])
    assert first == pytest.approx(NOISE / STEP, rel=0.3)          # 3× over-dispersed at every horizon
    assert rec["gain"] == pytest.approx(STEP / NOISE, rel=0.25)
    assert np.array(rec["rounds"][1]["spread_skill"]) == pytest.approx(1.0, rel=0.3)
    assert sur.noise_gain == rec["gain"]
    # a draw's spread scales with the gain
    from mdsurrogate.data.dataset import Dataset
    from mdsurrogate.simulation import initial_state

    start = initial_state.from_dataset(Dataset(path), sur, split="test", sample=0, frame=0)
    spread = ensemble_rollout(sur, start, 1, replicas=200, seed=0).positions[:, 1].std(0).mean()
    assert spread == pytest.approx(NOISE * rec["gain"], rel=0.15)


def test_train_calibrates_and_rollouts_use_the_stored_gain(walk, tmp_path):
    root, path = walk
    recipe = tmp_path / "still.toml"
    recipe.write_text(toml(stay_still_recipe(path, calibrate_noise=3)))
    res = invoke("train", recipe, "--out", tmp_path / "run", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    summary = last_json(res)
    gain = summary["noise_calibration"]["gain"]
    assert gain == pytest.approx(STEP / NOISE, rel=0.3)
    ck = Checkpoint.load(tmp_path / "run")
    assert ck.extra["noise_gain"] == gain and ck.extra["noise_calibration"]["steps"] == 3
    assert Surrogate.load(tmp_path / "run", device="cpu").noise_gain == gain
    # recalibrating from the command line starts from the stored gain and stays near it
    res = invoke("calibrate", tmp_path / "run", "--steps", 2, "--starts", 10, "--replicas", 12, "--rounds", 1,
                 "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    again = last_json(res)
    assert again["rounds"][0]["gain"] == gain
    assert again["gain"] == pytest.approx(gain, rel=0.3)


def test_bad_calibration_input(walk, tmp_path):
    root, path = walk
    recipe = stay_still_recipe(path, calibrate_noise=2)
    recipe["model"] = {"name": "linear", "tau": 0.0}
    with pytest.raises(RecipeError, match="needs a stochastic model"):
        recipe_from_dict(recipe)
    from mdsurrogate.training.trainer import Trainer

    run = tmp_path / "plain"
    Trainer(recipe_from_dict({**recipe, "train": {"epochs": 1, "lr": 1e-12, "batch_size": 16}}), run,
            device="cpu").run()
    with pytest.raises(ParameterError, match="is not stochastic"):
        calibrate_noise(Surrogate.load(run, device="cpu"), steps=2)
    for args, phrase in ((["--steps", 0], "--steps must be ≥ 1"), (["--replicas", 1], "--replicas must be ≥ 2"),
                         ([], "is not stochastic")):
        res = invoke("calibrate", run, *args, "--device", "cpu")
        assert res.exit_code == 2, (args, res.output)
        assert phrase in " ".join(res.output.split()), (args, res.output)
        assert "Traceback" not in res.output
