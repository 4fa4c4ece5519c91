"""The one training loop, for every task (propagators and learned potentials; see :mod:`.tasks`).

Protocol: Adam; every epoch visits the training samples in a seeded order (NumPy ``default_rng([seed, epoch])``);
evaluate on the validation split every ``eval_every`` epochs (epoch 0, k, 2k, … and the last) and keep the weights
of the evaluation with the lowest validation figure (strict "<": the first best wins; the task says which figure);
stop after ``patience`` evaluations without improvement (0: never) or at the first evaluation after ``max_minutes``.
Propagators report the test figure at that evaluation (the papers' protocol); potentials evaluate the test split
once, with the selected weights. Same seed → same numbers on the CPU.

Options of the loop, all from the recipe's ``[train]``: learning-rate schedule with warm-up (:mod:`.schedule`),
EMA of the weights (:mod:`.ema`; the average is what is evaluated and saved in best.pt), gradient clipping,
float32/float64, bf16 autocast and ``torch.compile`` on CUDA.

A run directory holds ``best.pt`` (selected weights) and ``last.pt`` (the latest evaluation, with optimiser,
schedule, EMA and random-number state: ``resume=True`` continues from it exactly), ``metrics.jsonl`` and
``metrics.csv`` (learning rate and gradient norm per epoch included), ``recipe.toml`` (resolved), ``command.txt``
and ``summary.json``. Under ``torchrun`` (WORLD_SIZE > 1) the processes train data-parallel (DDP; NCCL on CUDA,
gloo on the CPU): each takes whole batches in turn, and rank 0 writes the files.
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
from ..device import resolve_device, resolve_dtype
from ..errors import ParameterError, UserError
from ..io.atomic import probe_folder
from ..models.base import count_parameters
from .checkpoint import Checkpoint
from .ema import EMA
from .metrics import batches, shard
from .runlog import MetricsLog
from .schedule import LRSchedule
from .tasks import Task, make_task


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


class Trainer:
    """Runs one recipe into one run directory.

    Args:
        recipe: a validated :class:`~mdsurrogate.config.Recipe` (its ``task`` picks propagator or potential).
        run_dir: the run directory (created). device: auto, cpu, cuda[:i].
        resume: continue the run in ``run_dir`` from its last.pt (else ``run_dir`` must not hold a run).
        data_path: the dataset (default: the recipe's ``[data] path``). command: recorded in command.txt.
        callback: receives progress events (dicts with ``event`` = "start", "epoch", "end").
        tensorboard: also log to TensorBoard (the optional ``tensorboard`` package).
        task: a :class:`~.tasks.Task` to use instead of the recipe's (for new kinds of training).
    """

    def __init__(self, recipe: Recipe, run_dir: str | os.PathLike, *, device: str = "auto", resume: bool = False,
                 data_path: str | None = None, command: str = "", callback=None, tensorboard: bool = False,
                 task: Task | None = None):
        self.recipe = recipe
        cfg = recipe.train
        self.run_dir = Path(run_dir)
        self.device = resolve_device(device)
        self.dist = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.dtype = resolve_dtype(cfg.dtype)
        self.callback = callback or (lambda event: None)
        path = data_path or recipe.data.path
        if not path:
            raise ParameterError("no dataset given: set [data] path in the recipe or pass {data_path}",
                                 data_path="data_path")
        if resume and not (self.run_dir / "last.pt").exists():
            raise ParameterError("{resume}: {path} has no last.pt to continue from", resume="resume=True",
                                 path=str(self.run_dir))
        if self.dist.main:  # a run directory that cannot be made (below or on a file): one sentence, before any work
            probe_folder(self.run_dir)
        if self.dist.main and not resume and (self.run_dir / "last.pt").exists():
            raise ParameterError("{path} already holds a run; pass {resume} to continue it or choose another "
                                 "{run_dir}", path=str(self.run_dir), resume="resume=True", run_dir="run_dir")
        self.task = task or make_task(recipe, str(path))
        self.data_path = str(path)
        self.task.configure(self.device, self.dtype, amp=cfg.amp)

        self.train_ids = self.task.split("train")
        if recipe.data.max_train_samples is not None:
            self.train_ids = self.train_ids[: recipe.data.max_train_samples]
        if len(self.train_ids) == 0:
            raise UserError(f"dataset {path} has no training samples")
        self.val_ids = self.task.split("val")
        if len(self.val_ids) == 0:  # select on the training samples rather than never
            self.val_ids = self.train_ids
        self.test_ids = self.task.split("test")
        if self.dist.enabled:
            if len(self.train_ids) < cfg.batch_size * self.dist.world:
                raise UserError(f"train.batch_size {cfg.batch_size} × {self.dist.world} processes is more than the "
                                f"{len(self.train_ids)} training samples; lower train.batch_size")
        elif cfg.drop_last and len(self.train_ids) < cfg.batch_size:
            raise UserError(f"train.batch_size {cfg.batch_size} is larger than the {len(self.train_ids)} training "
                            "samples; lower it or set train.drop_last = false")

        torch.manual_seed(cfg.seed)
        self.model = self.task.build_model().to(self.device, self.dtype)
        if cfg.init_from and not resume:
            self._initialise_from(cfg.init_from)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = bool(params)  # a frozen baseline (e.g. linear with learn_tau = false) is only evaluated
        self.params = params
        self.optimizer = torch.optim.Adam(params or [torch.zeros(1, requires_grad=True)], lr=cfg.lr,
                                          weight_decay=cfg.weight_decay)
        self.schedule = LRSchedule(self.optimizer, kind=cfg.schedule, lr=cfg.lr, epochs=cfg.epochs,
                                   warmup_epochs=cfg.warmup_epochs, lr_final_ratio=cfg.lr_final_ratio,
                                   plateau_factor=cfg.plateau_factor, plateau_patience=cfg.plateau_patience)
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.state = {"epoch": -1, "best_val": math.inf, "best_test": math.nan, "best_epoch": -1, "bad_evals": 0,
                      "stopped_early": False, "stopped_by_time": False, "elapsed": 0.0, "best": {}}
        if resume:
            self._resume()
        self.net = self.model
        if self.dist.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.eval_model = self.ema.model if self.ema is not None else self.model
        if cfg.compile and self.device.type == "cuda":
            self.net = torch.compile(self.net, dynamic=True)
            self.eval_model = torch.compile(self.eval_model, dynamic=True)
        columns = ["epoch", "time", "lr", "grad_norm", *self.task.csv_columns(), "best_val", "best_epoch"]
        if self.task.test_each_evaluation:
            columns.append("best_test")
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            resolved = recipe.to_dict()
            resolved["data"] = {**resolved["data"], "path": self.data_path}
            (self.run_dir / "recipe.toml").write_text(dump_toml(resolved))
            if command:
                with open(self.run_dir / "command.txt", "a") as fh:
                    fh.write(command + "\n")
        self.log = MetricsLog(self.run_dir, columns, enabled=self.dist.main, tensorboard=tensorboard)
        self.log.start(self.state["epoch"])

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _checkpoint(self, *, last: bool) -> Checkpoint:
        """best.pt: the evaluated weights (the EMA when on); last.pt: the raw weights and everything to resume."""
        weights = self.model if last else (self.ema.model if self.ema is not None else self.model)
        resolved = self.recipe.to_dict()
        resolved["data"] = {**resolved["data"], "path": self.data_path}
        ck = Checkpoint(kind=self.task.kind, model_name=self.recipe.model.name, hparams=self.task.hparams(),
                        state_dict={k: v.detach().cpu() for k, v in weights.state_dict().items()},
                        recipe=resolved, train_state=dict(self.state),
                        metrics=dict(self.state["best"]), n_parameters=count_parameters(self.model),
                        **self.task.checkpoint_fields())
        if last:
            ck.optimizer = self.optimizer.state_dict()
            rng = {"torch": torch.get_rng_state()}
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.device)
            ck.rng = rng
            ck.extra = {**ck.extra, "schedule": self.schedule.state_dict()}
            if self.ema is not None:
                ck.extra["ema"] = self.ema.state_dict()
        return ck

    def _initialise_from(self, source: str) -> None:
        """Fine-tuning: the model starts from the evaluated weights (best.pt: the EMA when it was on) of another
        run directory or checkpoint ``source``, which must hold the same model with the same settings."""
        self._load_weights(source, "init_from", "train.init_from")

    def _load_weights(self, path, option: str, shown: str) -> Checkpoint:
        """Load the checkpoint at ``path`` and its weights into the model; a checkpoint of another model, or of
        other settings, is one sentence naming the ``option`` that asked for it (``shown`` in the library's terms,
        the CLI renders its flag). Returns the checkpoint."""
        ck = Checkpoint.load(path, kind=self.task.kind)
        if ck.model_name != self.recipe.model.name:
            raise ParameterError("{" + option + "}: {path} holds model {got}, the recipe asks for {want}",
                                 **{option: shown}, path=str(ck.path), got=repr(ck.model_name),
                                 want=repr(self.recipe.model.name))
        try:
            self.model.load_state_dict(ck.state_dict)
        except RuntimeError as exc:
            raise ParameterError("{" + option + "}: the weights in {path} do not fit the recipe's model (other model "
                                 "settings or features?): {why}", **{option: shown}, path=str(ck.path),
                                 why=str(exc).splitlines()[0]) from None
        return ck

    def _resume(self):
        last = self.run_dir / "last.pt"
        ck = self._load_weights(last, "resume", "resume=True")
        if ck.optimizer is None:
            raise ParameterError("{resume}: {last} holds no optimiser state", resume="resume=True", last=str(last))
        self.optimizer.load_state_dict(ck.optimizer)
        self.schedule.load_state_dict((ck.extra or {}).get("schedule", {}))
        if self.ema is not None:
            if "ema" in (ck.extra or {}):
                self.ema.load_state_dict(ck.extra["ema"])
            else:  # EMA switched on for the continuation: start the average at the current weights
                self.ema.model.load_state_dict(self.model.state_dict())
        self.state.update(ck.train_state)
        self.state.setdefault("best", {})
        if ck.rng and "torch" in ck.rng:
            torch.set_rng_state(ck.rng["torch"])
        if ck.rng and "cuda" in ck.rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(ck.rng["cuda"], self.device)

    # -- one epoch --------------------------------------------------------------------------------------------
    def _epoch_ids(self, epoch: int) -> np.ndarray:
        """This process's training samples of ``epoch``, in order: a seeded permutation; the last incomplete batch
        dropped when ``drop_last``; under DDP every process gets the same number of whole batches."""
        cfg = self.recipe.train
        rng = np.random.default_rng([cfg.seed, epoch])
        ids = self.train_ids[rng.permutation(len(self.train_ids))]
        bs, world = cfg.batch_size, self.dist.world
        if cfg.drop_last:
            ids = ids[: len(ids) - len(ids) % (bs * world)]
        elif world > 1:  # the batches that fill a round of all processes (the last one may be incomplete)
            ids = ids[: math.ceil(len(ids) / bs) // world * world * bs]
        return shard(ids, bs, self.dist.rank, world)

    def _train_epoch(self, epoch: int) -> dict:
        cfg = self.recipe.train
        lr = self.schedule.start_epoch(epoch)
        self.task.start_epoch(epoch)
        self.net.train()
        names = self.task.train_figures
        sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=self.device)  # Σ figure·w …, Σ w
        grad_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        steps = 0
        for b in batches(self._epoch_ids(epoch), cfg.batch_size, drop_last=cfg.drop_last):
            batch = self.task.batch(b)
            self.optimizer.zero_grad(set_to_none=True)
            loss, figures = self.task.loss(self.net, batch)
            if not torch.isfinite(loss):
                raise UserError(f"training diverged at epoch {epoch} (loss is {loss.item()}); lower train.lr "
                                "or set train.grad_clip")
            if self.trainable:
                loss.backward()
                if cfg.grad_clip:
                    norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                else:
                    norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
                grad_sum += norm.detach().double()
                steps += 1
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.model)
            w = self.task.batch_weight(batch)
            sums += torch.stack([figures[k].double() for k in names] + [loss.new_tensor(1.0).double()]) * w
        if self.dist.enabled:
            torch.distributed.all_reduce(sums)
        values = sums.tolist()
        n = max(values[-1], 1.0)
        rec = self.task.train_record({k: v / n for k, v in zip(names, values[:-1], strict=True)})
        rec["lr"] = lr
        rec["grad_norm"] = grad_sum.item() / steps if steps else 0.0
        return rec

    def _evaluate(self, ids: np.ndarray) -> dict:
        cfg = self.recipe.train
        bs = cfg.eval_batch_size or cfg.batch_size
        return self.task.evaluate(self.eval_model, shard(ids, bs, self.dist.rank, self.dist.world), batch_size=bs,
                                  distributed=self.dist.enabled)

    def _out_of_time(self, elapsed: float, max_minutes: float) -> bool:
        """Whether the wall-clock budget is spent (rank 0 decides for all ranks under DDP)."""
        flag = torch.tensor([float(elapsed >= 60.0 * max_minutes)], device=self.device)
        if self.dist.enabled:
            torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    def _save(self, name: str, ck: Checkpoint) -> None:
        if self.dist.main:
            ck.save(self.run_dir / name)

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.recipe.train
        st = self.state
        task = self.task
        start_epoch = st["epoch"] + 1
        self.callback({"event": "start", "task": task.kind, "epochs": cfg.epochs, "start_epoch": start_epoch,
                       "parameters": count_parameters(self.model), "device": str(self.device),
                       "train_samples": len(self.train_ids), "selection": task.selection_label,
                       "best_val": st["best_val"] if math.isfinite(st["best_val"]) else None})
        t_start = time.perf_counter() - st["elapsed"]
        try:
            for epoch in range(start_epoch, cfg.epochs):
                if st["stopped_early"]:
                    break
                rec = {"event": "epoch", "epoch": epoch, **self._train_epoch(epoch)}
                st["epoch"] = epoch
                is_eval = epoch % cfg.eval_every == 0 or epoch == cfg.epochs - 1
                if is_eval:
                    self._evaluation(epoch, rec)
                st["elapsed"] = time.perf_counter() - t_start
                if is_eval and cfg.max_minutes and self._out_of_time(st["elapsed"], cfg.max_minutes):
                    st["stopped_early"] = st["stopped_by_time"] = True
                rec["time"] = round(st["elapsed"], 3)
                if is_eval:
                    self._save("last.pt", self._checkpoint(last=True))
                    self.log.write(rec)
                elif epoch % cfg.log_every == 0:
                    self.log.write(rec)
                self.callback(rec)
            summary = self._finish()
        finally:
            self.log.close()
        self.callback({"event": "end", **summary})
        return summary

    def _selectable(self, epoch: int) -> bool:
        """Whether ``epoch`` may hold the best weights for good: not before ``train.select_after`` and as the task
        allows (``Task.selectable``); earlier bests are provisional."""
        return epoch >= self.recipe.train.select_after and self.task.selectable(epoch)

    def _evaluation(self, epoch: int, rec: dict) -> None:
        """Evaluate, select (strict "<"; the first selectable epoch replaces a provisional best, see
        ``_selectable``), save best.pt, count patience, feed the plateau schedule."""
        cfg, st, task = self.recipe.train, self.state, self.task
        val = self._evaluate(self.val_ids)
        rec.update({f"val_{k}": v for k, v in val.items() if k in task.eval_figures})
        test = self._evaluate(self.test_ids) if task.test_each_evaluation else None
        if test is not None:
            rec.update({f"test_{k}": v for k, v in test.items() if k in task.eval_figures})
        value = task.selection_value(val, self.eval_model)
        provisional = self._selectable(epoch) and not self._selectable(st["best_epoch"])
        if value < st["best_val"] or provisional:
            st.update(best_val=value, best_epoch=epoch, bad_evals=0,
                      best={"val": val} | ({"test": test} if test is not None else {}))
            if test is not None:
                st["best_test"] = float(test.get(task.selection, math.nan))
            self._save("best.pt", self._checkpoint(last=False))
        else:
            st["bad_evals"] += 1
            if cfg.patience and st["bad_evals"] >= cfg.patience:
                st["stopped_early"] = True
        self.schedule.observe(value)
        rec.update(best_val=st["best_val"], best_epoch=st["best_epoch"])
        if task.test_each_evaluation:
            rec["best_test"] = st["best_test"]

    def _finish(self) -> dict:
        """Test the selected weights once (tasks that ask for it), write summary.json."""
        st, task = self.state, self.task
        if self.dist.enabled:
            torch.distributed.barrier()  # best.pt is complete for every rank
        if not task.test_each_evaluation and "test" not in st["best"] and (self.run_dir / "best.pt").exists():
            best = Checkpoint.load(self.run_dir / "best.pt", kind=task.kind)
            model = self.eval_model
            raw = getattr(model, "_orig_mod", model)
            current = {k: v.detach().clone() for k, v in raw.state_dict().items()}
            raw.load_state_dict(best.state_dict)
            st["best"]["test"] = self._evaluate(self.test_ids) if len(self.test_ids) else {}
            raw.load_state_dict(current)
            best.metrics = dict(st["best"])
            best.train_state = dict(st)
            self._save("best.pt", best)
        summary = {
            "run_dir": str(self.run_dir),
            "task": task.kind,
            "model": self.recipe.model.name,
            "parameters": count_parameters(self.model),
            "epochs_run": st["epoch"] + 1,
            "best_epoch": st["best_epoch"],
            "best_val": st["best_val"],
            **task.summary(st["best"]),
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
