"""Training for rollouts: multi-step samples inside their split, the unrolled objective, stochastic models,
rollout-metric selection and the data-derived guard in the checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mdsurrogate.config import RecipeError, recipe_from_dict
from mdsurrogate.data.chains import chain_sample_ids, frame_limits, gather_chain
from mdsurrogate.data.dataset import Dataset
from mdsurrogate.training.checkpoint import Checkpoint
from mdsurrogate.training.objectives import RolloutObjective
from mdsurrogate.training.trainer import Trainer


@pytest.fixture(scope="module")
def long_nbody(tmp_path_factory):
    from mdsurrogate.data.ingest import ingest_nbody

    path = tmp_path_factory.mktemp("data") / "nbody_long"
    return ingest_nbody(path, n_train=40, n_val=10, n_test=10, stream_train=40, horizon=4, train_horizon=3)


def recipe(path, stochastic=False, **train):
    """``stochastic``: False, True (node noise) or the name of a noise mode."""
    t = {"epochs": 2, "batch_size": 10, "lr": 1e-3, "eval_every": 1, "seed": 2, "velocity_weight": 0.1} | train
    noise = "node" if stochastic is True else stochastic
    model = {"name": "egnn", "hidden": 16, "layers": 2} | ({"noise": noise} if noise else {})
    return recipe_from_dict({"data": {"path": str(path)}, "model": model, "train": t})


def test_chain_samples_never_cross_a_split_boundary(tmp_path):
    from mdsurrogate.data.ingest.md import chronological_samples

    # one MD-like trajectory cut chronologically: train frames end before val frames start
    starts, codes = chronological_samples(100, 5, (0.6, 0.2, 0.2))
    train_last = starts[codes == 0].max() + 5
    assert train_last < starts[codes == 1].min() + 5
    ds = Dataset(_write_cut_dataset(tmp_path, starts, codes))
    limit = frame_limits(ds, "train")[0]
    assert limit == train_last
    for m in (2, 4):
        s = ds.samples[chain_sample_ids(ds, "train", m)]
        assert (s[:, 1] + m * 5 <= limit).all() and len(s) == (codes == 0).sum() - (m - 1) * 5
    x0, v0, targets, topo = gather_chain(ds, chain_sample_ids(ds, "train", 3)[:2], 3)
    assert targets.shape == (3, x0.shape[0], 3)
    np.testing.assert_array_equal(targets[2][:4].numpy(), ds.frame(0, int(ds.samples[0, 1]) + 15)[0])


def _write_cut_dataset(tmp_path, starts, codes):
    from mdsurrogate.data.dataset import write_dataset

    g = np.random.default_rng(0)
    pos = g.normal(size=(1, 100, 4, 3)).astype(np.float32)
    samples = np.stack([np.zeros_like(starts), starts, starts + 5], axis=1)
    meta = {"features": {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": ["dist2"]},
            "units": {}, "frame_dt": 1.0, "delta_frames": 5}
    return write_dataset(tmp_path / "cut", positions=pos, velocities=pos, samples=samples, split=codes, meta=meta)


def test_single_step_objective_is_the_papers_loss(long_nbody):
    """With nothing for rollouts set, the objective's arithmetic is the papers' loss term for term."""
    from mdsurrogate.data.featurize import Featurizer
    from mdsurrogate.models.registry import build_model

    ds = Dataset(long_nbody)
    feat = Featurizer(ds.features)
    torch.manual_seed(0)
    model = build_model("egnn", node_dim=1, edge_dim=2, local_edge_dim=0, hidden=8, layers=1)
    x0, v0, x1, v1, topo = ds.gather(ds.split_indices("train")[:5])
    pred = model(feat(x0, v0, topo))
    want = ((pred.x - x1) ** 2).mean() + 0.1 * ((pred.v - v1) ** 2).mean()
    got, _ = RolloutObjective(velocity_weight=0.1).loss(model, feat, x0, v0, x1.unsqueeze(0), topo, v1=v1)
    assert torch.equal(got, want)


def test_separate_noise_loss_trains_the_mean_by_mse_only(long_nbody):
    """noise_loss = "separate": the mean's parameters get exactly the gradient of the MSE (the likelihood sees a
    detached mean), the scale network gets the likelihood's; "joint" lets the likelihood reach the mean."""
    from mdsurrogate.data.featurize import Featurizer
    from mdsurrogate.models.registry import build_model

    ds = Dataset(long_nbody)
    feat = Featurizer(ds.features)
    x0, v0, x1, v1, topo = ds.gather(ds.split_indices("train")[:5])

    def grads(noise_loss, mse_only=False):
        torch.manual_seed(0)
        model = build_model("egnn", node_dim=1, edge_dim=2, local_edge_dim=0, hidden=8, layers=1, noise="node")
        if mse_only:
            loss = ((model(feat(x0, v0, topo)).x - x1) ** 2).mean()
        else:
            loss, parts = RolloutObjective(noise_loss=noise_loss).loss(model, feat, x0, v0, x1.unsqueeze(0), topo)
            assert torch.isfinite(parts["nll"])
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    mse_only, separate, joint = grads("", mse_only=True), grads("separate"), grads("joint")
    base = [n for n in mse_only if n.startswith("base.")]
    assert base and all(torch.allclose(separate[n], mse_only[n], atol=1e-7) for n in base)
    assert any(not torch.allclose(joint[n], mse_only[n], atol=1e-7) for n in base)
    assert any(n.startswith("scales.") and separate[n].abs().sum() > 0 for n in separate)
    with pytest.raises(RecipeError, match="noise_loss"):
        recipe(long_nbody, stochastic=True, noise_loss="both")


