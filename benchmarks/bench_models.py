"""Forward and train-step throughput of the propagators on the workloads of performance.md.

One model on one workload, as one JSON line:

    python benchmarks/bench_models.py [--workload nbody] [--model egnn] [--device cpu] [--threads 2] [--repeats 30]

Every registered model (``MODELS``, so models added later are included) on the N-body and M-complex batches, as a
Markdown table on stdout plus ``OUT.json`` (one record per model and workload) and ``OUT.md``:

    python benchmarks/bench_models.py --all [--workload nbody,mcomplex] [--out bench_models] [--device cpu]

Workloads (exactly those the official implementations were timed on):
    nbody     100 graphs × 5 nodes, complete graphs (EGNN paper Table 2's batch)
    mcomplex  100 graphs × 25 nodes (5 complexes of 5), complete global graph, intra-complex local graph
    adk       8 graphs × 855 nodes, ~40 neighbours per node (AdK backbone at 8 Å), bond-like local chain

Models are built with ``MODEL_ARGS`` where given, else with their constructor's defaults (the papers' sizes).
"train step" = zero_grad + forward + loss + backward + Adam step (as in performance.md). Timings: median of
``--repeats`` runs after warm-up. Peak memory: CUDA max allocated, or the process's peak RSS on CPU. A model that
fails on a workload (e.g. a missing optional dependency) gets an ``error`` entry instead of times.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.data.graph import sizes_to_ptr
from mdsurrogate.data.topology import BatchTopology, EdgeSet
from mdsurrogate.models import registry  # noqa: F401  (every model registers itself)
from mdsurrogate.models.base import MODELS, count_parameters
from mdsurrogate.models.registry import build_model

MODEL_ARGS = {
    "egnn": {"hidden": 64, "layers": 4},
    "linear": {},
    "eghn": {"hidden": 64, "n_clusters": 5},
}
# performance.md times the AdK EGHN with the 2023 backbone config (docs/protocols.md §6)
WORKLOAD_MODEL_ARGS = {
    ("adk", "eghn"): {"hidden": 128, "n_clusters": 20, "layers": 4, "pool_layers": 4, "decoder_layers": 2},
}


DEFAULT_BATCH = {"nbody": 100, "mcomplex": 100, "adk": 8}


def workload(name: str, device, batch: int | None = None):
    """(featurizer, x [ΣN, 3], v [ΣN, 3], topology) of one workload; ``batch`` graphs (default: performance.md's
    ``DEFAULT_BATCH``). The random draws do not depend on ``batch`` beyond the sizes of the tensors drawn."""
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
    b = batch or b
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


def make_adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer construction recommended to the trainer (issue 14): ``torch.optim.Adam(..., fused=True)``,
    one fused kernel for every parameter per step (CPU and CUDA in torch ≥ 2.4), falling back to
    ``foreach=True`` where the fused kernel is not available (another device or dtype). The same Adam update,
    up to float rounding."""
    params = [p for p in params if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def timed(fn, repeats, device):
    return median_seconds(fn, repeats, device, warmup=max(3, repeats // 5))


# EGNN paper, Table 2: forward time of one batch of 100 N-body systems on a GTX 1080 Ti, in ms (docs/protocols.md §7)
PAPER_NBODY_FORWARD_MS = {"linear": 0.1, "se3_transformer": 134.6, "tfn": 34.3, "gnn": 3.2, "rf": 3.9, "egnn": 6.2}


def measure(model_name: str, workload_name: str, device: torch.device, repeats: int, amp: bool = False) -> dict:
    """Forward, train-step and featurisation times of one model on one workload (see the module docstring)."""
    feat, x, v, topo = workload(workload_name, device)
    g = feat(x, v, topo)
    spec = feat.spec
    torch.manual_seed(0)
    hparams = WORKLOAD_MODEL_ARGS.get((workload_name, model_name), MODEL_ARGS.get(model_name, {}))
    model = build_model(model_name, node_dim=spec.node_dim, edge_dim=spec.edge_dim,
                        local_edge_dim=spec.local_edge_dim, **hparams).to(device)
    opt = make_adam(model.parameters(), lr=1e-4) if any(p.requires_grad for p in model.parameters()) else None
    target = x + 0.1

    def forward():
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=amp):
            model(g)

    def step():
        if opt:
            opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", torch.bfloat16, enabled=amp):
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
    t_fwd = timed(forward, repeats, device)
    t_step = timed(step, repeats, device)
    t_graph = timed(rebuild, repeats, device)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    b = topo.num_graphs
    return {
        "workload": workload_name, "model": model_name, "device": str(device),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "graphs_per_batch": b, "nodes": int(topo.ptr[-1]),
        "edges": int(g.edge_index.shape[1]), "parameters": count_parameters(model),
        "forward_ms": round(t_fwd * 1e3, 3), "train_step_ms": round(t_step * 1e3, 3),
        "featurize_ms": round(t_graph * 1e3, 3),
        "forward_graphs_per_s": round(b / t_fwd, 1), "train_graphs_per_s": round(b / t_step, 1),
        "peak_memory_mb": round(peak / 2**20, 1), "torch": torch.__version__, "amp": amp,
    }


def markdown_table(records: list[dict], workloads: list[str]) -> str:
    """model | parameters | per workload: forward ms, train step ms | the EGNN paper's N-body forward time."""
    by = {(r["model"], r["workload"]): r for r in records}
    models = list(dict.fromkeys(r["model"] for r in records))
    head = ["model", "parameters"]
    for w in workloads:
        head += [f"{w} forward ms", f"{w} train step ms"]
    head.append("EGNN paper N-body forward ms (GTX 1080 Ti)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        params = next((by[m, w]["parameters"] for w in workloads if "parameters" in by.get((m, w), {})), None)
        cells = [m, f"{params:,}" if params is not None else "–"]
        for w in workloads:
            r = by.get((m, w), {})
            if "error" in r:
                cells += [f"error: {r['error'][:60]}", "–"]
            else:
                cells += [f"{r['forward_ms']:.2f}" if r else "–", f"{r['train_step_ms']:.2f}" if r else "–"]
        paper = PAPER_NBODY_FORWARD_MS.get(m)
        cells.append(f"{paper:g}" if paper is not None else "–")
        lines.append("| " + " | ".join(cells) + " |")
    r0 = next((r for r in records if "device_name" in r), {"device_name": "?", "threads": "?", "torch": "?"})
    lines += ["", f"Device {r0['device_name']}, {r0['threads']} thread(s), torch {r0['torch']}; median of the "
              "timed repeats; batches of performance.md (N-body: 100 × 5 nodes; M-complex: 100 × 25 nodes)."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default=None, help="nbody, mcomplex, adk, or a comma-separated list "
                    "(default: nbody; with --all: nbody,mcomplex)")
    ap.add_argument("--model", default="egnn", help="a registered model, a comma-separated list, or 'all'")
    ap.add_argument("--all", action="store_true", help="every registered model; Markdown table + OUT.json/OUT.md")
    ap.add_argument("--out", default="bench_models", help="with --all: write OUT.json and OUT.md")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    table = args.all or args.model == "all"
    workloads = (args.workload or ("nbody,mcomplex" if table else "nbody")).split(",")
    for w in workloads:
        if w not in ("nbody", "mcomplex", "adk"):
            raise SystemExit(f"unknown workload {w!r}; choose nbody, mcomplex or adk")
    models = sorted(MODELS) if table else args.model.split(",")
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; registered: {', '.join(sorted(MODELS))}")
    records = []
    for m in models:
        for w in workloads:
            try:
                rec = measure(m, w, device, args.repeats, args.amp)
            except Exception as exc:  # noqa: BLE001 - report the failure and go on with the other models
                if not table:
                    raise
                rec = {"workload": w, "model": m, "error": f"{exc.__class__.__name__}: {exc}"}
            records.append(rec)
            if table:
                print(f"{m} on {w}: " + (rec["error"] if "error" in rec else
                                         f"forward {rec['forward_ms']} ms, train step {rec['train_step_ms']} ms"),
                      file=sys.stderr)
            else:
                print(json.dumps(rec))
    if table:
        md = markdown_table(records, workloads)
        out = Path(args.out)
        out.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")
        out.with_suffix(".md").write_text(md)
        print(md)


if __name__ == "__main__":
    main()
