"""SEGNN and TFN building blocks against e3nn itself (same numbers as e3nn's tensor products and gate,
equivariance checked with e3nn's own test utility), gradients, and a few training steps through the Trainer.
The models' E(3)/permutation/batching symmetry is covered by the generic tests in test_equivariance.py."""

from __future__ import annotations

import json

import pytest
import torch
from e3nn import o3
from e3nn.util.test import assert_equivariant

from mdsurrogate.config import recipe_from_dict
from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.models.e3layers import (
    AttrTensorProduct,
    ChannelwiseTensorProduct,
    GatedBlock,
    make_gate,
    sh_irreps,
    weight_balanced_irreps,
)
from mdsurrogate.models.registry import build_model
from mdsurrogate.training.trainer import Trainer

from .conftest import FEATURES, make_batch

# (parts of the input, attribute lmax, output irreps): parts, repeated and unsorted types, pseudo-tensors, l = 3
CASES = [
    (["32x0e+32x1o", "32x0e+32x1o", "3x0e"], 1, "32x0e+32x0e+32x1o"),
    (["3x0e+2x1o+1x2e"], 2, "4x0e+3x1o+2x2e+1x1e"),
    (["2x1o+1x0e+1x1o"], 3, "2x0e+2x1o+2x2e+1x3o+1x0o+1x0e"),
    (["4x0e"], 1, "3x0e+3x1o"),
]


@pytest.fixture
def float64():
    """e3nn bakes CG constants in the default dtype: build the e3nn references in float64."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


def _inputs(parts, lmax, n=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, o3.Irreps(p).dim, generator=g, dtype=torch.float64) for p in parts]
    a = o3.spherical_harmonics(sh_irreps(lmax), torch.randn(n, 3, generator=g, dtype=torch.float64), True,
                              normalization="component")
    return xs, a


@pytest.mark.parametrize("parts,lmax,out", CASES)
def test_attr_tensor_product_is_e3nns_fully_connected_tensor_product(parts, lmax, out):
    torch.manual_seed(0)
    tp = AttrTensorProduct(parts, sh_irreps(lmax), out, bias=False).double()
    xs, a = _inputs(parts, lmax)
    ref = tp.as_e3nn()(torch.cat(xs, dim=-1), a)
    assert (tp(xs, a) - ref).abs().max() < 1e-12
    # mixing the parts separately and adding (the per-node gather trick) is the same map
    z = tp.mix(xs[0], 0)
    for k in range(1, len(xs)):
        z = tuple(p if q is None else q if p is None else p + q for p, q in zip(z, tp.mix(xs[k], k), strict=True))
    assert (tp.couple(z, a) - ref).abs().max() < 1e-12


def test_unit_scalar_attribute_shortcut_and_bias():
    torch.manual_seed(1)
    parts = ["5x0e+3x1o+2x2e"]
    full = AttrTensorProduct(parts, sh_irreps(2), "4x0e+2x1o+2x2e").double()
    fast = AttrTensorProduct(parts, sh_irreps(2), "4x0e+2x1o+2x2e", scalar_attr=1.0).double()
    fast.load_state_dict(full.state_dict())
    xs, a = _inputs(parts, 2)
    assert torch.allclose(a[:, 0], torch.ones_like(a[:, 0]))  # Y⁰ = 1 in "component" normalisation
    assert (fast(xs, a) - full(xs, a)).abs().max() < 1e-12
    # the bias reaches only the 0e outputs
    zero = [torch.zeros_like(x) for x in xs]
    y = full(zero, a)
    assert (y[:, :4] - full.bias).abs().max() < 1e-12 and y[:, 4:].abs().max() == 0
    with pytest.raises(ValueError, match="needs its attribute"):
        full(xs, None)


def test_gated_block_is_e3nns_gate(float64):
    torch.manual_seed(2)
    hidden = o3.Irreps("6x0e+4x1o+3x2e")
    block = GatedBlock(["6x0e+4x1o+3x2e", "2x0e"], sh_irreps(2), hidden).double()
    xs, a = _inputs(["6x0e+4x1o+3x2e", "2x0e"], 2)
    gate = make_gate(hidden).double()
    assert gate.irreps_in == block.tp.irreps_out.simplify() and gate.irreps_out == block.irreps_out
    assert (block(xs, a) - gate(block.tp(xs, a))).abs().max() < 1e-12


def test_channelwise_tensor_product_is_e3nns_uvu_product(float64):
    torch.manual_seed(3)
    irreps_in, sh = o3.Irreps("3x0e+2x1o+2x2e"), sh_irreps(2)
    conv = ChannelwiseTensorProduct(irreps_in, sh, ["0e", "1o", "2e"]).double()
    instructions = [(p["in"], p["attr"], n, "uvu", True) for n, p in enumerate(conv.paths)]
    ref = o3.TensorProduct(irreps_in, sh, conv.irreps_out, instructions, shared_weights=False,
                           internal_weights=False).double()
    assert ref.weight_numel == conv.weight_numel
    (x,), a = _inputs([irreps_in], 2)
    w = torch.randn(x.shape[0], conv.weight_numel, dtype=torch.float64)
    assert (conv(x, a, w) - ref(x, a, w)).abs().max() < 1e-12


@pytest.mark.parametrize("parity", [False, True])
def test_layers_equivariant_by_e3nns_own_test(parity, float64):
    """e3nn's assert_equivariant: random rotations (and parity) applied to every input irreps array."""
    torch.manual_seed(4)
    sh = sh_irreps(2)
    tp = AttrTensorProduct("4x0e+3x1o+2x2e", sh, "3x0e+2x1o+2x2e+1x1e").double()
    gated = GatedBlock("4x0e+3x1o+2x2e", sh, "3x0e+2x1o+2x2e").double()
    conv = ChannelwiseTensorProduct("4x0e+3x1o+2x2e", sh, ["0e", "1o", "2e"]).double()
    w = torch.randn(6, conv.weight_numel, dtype=torch.float64)  # radial weights are invariant
    kw = {"do_parity": parity, "do_translation": False}
    x = torch.randn(6, o3.Irreps("4x0e+3x1o+2x2e").dim, dtype=torch.float64)
    a = o3.spherical_harmonics(sh, torch.randn(6, 3, dtype=torch.float64), True, normalization="component")
    for fn, irreps_out in ((tp, tp.irreps_out), (gated, gated.irreps_out)):
        assert_equivariant(fn, [x, a], irreps_in=[o3.Irreps("4x0e+3x1o+2x2e"), sh], irreps_out=irreps_out,
                           tolerance=1e-9, **kw)
    assert_equivariant(lambda x, a: conv(x, a, w), [x, a], irreps_in=[o3.Irreps("4x0e+3x1o+2x2e"), sh],
                       irreps_out=conv.irreps_out, tolerance=1e-9, **kw)


