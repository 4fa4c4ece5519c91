"""Optimal superposition (Kabsch): remove rigid-body translation and rotation between structures.

In implicit solvent a small molecule diffuses and tumbles fast (alanine dipeptide moves its heavy atoms by
several Å per ps through translation and rotation alone); that motion is unpredictable noise for a propagator
and, learned as per-atom noise, would tear the molecule apart in a rollout. ``ingest md --align`` therefore
superposes every frame on a reference (the first frame), so a dataset holds the internal motion only.

All functions are vectorised over leading axes; positions in any length unit; no reflections (det R = +1).
"""

from __future__ import annotations

import numpy as np


def kabsch_rotation(mobile: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[..., 3, 3] the proper rotation R minimising Σ_i ‖R(m_i − m̄) − (t_i − t̄)‖² for [..., N, 3] point sets."""
    m = mobile - mobile.mean(-2, keepdims=True)
    t = target - target.mean(-2, keepdims=True)
    h = np.swapaxes(m, -1, -2) @ t  # [..., 3, 3] covariance
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
    diag = np.ones(h.shape[:-2] + (3,))
    diag[..., 2] = d
    return np.swapaxes(vt, -1, -2) @ (diag[..., :, None] * np.swapaxes(u, -1, -2))


def superpose(mobile: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``mobile`` [..., N, 3] moved rigidly onto ``target`` [..., N, 3] (least-squares, equal weights)."""
    r = kabsch_rotation(mobile, target)
    centred = mobile - mobile.mean(-2, keepdims=True)
    return (centred @ np.swapaxes(r, -1, -2) + target.mean(-2, keepdims=True)).astype(mobile.dtype, copy=False)


def align_frames(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Every frame of [F, N, 3] superposed on ``reference`` [N, 3]."""
    return superpose(frames, np.broadcast_to(reference, frames.shape))
