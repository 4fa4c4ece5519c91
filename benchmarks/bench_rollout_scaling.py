"""Rollout-step time and peak memory against the number of atoms (10³ to 10⁵), as JSON lines.

    python benchmarks/bench_rollout_scaling.py [--model eghn egnn] [--copies 1 4 12 37 117] [--threads 2]
        [--cutoff 8] [--steps 2] [--device cpu]

One graph made of ``copies`` jittered AdK backbones on a lattice (``bench_rollout_md.system``: the density and the
neighbours per atom stay fixed, so the work per atom does too); a step is what ``mdsurrogate rollout`` does:
radius-graph rebuild + features + forward under no_grad, with the architectures of ``bench_rollout_md.ARCH``
(the AdK recipes). Every size runs in its own process, so that its peak RSS (``ru_maxrss``) is its own. One line
per (model, size) — step ms (wall, and CPU time of the process, which a shared machine inflates less) split into
graph + features and model, edges, RSS before and at peak — then one summary line per model: the exponent α of a
least-squares fit t ∝ N^α over the sizes (wall and CPU), and the peak RSS of the
largest size, with the targets of issue 14 (α ≤ 1.1 from 10³ to 10⁵ atoms, peak ≤ 4 GiB at 10⁵ on CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_EXPONENT = 1.1
MAX_PEAK_GIB = 4.0


def cpu_s() -> float:
    """CPU seconds (user + system) of this process: on a shared machine, the time it did not wait for a core."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one(model: str, copies: int, cutoff: float, steps: int, warmup: int, device: str) -> dict:
    """Measure one size in this process (called in a child process by ``main``)."""
    import torch

    sys.path.insert(0, str(HERE))
    import bench_rollout_md as br

    from mdsurrogate.models.registry import build_model

    dev = torch.device(device)
    x, topo, feat = br.system(copies, cutoff)
    topo, x = topo.to(dev), x.to(dev)
    spec = feat.spec
    torch.manual_seed(0)
    net = build_model(model, node_dim=spec.node_dim, edge_dim=spec.edge_dim, local_edge_dim=spec.local_edge_dim,
                      **br.ARCH[model]).to(dev).eval()
    xs, vs = x, torch.zeros_like(x) + 0.1
    rss0 = rss_mib()
    tg, tm, tc, edges = [], [], [], 0

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        for k in range(steps + warmup):
            sync()
            c0 = cpu_s()
            t0 = time.perf_counter()
            g = feat(xs, vs, topo)
            sync()
            t1 = time.perf_counter()
            pred = net(g)
            sync()
            t2 = time.perf_counter()
            if k >= warmup:
                tg.append(t1 - t0)
                tm.append(t2 - t1)
                tc.append(cpu_s() - c0)
            edges = int(g.edge_index.shape[1])
            xs = xs + 0.01 * (pred.x - xs).clamp(-1, 1)  # stay on the protein's geometry
            del g, pred
    step = [a + b for a, b in zip(tg, tm, strict=True)]
    ms = statistics.median(step) * 1e3
    return {"model": model, "atoms": int(x.shape[0]), "copies": copies, "cutoff": cutoff, "edges": edges,
            "threads": torch.get_num_threads(), "device": str(dev), "steps": steps,
            "step_ms": round(ms, 2), "step_cpu_ms": round(statistics.median(tc) * 1e3, 2),
            "graph_features_ms": round(statistics.median(tg) * 1e3, 2),
            "model_ms": round(statistics.median(tm) * 1e3, 2), "ns_per_s": round(br.NS_PER_STEP / ms * 1e3, 3),
            "rss_before_mib": round(rss0),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "torch": torch.__version__}


def fit_exponent(atoms: list[int], ms: list[float]) -> float:
    """Least-squares slope of log t against log N."""
    lx = [math.log(a) for a in atoms]
    ly = [math.log(t) for t in ms]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["eghn", "egnn"])
    ap.add_argument("--copies", type=int, nargs="+", default=[1, 4, 12, 37, 117],
                    help="AdK backbones (855 atoms each) per graph; 117 ≈ 10⁵ atoms")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cutoff", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per size (fewer at large sizes: see --max-work)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "COPIES"), help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(one(args.one[0], int(args.one[1]), args.cutoff, args.steps, args.warmup, args.device)),
              flush=True)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = str(HERE.parent) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for model in args.model:
        recs = []
        for copies in args.copies:
            big = copies >= 30
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", model, str(copies), "--threads",
                   str(args.threads), "--cutoff", str(args.cutoff), "--device", args.device,
                   "--steps", str(1 if big else args.steps), "--warmup", str(0 if big else args.warmup)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(json.dumps({"model": model, "copies": copies, "error": out.stderr.strip()[-500:]}), flush=True)
                continue
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            recs.append(rec)
            print(json.dumps(rec), flush=True)
        if len(recs) >= 2:
            alpha = fit_exponent([r["atoms"] for r in recs], [r["step_ms"] for r in recs])
            alpha_cpu = fit_exponent([r["atoms"] for r in recs], [r["step_cpu_ms"] for r in recs])
            largest = max(recs, key=lambda r: r["atoms"])
            print(json.dumps({"model": model, "summary": True, "atoms": [r["atoms"] for r in recs],
                              "step_ms": [r["step_ms"] for r in recs], "fitted_exponent": round(alpha, 3),
                              "step_cpu_ms": [r["step_cpu_ms"] for r in recs],
                              "fitted_exponent_cpu": round(alpha_cpu, 3),
                              "exponent_target": MAX_EXPONENT, "exponent_ok": alpha <= MAX_EXPONENT,
                              "largest_atoms": largest["atoms"],
                              "largest_peak_rss_gib": round(largest["peak_rss_mib"] / 1024, 3),
                              "peak_target_gib": MAX_PEAK_GIB,
                              "peak_ok": largest["peak_rss_mib"] / 1024 <= MAX_PEAK_GIB, "threads": args.threads,
                              "device": args.device}), flush=True)


if __name__ == "__main__":
    main()
