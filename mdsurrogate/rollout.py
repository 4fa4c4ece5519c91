"""Autoregressive rollout: state ──model──▶ state ──model──▶ … with the interaction graph rebuilt every step.

Each step advances the system by the model's Δ (``delta_frames`` × ``frame_dt`` of its dataset). A stability
guard stops the rollout with a clear reason on non-finite values or blown-up geometry; the frames produced up to
that point are kept (and already written when a writer streams them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .data.featurize import Featurizer
from .data.topology import BatchTopology


@dataclass
class StabilityGuard:
    """Stop when a state is non-finite, or when the radius of gyration of any graph grows beyond
    ``max_expansion`` × its initial value (plus ``min_radius`` to cope with tiny systems)."""

    max_expansion: float = 20.0
    min_radius: float = 1.0

    def check(self, x: torch.Tensor, v: torch.Tensor, rg0: torch.Tensor, topo: BatchTopology) -> str | None:
        if not (torch.isfinite(x).all() and torch.isfinite(v).all()):
            return "the model produced non-finite coordinates (NaN or inf)"
        rg = radius_of_gyration(x, topo)
        limit = self.max_expansion * (rg0 + self.min_radius)
        if (rg > limit).any():
            return (f"the geometry blew up (radius of gyration {rg.max().item():.3g} exceeds "
                    f"{self.max_expansion:g} × its initial value)")
        return None


def radius_of_gyration(x: torch.Tensor, topo: BatchTopology) -> torch.Tensor:
    """[B] radius of gyration of each graph (unweighted)."""
    from .models.scatter import scatter_mean

    b, nb = topo.batch, topo.num_graphs
    centre = scatter_mean(x, b, nb)
    return scatter_mean(((x - centre[b]) ** 2).sum(-1, keepdim=True), b, nb).squeeze(-1).sqrt()


def predict(model, featurizer: Featurizer, x: torch.Tensor, v: torch.Tensor, topo: BatchTopology):
    """One propagator call: the model's ``Prediction`` for the state (x, v) [ΣN, 3] one Δ later (with extras)."""
    return model(featurizer(x, v, topo))


def step(model, featurizer: Featurizer, x: torch.Tensor, v: torch.Tensor, topo: BatchTopology,
         dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance (x, v) [ΣN, 3] by one Δ: the next state in ``dtype``, exactly as :func:`rollout` chains it."""
    pred = predict(model, featurizer, x, v, topo)
    return pred.x.to(dtype), pred.v.to(dtype)


@dataclass
class RolloutResult:
    """positions / velocities: [steps_done + 1, ΣN, 3] (frame 0 = initial state); times: [steps_done + 1] in the
    dataset's time unit; errors: per-step position MSE against the reference where one exists (else NaN);
    clusters: [steps_done + 1, ΣN] hard cluster ids for hierarchical models; stopped: the guard's reason or None."""

    positions: np.ndarray
    velocities: np.ndarray
    times: np.ndarray
    errors: np.ndarray
    clusters: np.ndarray | None = None
    stopped: str | None = None
    extras: dict = field(default_factory=dict)

    @property
    def steps_done(self) -> int:
        return self.positions.shape[0] - 1


@torch.no_grad()
def rollout(model, featurizer: Featurizer, x0: torch.Tensor, v0: torch.Tensor, topo: BatchTopology, steps: int, *,
            delta_time: float = 1.0, t0: float = 0.0, reference: Callable[[int], np.ndarray | None] | None = None,
            on_frame: Callable[[int, np.ndarray, np.ndarray, float, np.ndarray | None], None] | None = None,
            guard: StabilityGuard | None = None, device="cpu", dtype=torch.float32) -> RolloutResult:
    """Chain ``steps`` propagator steps from (x0, v0) [ΣN, 3].

    ``reference(k)`` may return the true positions [ΣN, 3] after k steps (or None); ``on_frame(k, x, v, time,
    clusters)`` is called for k = 0 … steps_done (e.g. to stream frames to a writer). ``clusters`` is the hard
    cluster assignment the model gives the nodes of frame k (hierarchical models), else None.
    """
    guard = guard or StabilityGuard()
    model.eval()
    topo = topo.to(device)
    x = x0.to(device=device, dtype=dtype)
    v = v0.to(device=device, dtype=dtype)
    rg0 = radius_of_gyration(x, topo)
    xs, vs, times, errs, cls = [], [], [], [], []
    stopped = None

    def emit(k, x, v, pred):
        xn, vn = x.cpu().numpy(), v.cpu().numpy()
        c = pred.extras.get("clusters") if pred is not None else None
        cn = c.cpu().numpy() if c is not None else None
        ref = reference(k) if (reference and k > 0) else None
        t = t0 + k * delta_time
        xs.append(xn)
        vs.append(vn)
        times.append(t)
        errs.append(float(((xn - ref) ** 2).mean()) if ref is not None else (0.0 if k == 0 else math.nan))
        if cn is not None:
            cls.append(cn)
        if on_frame:
            on_frame(k, xn, vn, t, cn)

    pred = predict(model, featurizer, x, v, topo)  # state 0 → 1; also the cluster assignment of frame 0
    for k in range(1, steps + 1):
        x_new, v_new = pred.x.to(dtype), pred.v.to(dtype)
        emit(k - 1, x, v, pred)
        stopped = guard.check(x_new, v_new, rg0, topo)
        if stopped:
            stopped = f"rollout stopped before step {k}: {stopped}"
            break
        x, v = x_new, v_new
        if k < steps or "clusters" in pred.extras:
            pred = predict(model, featurizer, x, v, topo)
    if not stopped:
        emit(steps, x, v, pred if "clusters" in pred.extras else None)
    clusters = np.stack(cls) if cls else None
    return RolloutResult(np.stack(xs), np.stack(vs), np.asarray(times), np.asarray(errs), clusters, stopped)


def rollout_to_file(model, featurizer: Featurizer, start, steps: int, path, *, delta_time: float, device="cpu",
                    on_step: Callable[[int], None] | None = None, guard: StabilityGuard | None = None) -> RolloutResult:
    """Roll ``model`` out from ``start`` (initial_state.InitialState) and stream every frame to ``path``
    (.pdb multi-MODEL with CONECT for the atoms' bonds and B-factor = cluster for hierarchical models, extended
    .xyz with velocities, or .dcd); ``on_step(k)`` after frame k is written (e.g. a progress bar)."""
    from .io.writers import open_writer

    ext = str(path).lower().rsplit(".", 1)[-1]
    opts = {}
    if ext == "pdb":
        opts["conect"] = start.atoms.bonds is not None
        if model.produces_clusters:
            opts["bfactors"] = "cluster"
    with open_writer(path, start.atoms, **opts) as writer:

        def on_frame(k, x, v, t, clusters):
            extra = {"cluster": clusters} if clusters is not None and ext != "dcd" else {}
            writer.write(x, time_ps=t, velocities=v if ext == "xyz" else None, **extra)
            if on_step is not None:
                on_step(k)

        return rollout(model, featurizer, start.x0, start.v0, start.topo, steps, delta_time=delta_time,
                       t0=start.t0, reference=start.reference, on_frame=on_frame, guard=guard, device=device)
