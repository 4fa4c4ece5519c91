"""The potential task: learn an energy E(x) whose forces F = −∂E/∂x match labelled frames.

Loss of a batch (eV and Å)::

    L = w_E · mean_g ((Ê_g − E_g) / N_g)²  +  w_F · mean_{i,c} (F̂_ic − F_ic)²,      F̂ = −∂Ê/∂x (autograd)

so the energy term is per atom (eV/atom)² and the force term per component (eV/Å)² (w_E, w_F: ``train.energy_weight``,
``train.force_weight``). Before training, the per-element reference energies μ_Z are fitted by least squares on the
training energies (E_g ≈ Σ_Z n_gZ μ_Z), the energy scale σ is the RMS training force component and ν the mean
neighbour count: the network then only learns the O(1) remainder. Model selection minimises the validation loss
(the training frames' when there is no validation split); the test split is evaluated once, with the selected
weights. Figures: energy MAE/RMSE per atom (eV/atom), force MAE/RMSE per component (eV/Å), and the MAE of the
trivial predictor F = 0 beside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ...data.dataset import Dataset, DatasetError, segment_arange
from ...data.neighbors import mean_degree, neighbor_list
from ...errors import RecipeError
from ...models.potential import build_potential, fit_reference_energies
from ..checkpoint import DatasetInfo
from ..metrics import batches
from .base import Task


class PotentialFrames:
    """Batches of labelled frames from a potential dataset (energy.npy, forces.npy, node props Z, cell, pbc).

    ``batch(sample_ids)`` returns a dict: numbers [ΣN] int64, positions [ΣN, 3] (Å), batch [ΣN], cell [B, 3, 3]
    (float64), pbc [B, 3] bool, num_graphs B, n_atoms [B], energy [B] (eV, float64), forces [ΣN, 3] (eV/Å).
    Datasets without ``cell``/``pbc`` node properties are treated as free clusters.
    """

    def __init__(self, ds: Dataset):
        if not (ds.has("forces") and ds.has("energy")) or "Z" not in ds.meta.get("node_properties", []):
            raise DatasetError(f"{ds.path} is not a potential dataset (it needs energy.npy, forces.npy and the node "
                               "property Z); make one with `mdsurrogate ingest ase` or `mdsurrogate ingest emt`")
        self.ds = ds
        self.forces = np.load(ds.path / "forces.npy", mmap_mode="r")
        self.energy = np.load(ds.path / "energy.npy", mmap_mode="r")
        self.frame_offset = np.concatenate([[0], np.cumsum(ds.traj_frames)[:-1]]).astype(np.int64)

    def batch(self, sample_ids) -> dict:
        ds = self.ds
        s = ds.samples[np.asarray(sample_ids, dtype=np.int64)]
        trajs, frames = s[:, 0], s[:, 1]
        n = ds.traj_nodes[trajs]
        x, _ = ds.states(trajs, frames)
        rows = segment_arange(ds.row_offset[trajs] + frames * n, n)
        topo = ds.topology(trajs)
        props, first = topo.node_props, topo.ptr[:-1]
        b = len(trajs)
        return {
            "numbers": props["Z"].long(),
            "positions": x,
            "batch": topo.batch,
            "cell": props["cell"][first].double() if "cell" in props else torch.zeros(b, 3, 3, dtype=torch.float64),
            "pbc": props["pbc"][first].bool() if "pbc" in props else torch.zeros(b, 3, dtype=torch.bool),
            "num_graphs": b,
            "n_atoms": torch.from_numpy(n.astype(np.int64)),
            "energy": torch.from_numpy(np.asarray(self.energy[self.frame_offset[trajs] + frames], dtype=np.float64)),
            "forces": torch.from_numpy(np.asarray(self.forces[rows], dtype=np.float64)),
        }


@dataclass
class FrameBatch:
    """A :meth:`PotentialFrames.batch` dict moved to the device, positions/energies/forces in the model's dtype."""

    data: dict
    num_graphs: int