def test_gradients_flow_and_match_finite_differences():
    torch.manual_seed(5)
    tp = GatedBlock(["2x0e+2x1o", "1x0e"], sh_irreps(1), "2x0e+1x1o").double()
    (x, s), a = _inputs(["2x0e+2x1o", "1x0e"], 1, n=4)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, a: tp([x, s], a), (x, a.requires_grad_(True)))
    spec = Featurizer(FEATURES).spec
    batch, _ = make_batch()
    batch.x.requires_grad_(True)
    for name, hp in (("segnn", {"hidden": 8, "lmax_hidden": 2, "lmax_attr": 2, "layers": 2}),
                     ("tfn", {"channels": 4, "lmax": 2, "layers": 3, "nonlinearity": "norm"})):
        model = build_model(name, node_dim=spec.node_dim, edge_dim=spec.edge_dim,
                            local_edge_dim=spec.local_edge_dim, **hp).double()
        out = model(batch)
        ((out.x ** 2).sum() + (out.v ** 2).sum()).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), name
        assert sum(int(g.abs().sum() > 0) for g in grads.values()) == len(grads), name  # every weight is used
        assert torch.isfinite(batch.x.grad).all()
        batch.x.grad = None


@pytest.mark.parametrize("name,hp", [
    ("tfn", {"channels": 3, "lmax": 2, "layers": 2, "nonlinearity": "norm", "aggregation": "mean"}),
    ("segnn", {"hidden": 6, "lmax_attr": 3, "layers": 1, "attr_normalization": "component", "aggregation": "mean",
               "centre": False, "edge_distance": False}),
])
def test_variants_are_equivariant(name, hp):
    """Options the generic test (defaults) does not reach: rotation + reflection + translation, float64."""
    from .conftest import orthogonal

    spec = Featurizer(FEATURES).spec
    torch.manual_seed(6)
    model = build_model(name, node_dim=spec.node_dim, edge_dim=spec.edge_dim, local_edge_dim=spec.local_edge_dim,
                        **hp).double().eval()
    batch, topo = make_batch(seed=7)
    q, t = orthogonal(2, reflect=True), torch.tensor([1.0, -4.0, 2.5], dtype=torch.float64)
    with torch.no_grad():
        out = model(batch)
        moved = model(make_batch(topo=topo, x=batch.x @ q.T + t, v=batch.v @ q.T)[0])
    assert (moved.x - (out.x @ q.T + t)).abs().max() < 1e-9
    assert (moved.v - out.v @ q.T).abs().max() < 1e-9


