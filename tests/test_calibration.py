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
    return root, write_walks(root / "ds", pos, train_frames=40)


def write_walks(path, pos: list, train_frames: int):
    """A dataset of free-atom walks pos [frames, n, 3] (Δ = 1 frame): trajectory 0's first ``train_frames`` frames
    train, the rest validate; trajectory 1 tests."""
    vel = [np.zeros_like(p) for p in pos]
    samples = [(t, f, f + 1) for t in range(len(pos)) for f in range(len(pos[t]) - 1)]
    split = [2 if t == 1 else 0 if f < train_frames else 1 for t, f, _ in samples]
    empty = np.zeros((0, 2), dtype=np.int64)
    meta = {"name": "walk", "source": "toy", "frame_dt": 1.0, "delta_frames": 1,
            "features": {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": ["dist2"]},
            "units": {"length": "Å", "time": "ps", "velocity": "Å per frame (1 ps)"}}
    return write_dataset(path, positions=pos, velocities=vel, samples=np.array(samples), split=np.array(split),
                         meta=meta, edge_sets={"local": EdgeSetData([empty] * len(pos), {})})


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
    # the stability probe ran 2K steps from the same number of starts and found a stay-still walk finite
    assert again["probe"]["steps"] == 4 and again["probe"]["starts"] == 10 and again["probe"]["non_finite"] == 0
    assert "stayed finite for 4 steps" in " ".join(res.output.split())
    assert summary["noise_calibration"]["probe"]["steps"] == 6
    res = invoke("calibrate", tmp_path / "run", "--steps", 2, "--starts", 4, "--replicas", 4, "--rounds", 1,
                 "--probe-steps", 0, "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    assert "probe" not in last_json(res)
    res = invoke("calibrate", tmp_path / "run", "--steps", 2, "--starts", 4, "--replicas", 4, "--rounds", 1,
                 "--probe-split", "test", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    assert last_json(res)["probe"]["split"] == "test" and "from the test split" in " ".join(res.output.split())
    res = invoke("calibrate", tmp_path / "run", "--steps", 2, "--starts", 4, "--replicas", 4, "--rounds", 1,
                 "--probe-split", "valid", "--device", "cpu")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "--probe-split must be train, val or test, not 'valid'" in " ".join(res.output.split())
    # rollout --noise-gain overrides the stored gain: a tiny gain keeps the stay-still walk at its start
    runs = {}
    for g in ("1e-9", None):
        out = tmp_path / f"walk_{g}.xyz"
        rr = invoke("rollout", path, "--model", tmp_path / "run", "--steps", 2, "--out", out, "--seed", 3,
                     *(("--noise-gain", g) if g else ()))
        assert rr.exit_code == 0, rr.output
        lines = [line.split() for line in out.read_text().splitlines()]
        runs[g] = np.array([[float(v) for v in w[1:4]] for w in lines if len(w) > 4 and w[0].isalpha()])
    n = len(runs[None]) // 3  # 3 frames: the start and 2 steps
    assert runs["1e-9"].shape == runs[None].shape == (3 * n, 3)
    assert np.abs(runs["1e-9"] - np.tile(runs["1e-9"][:n], (3, 1))).max() < 1e-3
    assert np.abs(runs[None] - np.tile(runs[None][:n], (3, 1))).max() > 1e-2
    for bad, why in ((("--noise-gain", "0"), "--noise-gain must be a finite number > 0"),
                     (("--noise-gain", "2", "--out", tmp_path / "w.mdsr"), "--noise-gain applies to trajectory")):
        rr = invoke("rollout", path, "--model", tmp_path / "run", "--steps", 2, "--out", tmp_path / "w.xyz", *bad)
        assert rr.exit_code == 2 and why in " ".join(rr.output.split()), rr.output


def test_stability_probe_counts_the_ensembles_that_blow_up(walk, tmp_path):
    """A noise so large that the positions overflow makes every ensemble non-finite at its first or second step;
    the calibrated noise keeps all of them finite."""
    from mdsurrogate.simulation.calibration import stability_probe
    from mdsurrogate.training.trainer import Trainer

    root, path = walk
    run = tmp_path / "run"
    Trainer(recipe_from_dict(stay_still_recipe(path)), run, device="cpu").run()
    sur = Surrogate.load(run, device="cpu")
    calm = stability_probe(sur, steps=5, starts=6, replicas=4, seed=1)
    assert calm == {"steps": 5, "starts": 6, "replicas": 4, "split": "val", "non_finite": 0, "first_stop": None,
                    "stopped_at": []}
    sur.noise_gain = 1e38  # float32 draws of this size overflow to inf
    wild = stability_probe(sur, steps=5, starts=6, replicas=4, seed=1, split="test")
    assert wild["non_finite"] == 6 and wild["split"] == "test"
    assert 1 <= wild["first_stop"] <= 2 and len(wild["stopped_at"]) == 6
    with pytest.raises(ParameterError, match="probe_steps must be ≥ 0"):
        calibrate_noise(sur, steps=2, probe_steps=-1)
    with pytest.raises(ParameterError, match="unknown probe_split 'valid'"):
        calibrate_noise(sur, steps=2, probe_split="valid")


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
                         (["--probe-steps", -1], "--probe-steps must be ≥ 0"), ([], "is not stochastic")):
        res = invoke("calibrate", run, *args, "--device", "cpu")
        assert res.exit_code == 2, (args, res.output)
        assert phrase in " ".join(res.output.split()), (args, res.output)
        assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def persistent_walk(tmp_path_factory):
    """Walks whose steps are an AR(1) process with correlation RHO (each step still N(0, STEP²) per coordinate):
    the error of "stay still" then grows faster than √k, exactly as a noise of memory RHO makes the spread grow."""
    root = tmp_path_factory.mktemp("persistent")
    rng = np.random.default_rng(8)
    n, frames = 10, 120
    pos = []
    for _ in range(2):
        steps = np.empty((frames, n, 3))
        steps[0] = rng.normal(size=(n, 3))
        for t in range(1, frames):
            steps[t] = RHO * steps[t - 1] + np.sqrt(1 - RHO**2) * rng.normal(size=(n, 3))
        pos.append((rng.normal(size=(1, n, 3)) * 4 + np.cumsum(steps * STEP, 0)).astype(np.float32))
    return write_walks(root / "ds", pos, train_frames=60)


RHO = 0.7


def test_memory_is_fitted_where_the_error_grows_faster_than_sqrt_k(walk, persistent_walk, tmp_path):
    from mdsurrogate.training.trainer import Trainer

    fitted = {}
    for name, path in (("independent", walk[1]), ("persistent", persistent_walk)):
        run = tmp_path / name
        Trainer(recipe_from_dict(stay_still_recipe(path)), run, device="cpu").run()
        sur = Surrogate.load(run, device="cpu", dtype="float64")
        rec = calibrate_noise(sur, steps=6, starts=16, replicas=24, rounds=2, seed=3, memory=True)
        assert [m["memory"] for m in rec["memory_search"]][0] == 0.0 and sur.noise_memory == rec["memory"]
        assert np.array(rec["rounds"][-1]["spread_skill"]) == pytest.approx(1.0, rel=0.25)  # every k, not only
        fitted[name] = rec["memory"]
    assert fitted["independent"] <= 0.2
    assert 0.55 <= fitted["persistent"] <= 0.8


def test_noise_memory_keeps_each_draw_standard_and_correlates_consecutive_ones():
    import torch

    from mdsurrogate.models.base import Prediction
    from mdsurrogate.models.registry import build_model

    model = build_model("linear", node_dim=1, edge_dim=1, local_edge_dim=0, noise="node", noise_init=1.0,
                        noise_min=0.0)
    n = 4000
    pred = Prediction(x=torch.zeros(n, 3, dtype=torch.float64), v=torch.zeros(n, 3, dtype=torch.float64),
                      extras={"noise_scale": torch.ones(n, dtype=torch.float64)})
    batch = torch.zeros(n, dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    x1, state = model.draw(pred, batch, 1, g, memory=0.6)
    x2, _ = model.draw(pred, batch, 1, g, memory=0.6, previous=state)
    assert float(x2.std()) == pytest.approx(1.0, abs=0.03)  # each draw is still N(0, 1)
    assert float((x1 * x2).mean()) == pytest.approx(0.6, abs=0.03)  # consecutive draws correlated by ρ
    # no memory: the same draw as ``sample`` from the same stream
    a = model.sample(pred, batch, 1, torch.Generator().manual_seed(2))
    b, _ = model.draw(pred, batch, 1, torch.Generator().manual_seed(2), previous=state)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="memory must be in"):
        model.draw(pred, batch, 1, g, memory=1.0)


def test_chain_with_memory_restores_its_noise(walk, tmp_path):
    from mdsurrogate.data.dataset import Dataset
    from mdsurrogate.simulation import initial_state
    from mdsurrogate.simulation.rollout import Chain
    from mdsurrogate.training.trainer import Trainer

    root, path = walk
    run = tmp_path / "run"
    Trainer(recipe_from_dict(stay_still_recipe(path)), run, device="cpu").run()
    sur = Surrogate.load(run, device="cpu", dtype="float64")
    sur.noise_memory = 0.8
    start = initial_state.from_dataset(Dataset(path), sur, split="test", sample=0, frame=0)
    chain = Chain(sur, start.x0, start.v0, start.topo, seed=4)
    chain.advance()
    mark = chain.snapshot()
    assert mark.noise is not None

    def three_steps():
        out = []
        for _ in range(3):
            chain.advance()
            out.append(chain.x.clone())
        return out

    want = three_steps()
    chain.restore(mark)
    got = three_steps()
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(got, want, strict=True))
    chain.restore(mark)
    chain.noise = None  # without the remembered draws the continuation differs
    assert not np.array_equal(three_steps()[0].numpy(), want[0].numpy())


def test_bad_memory_input(walk, tmp_path):
    root, path = walk
    with pytest.raises(RecipeError, match="calibrate_memory needs train.calibrate_noise ≥ 2"):
        recipe_from_dict(stay_still_recipe(path, calibrate_noise=1, calibrate_memory=True))
    with pytest.raises(RecipeError, match="calibrate_split must be train, val or test"):
        recipe_from_dict(stay_still_recipe(path, calibrate_noise=2, calibrate_split="validation"))
    from mdsurrogate.training.trainer import Trainer

    run = tmp_path / "run"
    Trainer(recipe_from_dict(stay_still_recipe(path)), run, device="cpu").run()
    with pytest.raises(ParameterError, match="memory=True needs steps ≥ 2"):
        calibrate_noise(Surrogate.load(run, device="cpu"), steps=1, memory=True)
    res = invoke("calibrate", run, "--steps", 1, "--memory", "--device", "cpu")
    assert res.exit_code == 2 and "--memory needs --steps ≥ 2" in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output
