"""Metrics of a run: ``metrics.jsonl`` (one JSON object per logged epoch), ``metrics.csv`` (the same rows with a
fixed header) and, on request, TensorBoard event files (the optional ``tensorboard`` package).

A resumed run first cuts both files back to the epochs its checkpoint covers, so an epoch that was logged after
the last checkpoint (and is trained again) never appears twice.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..errors import UserError
from ..io.atomic import atomic_file

NOT_SCALARS = ("event",)


def read_jsonl(path: Path) -> list[dict]:
    """The complete JSON lines of ``path`` (a line cut off by a killed process is dropped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLog:
    """Appends epoch records to metrics.jsonl / metrics.csv (and TensorBoard). Only the main process writes.

    Args:
        run_dir: the run directory. columns: the CSV header (``epoch`` first); keys of a record outside it are
            kept in the JSON lines only. enabled: False on the other ranks of a distributed run.
        tensorboard: also write TensorBoard scalars to ``run_dir/tensorboard``.
    """

    def __init__(self, run_dir: Path, columns: list[str], *, enabled: bool = True, tensorboard: bool = False):
        self.run_dir = Path(run_dir)
        self.columns = list(dict.fromkeys(columns))
        self.enabled = enabled
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.csv = self.run_dir / "metrics.csv"
        self.writer = None
        if tensorboard and enabled:
            self.writer = open_tensorboard(self.run_dir / "tensorboard")

    def start(self, last_epoch: int) -> None:
        """Begin logging: keep the records of epochs ≤ ``last_epoch`` (−1: a new run, empty files)."""
        if not self.enabled:
            return
        rows = [r for r in read_jsonl(self.jsonl) if r.get("epoch", math.inf) <= last_epoch]
        with atomic_file(self.jsonl, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        with atomic_file(self.csv, "w") as fh:
            fh.write(buf.getvalue())

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        with open(self.csv, "a", newline="") as fh:
            csv.DictWriter(fh, self.columns, extrasaction="ignore", lineterminator="\n").writerow(record)
        if self.writer is not None:
            step = int(record["epoch"])
            for k, v in record.items():
                if k not in NOT_SCALARS and k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(k.replace("_", "/", 1) if k.startswith(("train_", "val_", "test_"))
                                           else k, v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def open_tensorboard(log_dir: Path):
    """A ``SummaryWriter`` on ``log_dir``; a UserError naming the optional extra when tensorboard is missing."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("tensorboard=True needs the tensorboard package: pip install 'mdsurrogate[tensorboard]' "
                        "(or pip install tensorboard)") from None
    return SummaryWriter(log_dir=str(log_dir))
