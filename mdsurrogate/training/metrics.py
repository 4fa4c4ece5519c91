"""Evaluation with the papers' metric, and rigid motions for the equivariance check.

Metric (docs/protocols.md §0): per batch the position MSE over all (node, coordinate) entries; the split's number is
Σ_batches (batch MSE × graphs in batch) / Σ graphs. The velocity MSE is reported beside it the same way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..data.dataset import Dataset
from ..data.featurize import Featurizer


def random_rigid_motion(generator: torch.Generator, reflect: bool = True, translate_scale: float = 10.0,
                        dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """A random orthogonal matrix Q [3, 3] (det −1 when ``reflect``) and translation t [3]."""
    a = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.det(q) > 0 and reflect:
        q = q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    if torch.det(q) < 0 and not reflect:
        q = q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    t = torch.randn(3, generator=generator, dtype=torch.float64) * translate_scale
    return q.to(dtype), t.to(dtype)


def batches(ids: np.ndarray, batch_size: int, drop_last: bool = False):
    n = len(ids)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for s in range(0, stop, batch_size):
        yield ids[s : s + batch_size]


def shard(ids: np.ndarray, batch_size: int, rank: int, world: int) -> np.ndarray:
    """This rank's share of ``ids``: whole batches dealt round-robin, so every rank sees complete batches."""
    if world == 1:
        return ids
    chunks = [ids[s : s + batch_size] for s in range(0, len(ids), batch_size)]
    mine = chunks[rank::world]
    return np.concatenate(mine) if mine else ids[:0]


@torch.no_grad()
def evaluate(model, dataset: Dataset, sample_ids: np.ndarray, featurizer: Featurizer, *, device="cpu",
             batch_size: int = 100, dtype: torch.dtype = torch.float32, rotate: bool = False, translate: bool = False,
             seed: int = 0, autocast: bool = False, distributed: bool = False) -> dict:
    """Position and velocity MSE of ``model`` on the given samples (optionally after a random rigid motion)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    q, t = random_rigid_motion(gen, dtype=dtype)
    q = q.to(device) if rotate else torch.eye(3, dtype=dtype, device=device)
    t = t.to(device) if translate else torch.zeros(3, dtype=dtype, device=device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # Σ mse·graphs, Σ mse_v·graphs, Σ graphs
    for ids in batches(sample_ids, batch_size):
        x0, v0, x1, v1, topo = dataset.gather(ids)
        x0, v0, x1, v1 = (a.to(device=device, dtype=dtype) for a in (x0, v0, x1, v1))
        x0, x1 = x0 @ q.T + t, x1 @ q.T + t
        v0, v1 = v0 @ q.T, v1 @ q.T
        g = featurizer(x0, v0, topo.to(device))
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
            pred = model(g)
        mse = ((pred.x.to(dtype) - x1) ** 2).mean()
        mse_v = ((pred.v.to(dtype) - v1) ** 2).mean()
        n = len(ids)
        sums += torch.stack([mse.double() * n, mse_v.double() * n, torch.tensor(float(n), device=device,
                                                                               dtype=torch.float64)])
    if distributed:
        torch.distributed.all_reduce(sums)
    total = sums[2].item()
    if total == 0:
        return {"mse": math.nan, "mse_v": math.nan, "graphs": 0}
    return {"mse": sums[0].item() / total, "mse_v": sums[1].item() / total, "graphs": int(total)}
