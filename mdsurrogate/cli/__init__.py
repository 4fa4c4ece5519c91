"""The ``mdsurrogate`` command line: subcommands that mirror the pipeline, one module per command group.

    simulate → MD trajectory (OpenMM teacher)
    ingest  → dataset on disk        train → run directory (checkpoints, metrics)   recipes → shipped recipes
    eval    → test MSE (papers' metric), optionally after a random rigid motion
    rollout → trajectory file (PDB / XYZ / DCD / .mdsr)   demo → the whole pipeline on an embedded default
    info    → what a dataset or checkpoint holds           plot → skeleton / training-curve figures
    export  → a self-contained torch.export program (.pt2) that runs with torch alone
"""

from . import simulate, ingest, train, recipes, evaluate, rollout, plot, info, export  # noqa: F401, I001  (registration order = help order)
from .app import app


def main():  # console-script entry point
    app()


__all__ = ["app", "main"]
