"""Time the M-complex data generation (docs/protocols.md §2) and print one JSON line per configuration.

Paper size is 1000 train + 2000 val + 2000 test systems of 5000 steps. ``--fraction`` simulates that fraction
of every split and extrapolates linearly to paper size (cost is linear in the number of systems).

    python benchmarks/bench_mcomplex_sim.py                      # (3,3) and (5,10), J = 1, 10 % of paper size
    python benchmarks/bench_mcomplex_sim.py --fraction 1 --types 1 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from mdsurrogate.data.sources.mcomplex import generate_mcomplex_splits

PAPER_SIZES = {"train": 1000, "val": 2000, "test": 2000}


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def bench(n_complexes: int, avg_size: int, n_types: int, fraction: float, n_steps: int, n_threads, seed: int):
    sizes = {k: max(1, round(v * fraction)) for k, v in PAPER_SIZES.items()}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    types, splits = generate_mcomplex_splits(
        n_complexes,
        avg_size,
        n_types,
        sizes["train"],
        sizes["val"],
        sizes["test"],
        seed=seed,
        n_steps=n_steps,
        n_threads=n_threads,
    )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n_sys = sum(sizes.values())
    n_rej = sum(s.n_rejected for s in splits.values())
    scale = sum(PAPER_SIZES.values()) / n_sys
    n_particles = [int(sum(t)) for t in types]
    return {
        "bench": "mcomplex_generation",
        "config": [n_complexes, avg_size],
        "J": n_types,
        "N_per_type": n_particles,
        "systems": n_sys,
        "n_steps": n_steps,
        "rejected": n_rej,
        "rejection_rate": round(n_rej / (n_sys + n_rej), 4),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "us_per_system_step_wall": round(wall / ((n_sys + n_rej) * n_steps) * 1e6, 3),
        "paper_size_wall_s_est": round(wall * scale, 1),
        "paper_size_cpu_s_est": round(cpu * scale, 1),
        "threads": n_threads,
        "cores_available": _cores(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
        "machine": platform.processor() or platform.machine(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["3,3", "5,10"], help="M,a pairs (default: 3,3 5,10)")
    ap.add_argument("--types", nargs="+", type=int, default=[1], help="J values (default: 1)")
    ap.add_argument("--fraction", type=float, default=0.1, help="fraction of paper size to simulate")
    ap.add_argument("--n-steps", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=None, help="default: all available cores")
    ap.add_argument("--seed", type=int, default=43)
    args = ap.parse_args()
    for cfg in args.configs:
        m, a = (int(v) for v in cfg.split(","))
        for j in args.types:
            result = bench(m, a, j, args.fraction, args.n_steps, args.threads, args.seed)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