def to_device(batch: dict, device, dtype) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device)
            if k in ("positions", "forces", "energy"):
                v = v.to(dtype)
        out[k] = v
    return out


def predict(model, b: dict, create_graph: bool) -> dict:
    """Energies [B], per-atom energies and forces [ΣN, 3] of a batch dict."""
    return model(b["numbers"], b["positions"], b["batch"], b["cell"], b["pbc"], b["num_graphs"],
                 compute_forces=True, create_graph=create_graph)


def errors(out: dict, b: dict) -> tuple[Tensor, Tensor]:
    """(per-atom energy errors [B] in eV/atom, force errors [ΣN, 3] in eV/Å)."""
    e_err = (out["energy"] - b["energy"]) / b["n_atoms"].to(out["energy"].dtype)
    return e_err, out["forces"] - b["forces"]


def evaluate_potential(model, frames: PotentialFrames, ids: np.ndarray, *, batch_size: int = 16, device="cpu",
                       energy_weight: float = 1.0, force_weight: float = 1.0, distributed: bool = False) -> dict:
    """Energy (per atom, eV/atom) and force (per component, eV/Å) MAE and RMSE on ``ids``; plus the weighted loss
    and ``zero_force_mae`` (the MAE of a predictor that always says F = 0: the trivial baseline). Under
    ``distributed`` each process evaluates its share and the sums are added up."""
    model.eval()
    dtype = next(model.parameters()).dtype
    sums = [0.0] * 7  # Σ|e|, Σe², n_graphs, Σ|f|, Σf², n_components, Σ|F|
    for chunk in batches(ids, batch_size):
        b = to_device(frames.batch(chunk), device, dtype)
        out = predict(model, b, create_graph=False)
        e_err, f_err = errors({k: v.detach() for k, v in out.items()}, b)
        e_err, f_err = e_err.double(), f_err.double()
        for k, v in enumerate((e_err.abs().sum().item(), (e_err**2).sum().item(), e_err.numel(),
                               f_err.abs().sum().item(), (f_err**2).sum().item(), f_err.numel(),
                               b["forces"].double().abs().sum().item())):
            sums[k] += v
    if distributed:
        t = torch.tensor(sums, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        sums = t.tolist()
    if sums[2] == 0:
        return {}
    mse_e, mse_f = sums[1] / sums[2], sums[4] / max(sums[5], 1)
    return {
        "frames": int(sums[2]),
        "energy_mae": sums[0] / sums[2],
        "energy_rmse": math.sqrt(mse_e),
        "force_mae": sums[3] / max(sums[5], 1),
        "force_rmse": math.sqrt(mse_f),
        "zero_force_mae": sums[6] / max(sums[5], 1),
        "loss": energy_weight * mse_e + force_weight * mse_f,
    }


def statistics(frames: PotentialFrames, ids: np.ndarray, elements: list[int], cutoff: float) -> dict:
    """Reference energies μ (least squares), force RMS σ and mean neighbour count ν on the training frames."""
    index = {z: k for k, z in enumerate(elements)}
    counts, energies, f2, n_comp, edges, atoms = [], [], 0.0, 0, 0, 0
    for k, chunk in enumerate(batches(ids, 256)):
        b = frames.batch(chunk)
        lut = torch.tensor([index.get(z, 0) for z in range(int(b["numbers"].max()) + 1)])
        c = torch.zeros(b["num_graphs"], len(elements), dtype=torch.float64)
        c.index_put_((b["batch"], lut[b["numbers"]]), torch.ones(b["numbers"].numel(), dtype=torch.float64),
                     accumulate=True)
        counts.append(c)
        energies.append(b["energy"])
        f2 += float((b["forces"] ** 2).sum())
        n_comp += b["forces"].numel()
        if k < 4:  # ν from up to 1024 frames
            ei, _ = neighbor_list(b["positions"].double(), cutoff, b["batch"], b["cell"], b["pbc"])
            edges += ei.shape[1]
            atoms += b["numbers"].numel()
    mu = fit_reference_energies(torch.cat(counts), torch.cat(energies))
    sigma = math.sqrt(f2 / max(n_comp, 1))
    return {"reference_energies": mu, "energy_scale": sigma if sigma > 1e-8 else 1.0,
            "avg_neighbors": mean_degree(edges, atoms)}


class PotentialTask(Task):
    kind = "potential"
    selection = "loss"
    selection_label = "val loss"
    test_each_evaluation = False  # the test split is evaluated once, with the selected weights
    train_figures = ("loss", "force_mse")  # per batch; logged as train_loss, train_force_rmse
    eval_figures = ("energy_mae", "energy_rmse", "force_mae", "force_rmse", "zero_force_mae", "loss")

    def __init__(self, recipe, data_path: str):
        super().__init__(recipe, data_path)
        self.frames = PotentialFrames(self.dataset)
        ds = self.dataset
        params = recipe.model.params
        self.cutoff = float(params["cutoff"] if params.get("cutoff") is not None else ds.meta.get("cutoff", 5.0))
        self.elements = sorted({int(z) for z in np.unique(np.load(ds.path / "node.Z.npy", mmap_mode="r"))})
        self._hparams: dict = {}

    def build_model(self) -> nn.Module:
        train_ids = self.split("train")
        stats = statistics(self.frames, train_ids, self.elements, self.cutoff)
        self._hparams = {"elements": self.elements, **self.recipe.model.params, "cutoff": self.cutoff,
                         "avg_neighbors": stats["avg_neighbors"]}
        try:
            model = build_potential(self.recipe.model.name, **self._hparams)
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"model {self.recipe.model.name!r}: {exc}") from None
        with torch.no_grad():
            model.reference_energies.copy_(stats["reference_energies"])
            model.energy_scale.fill_(stats["energy_scale"])
        return model

    def hparams(self) -> dict:
        return dict(self._hparams)

    def batch(self, ids: np.ndarray) -> FrameBatch:
        return FrameBatch(to_device(self.frames.batch(ids), self.device, self.dtype), len(ids))

    def loss(self, net: nn.Module, batch: FrameBatch) -> tuple[Tensor, dict[str, Tensor]]:
        t = self.recipe.train
        out = predict(net, batch.data, create_graph=True)
        e_err, f_err = errors(out, batch.data)
        loss = t.energy_weight * (e_err**2).mean() + t.force_weight * (f_err**2).mean()
        return loss, {"loss": loss.detach(), "force_mse": (f_err.detach() ** 2).mean()}

    def train_record(self, means: dict[str, float]) -> dict:
        return {"train_loss": means["loss"], "train_force_rmse": math.sqrt(means["force_mse"])}

    def evaluate(self, model: nn.Module, ids: np.ndarray, *, batch_size: int, distributed: bool = False) -> dict:
        t = self.recipe.train
        out = evaluate_potential(model, self.frames, ids, batch_size=batch_size, device=self.device,
                                 energy_weight=t.energy_weight, force_weight=t.force_weight, distributed=distributed)
        return {k: v for k, v in out.items() if k != "frames"} | ({"frames": out["frames"]} if out else {})

    def summary(self, best: dict) -> dict:
        return {"train_frames": int(len(self.split("train"))), "val": best.get("val", {}),
                "test": best.get("test", {}), "units": {"energy_mae": "eV/atom", "force_mae": "eV/Å"}}

    def checkpoint_fields(self) -> dict:
        info = DatasetInfo.from_dataset(self.dataset)
        info.elements, info.task = list(self.elements), "potential"
        features = {"global_graph": {"kind": "radius", "cutoff": self.cutoff}, "node": [], "edge": ["dist"]}
        return {"features": features, "dataset": info, "extra": {}}