def test_flow_matching_term_trains_the_flow_only(long_nbody):
    """model.flow: the objective adds the flow-matching loss of a Gaussian draw; its gradient reaches the flow's
    field and nothing else (the mean and the scales keep exactly the gradients they have without the flow); a
    two-step chain continues from Gaussian draws and adds the term at both steps."""
    from mdsurrogate.data.featurize import Featurizer
    from mdsurrogate.models.registry import build_model

    ds = Dataset(long_nbody)
    feat = Featurizer(ds.features)
    x0, v0, x1, v1, topo = ds.gather(ds.split_indices("train")[:5])
    targets = torch.stack([x1, x1 + 0.01])

    def grads(flow, steps=1):
        torch.manual_seed(0)
        model = build_model("egnn", node_dim=1, edge_dim=2, local_edge_dim=0, hidden=8, layers=1, noise="modes",
                            flow=flow, flow_hidden=8, flow_layers=1)
        loss, parts = RolloutObjective(noise_loss="separate", rollout_steps=steps).loss(
            model, feat, x0, v0, targets[:steps], topo, generator=torch.Generator().manual_seed(1))
        assert ("flow" in parts) == flow and (not flow or parts["flow"] > 0)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, with_flow = grads(False), grads(True)
    assert set(with_flow) - set(plain) == {n for n in with_flow if n.startswith("flow.")} != set()
    for n in plain:
        torch.testing.assert_close(with_flow[n], plain[n])
    chained = grads(True, steps=2)
    assert all(torch.isfinite(g).all() for g in chained.values())
    assert {n for n in chained if n.startswith("flow.")} == {n for n in with_flow if n.startswith("flow.")}


def test_rollout_discount_weights_the_chain_steps(long_nbody):
    """L = Σ γ^(k−1) ℓ_k / Σ γ^(k−1): the chained MSEs reported by the objective, reweighted by hand."""
    from mdsurrogate.data.chains import chain_sample_ids, gather_chain
    from mdsurrogate.data.featurize import Featurizer
    from mdsurrogate.models.registry import build_model

    ds = Dataset(long_nbody)
    feat = Featurizer(ds.features)
    torch.manual_seed(0)
    model = build_model("egnn", node_dim=1, edge_dim=2, local_edge_dim=0, hidden=8, layers=1)
    x0, v0, targets, topo = gather_chain(ds, chain_sample_ids(ds, "train", 3)[:4], 3)
    for gamma in (1.0, 0.5, 0.1):
        got, parts = RolloutObjective(rollout_steps=3, rollout_discount=gamma).loss(model, feat, x0, v0, targets,
                                                                                    topo)
        terms = [parts["mse"], parts["mse_2"], parts["mse_3"]]
        want = sum(gamma ** k * t for k, t in enumerate(terms)) / sum(gamma ** k for k in range(3))
        assert torch.allclose(got, want, rtol=1e-6)
    with pytest.raises(RecipeError, match="rollout_discount"):
        recipe(long_nbody, rollout_discount=0.0)


