"""What the training data says a sane rollout looks like: the stability guard's limits and the reference bond
lengths, computed once from the training samples and stored in every checkpoint.

From the training split (at most ``max_samples`` samples, spread evenly):

* ``step_rms``: the RMS displacement of one step (target − input, per graph) — its largest value in the data
  times ``step_margin``;
* for datasets of one molecular system (MD: the same atoms in every frame), ``bond_lengths`` [E]: the mean length
  of every local edge (each bond once, in the order of :func:`~mdsurrogate.data.geometry.constraint_pairs`),
  ``angle_pair_lengths``: the same for the bonds and 1-3 pairs (for rollouts that also fix bond angles),
  ``bond_rms``: the largest per-frame RMS deviation from those means times ``margin`` (floored at ``bond_floor``
  × the mean length, so that a data set with rigid bonds does not give a zero limit), and ``rg_bounds``: the
  data's radius-of-gyration range widened by ``rg_margin`` on each side (as factors), and ``stereo_centres``
  [Q, 4]: the candidate centres (:func:`~mdsurrogate.data.geometry.stereo_centres`) whose signed volume keeps one
  sign in every sampled frame and never comes closer to 0 than a quarter of its mean magnitude (a chiral Cα, not
  a planar carbonyl carbon), which rollouts keep from inverting; ``contact_floor``: the closest the data ever
  brings two atoms that are neither bonded nor 1-3 (the excluded volume stochastic rollouts keep);
* for MD datasets, ``input_speed_limit``: the largest per-atom speed among the training inputs times
  ``speed_margin``; a Surrogate caps each atom's input speed at it (``Surrogate.speed_limit``), so that a rollout
  whose sampled displacements become its next velocities cannot feed the model speeds it never saw and amplify
  them into a blow-up;
* ``data``: the raw statistics (means, spreads, extremes) for reports.

The guard stops a rollout with a sentence naming the quantity, the step and the limit; nothing here depends on
the model.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data.dataset import Dataset
from ..data.geometry import constraint_pairs, radius_of_gyration, signed_volumes, stereo_centres
from ..models.scatter import scatter_mean


def closest_contact(x: torch.Tensor, batch: torch.Tensor, constrained: torch.Tensor, reach: float = 6.0) -> float:
    """The smallest distance between two atoms of one graph that are neither bonded nor 1-3 (``constrained``
    [2, P] pairs i < j), among pairs within ``reach`` (inf when there is none)."""
    from ..data.constraints import close_contacts

    pairs = close_contacts(x, reach, batch, constrained)
    if pairs.shape[1] == 0:
        return math.inf
    return float((x[pairs[0]] - x[pairs[1]]).norm(dim=-1).min())


def data_limits(ds: Dataset, *, margin: float = 3.0, step_margin: float = 5.0, rg_margin: float = 0.2,
                bond_floor: float = 0.01, speed_margin: float = 1.25,
                max_samples: int = 2000, batch_size: int = 64) -> tuple[dict, dict]:
    """(guard limits, checkpoint extras) from the training split of ``ds``; see the module docstring."""
    ids = ds.split_indices("train")
    if len(ids) == 0:
        return {}, {}
    if len(ids) > max_samples:
        ids = ids[np.linspace(0, len(ids) - 1, max_samples).round().astype(np.int64)]
    single_system = bool(ds.meta.get("md")) and len(set(ds.traj_nodes.tolist())) == 1
    steps, speeds, rgs, lengths, lengths13, volumes, closest = [], [], [], [], [], [], []
    centres = None
    for s in range(0, len(ids), batch_size):
        x0, v0, x1, _, topo = ds.gather(ids[s:s + batch_size])
        x0, x1 = x0.double(), x1.double()
        speeds.append(v0.double().norm(dim=-1).max())
        d2 = ((x1 - x0) ** 2).sum(-1, keepdim=True)
        steps.append(scatter_mean(d2, topo.batch, topo.num_graphs).squeeze(-1).sqrt())
        if single_system:
            rgs.append(radius_of_gyration(x0, topo))
            local = topo.edge_sets.get("local")
            if local is not None and local.index.shape[1] > 0:
                n_graph, n_all = topo.num_graphs, int(topo.ptr[-1])
                for out, angles in ((lengths, False), (lengths13, True)):
                    pairs = constraint_pairs(local.index, n_all, angles=angles)
                    out.append((x0[pairs[0]] - x0[pairs[1]]).norm(dim=-1).view(n_graph, -1))
                closest.append(closest_contact(x0, topo.batch, pairs))  # pairs: bonds and 1-3, exempt
                if centres is None:
                    first = local.index[:, local.index.max(0).values < int(topo.ptr[1])]
                    centres = stereo_centres(first, int(topo.ptr[1]))
                if len(centres):
                    volumes.append(signed_volumes(x0.view(n_graph, -1, 3), centres))
    step = torch.cat(steps)
    data = {"step_rms_mean": float(step.mean()), "step_rms_max": float(step.max()), "samples": int(len(ids))}
    limits = {"step_rms": step_margin * float(step.max())}
    extra: dict = {}
    data["input_speed_max"] = speed = float(torch.stack(speeds).max())
    if ds.meta.get("md") and speed > 0:
        extra["input_speed_limit"] = speed_margin * speed
    if single_system:
        rg = torch.cat(rgs)
        data.update(rg_min=float(rg.min()), rg_max=float(rg.max()), rg_mean=float(rg.mean()))
        limits["rg_bounds"] = [(1 - rg_margin) * float(rg.min()), (1 + rg_margin) * float(rg.max())]
        if lengths:
            lens = torch.cat(lengths)  # [frames, E]
            mean = lens.mean(0)
            dev = (lens - mean).pow(2).mean(1).sqrt()  # per-frame RMS deviation
            data.update(bond_rms_mean=float(dev.mean()), bond_rms_max=float(dev.max()),
                        bond_std=float((lens - mean).pow(2).mean().sqrt()), bonds=int(mean.numel()))
            limits["bond_rms"] = max(margin * float(dev.max()), bond_floor * float(mean.mean()))
            extra["bond_lengths"] = mean.float()
            extra["angle_pair_lengths"] = torch.cat(lengths13).mean(0).float()
            finite = [c for c in closest if math.isfinite(c)]
            if finite:  # the excluded volume a rollout keeps: never closer than the data ever came
                extra["contact_floor"] = data["closest_contact"] = float(min(finite))
        if volumes:
            vol = torch.cat(volumes)  # [frames, Q]
            keep = ((vol > 0).all(0) | (vol < 0).all(0)) & (vol.abs().min(0).values > 0.25 * vol.abs().mean(0))
            extra["stereo_centres"] = centres[keep]
            data["stereo_centres"] = int(keep.sum())
    limits["data"] = data
    return limits, extra
