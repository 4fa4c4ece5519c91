"""Stochastic propagators: invariant noise scales (so the model is equivariant in distribution), the Gaussian
likelihood against a dense reference, samples with the stated covariance, seeding, and batching."""

from __future__ import annotations

import math

import pytest
import torch

from mdsurrogate.models.stochastic import StochasticPropagator, is_stochastic

from .conftest import make_batch, orthogonal, perturbed_model

SMALL = {"egnn": {"hidden": 16, "layers": 2}, "eghn": {"hidden": 16, "n_clusters": 3, "layers": 2},
         "gnn": {"hidden": 16, "layers": 2}}


def build(name, noise):
    return perturbed_model(name, noise=noise, noise_hidden=8, **SMALL[name])


# (the plain MPNN baseline is not E(3)-equivariant, so neither its mean nor |μ − x| is: not in this list)
CASES = [("egnn", "node"), ("eghn", "node"), ("eghn", "cluster"), ("egnn", "modes"), ("eghn", "modes")]


@pytest.mark.parametrize(("name", "noise"), CASES)
def test_scales_are_invariant_and_mean_equivariant(name, noise):
    model = build(name, noise)
    assert is_stochastic(model)
    batch, topo = make_batch()
    q = orthogonal(2, reflect=True)
    t = torch.tensor([1.0, -4.0, 2.5], dtype=torch.float64)
    with torch.no_grad():
        out = model(batch)
        moved = model(make_batch(topo=topo, x=batch.x @ q.T + t, v=batch.v @ q.T)[0])
        # permute within graphs only: sort a random key inside each graph
        key = batch.batch.double() * 10 + torch.rand(batch.num_nodes, generator=torch.Generator().manual_seed(1))
        perm = torch.argsort(key)
        permuted = model(make_batch(topo=topo.permuted(perm), x=batch.x[perm], v=batch.v[perm])[0])
    for k in ("noise_scale",) + (("cluster_noise_scale",) if noise == "cluster" else ()):
        assert (out.extras[k] > 0).all()
        assert torch.allclose(moved.extras[k], out.extras[k], atol=1e-10, rtol=0)
    assert torch.allclose(permuted.extras["noise_scale"], out.extras["noise_scale"][perm], atol=1e-10, rtol=0)
    if noise == "modes":  # signed weights, invariant, permuted with their nodes, not all alike
        A = out.extras["noise_modes"]
        assert A.shape == (batch.num_nodes, 4) and A.abs().min() > 0 and (A < 0).any() and (A > 0).any()
        assert torch.allclose(moved.extras["noise_modes"], A, atol=1e-10, rtol=0)
        assert torch.allclose(permuted.extras["noise_modes"], A[perm], atol=1e-10, rtol=0)
    assert torch.allclose(moved.x, out.x @ q.T + t, atol=1e-9, rtol=0)


def dense_cov(pred, g, idx, noise):
    """The covariance of graph g's nodes idx, built densely from the extras (not from ``mixing``)."""
    cov = torch.diag(pred.extras["noise_scale"][idx] ** 2)
    if noise == "cluster":
        S = pred.extras["cluster_scores"][idx]
        K = S.shape[1]
        tau = pred.extras["cluster_noise_scale"][g * K:(g + 1) * K]
        cov = cov + S @ torch.diag(tau**2) @ S.T
    elif noise == "modes":
        A = pred.extras["noise_modes"][idx]
        cov = cov + A @ A.T
    return cov


def dense_nll(pred, target, batch, num_graphs, noise):
    """Reference: the multivariate normal of every graph, built densely."""
    total, n = 0.0, 0
    for g in range(num_graphs):
        idx = (batch == g).nonzero().squeeze(1)
        cov = dense_cov(pred, g, idx, noise)
        dist = torch.distributions.MultivariateNormal(pred.x[idx].T, covariance_matrix=cov)
        total -= dist.log_prob(target[idx].T).sum().item()
        n += 3 * len(idx)
    return total / n


@pytest.mark.parametrize("noise", ["node", "cluster", "modes"])
def test_likelihood_equals_dense_gaussian(noise):
    model = build("eghn", noise)
    batch, _ = make_batch()
    with torch.no_grad():
        pred = model(batch)
    target = pred.x + torch.randn(pred.x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = model.nll(pred, target, batch.batch, batch.num_graphs).item()
    assert got == pytest.approx(dense_nll(pred, target, batch.batch, batch.num_graphs, noise), rel=1e-10)


@pytest.mark.parametrize("noise", ["node", "cluster", "modes"])
def test_samples_have_the_stated_covariance_and_are_isotropic(noise):
    model = build("eghn", noise)
    batch, _ = make_batch(sizes=(6,))
    with torch.no_grad():
        pred = model(batch)
    gen = torch.Generator().manual_seed(4)
    draws = torch.stack([model.sample(pred, batch.batch, 1, gen) for _ in range(20000)]) - pred.x  # [D, N, 3]
    cov = dense_cov(pred, 0, torch.arange(6), noise)
    for c in range(3):  # each Cartesian component has the covariance D + S C Sᵀ ...
        emp = draws[:, :, c].T.cov()
        assert torch.allclose(emp, cov, atol=0.05 * cov.diagonal().max().item())
    # ... and components are uncorrelated with each other (isotropic noise: equivariant in distribution)
    cross = (draws[:, :, 0] * draws[:, :, 1]).mean(0)
    assert cross.abs().max() < 0.05 * cov.diagonal().max()


def test_seeded_samples_repeat():
    model = build("egnn", "node")
    batch, _ = make_batch()
    with torch.no_grad():
        pred = model(batch)
    a = model.sample(pred, batch.batch, batch.num_graphs, torch.Generator().manual_seed(7))
    b = model.sample(pred, batch.batch, batch.num_graphs, torch.Generator().manual_seed(7))
    c = model.sample(pred, batch.batch, batch.num_graphs, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_settings_are_clear():
    with pytest.raises(ValueError, match="hierarchical"):
        perturbed_model("egnn", noise="cluster", hidden=8, layers=1)
    with pytest.raises(ValueError, match="noise must be"):
        perturbed_model("egnn", noise="per-atom", hidden=8, layers=1)
    with pytest.raises(ValueError, match="noise_modes must be ≥ 1"):
        perturbed_model("egnn", noise="modes", noise_modes=0, hidden=8, layers=1)
    assert isinstance(build("egnn", "node"), StochasticPropagator)
    assert math.isfinite(build("egnn", "node").bias0.item())
