"""Ramachandran statistics of φ/ψ series: 30° histograms, basin populations, Jensen–Shannon divergence and
core-to-core transition counts. All angles in degrees; any angle is first wrapped onto [−180°, 180°).

Inputs are φ and ψ arrays of the same shape: [F] for one residue or [F, R] for R residues (frames first).
Histograms and populations pool all residues; transitions are counted per residue and summed.

Basins (:data:`BASINS`, half-open rectangles [φ_lo, φ_hi) × [ψ_lo, ψ_hi) that tile the torus):
    αR     φ ∈ [−180°, 0°),  ψ ∈ [−120°, 60°)                                  right-handed helix
    β      φ ∈ [−180°, 0°),  ψ ∈ [60°, 180°) ∪ [−180°, −120°)                   extended: C5, PII and C7eq
    other  φ ∈ [0°, 180°)                                                       αL and C7ax (positive φ)
These are the three macrostates of alanine dipeptide (β with C7eq, αR, and the rare positive-φ states). The
boundaries sit where the density is lowest: in 2 ns of the teacher's ala2 (amber99sbildn + OBC II, 300 K) the
ψ density of the φ < 0 half has its minimum between ψ ≈ 50° and 100° (αR there is centred near ψ ≈ −15° and
reaches ψ ≈ 50°), and no frame has ψ between −140° and −70°.

Transitions use cores (:data:`CORES`), the basins shrunk away from every shared edge, and a hysteresis
rule (the "last core visited", as in core-set Markov models): a frame inside a core is assigned to that core,
a frame outside every core keeps the assignment of the last core visited, and one transition is counted
each time the assignment changes. Recrossings of a boundary that do not reach the other core are not counted,
so the count is insensitive to fast fluctuations on the barrier. Frames before the first core visit are not
assigned. Cores:
    αR     φ ∈ [−160°, −20°),  ψ ∈ [−90°, 30°)
    β      φ ∈ [−170°, −20°),  ψ ∈ [100°, 180°) ∪ [−180°, −150°)
    other  φ ∈ [20°, 170°)
Transition rates are per ns of trajectory per residue: transitions / (R · F · frame_ps / 1000).

Jensen–Shannon divergence: in bits (log base 2) by default, so it lies in [0, 1]; ``base=np.e`` gives nats
(maximum ln 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .dihedrals import wrap_degrees

Rect = tuple[float, float, float, float]  # (phi_lo, phi_hi, psi_lo, psi_hi), degrees, half-open

BASINS: dict[str, tuple[Rect, ...]] = {
    "alphaR": ((-180.0, 0.0, -120.0, 60.0),),
    "beta": ((-180.0, 0.0, 60.0, 180.0), (-180.0, 0.0, -180.0, -120.0)),
    "other": ((0.0, 180.0, -180.0, 180.0),),
}
CORES: dict[str, tuple[Rect, ...]] = {
    "alphaR": ((-160.0, -20.0, -90.0, 30.0),),
    "beta": ((-170.0, -20.0, 100.0, 180.0), (-170.0, -20.0, -180.0, -150.0)),
    "other": ((20.0, 170.0, -180.0, 180.0),),
}


def _pair(phi, psi) -> tuple[np.ndarray, np.ndarray]:
    phi, psi = wrap_degrees(phi), wrap_degrees(psi)
    if phi.shape != psi.shape:
        raise ValueError(f"phi and psi must have the same shape, got {phi.shape} and {psi.shape}")
    return phi, psi


def basin_labels(phi, psi, regions: Mapping[str, tuple[Rect, ...]] = BASINS) -> np.ndarray:
    """Index (into ``list(regions)``) of the region holding each (φ, ψ), −1 where none does; same shape as φ.
    Regions are checked in order, so the first one listed wins where two overlap."""
    phi, psi = _pair(phi, psi)
    out = np.full(phi.shape, -1, np.int64)
    for k, rects in reversed(list(enumerate(regions.values()))):
        inside = np.zeros(phi.shape, bool)
        for lo_phi, hi_phi, lo_psi, hi_psi in rects:
            inside |= (phi >= lo_phi) & (phi < hi_phi) & (psi >= lo_psi) & (psi < hi_psi)
        out[inside] = k
    return out


def basin_populations(phi, psi, basins: Mapping[str, tuple[Rect, ...]] = BASINS) -> dict[str, float]:
    """Fraction of all (frame, residue) pairs in each basin (in the order of ``basins``); a remainder outside
    every basin (only with custom basins that leave gaps) is reported as ``"unassigned"``."""
    labels = basin_labels(phi, psi, basins)
    n = labels.size
    if n == 0:
        raise ValueError("no frames: populations are undefined")
    out = {name: float(np.count_nonzero(labels == k)) / n for k, name in enumerate(basins)}
    rest = float(np.count_nonzero(labels < 0)) / n
    if rest:
        out["unassigned"] = rest
    return out


def ramachandran_histogram(phi, psi, bin_deg: float = 30.0) -> np.ndarray:
    """[B, B] probabilities (sum 1) of (φ, ψ) on bins of ``bin_deg`` degrees from −180°; rows are φ bins,
    columns ψ bins (B = 360 / bin_deg, 12 for 30° bins)."""
    phi, psi = _pair(phi, psi)
    n_bins = 360.0 / bin_deg
    if abs(n_bins - round(n_bins)) > 1e-9 or n_bins < 1:
        raise ValueError(f"bin_deg must divide 360, got {bin_deg}")
    n_bins = int(round(n_bins))
    if phi.size == 0:
        raise ValueError("no frames: the histogram is undefined")
    i = np.minimum(((phi.ravel() + 180.0) // bin_deg).astype(np.int64), n_bins - 1)
    j = np.minimum(((psi.ravel() + 180.0) // bin_deg).astype(np.int64), n_bins - 1)
    counts = np.bincount(i * n_bins + j, minlength=n_bins * n_bins).reshape(n_bins, n_bins)
    return counts / counts.sum()


def jensen_shannon(p, q, base: float = 2.0) -> float:
    """Jensen–Shannon divergence ½ KL(p‖m) + ½ KL(q‖m), m = (p + q) / 2, of two histograms of the same shape
    (normalised here; 0·log 0 = 0). In bits for ``base=2`` (range [0, 1]), in nats for ``base=np.e``."""
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(f"histograms must have the same shape, got {np.shape(p)} and {np.shape(q)}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("histograms must be non-negative with a positive sum")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return float(max(0.0, 0.5 * (kl(p) + kl(q)) / np.log(base)))


@dataclass
class TransitionCounts:
    """Core-to-core transitions (see the module docstring).

    Attributes:
        names: the cores, in order; counts: [K, K] int, counts[a, b] = transitions a → b.
        total: all transitions; duration_ns: trajectory time summed over residues (R · F · frame_ps / 1000).
        per_ns: total / duration_ns.
    """

    names: list[str]
    counts: np.ndarray
    total: int
    duration_ns: float
    per_ns: float

    def as_dict(self) -> dict:
        pairs = {f"{a}->{b}": int(self.counts[i, j]) for i, a in enumerate(self.names)
                 for j, b in enumerate(self.names) if i != j}
        return {"total": self.total, "per_ns": self.per_ns, "duration_ns": self.duration_ns, "pairs": pairs}


def core_assignment(phi, psi, cores: Mapping[str, tuple[Rect, ...]] = CORES) -> np.ndarray:
    """[F, R] (or [F]) index of the last core visited up to each frame, −1 before the first visit."""
    labels = basin_labels(phi, psi, cores)
    squeeze = labels.ndim == 1
    lab = labels[:, None] if squeeze else labels.reshape(labels.shape[0], -1)
    f = np.arange(lab.shape[0])[:, None]
    last = np.maximum.accumulate(np.where(lab >= 0, f, -1), axis=0)  # frame of the last core visit
    filled = np.where(last >= 0, lab[np.maximum(last, 0), np.arange(lab.shape[1])[None, :]], -1)
    return filled[:, 0] if squeeze else filled.reshape(labels.shape)


def transitions(phi, psi, frame_ps: float, cores: Mapping[str, tuple[Rect, ...]] = CORES) -> TransitionCounts:
    """Count core-to-core transitions of φ/ψ series [F] or [F, R] saved every ``frame_ps`` ps."""
    if frame_ps <= 0:
        raise ValueError(f"frame_ps must be positive, got {frame_ps}")
    a = core_assignment(phi, psi, cores)
    a = a[:, None] if a.ndim == 1 else a.reshape(a.shape[0], -1)
    src, dst = a[:-1], a[1:]
    moved = (src >= 0) & (dst >= 0) & (src != dst)
    k = len(cores)
    counts = np.bincount(src[moved] * k + dst[moved], minlength=k * k).reshape(k, k)
    duration = a.shape[0] * a.shape[1] * frame_ps / 1000.0
    total = int(counts.sum())
    return TransitionCounts(list(cores), counts, total, duration, total / duration if duration else 0.0)


def ramachandran_summary(phi, psi, frame_ps: float, bin_deg: float = 30.0) -> dict:
    """Everything above in one JSON-ready dict: frames, residues, basin populations, the histogram, the
    Jensen–Shannon divergence (bits) between the first and second half of the frames (a noise floor for
    comparing two runs of this length: it shrinks with more frames and with faster basin exchange), and the
    core-to-core transitions."""
    phi, psi = _pair(phi, psi)
    n = phi.shape[0]
    half = n // 2
    out = {
        "frames": int(n),
        "residues": int(1 if phi.ndim == 1 else np.prod(phi.shape[1:])),
        "bin_deg": float(bin_deg),
        "populations": basin_populations(phi, psi),
        "histogram": ramachandran_histogram(phi, psi, bin_deg).round(6).tolist(),
        "transitions": transitions(phi, psi, frame_ps).as_dict(),
    }
    if half >= 1:
        out["js_halves_bits"] = jensen_shannon(ramachandran_histogram(phi[:half], psi[:half], bin_deg),
                                               ramachandran_histogram(phi[half:2 * half], psi[half:2 * half],
                                                                      bin_deg))
    return out
