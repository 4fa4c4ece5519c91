"""Build time of ``radius_graph`` versus system size, as JSON lines, plus the fitted scaling exponent.

    python benchmarks/bench_neighbors.py [--sizes 1000 10000 100000] [--cutoff 8] [--source uniform|adk]
                                         [--device auto|cpu|cuda] [--threads N] [--repeats 5] [--pbc]

Systems (one graph of n atoms):
    uniform  n points uniformly random in a cube at ``--density`` atoms/A^3 (default 0.1, all-atom protein)
    adk      copies of the AdK protein (MDAnalysisTests PSF/DCD, 3341 atoms, frames cycled), randomly rotated,
             jittered by 0.05 A and packed on a cubic lattice with 2 A gaps, truncated to n atoms

One line per (device, size): median / min wall time over ``--repeats`` runs after a warm-up run (CUDA
synchronised), the process CPU time on CPU, edges and the path taken (dense or cell list); then one line per
device with the exponent k of a least-squares fit time ~ n^k (1 = linear).  ``--pbc`` times
``radius_graph_pbc`` in a cubic periodic box instead (uniform source only).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings

import torch

from mdsurrogate.data.neighbors import radius_graph, radius_graph_pbc


def uniform_points(n: int, density: float, g: torch.Generator) -> tuple[torch.Tensor, float]:
    box = (n / density) ** (1.0 / 3.0)
    return torch.rand(n, 3, generator=g) * box, box


def random_rotation(g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


def adk_points(n: int, g: torch.Generator) -> torch.Tensor:
    import MDAnalysis as mda
    from MDAnalysisTests.datafiles import DCD, PSF

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(PSF, DCD)
        frames = [torch.from_numpy(ts.positions.copy()) for ts in u.trajectory]
    n_copies = -(-n // frames[0].shape[0])
    per_side = math.ceil(n_copies ** (1.0 / 3.0))
    copies = []
    for c in range(n_copies):
        x = frames[c % len(frames)]
        x = (x - x.mean(0)) @ random_rotation(g).T
        copies.append(x)
    spacing = max(float((x.max(0).values - x.min(0).values).max()) for x in copies) + 2.0
    out = []
    for c, x in enumerate(copies):
        cell = torch.tensor([c % per_side, (c // per_side) % per_side, c // per_side**2], dtype=torch.float32)
        out.append(x + cell * spacing + 0.05 * torch.randn(x.shape, generator=g))
    return torch.cat(out)[:n].contiguous()


def time_call(fn, device: torch.device, repeats: int) -> tuple[list[float], list[float], object]:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result = fn()  # warm-up
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu, result


def fit_exponent(ns: list[int], ts: list[float]) -> float:
    lx = [math.log(n) for n in ns]
    ly = [math.log(t) for t in ts]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--cutoff", type=float, default=8.0)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--source", choices=["uniform", "adk"], default="uniform")
    p.add_argument("--device", default="auto", help="auto (cpu, and cuda if available), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-dense", type=int, default=None, help="passed to radius_graph (default: its own)")
    p.add_argument("--pbc", action="store_true", help="time radius_graph_pbc in a cubic periodic box")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    if args.pbc and args.source != "uniform":
        raise SystemExit("--pbc needs --source uniform")
    kwargs = {} if args.max_dense is None else {"max_dense": args.max_dense}

    g = torch.Generator().manual_seed(0)
    systems = {}
    for n in args.sizes:
        if args.source == "uniform":
            systems[n] = uniform_points(n, args.density, g)
        else:
            systems[n] = (adk_points(n, g), None)

    for name in devices:
        device = torch.device(name)
        ns, medians = [], []
        for n in args.sizes:
            x_cpu, box = systems[n]
            x = x_cpu.to(device)
            if args.pbc:
                cell = torch.eye(3, device=device) * box

                def fn(x=x, cell=cell):
                    return radius_graph_pbc(x, args.cutoff, cell, True, **kwargs)[0]

            else:

                def fn(x=x):
                    return radius_graph(x, args.cutoff, **kwargs)

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            wall, cpu, edges = time_call(fn, device, args.repeats)
            max_dense = kwargs.get("max_dense", radius_graph.__kwdefaults__["max_dense"])
            row = {
                "bench": "radius_graph_pbc" if args.pbc else "radius_graph",
                "device": name,
                "threads": torch.get_num_threads() if name == "cpu" else None,
                "source": args.source,
                "n": n,
                "cutoff": args.cutoff,
                "path": "dense" if n <= max_dense else "cell_list",
                "edges": int(edges.shape[1]),
                "edges_per_atom": round(edges.shape[1] / n, 2),
                "median_s": round(statistics.median(wall), 5),
                "min_s": round(min(wall), 5),
                "cpu_median_s": round(statistics.median(cpu), 5) if name == "cpu" else None,
                "ns_per_edge": round(1e9 * statistics.median(wall) / max(1, edges.shape[1]), 1),
                "repeats": args.repeats,
            }
            if device.type == "cuda":
                row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            print(json.dumps(row), flush=True)
            ns.append(n)
            medians.append(statistics.median(wall))
        if len(ns) >= 2:
            fit = {
                "fit": "median_s ~ n^k",
                "device": name,
                "sizes": ns,
                "exponent": round(fit_exponent(ns, medians), 3),
            }
            print(json.dumps(fit), flush=True)


if __name__ == "__main__":
    main()
