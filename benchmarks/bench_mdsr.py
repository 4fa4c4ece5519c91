"""Reading a ``.mdsr`` surrogate trajectory: frame throughput and random access versus sequential reading.

    python benchmarks/bench_mdsr.py [--atoms 856] [--frames 200] [--strides 16 1] [--device auto|cpu|cuda]
                                    [--hidden 64] [--layers 4] [--threads N]

The system: ``--atoms`` points uniformly random in a cube, ~42 neighbours within the cutoff (as Cα atoms within
10 Å at 0.01 atoms/Å^3, but in units of 10 Å so that the untrained model's distance features stay O(1) and its
rollout stays bounded), small random velocities, a randomly initialised EGNN (a checkpoint saved through the real
checkpoint code) on a radius graph rebuilt every step. Needs no MDAnalysis (the format and the frame generator
are core code).

One JSON line per stride: wall time of the sequential pass (frames / s), of a random-access pass over the frames
in random order and of a reverse pass (both after the sequential pass, i.e. with the kept states), the model steps
each pass computed, and the largest |Δx| between the random-access / reverse frames and the sequential ones
(0 on the CPU; on CUDA the atomics of scatter-add may make recomputed frames differ by round-off, except with
stride 1, which keeps every state).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mdsurrogate.data.atoms import AtomTopology
from mdsurrogate.data.graph import sizes_to_ptr
from mdsurrogate.data.topology import BatchTopology
from mdsurrogate.models.registry import build_model
from mdsurrogate.simulation.mdsr import read_mdsr, write_mdsr
from mdsurrogate.training.checkpoint import save_checkpoint


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=856)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--strides", type=int, nargs="+", default=[16, 1])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    box = (a.atoms / 10.0) ** (1 / 3)  # 10 atoms per unit^3: 4/3 π · 10 ≈ 42 neighbours within 1 unit
    x0 = torch.rand(a.atoms, 3, generator=g) * box
    v0 = torch.randn(a.atoms, 3, generator=g) * 0.005
    spec = {"global_graph": {"kind": "radius", "cutoff": 1.0}, "node": ["speed"], "edge": ["dist2"]}
    model = build_model("egnn", node_dim=1, edge_dim=1, local_edge_dim=0, hidden=a.hidden, layers=a.layers)
    with tempfile.TemporaryDirectory() as tmp:
        ck = save_checkpoint(Path(tmp) / "egnn.pt", {
            "kind": "propagator", "model": {"name": "egnn", "hparams": {"hidden": a.hidden, "layers": a.layers}},
            "state_dict": model.state_dict(), "features": spec,
            "dataset": {"units": {"length": "Å", "time": "ps", "velocity": "Å/ps"}}})
        topo = BatchTopology(sizes_to_ptr(torch.tensor([a.atoms])))
        path = write_mdsr(Path(tmp) / "bench.mdsr", ck, x0, v0, topo, AtomTopology.generic(a.atoms, name_prefix="C"),
                          a.frames, 0.0, 1.0, device=str(device))
        order = np.random.default_rng(a.seed).permutation(a.frames)
        for stride in a.strides:
            run = read_mdsr(path, stride=stride)
            sync(device)
            t0 = time.perf_counter()
            seq = np.stack([f.positions for f in run.frames()])
            sync(device)
            t_seq, s_seq = time.perf_counter() - t0, run.steps_computed
            t0 = time.perf_counter()
            diff_random = max(float(np.abs(run.frame(int(k)).positions - seq[k]).max()) for k in order)
            sync(device)
            t_rand, s_rand = time.perf_counter() - t0, run.steps_computed - s_seq
            t0 = time.perf_counter()
            rev = np.stack([f.positions for f in run.frames(a.frames - 1, None, -1)])[::-1]
            sync(device)
            t_rev, s_rev = time.perf_counter() - t0, run.steps_computed - s_seq - s_rand
            print(json.dumps({
                "device": str(device), "atoms": a.atoms, "frames": a.frames, "stride": stride,
                "sequential_frames_per_s": round(a.frames / t_seq, 2),
                "random_frames_per_s": round(a.frames / t_rand, 2), "reverse_frames_per_s": round(a.frames / t_rev, 2),
                "steps": {"sequential": s_seq, "random": s_rand, "reverse": s_rev},
                "max_abs_diff": {"random": diff_random, "reverse": float(np.abs(rev - seq).max())},
                "max_abs_x": float(np.abs(seq).max()),
            }), flush=True)


if __name__ == "__main__":
    main()