def test_init_from_starts_from_another_runs_weights(long_nbody, tmp_path):
    """train.init_from: the new run's model starts from the other run's best.pt (fine-tuning); a run of
    another model is refused in one sentence."""
    from mdsurrogate.errors import ParameterError

    Trainer(recipe(long_nbody, epochs=1), tmp_path / "a", device="cpu").run()
    source = Checkpoint.load(tmp_path / "a").state_dict
    tuned = Trainer(recipe(long_nbody, init_from=str(tmp_path / "a"), rollout_steps=2), tmp_path / "b",
                    device="cpu")
    assert all(torch.equal(v, source[k]) for k, v in tuned.model.state_dict().items())
    fresh = Trainer(recipe(long_nbody), tmp_path / "c", device="cpu")
    assert not all(torch.equal(v, source[k]) for k, v in fresh.model.state_dict().items())
    tuned.run()
    other = recipe_from_dict({"data": {"path": str(long_nbody)}, "model": {"name": "egnn", "hidden": 8, "layers": 2},
                              "train": {"epochs": 1, "batch_size": 10, "init_from": str(tmp_path / "a")}})
    with pytest.raises(ParameterError, match="init_from.*do not fit"):
        Trainer(other, tmp_path / "d", device="cpu")


def test_rollout_selection_ranks_a_diverging_model_instead_of_nan(long_nbody, tmp_path):
    """select = "rollout": one validation rollout that turns non-finite, or explodes, costs the checkpoint a
    bounded score (DIVERGED_PENALTY × its stay-still error), never a NaN that ranks nothing or a 10²⁴ that swamps
    every other sample."""
    from mdsurrogate.models.base import Prediction
    from mdsurrogate.training.tasks.propagator import DIVERGED_PENALTY

    task = Trainer(recipe(long_nbody, select="rollout", select_steps=3), tmp_path / "sel", device="cpu").task
    ids = task.split("val")

    class Still(torch.nn.Module):  # stays still; poisoned, graph 0 turns to `poison` at once
        def __init__(self, poison=None):
            super().__init__()
            self.poison = poison

        def forward(self, g):
            x = g.x.clone()
            if self.poison is not None:
                x[g.batch == 0] = self.poison
            return Prediction(x=x, v=g.v)

    still = task.rollout_mse(Still(), ids, 100)
    nan, huge = task.rollout_mse(Still(float("nan")), ids, 100), task.rollout_mse(Still(1e12), ids, 100)
    assert math.isfinite(still) and still < nan == pytest.approx(huge)
    n = len(np.intersect1d(ids, chain_sample_ids(Dataset(long_nbody), "val", 3)))
    assert nan < (1 + DIVERGED_PENALTY * n) * still  # one sample at its cap, not infinity


def test_rollout_selection_longer_than_the_validation_chains_is_refused_before_training(long_nbody, tmp_path):
    from mdsurrogate.errors import UserError

    with pytest.raises(UserError, match=r"train.select_steps = 5 model steps of trajectory after them, and .* has "
                                        r"none \(at most 4\): lower train.select_steps"):
        Trainer(recipe(long_nbody, select="rollout", select_steps=5), tmp_path / "sel", device="cpu")
    assert not (tmp_path / "sel" / "last.pt").exists()


def test_selection_waits_for_the_curriculum_to_reach_its_chain_length(long_nbody, tmp_path):
    """With a rollout curriculum, an epoch trained on shorter chains is kept only until the first epoch on the
    final chain length, which replaces it even with a worse figure; among those the best wins as usual."""
    trainer = Trainer(recipe(long_nbody, rollout_steps=3, rollout_curriculum=4, epochs=7), tmp_path / "c",
                      device="cpu")
    worse_each_epoch = iter([1.0, 2.0, 3.0, 4.0, 5.0, 4.5, 6.0])  # epochs 0 … 6; chains of 3 from epoch 4
    trainer.task.selection_value = lambda val, model: next(worse_each_epoch)
    s = trainer.run()
    assert [trainer.task.objective.steps_at(e) for e in range(7)] == [1, 1, 2, 2, 3, 3, 3]
    assert s["best_epoch"] == 5 and s["best_val"] == 4.5
    plain = Trainer(recipe(long_nbody, epochs=3), tmp_path / "p", device="cpu")  # no curriculum: the first best
    plain.task.selection_value = lambda val, model, it=iter([1.0, 2.0, 0.5]): next(it)
    assert plain.run()["best_epoch"] == 2
    # select_after: an early best (say, an untrained epoch on a tiny validation span) is only provisional
    after = Trainer(recipe(long_nbody, epochs=4, select_after=2), tmp_path / "a", device="cpu")
    after.task.selection_value = lambda val, model, it=iter([0.5, 2.0, 3.0, 1.0]): next(it)
    s = after.run()
    assert s["best_epoch"] == 3 and s["best_val"] == 1.0
    before = Trainer(recipe(long_nbody, epochs=4), tmp_path / "b", device="cpu")
    before.task.selection_value = lambda val, model, it=iter([0.5, 2.0, 3.0, 1.0]): next(it)
    assert before.run()["best_epoch"] == 0
    with pytest.raises(RecipeError, match="select_after must be ≥ 0"):
        recipe(long_nbody, select_after=-1)


