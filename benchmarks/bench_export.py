"""A learned potential eager, as an exported torch.export program, and as an AOTInductor package: time per call.

    python benchmarks/bench_export.py RUN [--size 4] [--dtype float32] [--repeats 10] [--threads 1] [--aot]

RUN is a potential run directory or checkpoint (e.g. ``runs/cu_emt``). The system: a periodic cubic fcc cell of the
potential's first element, SIZE³ conventional cells (4·SIZE³ atoms), rattled by 0.05 Å; its graph is built once
(mdsurrogate's neighbour list) and given to all three, so the figures compare the model calls (energy, atom
energies, forces and stress). ``--aot`` also compiles an AOTInductor package (a C++ compiler; a minute or more).
Prints one JSON line: ms per call of each and the largest force difference from the eager model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--size", type=int, default=4)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--aot", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ase.build import bulk
    from ase.data import chemical_symbols

    from mdsurrogate.apps.export import export_model, load_exported
    from mdsurrogate.data.neighbors import graph_cells, neighbor_list
    from mdsurrogate.device import resolve_dtype
    from mdsurrogate.training.checkpoint import Checkpoint

    dtype = resolve_dtype(args.dtype)
    ck = Checkpoint.load(args.run, kind="potential")
    model = ck.build_model("cpu", dtype)
    atoms = bulk(chemical_symbols[model.elements[0]], "fcc", cubic=True).repeat((args.size,) * 3)
    atoms.rattle(0.05, seed=0)
    x = torch.tensor(atoms.positions, dtype=dtype)
    batch = torch.zeros(len(atoms), dtype=torch.long)
    cell, pbc = graph_cells(np.asarray(atoms.cell.array), atoms.pbc, 1, "cpu")
    edge_index, shifts = neighbor_list(x, model.cutoff, batch, cell, pbc)
    numbers = torch.tensor(atoms.numbers)
    call_args = (numbers, x, cell.to(dtype), batch, edge_index, shifts.to(dtype))
    species = model.species(numbers)

    def eager():
        out = model.evaluate(species, x, batch, cell, edge_index, shifts, 1, compute_forces=True,
                             compute_stress=True, create_graph=False)
        return out["energy"], out["atom_energies"], out["forces"], out["stress"]

    calls = {"eager": eager}
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_model(ck, Path(tmp) / "p.pt2", dtype=args.dtype)
        program, _, _ = load_exported(exported.path)
        calls["export"] = lambda: program(*call_args)
        export_s = {"export": exported.seconds}
        if args.aot:
            compiled = export_model(ck, Path(tmp) / "a.pt2", dtype=args.dtype, aot_inductor=True)
            package, _, _ = load_exported(compiled.path)
            calls["aot_inductor"] = lambda: package(*call_args)
            export_s["aot_inductor"] = compiled.seconds
        ref = eager()[2].detach()
        result = {"atoms": len(atoms), "edges": int(edge_index.shape[1]), "dtype": args.dtype,
                  "threads": args.threads, "export_seconds": export_s}
        for name, fn in calls.items():
            fn()
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                out = fn()
            result[f"{name}_ms"] = round((time.perf_counter() - t0) / args.repeats * 1000, 2)
            result[f"{name}_max_force_diff"] = float((out[2].detach() - ref).abs().max())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
