"""Forward and train-step throughput of the propagators on the workloads of performance.md, as JSON lines.

    python benchmarks/bench_models.py [--workload nbody] [--model egnn] [--device cpu] [--threads 2] [--repeats 30]

Workloads (exactly those the official implementations were timed on):
    nbody     100 graphs × 5 nodes, complete graphs (EGNN paper Table 2's batch)
    mcomplex  100 graphs × 25 nodes (5 complexes of 5), complete global graph, intra-complex local graph
    adk       8 graphs × 855 nodes, ~40 neighbours per node (AdK backbone at 8 Å), bond-like local chain

"train step" = zero_grad + forward + loss + backward + Adam step (as in performance.md). Timings: median of
``--repeats`` runs after warm-up. Peak memory: CUDA max allocated, or the process's peak RSS on CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.data.graph import sizes_to_ptr
from mdsurrogate.data.topology import BatchTopology, EdgeSet
from mdsurrogate.models.base import build_model

MODEL_ARGS = {
    "egnn": {"hidden": 64, "layers": 4},
    "linear": {},
    "eghn": {"hidden": 64, "n_clusters": 5},
}
# performance.md times the AdK EGHN with the 2023 backbone config (protocols.md §6)
WORKLOAD_MODEL_ARGS = {
    ("adk", "eghn"): {"hidden": 128, "n_clusters": 20, "layers": 4, "pool_layers": 4, "decoder_layers": 2},
}


def workload(name: str, device):
    g = torch.Generator().manual_seed(0)
    if name == "nbody":
        b, n, groups = 100, 5, None
        spec = {"global_graph": {"kind": "complete"}, "node": ["speed"], "edge": ["charge_product", "dist2"]}
        scale = 1.0
    elif name == "mcomplex":
        b, n, groups = 100, 25, 5
        spec = {"global_graph": {"kind": "complete"}, "node": ["speed"],
                "edge": ["charge_product", "same:group", "dist2"],
                "local_edge": ["charge_product", "same:group", "dist2"]}
        scale = 2.2
    elif name == "adk":
        b, n, groups = 8, 855, None
        spec = {"global_graph": {"kind": "radius", "cutoff": 8.0}, "node": ["speed", "charge"],
                "edge": ["dist", "dist2"], "local_edge": ["dist2"]}
        scale = 1.0  # real AdK backbone coordinates, see adk_backbone_copies
    else:
        raise SystemExit(f"unknown workload {name}")
    ptr = sizes_to_ptr(torch.full((b,), n))
    x = torch.randn(b * n, 3, generator=g) * scale
    if name == "adk":
        x = adk_backbone_copies(b, g)
    v = torch.randn(b * n, 3, generator=g) * 0.5
    charge = torch.randint(0, 2, (b * n,), generator=g).float() * 2 - 1
    props = {"charge": charge}
    local = torch.zeros(2, 0, dtype=torch.long)
    if groups:
        group = torch.arange(n).repeat(b) // (n // groups)
        props["group"] = group
        gid = torch.repeat_interleave(torch.arange(b), n) * groups + group
        i, j = torch.meshgrid(torch.arange(b * n), torch.arange(b * n), indexing="ij")
        m = (gid[i] == gid[j]) & (i != j)
        local = torch.stack([i[m], j[m]])
    elif name == "adk":
        idx = torch.arange(b * n)
        keep = (idx % n) != n - 1
        fwd = torch.stack([idx[keep], idx[keep] + 1])
        local = torch.cat([fwd, fwd.flip(0)], 1)
    topo = BatchTopology(ptr, props, {"local": EdgeSet(local)}).to(device)
    feat = Featurizer(spec)
    return feat, x.to(device), v.to(device), topo


def adk_backbone_copies(copies: int, g: torch.Generator) -> torch.Tensor:
    """[copies·855, 3] the AdK backbone of MDAnalysisTests' adk_open.pdb, each copy jittered by 0.3 Å (as in
    performance.md); read from benchmarks/data when MDAnalysis(Tests) is not installed."""
    try:
        import MDAnalysis as mda
        from MDAnalysisTests.datafiles import PDB_small

        pos = torch.from_numpy(mda.Universe(PDB_small).select_atoms("backbone").positions.astype("float32"))
    except ImportError:  # e.g. a GPU machine without MDAnalysis: the same coordinates, saved from adk_open.pdb
        pos = torch.from_numpy(np.load(Path(__file__).parent / "data" / "adk_open_backbone.npy"))
    pos = pos[:855]
    return torch.cat([pos + 0.3 * torch.randn(pos.shape, generator=g) for _ in range(copies)])


def timed(fn, repeats, device):
    for _ in range(max(3, repeats // 5)):
        fn()
    ts = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="nbody", choices=["nbody", "mcomplex", "adk"])
    ap.add_argument("--model", default="egnn")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    feat, x, v, topo = workload(args.workload, device)
    g = feat(x, v, topo)
    spec = feat.spec
    torch.manual_seed(0)
    model = build_model(args.model, node_dim=spec.node_dim, edge_dim=spec.edge_dim,
                        local_edge_dim=spec.local_edge_dim, **WORKLOAD_MODEL_ARGS.get((args.workload, args.model), MODEL_ARGS.get(args.model, {}))).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4) if any(p.requires_grad for p in model.parameters()) else None
    target = x + 0.1

    def forward():
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=args.amp):
            model(g)

    def step():
        if opt:
            opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", torch.bfloat16, enabled=args.amp):
            p = model(g)
        loss = ((p.x.float() - target) ** 2).mean() + ((p.v.float() - v) ** 2).mean()
        if p.aux_loss is not None:
            loss = loss + p.aux_loss.float()
        if opt:
            loss.backward()
            opt.step()

    def rebuild():
        feat(x, v, topo)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_fwd = timed(forward, args.repeats, device)
    t_step = timed(step, args.repeats, device)
    t_graph = timed(rebuild, args.repeats, device)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    b = topo.num_graphs
    print(json.dumps({
        "workload": args.workload, "model": args.model, "device": str(device),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": args.threads, "graphs_per_batch": b, "nodes": int(topo.ptr[-1]), "edges": int(g.edge_index.shape[1]),
        "forward_ms": round(t_fwd * 1e3, 3), "train_step_ms": round(t_step * 1e3, 3),
        "featurize_ms": round(t_graph * 1e3, 3),
        "forward_graphs_per_s": round(b / t_fwd, 1), "train_graphs_per_s": round(b / t_step, 1),
        "peak_memory_mb": round(peak / 2**20, 1), "torch": torch.__version__, "amp": args.amp,
    }))


if __name__ == "__main__":
    main()
