"""The conditional flow-matching step of a stochastic propagator: the field and its transport are equivariant,
draws are seeded and batched replicas equal single ones, and flow matching learns a two-mode next state that a
Gaussian cannot represent."""

from __future__ import annotations

import torch

from mdsurrogate.models.flow import FlowField

from .conftest import make_batch, orthogonal, perturbed_model, random_topology


def build(**extra):
    return perturbed_model("egnn", noise="modes", noise_modes=2, noise_torsions=False, noise_hidden=8, hidden=16,
                           layers=2, flow=True, flow_hidden=16, flow_layers=2, flow_steps=3, **extra)


def moved(batch, q, shift):
    return batch.with_state(batch.x @ q.T + shift, batch.v @ q.T)


def test_flow_field_and_transport_are_equivariant():
    model = build()
    batch, _ = make_batch()
    g = torch.Generator().manual_seed(3)
    xs = batch.x + 0.3 * torch.randn(batch.x.shape, generator=g, dtype=torch.float64)
    mu = batch.x + 0.2 * torch.randn(batch.x.shape, generator=g, dtype=torch.float64)
    s = torch.rand(batch.num_graphs, generator=g, dtype=torch.float64)
    u = model.flow(batch, xs, s, mu)
    out = model.flow.transport(batch, xs, mu, 4)
    assert u.abs().max() > 1e-3 and (out - xs).abs().max() > 1e-3  # the field does move the draw
    for seed, reflect in ((1, False), (2, True)):
        q = orthogonal(seed, reflect)
        shift = torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64)
        rb = moved(batch, q, shift)
        torch.testing.assert_close(model.flow(rb, xs @ q.T + shift, s, mu @ q.T + shift), u @ q.T, atol=1e-10,
                                   rtol=1e-9)
        torch.testing.assert_close(model.flow.transport(rb, xs @ q.T + shift, mu @ q.T + shift, 4),
                                   out @ q.T + shift, atol=1e-10, rtol=1e-9)


