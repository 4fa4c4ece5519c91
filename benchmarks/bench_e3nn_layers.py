"""Our e3nn layers against e3nn's own modules computing the same numbers, on the N-body batch (100 graphs × 5
nodes, 2000 edges), as JSON lines (median ms of forward and forward + backward).

    python benchmarks/bench_e3nn_layers.py [--threads 1] [--repeats 30] [--device cpu]

* ``segnn_message``: SEGNN's first message layer σ(W([h_i, h_j, s_ij] ⊗ Y(r_ij))), hidden 32x0e+32x1o. Ours mixes
  channels per node, gathers, couples on edges (``GatedBlock``); the reference gathers, concatenates and applies
  e3nn's ``FullyConnectedTensorProduct`` and ``Gate`` (the official SEGNN code's layer).
* ``tfn_conv``: TFN's channel-wise convolution of 16 (or ``--channels``) copies of 0e..l with Y up to ``--lmax``
  and per-edge radial weights; ours ``ChannelwiseTensorProduct``, reference e3nn's "uvu" ``TensorProduct``.
"""

from __future__ import annotations

import argparse
import json

import torch
from e3nn import o3
from timing import median_seconds

from mdsurrogate.data.graph import sizes_to_ptr
from mdsurrogate.data.neighbors import complete_graph
from mdsurrogate.models.e3layers import (
    ChannelwiseTensorProduct,
    GatedBlock,
    add_mixed,
    gather_mixed,
    make_gate,
    sh_irreps,
    sh_type_irreps,
)


def timed(fn, repeats, device):
    return round(median_seconds(fn, repeats, device) * 1e3, 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--lmax", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    ptr = sizes_to_ptr(torch.full((100,), 5))
    i, j = complete_graph(ptr).to(dev)
    n = int(ptr[-1])
    x = torch.randn(n, 3, device=dev)
    y1 = o3.spherical_harmonics(sh_irreps(1), x[i] - x[j], True, normalization="component")
    common = {"threads": args.threads, "device": str(dev), "nodes": n, "edges": int(i.numel())}

    hidden = o3.Irreps("32x0e+32x1o")
    ours = GatedBlock([hidden, hidden, "3x0e"], sh_irreps(1), hidden, scalar_attr=1.0).to(dev)
    ref_tp, ref_gate = ours.tp.as_e3nn().to(dev), make_gate(hidden).to(dev)
    h = torch.randn(n, hidden.dim, device=dev, requires_grad=True)
    s = torch.randn(i.numel(), 3, device=dev)
    grad = torch.randn(i.numel(), hidden.dim, device=dev)

    def ours_msg():
        z = add_mixed(gather_mixed(ours.mix(h, 0), i), gather_mixed(ours.mix(h, 1), j))
        return ours.couple(add_mixed(z, ours.mix(s, 2)), y1)

    def ref_msg():  # e3nn has no bias here: the same map up to it
        return ref_gate(ref_tp(torch.cat([h[i], h[j], s], dim=-1), y1))

    for name, fn in (("ours", ours_msg), ("e3nn", ref_msg)):
        print(json.dumps({"bench": "segnn_message", "impl": name, **common, "forward_ms": timed(fn, args.repeats, dev),
                          "forward_backward_ms": timed(lambda f=fn: f().backward(grad), args.repeats, dev)}))

    feats = sh_type_irreps(args.channels, args.lmax)
    sh = sh_irreps(args.lmax)
    conv = ChannelwiseTensorProduct(feats, sh, [ir for _, ir in feats]).to(dev)
    instructions = [(p["in"], p["attr"], k, "uvu", True) for k, p in enumerate(conv.paths)]
    ref = o3.TensorProduct(feats, sh, conv.irreps_out, instructions, shared_weights=False,
                           internal_weights=False).to(dev)
    ysh = o3.spherical_harmonics(sh, x[i] - x[j], True, normalization="component")
    hf = torch.randn(n, feats.dim, device=dev, requires_grad=True)
    w = torch.randn(i.numel(), conv.weight_numel, device=dev, requires_grad=True)
    g2 = torch.randn(i.numel(), conv.irreps_out.dim, device=dev)
    common.update(channels=args.channels, lmax=args.lmax)
    for name, mod in (("ours", conv), ("e3nn", ref)):
        def fn(m=mod):
            return m(hf[j], ysh, w)
        print(json.dumps({"bench": "tfn_conv", "impl": name, **common, "forward_ms": timed(fn, args.repeats, dev),
                          "forward_backward_ms": timed(lambda f=fn: f().backward(g2), args.repeats, dev)}))


if __name__ == "__main__":
    main()
