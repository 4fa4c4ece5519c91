"""Rollout throughput on the AdK backbone: simulated nanoseconds per wall-clock second, as JSON lines.

    python benchmarks/bench_rollout_md.py [--model eghn egnn] [--cutoff 10] [--steps 20] [--device cpu]
                                          [--threads 2] [--copies 1]

One graph of the AdK backbone (855 atoms of MDAnalysisTests' adk_open.pdb, shipped in benchmarks/data for
machines without MDAnalysisTests) or ``--copies`` jittered copies side by side (to check that a rollout step is
linear in the number of atoms). Each step = radius-graph rebuild + one forward pass, exactly what
``mdsurrogate rollout`` does; one step advances Δ = 15 frames × 240 ps = 3.6 ns on the EGHN paper's data.
Models: the architectures of recipes/adk_eghn.toml and adk_egnn.toml (untrained: speed does not depend on the
weights). Reported: ms per step (median over ``--steps`` after 3 warm-up steps), ns/s, edges per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.data.topology import BatchTopology, EdgeSet
from mdsurrogate.models.registry import build_model

ARCH = {"eghn": {"hidden": 128, "n_clusters": 20, "layers": 4, "pool_layers": 4, "decoder_layers": 2,
                 "cut_weight": 2.0},
        "egnn": {"hidden": 128, "layers": 4}}
NS_PER_STEP = 15 * 240e-3  # Δ = 15 frames of 240 ps


def system(copies: int, cutoff: float, seed: int = 0):
    pos = np.load(Path(__file__).parent / "data" / "adk_open_backbone.npy").astype(np.float32)
    n = len(pos)
    rng = np.random.default_rng(seed)
    span = pos.max(0) - pos.min(0) + cutoff + 2.0
    side = int(np.ceil(copies ** (1 / 3)))
    blocks = [pos + 0.3 * rng.standard_normal(pos.shape).astype(np.float32)
              + np.array([i % side, (i // side) % side, i // side ** 2]) * span for i in range(copies)]
    x = torch.from_numpy(np.concatenate(blocks).astype(np.float32))
    chain = np.stack([np.arange(n - 1), np.arange(1, n)])
    local = np.concatenate([chain + k * n for k in range(copies)], axis=1)
    local = np.concatenate([local, local[::-1]], axis=1)
    index = torch.from_numpy(local)
    length0 = (x[index[0]] - x[index[1]]).norm(dim=-1)
    charge = torch.from_numpy(rng.uniform(-0.5, 0.5, len(x)).astype(np.float32))
    element = torch.from_numpy(np.tile([2, 1, 1, 3], len(x) // 4 + 1)[: len(x)])
    topo = BatchTopology(torch.tensor([0, len(x)]), {"charge": charge, "element": element},
                         {"local": EdgeSet(index, {"length0": length0})})
    spec = {"global_graph": {"kind": "radius", "cutoff": cutoff}, "node": ["speed", "charge", "one_hot:element"],
            "edge": ["dist", "dist2"], "local_edge": ["length0", "dist2"], "classes": {"element": 7}}
    return x, topo, Featurizer(spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["eghn", "egnn"])
    ap.add_argument("--cutoff", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--copies", type=int, nargs="+", default=[1])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    for copies in args.copies:
        x, topo, feat = system(copies, args.cutoff)
        topo = topo.to(dev)
        for name in args.model:
            torch.manual_seed(0)
            spec = feat.spec
            net = build_model(name, node_dim=spec.node_dim, edge_dim=spec.edge_dim, local_edge_dim=spec.local_edge_dim,
                              **ARCH[name]).to(dev).eval()
            xs, vs = x.to(dev), torch.zeros_like(x, device=dev) + 0.1
            times, edges = [], 0
            with torch.no_grad():
                for k in range(args.steps + 3):
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    g = feat(xs, vs, topo)
                    pred = net(g)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    if k >= 3:
                        times.append(time.perf_counter() - t)
                    edges = int(g.edge_index.shape[1])
                    xs, vs = xs + 0.01 * (pred.x - xs).clamp(-1, 1), vs  # stay on the protein's geometry
            ms = statistics.median(times) * 1e3
            print(json.dumps({"model": name, "atoms": int(x.shape[0]), "copies": copies, "cutoff": args.cutoff,
                              "edges": edges, "ms_per_step": round(ms, 2), "ns_per_s": round(NS_PER_STEP / ms * 1e3, 2),
                              "device": str(dev), "threads": args.threads, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
