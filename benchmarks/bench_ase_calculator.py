"""Calculator calls per second: mdsurrogate's SurrogateCalculator next to ASE's own EMT, same machine, same cells.

    python benchmarks/bench_ase_calculator.py                                   # CPU, random-weight potential
    python benchmarks/bench_ase_calculator.py --checkpoint runs/cu_emt --device cuda --json bench_calc.json
    OMP_NUM_THREADS=1 python benchmarks/bench_ase_calculator.py --threads 1 --sizes 32 256 2048

A *call* is one energy + forces evaluation of a periodic cubic fcc Cu cell of 4·k³ atoms (default sizes 32, 256
and 2048: k = 2, 4, 8), rattled by a fresh random displacement (σ = 0.05 Å) before every call so that neither
calculator can answer from its cache. Both calculators go through ASE's public API (``atoms.get_forces()``,
which also fills the energy); the surrogate's numbers therefore include ASE's bookkeeping, the neighbour list,
the model and the copy of the forces back to the host (a GPU synchronisation). Each timing is the median over
``--rounds`` rounds of at least ``--min-seconds`` each, after ``--warmup`` calls.

Speed does not depend on the weights, so without ``--checkpoint`` a randomly initialised potential with the
model hyper-parameters of ``--recipe`` (default: recipes/cu_emt_potential.toml) is timed. Output: a table on
stderr and a JSON object (rows + machine) on stdout's last line or in ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
AVG_NEIGHBORS = 42.0  # fcc Cu within 5 Å (12 + 6 + 24); only scales the messages


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="potential checkpoint or run dir (default: random weights)")
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "cu_emt_potential.toml"),
                   help="potential recipe whose model is timed with random weights when no --checkpoint is given")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 256, 2048], help="atoms per cell, each 4·k³")
    p.add_argument("--device", default="cpu", help="torch device of the surrogate: cpu, cuda, cuda:1")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="surrogate precision")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="minimum time per round and calculator")
    p.add_argument("--rounds", type=int, default=3, help="rounds per timing (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (allocations, CUDA kernels)")
    p.add_argument("--no-emt", action="store_true", help="time the surrogate only")
    p.add_argument("--json", dest="json_out", default=None, help="also write the JSON object to this file")
    return p.parse_args(argv)


def random_checkpoint(path: Path, recipe: str) -> Path:
    """A potential checkpoint with random weights and the recipe's model hyper-parameters (Cu only)."""
    from mdsurrogate.config import load_recipe
    from mdsurrogate.models.potential import EGNNPotential
    from mdsurrogate.training.checkpoint import Checkpoint, DatasetInfo

    rec, _ = load_recipe(recipe)
    if rec.task != "potential":
        raise SystemExit(f"--recipe: {recipe} is not a potential recipe")
    torch.manual_seed(0)
    hp = {"elements": [29], "cutoff": 5.0, **rec.model.params, "avg_neighbors": AVG_NEIGHBORS}
    model = EGNNPotential(**hp)
    with torch.no_grad():
        model.reference_energies.fill_(-0.01)
        model.energy_scale.fill_(0.3)
    return Checkpoint(
        kind="potential", model_name=model.name, hparams=hp,
        state_dict={k: v.detach() for k, v in model.state_dict().items()},
        features={"global_graph": {"kind": "radius", "cutoff": hp["cutoff"]}, "node": [], "edge": ["dist"]},
        dataset=DatasetInfo(units={"length": "Å", "energy": "eV"}, task="potential", elements=[29]),
    ).save(path)


def fcc_cell(n_atoms: int):
    from ase.build import bulk

    k = round((n_atoms / 4) ** (1 / 3))
    if 4 * k**3 != n_atoms:
        raise SystemExit(f"--sizes: {n_atoms} is not 4·k³ (32, 108, 256, 500, 864, 2048, …)")
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((k, k, k))


def calls_per_second(atoms, calc, args, seed: int) -> dict:
    """Median calls/s over rounds; every call sees freshly rattled positions."""
    rng = np.random.default_rng(seed)
    base = atoms.positions.copy()
    kicks = rng.normal(0.0, 0.05, size=(64, *base.shape))
    atoms.calc = calc
    count = 0

    def call():
        nonlocal count
        atoms.positions = base + kicks[count % len(kicks)]
        count += 1
        atoms.get_forces()

    for _ in range(args.warmup):
        call()
    rates = []
    for _ in range(args.rounds):
        n, t0 = 0, time.perf_counter()
        while True:
            call()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= args.min_seconds and n >= 2:
                break
        rates.append(n / elapsed)
    rate = statistics.median(rates)
    return {"calls_per_s": rate, "ms_per_call": 1000.0 / rate, "atom_steps_per_s": rate * len(atoms)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ase.calculators.emt import EMT

    from mdsurrogate.integrations.ase import SurrogateCalculator

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or random_checkpoint(Path(tmp) / "random_potential.pt", args.recipe)
        calc = SurrogateCalculator(ckpt, device=args.device, dtype=args.dtype)
    rows = []
    for n in args.sizes:
        atoms = fcc_cell(n)
        ours = calls_per_second(atoms, calc, args, seed=n)
        if calc.device.type == "cuda":
            ours["peak_gpu_mib"] = torch.cuda.max_memory_allocated(calc.device) / 2**20
            torch.cuda.reset_peak_memory_stats(calc.device)
        row = {"atoms": n, "surrogate": ours}
        if not args.no_emt:
            row["emt"] = calls_per_second(atoms, EMT(), args, seed=n)
            row["surrogate_over_emt"] = ours["calls_per_s"] / row["emt"]["calls_per_s"]
        rows.append(row)
        print(f"{n:>6} atoms  surrogate {ours['calls_per_s']:9.2f} calls/s ({ours['ms_per_call']:8.2f} ms)"
              + (f"   EMT {row['emt']['calls_per_s']:9.2f} calls/s ({row['emt']['ms_per_call']:8.2f} ms)   "
                 f"ratio {row['surrogate_over_emt']:.3g}" if "emt" in row else ""), file=sys.stderr, flush=True)
    device_name = torch.cuda.get_device_name(calc.device) if calc.device.type == "cuda" else platform.processor()
    result = {
        "benchmark": "ase_calculator_calls_per_second",
        "checkpoint": str(args.checkpoint) if args.checkpoint else f"random weights, model of {args.recipe}",
        "model": {k: v for k, v in calc.checkpoint.hparams.items() if k != "elements"},
        "device": str(calc.device), "device_name": device_name or platform.machine(), "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
        "min_seconds": args.min_seconds, "rounds": args.rounds, "rows": rows,
    }
    text = json.dumps(result)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
