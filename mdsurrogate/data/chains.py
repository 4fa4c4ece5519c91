"""Multi-step samples: a sample's input state and the true states after 1 … m model steps, for training and
validating on rollouts (unrolled loss, rollout-metric model selection).

A sample (trajectory t, input frame f, target frame f + Δ) extends to the frames f + kΔ, k = 1 … m, as long as
they stay inside what its split may see:

* a trajectory whose samples all belong to one split (the simulators: a trajectory *is* a train, val or test
  system) lends the split all its stored frames;
* a trajectory cut chronologically into spans (MD) lends a split the frames up to the last target frame of that
  split's samples on it, so nothing leaks across a span boundary.
"""

from __future__ import annotations

import numpy as np
import torch

from .dataset import SPLITS, Dataset


def frame_limits(ds: Dataset, split: str) -> np.ndarray:
    """[T] last frame each trajectory lends ``split`` (−1 where it lends none)."""
    code = SPLITS[split]
    limit = np.full(ds.n_trajectories, -1, dtype=np.int64)
    s, codes = ds.samples, ds.split_codes
    mine = codes == code
    np.maximum.at(limit, s[mine, 0], s[mine, 2])
    only_mine = np.ones(ds.n_trajectories, dtype=bool)
    only_mine[s[~mine, 0]] = False
    whole = only_mine & (limit >= 0)
    limit[whole] = ds.traj_frames[whole] - 1
    return limit


def chain_sample_ids(ds: Dataset, split: str, steps: int) -> np.ndarray:
    """Sample ids of ``split`` whose frames f + kΔ, k ≤ ``steps``, all lie in what the split may see."""
    ids = ds.split_indices(split)
    if steps <= 1 or len(ids) == 0:
        return ids
    s = ds.samples[ids]
    last = s[:, 1] + steps * (s[:, 2] - s[:, 1])
    return ids[last <= frame_limits(ds, split)[s[:, 0]]]


def gather_chain(ds: Dataset, sample_ids: np.ndarray, steps: int):
    """(x_0, v_0, targets, topology) for the samples: x_0, v_0 [ΣN, 3] the input state; targets [steps, ΣN, 3]
    the true positions after k = 1 … steps model steps (Δ = each sample's own target − input gap)."""
    s = ds.samples[np.asarray(sample_ids, dtype=np.int64)]
    gap = s[:, 2] - s[:, 1]
    x0, v0 = ds.states(s[:, 0], s[:, 1])
    targets = torch.stack([ds.states(s[:, 0], s[:, 1] + k * gap)[0] for k in range(1, steps + 1)])
    return x0, v0, targets, ds.topology(s[:, 0])
