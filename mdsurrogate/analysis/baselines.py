"""Null models of a rollout: what a surrogate must beat (arrays in, arrays out; no training, no files).

Point predictions, each returning a trajectory [..., K+1, N, 3] whose frame 0 is the start x₀ [..., N, 3]:

* :func:`stay_still`: x_k = x₀;
* :func:`constant_velocity`: x_k = x₀ + k · s · v₀, where s converts the stored velocity into a displacement per
  model step (:func:`velocity_step_scale`);
* :func:`drift_extrapolation`: x_k = x₀ + k · Δ · d̄, d̄ the mean displacement per stored frame over the last m
  frames before the start.

The fourth null model of a fidelity report, "the Linear baseline", is a trained ``linear`` run (x̂ = x + τv with a
learned τ), evaluated like any other surrogate.

Trivial ensembles for the probabilistic scores, [R, ..., K+1, N, 3] (frame 0 = x₀ for every replica), with ε
i.i.d. standard normal per node, coordinate, step and replica:

* :func:`tethered_noise`: x_k = x₀ + σ ε_k (noise around the start, no memory);
* :func:`random_walk`: x_k = x_{k−1} + σ ε_k (diffusion from the start).

:func:`noise_sigma` tunes σ so that their per-step RMS displacement equals the data's.
"""

from __future__ import annotations

import math

import numpy as np


def _frames(x0, steps: int) -> np.ndarray:
    """x₀ [..., N, 3] repeated as a trajectory [..., K+1, N, 3]."""
    x0 = np.asarray(x0, np.float64)
    return np.broadcast_to(x0[..., None, :, :], x0.shape[:-2] + (int(steps) + 1,) + x0.shape[-2:]).copy()


def _k(steps: int) -> np.ndarray:
    """[K+1, 1, 1] step numbers 0 … K, broadcastable against [..., K+1, N, 3]."""
    return np.arange(int(steps) + 1, dtype=np.float64)[:, None, None]


def velocity_step_scale(units: dict, frame_dt: float, delta_frames: int) -> float:
    """The displacement of one model step per unit of stored velocity: Δ in frames (``delta_frames``) when the
    data stores velocities per frame (MD: Å per frame, see ``data/sources/md.py``; mocap: length per frame), Δ in
    time units (``frame_dt · delta_frames``) when it stores them per time unit (N-body, M-complex, ASE: Å/ps)."""
    if "per frame" in str((units or {}).get("velocity", "")).lower():
        return float(delta_frames)
    return float(frame_dt) * int(delta_frames)


def stay_still(x0, steps: int) -> np.ndarray:
    """x_k = x₀ for k = 0 … K: [..., K+1, N, 3]."""
    return _frames(x0, steps)


def constant_velocity(x0, v0, steps: int, step_scale: float) -> np.ndarray:
    """x_k = x₀ + k · ``step_scale`` · v₀ [..., K+1, N, 3] (``step_scale``: :func:`velocity_step_scale`)."""
    v0 = np.asarray(v0, np.float64)
    return _frames(x0, steps) + _k(steps) * float(step_scale) * v0[..., None, :, :]


def drift_extrapolation(history, steps: int, delta_frames: int, window: int = 20) -> np.ndarray:
    """Extrapolate the recent mean drift: x_k = x₀ + k · Δ · (x₀ − x_{−m}) / m [..., K+1, N, 3].

    Args:
        history: [..., H, N, 3] the stored frames up to and including the start (oldest first; x₀ = the last).
        delta_frames: Δ, stored frames per model step.
        window: m, how many frames back the mean displacement per frame is taken (m = min(window, H − 1); with no
            earlier frame the drift is zero, i.e. stay still).
    """
    h = np.asarray(history, np.float64)
    m = min(int(window), h.shape[-3] - 1)
    x0 = h[..., -1, :, :]
    if m < 1:
        return _frames(x0, steps)
    drift = (x0 - h[..., -1 - m, :, :]) / m
    return _frames(x0, steps) + _k(steps) * int(delta_frames) * drift[..., None, :, :]


def noise_sigma(step_rms: float, kind: str) -> float:
    """σ of a trivial ensemble whose RMS displacement per step √(E‖x_k,i − x_{k−1},i‖²) equals the data's
    ``step_rms`` (length unit): a random-walk step σε has E‖σε‖² = 3σ², so σ = d/√3; consecutive tethered frames
    differ by σ(ε_k − ε_{k−1}) with E‖·‖² = 6σ², so σ = d/√6 (its first step, from the exact start, is d/√2)."""
    if kind == "random_walk":
        return float(step_rms) / math.sqrt(3.0)
    if kind == "tethered":
        return float(step_rms) / math.sqrt(6.0)
    raise ValueError(f"unknown trivial ensemble {kind!r}; choose tethered or random_walk")


def _noise(x0, steps: int, replicas: int, rng: np.random.Generator) -> np.ndarray:
    x0 = np.asarray(x0)
    return rng.standard_normal((int(replicas),) + x0.shape[:-2] + (int(steps),) + x0.shape[-2:])


def tethered_noise(x0, steps: int, sigma: float, replicas: int, rng: np.random.Generator) -> np.ndarray:
    """x_k = x₀ + σ ε_k (k ≥ 1), independent per step: [R, ..., K+1, N, 3]."""
    out = np.broadcast_to(_frames(x0, steps), (int(replicas),) + _frames(x0, steps).shape).copy()
    out[..., 1:, :, :] += float(sigma) * _noise(x0, steps, replicas, rng)
    return out


def random_walk(x0, steps: int, sigma: float, replicas: int, rng: np.random.Generator) -> np.ndarray:
    """x_k = x_{k−1} + σ ε_k: [R, ..., K+1, N, 3]."""
    out = np.broadcast_to(_frames(x0, steps), (int(replicas),) + _frames(x0, steps).shape).copy()
    out[..., 1:, :, :] += float(sigma) * np.cumsum(_noise(x0, steps, replicas, rng), axis=-3)
    return out
