"""Our side of the side-by-side driver (``../shared/peers/side_by_side.py``, set ``OURS_WORKER`` to this file).

One (workload, mode) measurement behind the driver's line protocol; the workloads are built from this folder's
own builders (``bench_models.workload``, ``bench_rollout_md.system``), so the comparison follows the code:

    python benchmarks/sbs_worker.py --side ours --workload W --mode fwd|train|step --threads N [--batch B]
        [--warmup K] [--variant paper|official]

Protocol: after building and warming up it prints ``READY <json>``; then ``RUN k`` → ``TIMES <json list of k
seconds>``; ``QUIT`` → ``BYE <json with peak RSS in MiB>``.

Workloads (performance.md; the same sizes, widths, K and cutoffs as the peer side):
    nbody_egnn      EGNN 4 × 64 on N-body 100 × 5 (complete graphs)
    nbody_segnn     SEGNN (hidden 64 weight-balanced → 32x0e+32x1o, l ≤ 1, 4 layers) on N-body 100 × 5
    mcomplex_eghn   EGHN hidden 64, K = 5, 3/3/1 layers on 100 × 25 (5 complexes of 5)
    adk_egnn        EGNN 4 × 64 on the AdK backbone, B × 855 (default B = 8), 8 Å radius graph
    adk_eghn        EGHN hidden 128, K = 20, 4/4/2 layers on AdK B × 855, 8 Å global + bond local graph
    rollout_eghn    one rollout step on 1 × 855: radius-graph rebuild + features + forward (no grad)
    rollout_egnn    the same with EGNN 4 × 64 (hidden 64, as the peer's EGNN_vel)

Modes: ``fwd`` = features (graph fixed) + forward under no_grad in eval mode; ``train`` = zero_grad + forward +
loss + backward + optimizer step; ``step`` = rollout step (rollout_* only).

Environment: ``MDSURROGATE_EDGE_IMPL`` = ``fused`` (default) or ``reference`` picks the edge pipeline of the
message-passing layers (see ``mdsurrogate.models.fused``), ``SBS_OPTIMIZER`` = ``adam`` (plain
``torch.optim.Adam``, as the peers) or ``recommended`` (default: ``bench_models.make_adam``, the construction we
recommend to the trainer).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--side", choices=["ours"], default="ours", help="this worker only runs our side")
ap.add_argument("--workload", required=True)
ap.add_argument("--mode", choices=["fwd", "train", "step"], required=True)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--batch", type=int, default=None)
ap.add_argument("--warmup", type=int, default=None)
ap.add_argument("--variant", default="paper", help="EGHN variant: paper (default) or official")
ap.add_argument("--ours-hidden-rollout-egnn", type=int, default=64)
args = ap.parse_args()

os.environ["BENCH_THREADS"] = str(args.threads)
import torch  # noqa: E402

torch.set_num_threads(args.threads)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_models as bm  # noqa: E402
import bench_rollout_md as br  # noqa: E402

from mdsurrogate.data.graph import GraphBatch  # noqa: E402
from mdsurrogate.data.topology import EdgeSet  # noqa: E402
from mdsurrogate.models.registry import build_model  # noqa: E402

BIG = args.workload.startswith(("adk", "rollout"))
info: dict = {"side": "ours", "workload": args.workload, "mode": args.mode, "threads": args.threads,
              "worker": "benchmarks/sbs_worker.py"}
try:
    from mdsurrogate.models import fused as _fused

    info["edge_impl"] = _fused.edge_impl()
except ImportError:  # the code before the fused pipeline
    info["edge_impl"] = "reference"

WORKLOADS = {"nbody_egnn": ("nbody", "egnn"), "nbody_segnn": ("nbody", "segnn"),
             "mcomplex_eghn": ("mcomplex", "eghn"), "adk_egnn": ("adk", "egnn"), "adk_eghn": ("adk", "eghn")}
LR_WD = {"nbody": (5e-4, 1e-12), "mcomplex": (5e-4, 1e-12), "adk": (5e-5, 1e-4)}  # the peers' settings


def optimizer(model, lr, wd):
    if os.environ.get("SBS_OPTIMIZER", "recommended") == "recommended" and hasattr(bm, "make_adam"):
        info["optimizer"] = "bench_models.make_adam"
        return bm.make_adam(model.parameters(), lr=lr, weight_decay=wd)
    info["optimizer"] = "torch.optim.Adam"
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)


def build_rollout():
    """bench_rollout_md's step: rebuild the graph + features + forward, then move the atoms."""
    name = "eghn" if args.workload == "rollout_eghn" else "egnn"
    x, topo, feat = br.system(1, 8.0)
    spec = feat.spec
    hp = dict(br.ARCH[name])
    if name == "egnn":
        hp["hidden"] = args.ours_hidden_rollout_egnn  # 64 = the peer's EGNN_vel; the recipe uses 128
    if name == "eghn" and args.variant != "paper":
        hp["variant"] = args.variant
    torch.manual_seed(0)
    net = build_model(name, node_dim=spec.node_dim, edge_dim=spec.edge_dim, local_edge_dim=spec.local_edge_dim,
                      **hp).eval()
    state = {"x": x, "v": torch.zeros_like(x) + 0.1}
    g = feat(state["x"], state["v"], topo)
    info.update(nodes=int(x.shape[0]), edges=int(g.edge_index.shape[1]), local_edges=int(g.local_edge_index.shape[1]),
                hparams=hp, params=sum(p.numel() for p in net.parameters()))

    def fn():
        with torch.no_grad():
            g = feat(state["x"], state["v"], topo)
            pred = net(g)
            state["x"] = state["x"] + 0.01 * (pred.x - state["x"]).clamp(-1, 1)
    return fn


