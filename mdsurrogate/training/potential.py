"""Training a learned potential (energy + forces) on a dataset made by ``ingest_ase``.

Loss per batch (eV and Å)::

    L = w_E · mean_g ((Ê_g − E_g) / N_g)²  +  w_F · mean_{i,c} (F̂_ic − F_ic)²,      F̂ = −∂Ê/∂x (autograd)

so the energy term is per atom (eV/atom)² and the force term per component (eV/Å)². Before training, the
per-element reference energies μ_Z are fitted by least squares on the training energies (E_g ≈ Σ_Z n_gZ μ_Z),
the energy scale σ is the RMS training force component and ν the mean neighbour count: the network then only
learns the O(1) remainder. Adam with a cosine learning-rate decay, gradient clipping, evaluation on the
validation split every ``eval_every`` epochs and best-validation selection (strict "<"); the test split is
evaluated once, with the selected weights.

A run directory holds ``best.pt`` and ``last.pt`` (``kind = "potential"``, weights_only-safe: tensors, numbers,
strings, lists and dicts only), ``metrics.jsonl`` (one JSON line per evaluation), ``config.json`` (the
arguments) and ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import Dataset, DatasetError, segment_arange
from ..errors import UserError
from ..models.potential import EGNNPotential, fit_reference_energies, mean_degree, neighbor_list
from .checkpoint import save_checkpoint
from .metrics import batches

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class PotentialFrames:
    """Batches of labelled frames from a potential dataset (energy.npy, forces.npy, node props Z, cell, pbc).

    ``batch(sample_ids)`` returns a dict: numbers [ΣN] int64, positions [ΣN, 3] (Å), batch [ΣN], cell [B, 3, 3]
    (float64), pbc [B, 3] bool, num_graphs B, n_atoms [B], energy [B] (eV, float64), forces [ΣN, 3] (eV/Å).
    Datasets without ``cell``/``pbc`` node properties are treated as free clusters.
    """

    def __init__(self, ds: Dataset):
        if not (ds.has("forces") and ds.has("energy")) or "Z" not in ds.meta.get("node_properties", []):
            raise DatasetError(f"{ds.path} is not a potential dataset (it needs energy.npy, forces.npy and the node "
                               "property Z); make one with `mdsurrogate ingest ase`")
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


def _plain(obj):
    """Numbers, strings, lists and dicts only (NumPy scalars → Python), so checkpoints load with weights_only."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _to(batch: dict, device, dtype) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device)
            if k in ("positions", "forces", "energy"):
                v = v.to(dtype)
        out[k] = v
    return out


def _predict(model, b: dict, create_graph: bool) -> dict:
    return model(b["numbers"], b["positions"], b["batch"], b["cell"], b["pbc"], b["num_graphs"],
                 compute_forces=True, create_graph=create_graph)


def _loss_terms(out: dict, b: dict):
    e_err = (out["energy"] - b["energy"]) / b["n_atoms"].to(out["energy"].dtype)
    f_err = out["forces"] - b["forces"]
    return e_err, f_err


def evaluate_potential(model, frames: PotentialFrames, ids: np.ndarray, *, batch_size: int = 16, device="cpu",
                       energy_weight: float = 1.0, force_weight: float = 1.0) -> dict:
    """Energy (per atom, eV/atom) and force (per component, eV/Å) MAE and RMSE on ``ids``; plus the weighted loss
    and ``zero_force_mae`` (the MAE of a predictor that always says F = 0: the trivial baseline)."""
    model.eval()
    dtype = next(model.parameters()).dtype
    sums = [0.0] * 6  # Σ|e|, Σe², n_graphs, Σ|f|, Σf², n_components
    zero = 0.0
    for chunk in batches(ids, batch_size):
        b = _to(frames.batch(chunk), device, dtype)
        out = _predict(model, b, create_graph=False)
        e_err, f_err = _loss_terms({k: v.detach() for k, v in out.items()}, b)
        e_err, f_err = e_err.double(), f_err.double()
        for k, v in enumerate((e_err.abs().sum().item(), (e_err**2).sum().item(), e_err.numel(),
                               f_err.abs().sum().item(), (f_err**2).sum().item(), f_err.numel())):
            sums[k] += v
        zero += b["forces"].double().abs().sum().item()
    if sums[2] == 0:
        return {}
    mse_e, mse_f = sums[1] / sums[2], sums[4] / max(sums[5], 1)
    return {
        "frames": int(sums[2]),
        "energy_mae": sums[0] / sums[2],
        "energy_rmse": math.sqrt(mse_e),
        "force_mae": sums[3] / max(sums[5], 1),
        "force_rmse": math.sqrt(mse_f),
        "zero_force_mae": zero / max(sums[5], 1),
        "loss": energy_weight * mse_e + force_weight * mse_f,
    }


