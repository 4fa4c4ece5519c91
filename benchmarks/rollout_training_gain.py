"""What does training for rollouts buy? A single-step run against a rollout-trained run, step by step.

    python benchmarks/rollout_training_gain.py SINGLE ROLLOUT [--baseline LIN] [--steps 20] [--starts 200] [--at 10]

SINGLE and ROLLOUT are run directories (or checkpoints) of the same model on the same dataset, one trained with
the papers' single-step loss, one with ``train.rollout_steps`` > 1 (e.g. fine-tuned from SINGLE with
``train.init_from``); LIN an optional baseline (the Linear model). Every run is rolled out ``--steps`` model steps
from ``--starts`` test starts (the dataset's held-out references: ``ingest nbody|mcomplex --horizon``), stopping a
rollout only when it turns non-finite, and one JSON line is printed:

* ``one_step_test_mse``: the papers' number (whole test split) of each run, and the rise of ROLLOUT over SINGLE;
* per run and per k = 1 … K: ``mse`` the mean position MSE over the starts (length², per coordinate; null once any
  rollout has turned non-finite), ``median_mse`` the median over starts of each rollout's MSE (a non-finite
  rollout counts as infinitely wrong, so the median stays defined while fewer than half have diverged) and
  ``finite`` how many rollouts are still finite;
* ``at``: the change of ROLLOUT against SINGLE at k = ``--at`` in the mean and the median MSE (negative = lower).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def per_start_mse(record: dict, method: str = "model") -> np.ndarray:
    """[S, K] MSE per coordinate of every start's rollout from its RMSD (RMSD² / 3); non-finite → inf."""
    rmsd = np.array([[np.nan if v is None else v for v in row] for row in record["per_start"]["rmsd"][method]],
                    dtype=float)
    mse = rmsd ** 2 / 3.0
    mse[~np.isfinite(mse)] = np.inf
    return mse


def summary(record: dict, method: str = "model") -> dict:
    mse = per_start_mse(record, method)
    mean = [None if v is None else float(v) for v in record["methods"][method]["mse"]]
    return {"mse": mean, "median_mse": [float(v) for v in np.median(mse, axis=0)],
            "finite": [int(v) for v in np.isfinite(mse).sum(0)]}


def change(new, old):
    if new is None or old is None or not np.isfinite(new) or not np.isfinite(old) or old == 0:
        return None
    return float(new / old - 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("single")
    ap.add_argument("rollout")
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--starts", type=int, default=200)
    ap.add_argument("--at", type=int, default=10)
    a = ap.parse_args()
    if not 1 <= a.at <= a.steps:
        ap.error(f"--at must be within 1 … --steps ({a.steps}), not {a.at}")

    from mdsurrogate.data.dataset import Dataset
    from mdsurrogate.simulation.evaluation import evaluate_split
    from mdsurrogate.simulation.fidelity import rollout_fidelity
    from mdsurrogate.simulation.surrogate import Surrogate

    baseline = Surrogate.load(a.baseline, device="cpu") if a.baseline else None
    report = {"steps": a.steps, "starts": a.starts, "at": a.at, "runs": {}}
    for label, path in (("single", a.single), ("rollout", a.rollout)):
        sur = Surrogate.load(path, device="cpu")
        rec = rollout_fidelity(sur, steps=a.steps, starts=a.starts, baseline=baseline, guard="finite", n_boot=100)
        test = evaluate_split(sur, Dataset(sur.dataset.path), "test")["mse"]
        report["runs"][label] = {"run": path, "one_step_test_mse": test, **summary(rec)}
        if baseline is not None and "baseline" not in report["runs"]:
            report["runs"]["baseline"] = {"run": a.baseline, **summary(rec, "baseline")}
    single, rollout = report["runs"]["single"], report["runs"]["rollout"]
    k = a.at - 1
    report["one_step_test_mse_rise"] = change(rollout["one_step_test_mse"], single["one_step_test_mse"])
    report["change_at"] = {"mse": change(rollout["mse"][k], single["mse"][k]),
                           "median_mse": change(rollout["median_mse"][k], single["median_mse"][k])}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