def test_rollout_training_runs_and_lowers_the_chained_error(long_nbody, tmp_path):
    s = Trainer(recipe(long_nbody, rollout_steps=3, rollout_curriculum=1, select="rollout", select_steps=3,
                       epochs=3), tmp_path / "r", device="cpu").run()
    assert math.isfinite(s["test_mse"])
    ck = Checkpoint.load(tmp_path / "r")
    assert ck.guard["step_rms"] > 0 and "data" in ck.guard
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert any("val_rollout_mse" in line for line in lines)


@pytest.mark.parametrize("noise", ["node", "modes"])
def test_stochastic_training_and_sampled_rollout(long_nbody, tmp_path, noise):
    from mdsurrogate.simulation.initial_state import from_dataset
    from mdsurrogate.simulation.surrogate import Surrogate

    Trainer(recipe(long_nbody, stochastic=noise, rollout_steps=2, input_noise=0.01), tmp_path / "s",
            device="cpu").run()
    sur = Surrogate.load(tmp_path / "s", device="cpu")
    assert sur.stochastic
    start = from_dataset(Dataset(long_nbody), sur, split="test", sample=0)
    a = sur.rollout(start, 3, seed=1).positions
    b = sur.rollout(start, 3, seed=1).positions
    c = sur.rollout(start, 3, seed=2).positions
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    sur.sample = False  # the mean chain is deterministic
    assert np.array_equal(sur.rollout(start, 3, seed=1).positions, sur.rollout(start, 3, seed=2).positions)


def test_bad_rollout_settings_are_clear(long_nbody):
    with pytest.raises(RecipeError, match="rollout_noise"):
        recipe(long_nbody, rollout_noise="some")
    with pytest.raises(RecipeError, match="input_noise must be ≥ 0"):
        recipe(long_nbody, input_noise=float("nan"))
    with pytest.raises(Exception, match="rollout_steps"):
        Trainer(recipe(long_nbody, rollout_steps=50), "/tmp/never", device="cpu")


def test_a_positions_only_propagator_ignores_velocities(long_nbody, tmp_path):
    """``[data] velocity_input = false``: no speed feature, zero input velocities, in training and in rollouts."""
    from mdsurrogate.data.featurize import Featurizer
    from mdsurrogate.simulation.initial_state import from_dataset
    from mdsurrogate.simulation.surrogate import Surrogate

    r = recipe(long_nbody, stochastic="modes", rollout_steps=2)
    r.data.velocity_input = False
    Trainer(r, tmp_path / "p", device="cpu").run()
    ck = Checkpoint.load(tmp_path / "p" / "best.pt")
    assert ck.features["velocity"] is False and "speed" not in ck.features["node"]
    ds = Dataset(long_nbody)
    x, v = (torch.from_numpy(a) for a in ds.frame(0, 0))
    g = Featurizer(ck.features)(x, v + 1.0, ds.topology(np.array([0])))
    assert torch.count_nonzero(g.v) == 0 and g.h.shape[1] == Featurizer(ds.features).spec.node_dim - 1
    sur = Surrogate.load(tmp_path / "p", device="cpu")
    sur.sample = False
    start = from_dataset(ds, sur, split="test", sample=0)
    a = sur.rollout(start, 2, seed=1).positions
    start.v0 = start.v0 * 3.0 + 1.0  # any input velocity: the same mean chain
    np.testing.assert_array_equal(a, sur.rollout(start, 2, seed=1).positions)