def _statistics(frames: PotentialFrames, ids: np.ndarray, elements: list[int], cutoff: float) -> dict:
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


def train_potential(dataset: str | os.PathLike | Dataset, out_dir: str | os.PathLike, *, epochs: int = 100,
                    lr: float = 2e-3, energy_weight: float = 1.0, force_weight: float = 1.0, batch_size: int = 8,
                    cutoff: float | None = None, hidden: int = 64, layers: int = 3, seed: int = 0, n_rbf: int = 16,
                    device: str = "cpu", dtype: str = "float32", lr_final_ratio: float = 0.02,
                    grad_clip: float | None = 10.0, eval_every: int = 1, eval_batch_size: int = 32,
                    max_seconds: float | None = None, overwrite: bool = False, callback=None) -> dict:
    """Train an :class:`EGNNPotential` and write a run directory; returns the summary (also ``summary.json``).

    Args:
        dataset: a potential dataset (``ingest_ase``) or its path. out_dir: the run directory.
        epochs: passes over the training frames. lr: Adam's initial learning rate, decayed by a cosine to
            ``lr · lr_final_ratio``. energy_weight, force_weight: w_E and w_F of the loss.
        cutoff: Å (default: the dataset's). hidden, layers, n_rbf: model size. seed: weights and batch order.
        dtype: "float32" or "float64" for the model during training (the checkpoint keeps that precision;
            either loads in float32 or float64). max_seconds: stop after the epoch that crosses this wall-clock budget.
        callback: receives progress events (dicts with ``event`` = "start" / "epoch").
    """
    from .loop import dataset_summary, resolve_device

    if epochs < 1 or batch_size < 1 or eval_every < 1:
        raise UserError("epochs, batch_size and eval_every must be ≥ 1")
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    callback = callback or (lambda event: None)
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    frames = PotentialFrames(ds)
    dev = resolve_device(device)
    tdtype = DTYPES[dtype]
    run_dir = Path(out_dir)
    if (run_dir / "last.pt").exists() and not overwrite:
        raise UserError(f"{run_dir} already holds a run; choose another output directory or pass overwrite")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"dataset": str(ds.path), "epochs": epochs, "lr": lr, "energy_weight": energy_weight,
              "force_weight": force_weight, "batch_size": batch_size, "cutoff": cutoff, "hidden": hidden,
              "layers": layers, "seed": seed, "n_rbf": n_rbf, "device": str(dev), "dtype": dtype,
              "lr_final_ratio": lr_final_ratio, "grad_clip": grad_clip, "eval_every": eval_every,
              "max_seconds": max_seconds}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    metrics_file = run_dir / "metrics.jsonl"
    metrics_file.write_text("")

    train_ids, val_ids, test_ids = (ds.split_indices(s) for s in ("train", "val", "test"))
    if len(train_ids) == 0:
        raise UserError(f"dataset {ds.path} has no training frames")
    cutoff = float(cutoff if cutoff is not None else ds.meta.get("cutoff", 5.0))
    elements = sorted({int(z) for z in np.unique(np.load(ds.path / "node.Z.npy", mmap_mode="r"))})
    stats = _statistics(frames, train_ids, elements, cutoff)
    torch.manual_seed(seed)
    hparams = {"elements": elements, "cutoff": cutoff, "hidden": hidden, "layers": layers, "n_rbf": n_rbf,
               "avg_neighbors": stats["avg_neighbors"]}
    model = EGNNPotential(**hparams)
    with torch.no_grad():
        model.reference_energies.copy_(stats["reference_energies"])
        model.energy_scale.fill_(stats["energy_scale"])
    model.to(device=dev, dtype=tdtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    def cosine(e: int) -> float:
        return lr_final_ratio + (1 - lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * min(e, epochs) / epochs))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    n_params = sum(p.numel() for p in model.parameters())
    features = {"global_graph": {"kind": "radius", "cutoff": cutoff}, "node": [], "edge": ["dist"]}

    def payload(state: dict, metrics: dict) -> dict:
        return _plain({
            "kind": "potential",
            "model": {"name": EGNNPotential.name, "hparams": hparams},
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "features": features,
            "dataset": dataset_summary(ds) | {"elements": elements, "task": "potential"},
            "train": config | {"cutoff": cutoff},
            "train_state": dict(state),
            "metrics": metrics,
            "n_parameters": n_params,
        })

    select_ids = val_ids if len(val_ids) else train_ids
    state = {"epoch": -1, "best_val_loss": math.inf, "best_epoch": -1, "stopped": None}
    best_state = None
    callback({"event": "start", "epochs": epochs, "start_epoch": 0, "parameters": n_params, "device": str(dev),
              "train_frames": len(train_ids), "train_samples": len(train_ids)})
    t0 = time.perf_counter()
    last_val: dict = {}
    for epoch in range(epochs):
        model.train()
        rng = np.random.default_rng([seed, epoch])
        ids = train_ids[rng.permutation(len(train_ids))]
        sums = np.zeros(3)  # Σ loss·B, Σ force MSE·B, ΣB
        for chunk in batches(ids, batch_size):
            b = _to(frames.batch(chunk), dev, tdtype)
            out = _predict(model, b, create_graph=True)
            e_err, f_err = _loss_terms(out, b)
            loss = energy_weight * (e_err**2).mean() + force_weight * (f_err**2).mean()
            if not torch.isfinite(loss):
                raise UserError(f"training diverged at epoch {epoch} (loss {loss.item()}); lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            sums += [loss.item() * len(chunk), (f_err.detach() ** 2).mean().item() * len(chunk), len(chunk)]
        schedule.step()
        state["epoch"] = epoch
        rec = {"event": "epoch", "epoch": epoch, "train_loss": float(sums[0] / sums[2]),
               "train_force_rmse": math.sqrt(sums[1] / sums[2]), "lr": optimizer.param_groups[0]["lr"]}
        elapsed = time.perf_counter() - t0
        out_of_time = max_seconds is not None and elapsed > max_seconds
        if epoch % eval_every == 0 or epoch == epochs - 1 or out_of_time:
            last_val = evaluate_potential(model, frames, select_ids, batch_size=eval_batch_size, device=dev,
                                          energy_weight=energy_weight, force_weight=force_weight)
            rec.update({f"val_{k}": v for k, v in last_val.items() if k != "frames"})
            if last_val["loss"] < state["best_val_loss"]:
                state.update(best_val_loss=last_val["loss"], best_epoch=epoch)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                save_checkpoint(run_dir / "best.pt", payload(state, {"val": last_val}))
            rec["time"] = round(time.perf_counter() - t0, 3)
            with open(metrics_file, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        callback(rec)
        if out_of_time:
            state["stopped"] = f"time budget of {max_seconds} s reached after epoch {epoch}"
            break
    save_checkpoint(run_dir / "last.pt", payload(state, {"val": last_val}))
    if best_state is not None:
        model.load_state_dict(best_state)
    best_val = evaluate_potential(model, frames, select_ids, batch_size=eval_batch_size, device=dev,
                                  energy_weight=energy_weight, force_weight=force_weight)
    test = (evaluate_potential(model, frames, test_ids, batch_size=eval_batch_size, device=dev,
                               energy_weight=energy_weight, force_weight=force_weight) if len(test_ids) else {})
    save_checkpoint(run_dir / "best.pt", payload(state, {"val": best_val, "test": test}))
    summary = {
        "run_dir": str(run_dir),
        "model": EGNNPotential.name,
        "parameters": n_params,
        "epochs_run": state["epoch"] + 1,
        "best_epoch": state["best_epoch"],
        "stopped": state["stopped"],
        "train_frames": int(len(train_ids)),
        "val": best_val,
        "test": test,
        "units": {"energy_mae": "eV/atom", "force_mae": "eV/Å"},
        "seconds": round(time.perf_counter() - t0, 2),
        "device": str(dev),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
