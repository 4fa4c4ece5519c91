"""Time the generation of the paper-size charged N-body dataset (EGNN ``nbody_small``).

Workload: seed 43, initial conditions for 10 000 train + 2 000 val + 2 000 test simulations drawn from one
legacy RNG stream (with the official dummy noise draws), of which 3 000 train + 2 000 val + 2 000 test = 7 000
systems of 5 charged particles are integrated for 5 000 steps (49 stored frames each).

Usage: ``python benchmarks/bench_nbody_sim.py [--repeats R]``; prints one JSON line of the
form ``{"workload": ..., "seconds": ...}`` (the fastest of the repeats when ``R > 1``, to reduce the effect of
other load on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import time

from mdsurrogate.data.sources.nbody import generate_nbody_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="report the fastest of this many runs")
    args = parser.parse_args()

    times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        splits = generate_nbody_splits(3000, 2000, 2000, seed=43, stream_train=10000)
        times.append(time.perf_counter() - t0)
    sizes = {k: int(v.n_sims) for k, v in splits.items()}
    record = {
        "workload": (
            "nbody_small generation: seed 43, 10000+2000+2000 ICs drawn, "
            f"{sizes['train']}+{sizes['val']}+{sizes['test']} sims x 5 particles x 5000 steps, 49 frames"
        ),
        "seconds": round(min(times), 3),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
