"""Fused versus reference edge pipeline on the side-by-side workloads, interleaved, as JSON lines.

    python benchmarks/bench_fused.py [--jobs nbody_egnn:fwd,adk_egnn:train] [--threads 1] [--rounds 4]
        [--block-s 1.0] [--batch B]

Two persistent ``sbs_worker.py`` processes per job, one with ``MDSURROGATE_EDGE_IMPL=reference`` (the optimizer:
plain Adam, i.e. the code before issue 14) and one with the fused pipeline (and the recommended optimizer), run
alternately in blocks (the order flips every round, so drift cancels), as ``../shared/peers/side_by_side.py`` does
for ours against the official code. Reported: median ms of each side and the median per-round ratio
reference / fused (> 1: the fused path is faster). Needs no peer checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Worker:
    def __init__(self, impl: str, optimizer: str, job: str, threads: int, batch: int | None):
        workload, mode = job.split(":")
        env = dict(os.environ, MDSURROGATE_EDGE_IMPL=impl, SBS_OPTIMIZER=optimizer, OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
        env["PYTHONPATH"] = str(HERE.parent) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, str(HERE / "sbs_worker.py"), "--workload", workload, "--mode", mode,
               "--threads", str(threads)]
        if batch:
            cmd += ["--batch", str(batch)]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=env, bufsize=1)
        self.info = json.loads(self._expect("READY"))

    def _expect(self, tag: str) -> str:
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"worker died (rc={self.p.wait()})")
            if line.startswith(tag + " "):
                return line[len(tag) + 1:]

    def run(self, k: int) -> list[float]:
        self.p.stdin.write(f"RUN {k}\n")
        self.p.stdin.flush()
        return json.loads(self._expect("TIMES"))

    def close(self) -> dict:
        self.p.stdin.write("QUIT\n")
        self.p.stdin.flush()
        out = json.loads(self._expect("BYE"))
        self.p.wait()
        return out


def measure(job: str, threads: int, rounds: int, block_s: float, batch: int | None) -> dict:
    ref = Worker("reference", "adam", job, threads, batch)
    fused = Worker("fused", "recommended", job, threads, batch)
    sides = {"reference": ref, "fused": fused}
    k = {s: max(1, min(500, round(block_s / max(w.info["probe_s"], 1e-6)))) for s, w in sides.items()}
    times: dict[str, list[float]] = {s: [] for s in sides}
    ratios = []
    for r in range(rounds):
        blk = {}
        for s in (("reference", "fused") if r % 2 == 0 else ("fused", "reference")):
            blk[s] = sides[s].run(k[s])
            times[s] += blk[s]
        ratios.append(statistics.median(blk["reference"]) / statistics.median(blk["fused"]))
    rss = {s: w.close()["peak_rss_mib"] for s, w in sides.items()}
    workload, mode = job.split(":")
    return {"workload": workload, "mode": mode, "threads": threads, "rounds": rounds,
            "reference_ms": round(statistics.median(times["reference"]) * 1e3, 3),
            "fused_ms": round(statistics.median(times["fused"]) * 1e3, 3),
            "ratio_median": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3), "peak_rss_mib": rss, "edges": fused.info.get("edges"),
            "loadavg_1m": os.getloadavg()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", default="nbody_egnn:fwd,nbody_egnn:train,mcomplex_eghn:fwd,mcomplex_eghn:train")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--block-s", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args()
    for job in args.jobs.split(","):
        print(json.dumps(measure(job, args.threads, args.rounds, args.block_s, args.batch)), flush=True)


if __name__ == "__main__":
    main()
