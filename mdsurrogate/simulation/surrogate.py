"""A trained propagator, ready to use: what rollouts, evaluation, the ``.mdsr`` reader, ASE dynamics, plots and the
demo all load, once, from a run directory or checkpoint.

    from mdsurrogate.simulation import Surrogate

    sur = Surrogate.load("runs/adk_eghn", device="auto", dtype="float32")
    pred = sur.predict(x, v, topo)                       # one Δ, the model's mean prediction (Prediction)
    res = sur.rollout(start, steps=100)                  # start: simulation.initial_state.InitialState

A Surrogate holds the model (eval mode, no gradients), the featurizer that builds its inputs, Δ in physical time
(``delta_time``, the dataset's time unit: ps for MD), the units, the dataset / MD metadata the checkpoint records,
the stability-guard limits derived from the training data, and the device and dtype it computes in.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.featurize import Featurizer
from ..data.geometry import constraint_pairs, signed_volumes
from ..data.topology import BatchTopology
from ..device import resolve_device, resolve_dtype
from ..models.base import Prediction
from ..models.stochastic import is_stochastic, unwrap
from ..training.checkpoint import Checkpoint, DatasetInfo
from .guard import StabilityGuard


def cap_speed(v: Tensor, limit: float) -> Tensor:
    """v [ΣN, 3] with every row longer than ``limit`` shortened to it (direction kept)."""
    speed = v.norm(dim=-1, keepdim=True)
    return v * (limit / speed.clamp_min(limit))


@dataclass
class Surrogate:
    """Model + featurizer + Δ + units + metadata + device/dtype.

    Attributes:
        model: the propagator (eval mode) on ``device`` in ``dtype``.
        sample: a stochastic propagator draws its next state (False: it steps to its mean).
        project: project every new state onto reference distances (``data.constraints.project_bond_lengths``):
            "bonds", "angles" (bonds and 1-3 pairs), "none"; None: the stochastic propagator's own setting.
        featurizer: builds its ``GraphBatch`` from a state and a static topology.
        dataset: :class:`~mdsurrogate.training.checkpoint.DatasetInfo` (units, frame_dt, Δ, MD selection …).
        checkpoint: the :class:`Checkpoint` it was loaded from (None when built from a bare model).
        device, dtype: where and in which precision states are computed.
        noise_gain: multiplies a stochastic propagator's noise scales when it samples; None: the checkpoint's
            calibrated gain (``extra["noise_gain"]``, written by ``simulation.calibration``), else 1.
        noise_memory: ρ ∈ [0, 1), the correlation of consecutive noise draws along a rollout (``StochasticPropagator
            .draw``); None: the checkpoint's calibrated value (``extra["noise_memory"]``), else 0 (independent).
        speed_limit: the largest per-atom speed (the dataset's velocity unit, e.g. Å per frame) the model is given:
            ``predict`` shortens any longer input velocity to it (direction kept, so the cap is equivariant; the
            state itself, and what a rollout writes, keep the true velocity). None: the checkpoint's
            ``extra["input_speed_limit"]`` (1.25 × the fastest training input, stored for MD data), else no cap;
            ``math.inf`` turns it off. Without it, a stochastic rollout whose sampled displacement is its next
            velocity can feed the model speeds it never saw, which it amplifies into a blow-up within a few steps.
        flow_steps: midpoint steps of a flow propagator's transport per draw (``models.flow``); None: the recipe's
            ``model.flow_steps``.
    """

    model: torch.nn.Module
    featurizer: Featurizer
    dataset: DatasetInfo
    checkpoint: Checkpoint | None = None
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    sample: bool = True
    project: str | bool | None = None
    noise_gain: float | None = None
    noise_memory: float | None = None
    speed_limit: float | None = None
    flow_steps: int | None = None

    def __post_init__(self):
        extra = self.checkpoint.extra if self.checkpoint is not None else {}
        if self.noise_gain is None:
            self.noise_gain = float(extra.get("noise_gain", 1.0))
        if self.noise_memory is None:
            self.noise_memory = float(extra.get("noise_memory", 0.0))
        if self.speed_limit is None:
            self.speed_limit = float(extra.get("input_speed_limit", math.inf))
        from ..errors import ParameterError

        if self.flow_steps is not None and int(self.flow_steps) < 1:
            raise ParameterError("{flow_steps} must be ≥ 1 (None: the model's), not {value}", flow_steps="flow_steps",
                                 value=str(self.flow_steps))
        if not self.speed_limit > 0:
            raise ParameterError("{speed_limit} must be > 0 (math.inf: no cap), not {value}",
                                 speed_limit="speed_limit", value=str(self.speed_limit))

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, *, device="auto", dtype="float32") -> Surrogate:
        if checkpoint.kind != "propagator":
            from ..errors import CheckpointError

            raise CheckpointError(f"{checkpoint.path or 'checkpoint'} holds a {checkpoint.kind} model, not a "
                                  "propagator")
        dev, dt = resolve_device(device), resolve_dtype(dtype)
        return cls(checkpoint.build_model(dev, dt), checkpoint.featurizer(), checkpoint.dataset, checkpoint, dev, dt)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device="auto", dtype="float32") -> Surrogate:
        """Load a propagator checkpoint file or run directory (its ``best.pt``) safely."""
        return cls.from_checkpoint(Checkpoint.load(path, kind="propagator"), device=device, dtype=dtype)

    @classmethod
    def from_model(cls, model: torch.nn.Module, featurizer: Featurizer, *, delta_time: float = 1.0,
                   units: dict | None = None, device="cpu", dtype="float32") -> Surrogate:
        """Wrap a bare model (tests, custom models): Δ = ``delta_time`` in the units' time unit."""
        dev, dt = resolve_device(device), resolve_dtype(dtype)
        info = DatasetInfo(units=dict(units or {}), frame_dt=float(delta_time), delta_frames=1,
                           delta_time=float(delta_time))
        return cls(model.to(device=dev, dtype=dt).eval(), featurizer, info, None, dev, dt)

    # -- what it is -----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.checkpoint.model_name if self.checkpoint else type(self.model).__name__

    @property
    def path(self):
        return self.checkpoint.path if self.checkpoint else None

    @property
    def delta_time(self) -> float:
        """Δ of one step in the dataset's time unit (ps for MD)."""
        return float(self.dataset.delta_time)

    @property
    def units(self) -> dict:
        return dict(self.dataset.units)

    @property
    def md(self) -> dict | None:
        """The MD selection record (selection, signature, elements, charges, velocity convention) or None."""
        return self.dataset.md

    @property
    def produces_clusters(self) -> bool:
        return bool(getattr(self.model, "produces_clusters", False))

    @property
    def velocity_trained(self) -> bool:
        """False for a trainable propagator whose velocity output got no training signal (velocity_weight = 0)."""
        if self.checkpoint is None or self.checkpoint.model_name == "linear":
            return True
        return float(self.checkpoint.recipe.get("train", {}).get("velocity_weight", 0.0)) > 0

    @property
    def stochastic(self) -> bool:
        """True when the propagator samples its next state (and ``sample`` is on)."""
        return self.sample and is_stochastic(self.model)

    @property
    def has_flow(self) -> bool:
        """True for a stochastic propagator with a generative flow step (``model.flow``)."""
        return is_stochastic(self.model) and getattr(unwrap(self.model), "flow", None) is not None

    @property
    def velocity_from_positions(self) -> bool:
        """True when the dataset's velocity is the displacement over one model step per frame ("lag"), so the
        next velocity follows from the next positions: v' = (x' − x) / Δ_frames."""
        return bool(self.md) and self.md.get("velocities") == "lag"

    @property
    def projection(self) -> str:
        """What a new state is projected onto: "none", "bonds" or "angles" (bonds and 1-3 distances). ``project``
        overrides; by default stochastic propagators use their ``project`` setting (default "bonds")."""
        if self.project is not None:
            return self.project if isinstance(self.project, str) else ("bonds" if self.project else "none")
        if not self.stochastic:
            return "none"
        return getattr(unwrap(self.model), "project", "bonds")

    @property
    def projects(self) -> bool:
        return self.projection != "none"

    def bond_reference(self, topo: BatchTopology, x0: Tensor, *, angles: bool | None = None):
        """Constraint pairs [2, P] (each once; the local edges, and their 1-3 pairs when the projection fixes
        angles) and their reference lengths [P]: the training data's mean lengths when the checkpoint records them
        for this topology, else those of ``x0``; None without local edges."""
        local = topo.edge_sets.get("local")
        if local is None or local.index.shape[1] == 0:
            return None
        angles = self.projection == "angles" if angles is None else angles
        pairs = constraint_pairs(local.index, int(topo.ptr[-1]), angles=angles)
        ref = self.checkpoint.extra.get("angle_pair_lengths" if angles else "bond_lengths") if self.checkpoint \
            else None
        if ref is not None and len(ref) > 0 and pairs.shape[1] % len(ref) == 0:
            lengths = torch.as_tensor(ref, dtype=self.dtype).repeat(pairs.shape[1] // len(ref))
        else:
            lengths = (x0[pairs[0]] - x0[pairs[1]]).norm(dim=-1)
        return pairs.to(self.device), lengths.to(device=self.device, dtype=self.dtype)

    def contact_reference(self, topo: BatchTopology):
        """(floor, exempt pairs [2, Q]) of the excluded volume a projecting rollout keeps: no two atoms closer than the
        training data's closest non-bonded, non-1-3 pair (``extra["contact_floor"]``), the topology's bonded and
        1-3 pairs exempt; None when the checkpoint records no floor or the model does not project."""
        floor = self.checkpoint.extra.get("contact_floor") if self.checkpoint else None
        local = topo.edge_sets.get("local")
        if floor is None or not self.projects or local is None or local.index.shape[1] == 0:
            return None
        return float(floor), constraint_pairs(local.index, int(topo.ptr[-1]), angles=True).to(self.device)

    def stereo_reference(self, topo: BatchTopology, x0: Tensor):
        """(centres [Q·B, 4], signs [Q·B]) of the stereo centres the checkpoint records (``training.limits``),
        repeated over the B graphs of ``topo``, with the handedness each has in ``x0``; None when it records none
        or the graphs are not the training system's size."""
        centres = self.checkpoint.extra.get("stereo_centres") if self.checkpoint else None
        if centres is None or len(centres) == 0:
            return None
        centres = torch.as_tensor(centres, dtype=torch.long, device=self.device)
        sizes = topo.ptr[1:] - topo.ptr[:-1]
        if not bool((sizes == sizes[0]).all()) or int(centres.max()) >= int(sizes[0]):
            return None
        centres = (centres.unsqueeze(0) + topo.ptr[:-1].to(self.device).view(-1, 1, 1)).reshape(-1, 4)
        return centres, torch.sign(signed_volumes(x0, centres))

    def guard(self) -> StabilityGuard:
        """The stability guard with the limits the checkpoint stores (defaults without)."""
        return StabilityGuard.from_limits(self.checkpoint.guard if self.checkpoint else None)

    # -- computing ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: Tensor, v: Tensor, topo: BatchTopology) -> Prediction:
        """The model's prediction one Δ after the state (x, v) [ΣN, 3] (on the surrogate's device and dtype)."""
        x = x.to(device=self.device, dtype=self.dtype)
        v = v.to(device=self.device, dtype=self.dtype)
        if math.isfinite(self.speed_limit):
            v = cap_speed(v, self.speed_limit)
        pred = self.model(self.featurizer(x, v, topo))
        pred.x, pred.v = pred.x.to(self.dtype), pred.v.to(self.dtype)
        return pred

    def chain(self, x0: Tensor, v0: Tensor, topo: BatchTopology, *, guard: StabilityGuard | None | str = "default",
              seed: int | None = None):
        """A :class:`~mdsurrogate.simulation.rollout.Chain` from (x0, v0): the one step-and-guard loop."""
        from .rollout import Chain

        return Chain(self, x0, v0, topo, guard=self.guard() if guard == "default" else guard, seed=seed)

    def rollout(self, start, steps: int, **kwargs):
        """Chain ``steps`` steps from an :class:`~mdsurrogate.simulation.initial_state.InitialState`; keyword
        arguments as :func:`~mdsurrogate.simulation.rollout.rollout`."""
        from .rollout import rollout

        return rollout(self, start, steps, **kwargs)