def build_model_workload():
    wl, model_name = WORKLOADS[args.workload]
    feat, x, v, topo = bm.workload(wl, torch.device("cpu"), args.batch)
    spec = feat.spec
    hp = dict(bm.WORKLOAD_MODEL_ARGS.get((wl, model_name), bm.MODEL_ARGS.get(model_name, {})))
    if model_name == "eghn" and args.variant != "paper":
        hp["variant"] = args.variant
    torch.manual_seed(0)
    model = build_model(model_name, node_dim=spec.node_dim, edge_dim=spec.edge_dim,
                        local_edge_dim=spec.local_edge_dim, **hp)
    glob = feat.global_edges(x, topo)  # graph construction is not timed (as on the peer side)
    local = topo.edge_sets.get("local") or EdgeSet(torch.zeros(2, 0, dtype=torch.long))
    info.update(nodes=int(x.shape[0]), edges=int(glob.index.shape[1]), local_edges=int(local.index.shape[1]),
                hparams=hp, params=sum(p.numel() for p in model.parameters()),
                node_dim=spec.node_dim, edge_dim=spec.edge_dim, local_edge_dim=spec.local_edge_dim)
    if model_name == "segnn":
        info["hidden_irreps"] = str(model.hidden_irreps)
    target = x + 0.1

    def forward():
        # per-batch featurisation with the graph fixed (the peer's forward recomputes |v| and |dx|² too)
        g = GraphBatch(x=x, v=v, h=feat.node_features(x, v, topo), edge_index=glob.index,
                       edge_attr=feat.edge_features(spec.edge, x, glob, topo), local_edge_index=local.index,
                       local_edge_attr=feat.edge_features(spec.local_edge, x, local, topo),
                       batch=topo.batch, ptr=topo.ptr)
        return model(g)

    if args.mode == "train":
        model.train()
        opt = optimizer(model, *LR_WD[wl])

        def fn():
            opt.zero_grad(set_to_none=True)
            p = forward()
            loss = ((p.x - target) ** 2).mean()  # position MSE (+ EGHN's weighted cut loss), as the peer
            if p.aux_loss is not None:
                loss = loss + p.aux_loss
            loss.backward()
            opt.step()
        return fn
    model.eval()

    def fn():
        with torch.no_grad():
            forward()
    return fn


def main():
    if args.workload.startswith("rollout"):
        if args.mode != "step":
            raise SystemExit("rollout workloads take --mode step")
        fn = build_rollout()
    elif args.workload in WORKLOADS:
        fn = build_model_workload()
    else:
        raise SystemExit(f"unknown workload {args.workload}; known: {', '.join(WORKLOADS)}, rollout_eghn, "
                         "rollout_egnn")
    warm = args.warmup if args.warmup is not None else (1 if BIG else 3)
    t0 = time.perf_counter()
    for _ in range(warm):
        fn()
    info["warmup_s"] = (time.perf_counter() - t0) / max(warm, 1)
    t = time.perf_counter()
    fn()
    info["probe_s"] = time.perf_counter() - t
    info["torch_threads"] = torch.get_num_threads()
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "RUN":
            ts = []
            for _ in range(int(cmd[1])):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            print("TIMES " + json.dumps(ts), flush=True)
        elif cmd[0] == "QUIT":
            break
    print("BYE " + json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
          flush=True)


if __name__ == "__main__":
    main()