def test_flow_draws_are_seeded_equivariant_in_distribution_and_batched_like_single_graphs():
    model = build()
    batch, _ = make_batch(sizes=(6, 6))
    pred = model(batch)
    draw = lambda p, b, seed: model.draw(p, b.batch, b.num_graphs, torch.Generator().manual_seed(seed))[0]  # noqa: E731
    first = draw(pred, batch, 5)
    torch.testing.assert_close(first, draw(model(batch), batch, 5))
    assert not torch.allclose(first, draw(pred, batch, 6))
    prior, _ = model.prior_draw(pred, batch.batch, batch.num_graphs, torch.Generator().manual_seed(5))
    assert (first - prior).abs().max() > 1e-4  # the flow transports the Gaussian draw
    # the transport of a given prior draw rotates with the state: equivariance in distribution follows from the
    # prior's (an isotropic Gaussian about the equivariant mean)
    q = orthogonal(4, True)
    rb = moved(batch, q, torch.zeros(3, dtype=torch.float64))
    rpred = model(rb)
    torch.testing.assert_close(rpred.x, pred.x @ q.T, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(model.flow.transport(rb, prior @ q.T, rpred.x, model.flow_steps),
                               model.flow.transport(batch, prior, pred.x, model.flow_steps) @ q.T, atol=1e-10,
                               rtol=1e-9)
    # replicas batched transport a draw as each graph alone
    single, topo = make_batch(sizes=(6,), seed=7)
    x2 = torch.cat([single.x, single.x + 0.4])
    pair, _ = make_batch(topo=topo.repeat(2), x=x2, v=torch.cat([single.v, single.v]))
    prior2 = x2 + 0.3 * torch.randn(x2.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    both = model.flow.transport(pair, prior2, model(pair).x, 2)
    torch.testing.assert_close(both[:6], model.flow.transport(single, prior2[:6], model(single).x, 2), atol=1e-9,
                               rtol=1e-9)


def test_flow_matching_learns_a_two_mode_next_state():
    """32 copies of a three-atom state whose first atom moves by +d or −d along its bond with equal odds: a
    Gaussian fit puts its mass between the modes; the flow's draws from a narrow Gaussian prior land near ±d."""
    torch.manual_seed(0)
    topo = random_topology((3,), seed=1).repeat(32)
    x = torch.tensor([[0.0, 0, 0], [1.5, 0, 0], [2.0, 1.2, 0]], dtype=torch.float64).repeat(32, 1)
    batch, _ = make_batch(topo=topo, x=x, v=torch.zeros_like(x))
    field = FlowField(batch.h.shape[1], batch.edge_attr.shape[1], batch.local_edge_attr.shape[1], hidden=32,
                      layers=2, length_scale=2.0).double()
    first = batch.ptr[:-1]
    axis = torch.tensor([1.0, 0, 0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    prior = lambda: batch.x + 0.3 * torch.randn(batch.x.shape, generator=g, dtype=torch.float64)  # noqa: E731
    opt = torch.optim.Adam(field.parameters(), lr=3e-3)
    for _ in range(400):
        sign = torch.randint(0, 2, (batch.num_graphs, 1), generator=g).double() * 2 - 1
        x1 = batch.x.clone()
        x1[first] += sign * axis
        loss = field.loss(batch, prior(), x1, batch.x, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        shifts = torch.cat([(field.transport(batch, prior(), batch.x, 8)[first] - batch.x[first]) @ axis
                            for _ in range(4)])
    assert (shifts.abs() > 0.5).float().mean() > 0.9  # a Gaussian of the same variance: 0.62
    assert 0.3 < (shifts > 0).float().mean() < 0.7


def test_a_trained_flow_propagator_rolls_out_and_flow_steps_is_checked(tmp_path):
    """`train` with model.flow = true logs the flow-matching loss (training and validation), selects the epoch with
    the lowest validation flow loss under train.select = "flow" and stores a checkpoint that loads with its flow;
    `rollout --flow-steps` changes the transport (a seeded rollout differs between 1 and 3 steps, repeats with the
    same); bad values and models without a flow get one sentence and exit 2."""
    import json

    import numpy as np

    from mdsurrogate.simulation.surrogate import Surrogate

    from .conftest import invoke
    from .test_calibration import stay_still_recipe, toml, write_walks

    rng = np.random.default_rng(2)
    pos = [(rng.normal(size=(1, 6, 3)) * 3 + np.cumsum(rng.normal(size=(30, 6, 3)) * 0.1, 0)).astype(np.float32)
           for _ in range(2)]
    data = write_walks(tmp_path / "ds", pos, train_frames=20)
    runs = {}
    for name, flow in (("flow", True), ("plain", False)):
        recipe = stay_still_recipe(data, epochs=4, select="flow")
        recipe["model"].update(flow=flow, flow_hidden=8, flow_layers=1, flow_steps=2)
        recipe["train"]["lr"] = 1e-2
        path = tmp_path / f"{name}.toml"
        path.write_text(toml(recipe))
        res = invoke("train", path, "--out", tmp_path / name, "--device", "cpu")
        if not flow:  # selecting on a flow the model lacks is refused before training
            assert res.exit_code == 2 and "needs a stochastic model with a flow" in " ".join(res.output.split()), \
                res.output
            recipe["train"]["select"] = "mse"
            path.write_text(toml(recipe))
            res = invoke("train", path, "--out", tmp_path / name, "--device", "cpu")
        assert res.exit_code == 0, res.output
        runs[name] = tmp_path / name
    log = (runs["flow"] / "metrics.jsonl").read_text()
    assert '"train_flow"' in log and '"train_flow"' not in (runs["plain"] / "metrics.jsonl").read_text()
    evals = [r for r in map(json.loads, log.splitlines()) if "val_flow" in r]
    assert len(evals) == 4 and len({r["val_flow"] for r in evals}) > 1
    best = min(evals, key=lambda r: r["val_flow"])
    summary = json.loads((runs["flow"] / "summary.json").read_text())
    assert summary["best_epoch"] == best["epoch"] and summary["best_val"] == best["val_flow"]
    assert Surrogate.load(runs["flow"], device="cpu").has_flow and not Surrogate.load(runs["plain"]).has_flow

    def frames(steps, seed=3):
        out = tmp_path / f"r_{steps}_{seed}.xyz"
        res = invoke("rollout", data, "--model", runs["flow"], "--steps", 2, "--out", out, "--seed", seed,
                     "--flow-steps", steps, "--overwrite")
        assert res.exit_code == 0, res.output
        return np.array([[float(v) for v in w.split()[1:4]] for w in out.read_text().splitlines()
                         if len(w.split()) > 4 and w.split()[0].isalpha()])

    one, three = frames(1), frames(3)
    assert np.array_equal(three, frames(3)) and np.abs(one - three).max() > 1e-5
    for bad, why in ((("--flow-steps", "0"), "--flow-steps must be ≥ 1, not 0"),
                     (("--flow-steps", "2", "--out", tmp_path / "w.mdsr"), "--flow-steps applies to trajectory"),
                     (("--flow-steps", "2", "--model", runs["plain"]), "--flow-steps applies to a propagator with a "
                                                                      "flow step")):
        res = invoke("rollout", data, "--model", runs["flow"], "--steps", 2, "--out", tmp_path / "w.xyz", *bad)
        assert res.exit_code == 2 and why in " ".join(res.output.split()) and "Traceback" not in res.output, \
            res.output
