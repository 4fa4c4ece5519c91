"""The side-by-side worker (benchmarks/sbs_worker.py) still builds and runs our workloads as the code moves: one
short N-body forward through its line protocol (READY, RUN k → TIMES, QUIT → BYE)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).resolve().parents[1] / "benchmarks" / "sbs_worker.py"


def test_worker_speaks_the_driver_protocol():
    out = subprocess.run([sys.executable, str(WORKER), "--workload", "nbody_egnn", "--mode", "fwd", "--threads", "1"],
                         input="RUN 2\nQUIT\n", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.split(" ", 1)[0] in ("READY", "TIMES", "BYE")]
    kinds = [line.split(" ", 1)[0] for line in lines]
    assert kinds == ["READY", "TIMES", "BYE"], out.stdout
    ready = json.loads(lines[0].split(" ", 1)[1])
    assert ready["workload"] == "nbody_egnn" and ready["side"] == "ours"
    times = json.loads(lines[1].split(" ", 1)[1])
    assert len(times) == 2 and all(t > 0 for t in times)
