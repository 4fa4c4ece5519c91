"""The CUDA-side switches of ``mdsurrogate.models.accel``, exercised on CPU with the same code: compile with a
fallback, edge padding to bucketed sizes (exact for every model with edges), and the path taken under autocast."""

from __future__ import annotations

import warnings

import pytest
import torch

from mdsurrogate.models import accel, fused
from mdsurrogate.models.fused import use_edge_impl

from .conftest import make_batch, perturbed_model
from .test_fused import SMALL, WEIGHTED_MODELS

DT = torch.float64


@pytest.mark.parametrize("name", WEIGHTED_MODELS)
@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_padded_edges_change_nothing(name, impl):
    model = perturbed_model(name, **SMALL[name])
    batch, _ = make_batch(seed=9)
    E = batch.edge_index.shape[1]
    padded = accel.pad_edges(batch, multiple=64)
    assert padded.edge_index.shape[1] == accel.padded_size(E, 64) > E
    assert bool((padded.edge_index[0, 1:] >= padded.edge_index[0, :-1]).all())  # receivers stay sorted
    with torch.no_grad(), use_edge_impl(impl):
        want = model(batch)
        got = model(padded)
    assert torch.allclose(want.x, got.x, rtol=0, atol=1e-12) and torch.allclose(want.v, got.v, rtol=0, atol=1e-12)


def test_padded_edges_keep_the_gradients():
    model = perturbed_model("eghn", **SMALL["eghn"]).train()
    batch, _ = make_batch(seed=10)
    grads = []
    for b in (batch, accel.pad_edges(batch, multiple=100)):
        model.zero_grad(set_to_none=True)
        p = model(b)
        ((p.x - 1).square().sum() + p.v.square().sum() + p.aux_loss).backward()
        grads.append([q.grad.clone() for q in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_padding_a_batch_of_the_right_size_only_adds_weights():
    batch, _ = make_batch(sizes=(4, 4))
    E = batch.edge_index.shape[1]
    out = accel.pad_edges(batch, multiple=E)
    assert out.edge_index.shape[1] == E and torch.equal(out.edge_weight, torch.ones(E, dtype=DT))


def test_compile_falls_back_when_torch_compile_raises(monkeypatch):
    model = perturbed_model("egnn", **SMALL["egnn"])
    batch, _ = make_batch()

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="not available"):
        wrapped = accel.compile_model(model)
    assert not wrapped.compiled
    with torch.no_grad():
        assert torch.equal(wrapped(batch).x, model(batch).x)


def test_compile_falls_back_when_the_first_call_fails():
    model = perturbed_model("egnn", **SMALL["egnn"])
    batch, _ = make_batch()

    def fails(*args, **kwargs):
        raise RuntimeError("C++ compile error: no toolchain")

    wrapped = accel.CompiledModel(model, fails)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="running the model eagerly"):
        out = wrapped(batch)
    assert not wrapped.compiled and "toolchain" in wrapped.failed
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        assert torch.equal(wrapped(batch).x, out.x)


@pytest.mark.parametrize("name", ["egnn", "eghn"])
def test_traced_model_takes_the_reference_path_and_agrees(name):
    """Dynamo traces the reference operations (the fused kernels are skipped while compiling); the "eager"
    backend runs the traced graphs without a C++ compiler, so this checks the tracing, not Inductor."""
    torch._dynamo.reset()
    model = perturbed_model(name, **SMALL[name])
    batch, _ = make_batch()
    wrapped = accel.compile_model(model, backend="eager")
    with torch.no_grad():
        got = wrapped(batch)
        want = model(batch)
    assert wrapped.compiled
    assert torch.allclose(got.x, want.x, rtol=0, atol=1e-12) and torch.allclose(got.v, want.v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["egnn", "eghn", "gmn", "gnn", "rf"])
def test_models_trace_as_one_graph(name):
    """No graph break: the reduction plan (``scatter.Aggregator``) builds its counts without data-dependent shapes
    or Python branches while Dynamo traces, so Inductor / CUDA graphs see the whole forward; the sums agree."""
    torch._dynamo.reset()
    model = perturbed_model(name, **SMALL[name])
    batch, _ = make_batch(seed=5)
    traced = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        got, want = traced(batch), model(batch)
    assert torch.allclose(got.x, want.x, rtol=0, atol=1e-12) and torch.allclose(got.v, want.v, rtol=0, atol=1e-12)


def test_default_compile_mode():
    assert accel.default_compile_mode("cuda") == "reduce-overhead"
    assert accel.default_compile_mode("cpu") == "default"


@pytest.mark.parametrize("name", ["egnn", "eghn"])
def test_autocast_takes_the_reference_path(name, monkeypatch):
    """Under autocast (bf16 here on CPU, as on CUDA) the layers run the reference operations, which autocast
    casts; the fused kernels are not called, and the result stays close to fp32."""
    model = perturbed_model(name, **SMALL[name]).float()
    batch, _ = make_batch()
    batch = batch.to(dtype=torch.float32)
    calls = []
    real = fused._EdgePipeline.apply
    monkeypatch.setattr(fused._EdgePipeline, "apply", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        want = model(batch)
        assert calls, "the fused path runs in fp32"
        calls.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(batch)
    assert not calls
    scale = want.x.abs().max()
    assert (got.x.float() - want.x).abs().max() < 0.05 * scale
