"""The training loop: Adam, periodic val/test evaluation, best-val selection, early stopping, atomic
checkpoints, resume, AMP/compile on CUDA, and data-parallel training under ``torchrun`` (DDP).

Protocol (protocols.md §0): evaluate on val and test every ``eval_every`` epochs (epoch 0, k, 2k, …) and report
the test MSE at the evaluation with the lowest val MSE (strict "<": the first best wins); stop after
``patience`` evaluations without improvement (0: never). Same seed → same numbers on CPU.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Recipe, dump_toml
from ..data.dataset import Dataset
from ..data.featurize import Featurizer
from ..errors import UserError
from ..models.base import count_parameters
from ..models.registry import build_model
from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import batches, evaluate, shard


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available else CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def dataset_summary(ds: Dataset) -> dict:
    """What a checkpoint keeps about its dataset (for rollouts and the integrations)."""
    m = ds.meta
    return {
        "path": str(ds.path),
        "name": m.get("name", ""),
        "source": m.get("source", ""),
        "units": ds.units,
        "frame_dt": ds.frame_dt,
        "delta_frames": ds.delta_frames,
        "delta_time": ds.frame_dt * ds.delta_frames,
        "selection": m.get("selection"),
        "md": m.get("md"),
        "generator": m.get("generator", {}),
    }


class Trainer:
    """Runs one recipe into one run directory. ``callback(event: dict)`` receives progress events."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, *, device: str = "auto", resume: bool = False,
                 data_path: str | None = None, command: str = "", callback=None):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.device = resolve_device(device)
        self.dist = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.callback = callback or (lambda event: None)
        cfg = recipe.train
        path = data_path or recipe.data.path
        if not path:
            raise UserError("no dataset given: set [data] path in the recipe or pass --data")
        self.dataset = Dataset(path)
        if self.dataset.meta.get("task") == "potential":
            raise UserError(f"dataset {path} holds energies and forces for a learned potential, not trajectories for "
                            f"a propagator; train it with a potential recipe (e.g. recipes/cu_emt_potential.toml)")
        self.featurizer = Featurizer(self.dataset.features)
        spec = self.featurizer.spec
        torch.manual_seed(cfg.seed)
        self.model = build_model(recipe.model.name, node_dim=spec.node_dim, edge_dim=spec.edge_dim,
                                 local_edge_dim=spec.local_edge_dim, **recipe.model.params).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = bool(params)  # a frozen baseline (e.g. linear with learn_tau = false) is only evaluated
        self.optimizer = torch.optim.Adam(params or [torch.zeros(1, requires_grad=True)], lr=cfg.lr,
                                          weight_decay=cfg.weight_decay)
        self.autocast = cfg.amp and self.device.type == "cuda"
        self.train_ids = self.dataset.split_indices("train")
        if recipe.data.max_train_samples is not None:
            self.train_ids = self.train_ids[: recipe.data.max_train_samples]
        self.val_ids = self.dataset.split_indices("val")
        self.test_ids = self.dataset.split_indices("test")
        if len(self.train_ids) == 0:
            raise UserError(f"dataset {path} has no training samples")
        if cfg.drop_last and len(self.train_ids) < cfg.batch_size * self.dist.world:
            raise UserError(f"train.batch_size {cfg.batch_size} is larger than the {len(self.train_ids)} training "
                            "samples; lower it or set train.drop_last = false")
        self.state = {"epoch": -1, "best_val": math.inf, "best_test": math.nan, "best_epoch": -1,
                      "bad_evals": 0, "stopped_early": False, "elapsed": 0.0}
        if resume:
            self._resume()
        elif self.dist.main and (self.run_dir / "last.pt").exists():
            raise UserError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --out")
        self.net = self.model
        if self.dist.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile and self.device.type == "cuda":
            self.net = torch.compile(self.net, dynamic=True)
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "recipe.toml").write_text(dump_toml(recipe.to_dict() | {"data": {
                **recipe.to_dict()["data"], "path": str(path)}}))
            if command:
                with open(self.run_dir / "command.txt", "a") as fh:
                    fh.write(command + "\n")

    # -- checkpoints -------------------------------------------------------------------------------------
    def _payload(self, with_optimizer: bool) -> dict:
        p = {
            "kind": "propagator",
            "model": {"name": self.recipe.model.name, "hparams": dict(self.recipe.model.params)},
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "features": self.featurizer.spec.to_dict(),
            "dataset": dataset_summary(self.dataset),
            "recipe": self.recipe.to_dict(),
            "train_state": dict(self.state),
            "n_parameters": count_parameters(self.model),
        }
        if with_optimizer:
            p["optimizer"] = self.optimizer.state_dict()
            p["torch_rng"] = torch.get_rng_state()
        return p

    def _resume(self):
        last = self.run_dir / "last.pt"
        if not last.exists():
            raise UserError(f"--resume: {self.run_dir} has no last.pt to continue from")
        data = load_checkpoint(last)
        if data["model"]["name"] != self.recipe.model.name:
            raise UserError(f"--resume: {last} was trained with model {data['model']['name']!r}, "
                            f"the recipe asks for {self.recipe.model.name!r}")
        self.model.load_state_dict(data["state_dict"])
        self.model.to(self.device)
        self.optimizer.load_state_dict(data["optimizer"])
        self.state.update(data["train_state"])
        torch.set_rng_state(data["torch_rng"])

    def _log(self, record: dict):
        if self.dist.main:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
        self.callback(record)

    # -- loop --------------------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict:
        cfg = self.recipe.train
        self.net.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        ids = self.train_ids[rng.permutation(len(self.train_ids))]
        ids = shard(ids[: len(ids) - len(ids) % (cfg.batch_size * self.dist.world)] if cfg.drop_last else ids,
                    cfg.batch_size, self.dist.rank, self.dist.world)
        # Σ loss·B, Σ mse·B, Σ mse_v·B, Σ B, accumulated on the device (no host sync per batch)
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        for b in batches(ids, cfg.batch_size, drop_last=cfg.drop_last):
            x0, v0, x1, v1, topo = self.dataset.gather(b)
            x0, v0, x1, v1 = (a.to(self.device, non_blocking=True) for a in (x0, v0, x1, v1))
            g = self.featurizer(x0, v0, topo.to(self.device))
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.autocast):
                pred = self.net(g)
            mse = ((pred.x.float() - x1) ** 2).mean()
            mse_v = ((pred.v.float() - v1) ** 2).mean()
            loss = mse + cfg.velocity_weight * mse_v
            if pred.aux_loss is not None:
                loss = loss + pred.aux_loss.float()
            if not torch.isfinite(loss):
                raise UserError(f"training diverged at epoch {epoch} (loss is {loss.item()}); lower train.lr "
                                "or set train.grad_clip")
            if self.trainable:
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
            n = len(b)
            sums += torch.stack([loss.detach(), mse.detach(), mse_v.detach(), loss.new_tensor(1.0)]).double() * n
        if self.dist.enabled:
            torch.distributed.all_reduce(sums)
        total, s_mse, s_mse_v, n = sums.tolist()
        n = max(n, 1.0)
        return {"train_loss": total / n, "train_mse": s_mse / n, "train_mse_v": s_mse_v / n}

    def _evaluate(self, ids: np.ndarray) -> dict:
        cfg = self.recipe.train
        bs = cfg.eval_batch_size or cfg.batch_size
        return evaluate(self.net, self.dataset, shard(ids, bs, self.dist.rank, self.dist.world), self.featurizer,
                        device=self.device, batch_size=bs, autocast=self.autocast, distributed=self.dist.enabled)

    def _out_of_time(self, elapsed: float, max_minutes: float) -> bool:
        """Whether the wall-clock budget is spent (rank 0 decides for all ranks under DDP)."""
        flag = torch.tensor([float(elapsed >= 60.0 * max_minutes)], device=self.device)
        if self.dist.enabled:
            torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    def run(self) -> dict:
        cfg = self.recipe.train
        st = self.state
        start_epoch = st["epoch"] + 1
        self.callback({"event": "start", "epochs": cfg.epochs, "start_epoch": start_epoch,
                       "parameters": count_parameters(self.model), "device": str(self.device),
                       "train_samples": len(self.train_ids)})
        t_start = time.perf_counter() - st["elapsed"]
        for epoch in range(start_epoch, cfg.epochs):
            if st["stopped_early"]:
                break
            rec = {"event": "epoch", "epoch": epoch, **self._train_epoch(epoch)}
            st["epoch"] = epoch
            is_eval = epoch % cfg.eval_every == 0 or epoch == cfg.epochs - 1
            if is_eval:
                val = self._evaluate(self.val_ids)
                test = self._evaluate(self.test_ids)
                rec.update(val_mse=val["mse"], val_mse_v=val["mse_v"], test_mse=test["mse"], test_mse_v=test["mse_v"])
                if val["mse"] < st["best_val"]:
                    st.update(best_val=val["mse"], best_test=test["mse"], best_epoch=epoch, bad_evals=0)
                    if self.dist.main:
                        save_checkpoint(self.run_dir / "best.pt", self._payload(with_optimizer=False))
                else:
                    st["bad_evals"] += 1
                    if cfg.patience and st["bad_evals"] >= cfg.patience:
                        st["stopped_early"] = True
                rec.update(best_val=st["best_val"], best_test=st["best_test"], best_epoch=st["best_epoch"])
            st["elapsed"] = time.perf_counter() - t_start
            if is_eval and cfg.max_minutes and self._out_of_time(st["elapsed"], cfg.max_minutes):
                st["stopped_early"] = st["stopped_by_time"] = True
            rec["time"] = round(st["elapsed"], 3)
            if is_eval:
                if self.dist.main:
                    save_checkpoint(self.run_dir / "last.pt", self._payload(with_optimizer=True))
                self._log(rec)
            elif epoch % cfg.log_every == 0:
                self._log(rec)
            else:
                self.callback(rec)
        summary = {
            "run_dir": str(self.run_dir),
            "model": self.recipe.model.name,
            "epochs_run": st["epoch"] + 1,
            "best_epoch": st["best_epoch"],
            "best_val_mse": st["best_val"],
            "test_mse": st["best_test"],
            "stopped_early": st["stopped_early"],
            "stopped_by_time": bool(st.get("stopped_by_time", False)),
            "seconds": round(st["elapsed"], 2),
            "device": str(self.device),
            "world_size": self.dist.world,
        }
        if self.dist.main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if self.dist.enabled:
            torch.distributed.barrier()
        return summary
