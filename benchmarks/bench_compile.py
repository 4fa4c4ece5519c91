"""Eager against ``torch.compile`` (Inductor) on the small batches of issue 14, interleaved in one process, as JSON.

    python benchmarks/bench_compile.py [--workload nbody:egnn mcomplex:eghn] [--threads 2] [--rounds 3]
                                       [--repeats 20] [--device cpu]

For each workload (``bench_models.workload`` name and model) two copies of the model with the same weights: one
eager (the fused edge pipeline), one wrapped by ``mdsurrogate.models.accel.compile_model`` (while Dynamo traces,
the layers take the reference path, which Inductor fuses). Reported per workload: the compile time of the first
train step and of the first forward (s), the largest difference between the two models' positions after one
identical Adam step (the compiled graph must compute the same function), and per round the median ms of a train
step (zero_grad + forward + position/velocity MSE + backward + Adam) and of a no-grad forward, eager and compiled
alternating within each round so that drift of a shared machine hits both alike. Needs a C++ compiler on CPU;
without one ``compile_model`` falls back to eager and ``compiled`` is false.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models as bm  # noqa: E402
from timing import median_seconds  # noqa: E402

from mdsurrogate.models.accel import compile_model  # noqa: E402
from mdsurrogate.models.registry import build_model  # noqa: E402


def measure(workload: str, model_name: str, device: torch.device, rounds: int, repeats: int) -> dict:
    feat, x, v, topo = bm.workload(workload, device)
    g = feat(x, v, topo)
    spec = feat.spec
    hp = bm.WORKLOAD_MODEL_ARGS.get((workload, model_name), bm.MODEL_ARGS.get(model_name, {}))
    target = x + 0.1

    def build():
        torch.manual_seed(0)
        return build_model(model_name, node_dim=spec.node_dim, edge_dim=spec.edge_dim,
                           local_edge_dim=spec.local_edge_dim, **hp).to(device)

    eager_model, inner = build(), build()
    compiled_model = compile_model(inner)
    steps, forwards = {}, {}
    for label, model, params in (("eager", eager_model, eager_model.parameters()),
                                 ("compiled", compiled_model, inner.parameters())):
        opt = bm.make_adam(params, lr=1e-4)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            p = model(g)
            loss = ((p.x - target) ** 2).mean() + ((p.v - v) ** 2).mean()
            if p.aux_loss is not None:
                loss = loss + p.aux_loss
            loss.backward()
            opt.step()

        def forward(model=model):
            with torch.no_grad():
                return model(g)

        steps[label], forwards[label] = step, forward
    t = time.perf_counter()
    steps["compiled"]()
    compile_train_s = time.perf_counter() - t
    t = time.perf_counter()
    forwards["compiled"]()
    compile_forward_s = time.perf_counter() - t
    steps["eager"]()
    max_diff = float((forwards["eager"]().x - forwards["compiled"]().x).abs().max())
    per_round = []
    for _ in range(rounds):
        row = {}
        for label in ("eager", "compiled"):
            row[f"{label}_train_ms"] = round(median_seconds(steps[label], repeats, device) * 1e3, 3)
            row[f"{label}_forward_ms"] = round(median_seconds(forwards[label], repeats, device) * 1e3, 3)
        per_round.append(row)
    med = {k: round(statistics.median(r[k] for r in per_round), 3) for k in per_round[0]}
    return {"workload": workload, "model": model_name, "device": str(device), "threads": torch.get_num_threads(),
            "compiled": compiled_model.compiled, "compile_train_s": round(compile_train_s, 1),
            "compile_forward_s": round(compile_forward_s, 1), "max_abs_dx_after_one_step": max_diff,
            **med, "train_speedup": round(med["eager_train_ms"] / med["compiled_train_ms"], 3),
            "forward_speedup": round(med["eager_forward_ms"] / med["compiled_forward_ms"], 3),
            "rounds": per_round, "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", nargs="+", default=["nbody:egnn", "mcomplex:eghn"],
                    help="WORKLOAD:MODEL pairs (bench_models workloads nbody, mcomplex, adk)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for item in a.workload:
        workload, _, model_name = item.partition(":")
        rec = measure(workload, model_name or "egnn", torch.device(a.device), a.rounds, a.repeats)
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