def test_initial_outputs_are_small_on_nbody_scale_inputs(tiny_nbody):
    """At initialisation the predicted update is O(1) or less (no blow-up through the layers), even with the raw,
    heavy-tailed squared distances among the edge features."""
    import numpy as np

    from mdsurrogate.data.dataset import Dataset

    ds = Dataset(tiny_nbody)
    feat = Featurizer(ds.features)
    x0, v0, _, _, topo = ds.gather(np.arange(20))
    batch = feat(x0, v0, topo)
    for name in ("segnn", "tfn"):
        torch.manual_seed(0)
        model = build_model(name, node_dim=feat.spec.node_dim, edge_dim=feat.spec.edge_dim, local_edge_dim=0)
        with torch.no_grad():
            out = model(batch)
        assert (out.x - batch.x).pow(2).mean().sqrt() < 2.0, name
        assert (out.v - batch.v).pow(2).mean().sqrt() < 2.0, name


def test_weight_balanced_irreps_match_segnn_rule():
    # SEGNN's rule: fewest copies n of each irrep with ≥ hidden² weights in hidden ⊗ Y → hidden (e3nn counts)
    for hidden, lh, la in ((64, 1, 1), (64, 1, 2), (64, 2, 2), (128, 2, 3)):
        irreps = weight_balanced_irreps(hidden, lh, la)
        n = irreps[0].mul
        count = o3.FullyConnectedTensorProduct(irreps, sh_irreps(la), irreps).weight_numel
        smaller = o3.Irreps([(n - 1, ir) for _, ir in irreps])
        assert count >= hidden ** 2 > o3.FullyConnectedTensorProduct(smaller, sh_irreps(la), smaller).weight_numel
    assert str(weight_balanced_irreps(64, 1, 1)) == "32x0e+32x1o"  # the paper's N-body model


def test_bad_hyperparameters_are_value_errors():
    spec = Featurizer(FEATURES).spec
    dims = {"node_dim": spec.node_dim, "edge_dim": spec.edge_dim, "local_edge_dim": spec.local_edge_dim}
    with pytest.raises(ValueError, match="aggregation"):
        build_model("segnn", aggregation="max", **dims)
    with pytest.raises(ValueError, match="nonlinearity"):
        build_model("tfn", nonlinearity="relu", **dims)
    with pytest.raises(ValueError, match="lmax"):
        build_model("tfn", lmax=0, **dims)


@pytest.mark.parametrize("name,hp", [("segnn", {"hidden": 16, "layers": 2}), ("tfn", {"channels": 8, "layers": 2})])
def test_trains_through_the_trainer(tiny_nbody, tmp_path, name, hp):
    recipe = recipe_from_dict({"data": {"path": str(tiny_nbody)}, "model": {"name": name, **hp},
                               "train": {"epochs": 4, "batch_size": 20, "lr": 1e-3, "eval_every": 1, "seed": 3,
                                         "velocity_weight": 0.1}})
    summary = Trainer(recipe, tmp_path / name, device="cpu").run()
    lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    losses = [m["train_loss"] for m in lines if "train_loss" in m]
    vals = [m["val_mse"] for m in lines if "val_mse" in m]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] and min(vals[1:]) < vals[0]  # it learns
    assert summary["epochs_run"] == 4 and summary["test_mse"] < float("inf")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name,hp", [("segnn", {"lmax_hidden": 2, "lmax_attr": 2}),
                                     ("tfn", {"lmax": 2, "channels": 8})])
def test_cuda_equivariance_and_bf16_autocast(name, hp):
    from .conftest import orthogonal

    spec = Featurizer(FEATURES).spec
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(name, node_dim=spec.node_dim, edge_dim=spec.edge_dim, local_edge_dim=spec.local_edge_dim,
                        **hp).double().to(dev).eval()
    batch, topo = make_batch()
    q, t = orthogonal(1, reflect=True), torch.tensor([3.0, -2.0, 5.0], dtype=torch.float64)
    with torch.no_grad():
        out = model(batch.to(dev))
        moved = model(make_batch(topo=topo, x=batch.x @ q.T + t, v=batch.v @ q.T)[0].to(dev))
    assert (moved.x.cpu() - (out.x.cpu() @ q.T + t)).abs().max() < 1e-9
    assert (moved.v.cpu() - out.v.cpu() @ q.T).abs().max() < 1e-9
    model = model.float().train()
    b32 = batch.to(dev, torch.float32)
    with torch.autocast("cuda", torch.bfloat16):
        pred = model(b32)
    loss = ((pred.x.float() - b32.x - 0.1) ** 2).mean() + ((pred.v.float() - b32.v) ** 2).mean()
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
