"""Rollout fidelity: how far a surrogate trajectory lies from the reference, and whether it still looks like the data.

Pure NumPy on arrays; no models, no files. Conventions shared by every function:

* positions ``x``: ``[..., N, 3]`` in the data's length unit (Å for MD; dimensionless for N-body), N nodes;
  a trajectory is ``[..., K+1, N, 3]`` with frame 0 the start and frame k the state k model steps (k·Δ) later;
* an ensemble puts its R replicas on axis 0: ``[R, ..., N, 3]``;
* local edges (bonds, bones): ``edges`` ``[E, 2]`` node index pairs (each undirected edge once);
* "per start" arrays have the starts on axis 0 (``[S, ...]``), the axis the bootstrap resamples.

Functions return float64 arrays over the leading dimensions they do not reduce. A non-finite position (a diverged
rollout) gives NaN, never an exception, so a diverged start shows up in the means instead of vanishing from them.

References for the probabilistic scores: Gneiting & Raftery (2007, JASA 102:359) for the energy score and CRPS and
their "fair" finite-ensemble forms (Ferro 2014, QJRMS 140:1917); Fortin et al. (2014, J. Hydrometeor. 15:1708) for
the spread–skill ratio and its √((R+1)/R) correction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .ramachandran import jensen_shannon

# ----------------------------------------------------------------------------------------------------------
# distances to the reference
# ----------------------------------------------------------------------------------------------------------


def mse(x, ref) -> np.ndarray:
    """[...] position MSE, mean over the N nodes *and* the 3 coordinates (the papers' convention; length²):
    MSE = 1/(3N) Σ_i ‖x_i − y_i‖² = RMSD² / 3."""
    d = np.asarray(x, np.float64) - np.asarray(ref, np.float64)
    return (d * d).mean(axis=(-1, -2))


def rmsd(x, ref, *, superpose: bool = False) -> np.ndarray:
    """[...] root-mean-square deviation RMSD = √(1/N Σ_i ‖x_i − y_i‖²) (length) between x and ref [..., N, 3].

    ``superpose=True``: after the optimal rigid superposition of x onto ref (:func:`kabsch`: translation and
    proper rotation, reflections excluded), i.e. min over R ∈ SO(3), t of RMSD(x Rᵀ + t, ref).
    """
    x = superpose_onto(x, ref) if superpose else np.asarray(x, np.float64)
    d = x - np.asarray(ref, np.float64)
    return np.sqrt((d * d).sum(-1).mean(-1))


def kabsch(x, ref) -> tuple[np.ndarray, np.ndarray]:
    """The proper rotation R [..., 3, 3] and translation t [..., 3] that minimise Σ_i ‖R x_i + t − y_i‖².

    Kabsch (:func:`mdsurrogate.data.align.kabsch_rotation`): with centred coordinates X = x − x̄, Y = y − ȳ and
    H = Xᵀ Y = U S Vᵀ (SVD), R = V diag(1, 1, d) Uᵀ with d = sign det(V Uᵀ) (d = −1 turns a reflection into the best
    proper rotation), t = ȳ − R x̄. Non-finite inputs give NaN (instead of an SVD error).
    """
    from ..data.align import kabsch_rotation

    x = np.asarray(x, np.float64)
    y = np.broadcast_to(np.asarray(ref, np.float64), x.shape)
    ok = np.isfinite(x).all(axis=(-1, -2)) & np.isfinite(y).all(axis=(-1, -2))
    x = np.where(ok[..., None, None], x, 0.0)
    y = np.where(ok[..., None, None], y, 0.0)
    rot = kabsch_rotation(x, y)
    t = y.mean(-2) - (rot @ x.mean(-2)[..., None])[..., 0]
    return np.where(ok[..., None, None], rot, np.nan), np.where(ok[..., None], t, np.nan)


def superpose_onto(x, ref) -> np.ndarray:
    """x [..., N, 3] moved rigidly (rotation + translation, no reflection) onto ref [..., N, 3] (Kabsch)."""
    rot, t = kabsch(x, ref)
    return np.asarray(x, np.float64) @ np.swapaxes(rot, -1, -2) + t[..., None, :]


# ----------------------------------------------------------------------------------------------------------
# skill scores and the bootstrap over starts
# ----------------------------------------------------------------------------------------------------------


def skill_score(err_model, err_null, axis=0) -> np.ndarray:
    """Skill 1 − ⟨e_model⟩ / ⟨e_null⟩ of mean errors over ``axis`` (the starts): 1 is perfect, 0 is no better than
    the null model, < 0 worse. The ratio of means (not the mean of per-start ratios) keeps starts where the null
    is nearly exact from dominating. Works for RMSD and for MSE (then 1 − MSE ratio, the "MSE skill score")."""
    return 1.0 - np.mean(err_model, axis=axis) / np.mean(err_null, axis=axis)


def bootstrap_ci(statistic: Callable[..., np.ndarray], *arrays, n_boot: int = 2000, level: float = 0.9,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``statistic`` over the starts (axis 0 of every array, resampled jointly).

    Draws ``n_boot`` resamples of the S starts with replacement (``numpy.random.default_rng(seed)``: seeded, so
    the interval is reproducible), evaluates ``statistic(*resampled)`` where each resampled array is
    ``[n_boot, S, ...]`` and the statistic reduces axis 1 to ``[n_boot, ...]``, and returns the (1 − level)/2
    and (1 + level)/2 percentiles ``(lo, hi)`` [...] of the bootstrap distribution (percentile method).
    """
    arrays = [np.asarray(a, np.float64) for a in arrays]
    s = arrays[0].shape[0]
    if any(a.shape[0] != s for a in arrays):
        raise ValueError("every array needs the same number of starts on axis 0")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")
    idx = np.random.default_rng(seed).integers(0, s, size=(int(n_boot), s))
    stats = np.asarray(statistic(*(a[idx] for a in arrays)), np.float64)
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return lo, hi


def skill_interval(err_model, err_null, *, n_boot: int = 2000, level: float = 0.9, seed: int = 0):
    """:func:`skill_score` over the starts of per-start errors [S, ...] with its bootstrap interval:
    ``(skill, lo, hi)``, each [...]."""
    lo, hi = bootstrap_ci(lambda a, b: skill_score(a, b, axis=1), err_model, err_null, n_boot=n_boot,
                          level=level, seed=seed)
    return skill_score(err_model, err_null, axis=0), lo, hi


# ----------------------------------------------------------------------------------------------------------
# geometry: local edges, radius of gyration, step size, the data's envelope
# ----------------------------------------------------------------------------------------------------------


def edge_lengths(x, edges) -> np.ndarray:
    """[..., E] lengths ‖x_i − x_j‖ of the local edges (i, j) = ``edges`` [E, 2] (length unit)."""
    x = np.asarray(x, np.float64)
    e = np.asarray(edges, np.int64).reshape(-1, 2)
    return np.linalg.norm(x[..., e[:, 0], :] - x[..., e[:, 1], :], axis=-1)


def edge_deviation(x, edges, ref_lengths) -> np.ndarray:
    """[...] RMS deviation √(1/E Σ_e (ℓ_e − ℓ̄_e)²) of the local-edge lengths of x [..., N, 3] from reference
    lengths ``ref_lengths`` [E] (e.g. the data's mean length of each bond; length unit). NaN without edges."""
    e = np.asarray(edges).reshape(-1, 2)
    if len(e) == 0:
        return np.full(np.shape(x)[:-2], np.nan)
    d = edge_lengths(x, e) - np.asarray(ref_lengths, np.float64)
    return np.sqrt((d * d).mean(-1))


def edge_statistics(frames, edges) -> tuple[np.ndarray, np.ndarray]:
    """The data's own local-edge statistics over frames [F, N, 3]: the mean length of every edge ℓ̄ [E] and each
    frame's RMS deviation from it [F] (:func:`edge_deviation`). The data's spread is √(mean over frames of the
    squared deviations) = ``sqrt(mean(dev**2))``."""
    lengths = edge_lengths(frames, edges)
    mean = lengths.mean(0) if len(lengths) else np.zeros(lengths.shape[-1])
    return mean, edge_deviation(frames, edges, mean)


def radius_of_gyration(x) -> np.ndarray:
    """[...] unweighted radius of gyration √(1/N Σ_i ‖x_i − x̄‖²) of x [..., N, 3] (length unit)."""
    x = np.asarray(x, np.float64)
    c = x - x.mean(-2, keepdims=True)
    return np.sqrt((c * c).sum(-1).mean(-1))


def step_displacement(traj) -> np.ndarray:
    """[..., K] RMS displacement of each step √(1/N Σ_i ‖x_k,i − x_{k−1},i‖²), k = 1 … K, of a trajectory
    [..., K+1, N, 3] (length unit per model step)."""
    t = np.asarray(traj, np.float64)
    d = t[..., 1:, :, :] - t[..., :-1, :, :]
    return np.sqrt((d * d).sum(-1).mean(-1))


def data_step_displacement(frames, delta: int) -> np.ndarray:
    """[F − Δ] the data's RMS displacement over one model step: between frames f and f + Δ (Δ = ``delta``
    stored frames), for every f (length unit per model step)."""
    f = np.asarray(frames, np.float64)
    delta = int(delta)
    if delta < 1 or len(f) <= delta:
        return np.zeros(0)
    d = f[delta:] - f[:-delta]
    return np.sqrt((d * d).sum(-1).mean(-1))


@dataclass
class Envelope:
    """The data's range [lo, hi] of one per-frame quantity: the ``quantiles`` (default (0, 1), i.e. the data's
    minimum and maximum) of its values over the reference data. None on one side = unbounded there."""

    lo: float | None
    hi: float | None

    @classmethod
    def of(cls, values, quantiles: tuple[float, float] = (0.0, 1.0), *, lower: bool = True,
           upper: bool = True) -> Envelope:
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return cls(None, None)
        lo, hi = np.quantile(v, quantiles)
        return cls(float(lo) if lower else None, float(hi) if upper else None)

    def outside(self, values) -> np.ndarray:
        """Boolean array: True where a value lies outside [lo, hi] or is not finite."""
        v = np.asarray(values, np.float64)
        out = ~np.isfinite(v)
        if self.lo is not None:
            out |= v < self.lo
        if self.hi is not None:
            out |= v > self.hi
        return out


def exited(outside) -> np.ndarray:
    """[..., K] True from the first step k at which a rollout was outside its envelope on (cumulative "has left by
    step k"), given the per-step ``outside`` flags [..., K]."""
    return np.logical_or.accumulate(np.asarray(outside, bool), axis=-1)


def first_exit(outside) -> np.ndarray:
    """[...] the first step k ∈ 1 … K at which a rollout is outside its envelope (``outside`` [..., K]), 0 when it
    never leaves within K steps."""
    o = np.asarray(outside, bool)
    return np.where(o.any(-1), o.argmax(-1) + 1, 0)


# ----------------------------------------------------------------------------------------------------------
# ensembles: spread against error, energy score, CRPS
# ----------------------------------------------------------------------------------------------------------


def ensemble_variance(ens) -> np.ndarray:
    """[...] the unbiased ensemble variance (ddof 1) over the R replicas of ens [R, ..., N, 3], averaged over nodes
    and coordinates (length²). NaN for R = 1."""
    e = np.asarray(ens, np.float64)
    if e.shape[0] < 2:
        return np.full(e.shape[1:-2], np.nan)
    return e.var(axis=0, ddof=1).mean(axis=(-1, -2))


def ensemble_mean_error(ens, ref) -> np.ndarray:
    """[...] squared error of the ensemble mean x̄ = 1/R Σ_r x_r against ref [..., N, 3], averaged over nodes and
    coordinates (length²; its square root is the RMSE of the ensemble mean per coordinate)."""
    return mse(np.asarray(ens, np.float64).mean(0), ref)


def spread_skill_ratio(variance, sqerr, replicas: int, axis=None) -> np.ndarray:
    """√((R+1)/R) · RMS spread / RMSE of the ensemble mean, pooled over ``axis`` (default: everything):
    √((R+1)/R · ⟨s²⟩ / ⟨(x̄ − y)²⟩) with s² the unbiased ensemble variance (:func:`ensemble_variance`) and
    (x̄ − y)² the ensemble mean's squared error (:func:`ensemble_mean_error`).

    For a calibrated ensemble (truth and replicas exchangeable draws) E[(x̄ − y)²] = σ²(1 + 1/R) and E[s²] = σ²,
    so the corrected ratio is 1: below 1 the ensemble is under-dispersed (over-confident), above 1 over-dispersed.
    """
    r = int(replicas)
    return np.sqrt((r + 1) / r * np.mean(variance, axis=axis) / np.mean(sqerr, axis=axis))


def energy_score(ens, ref, *, fair: bool = True) -> np.ndarray:
    """[...] energy score ES = E‖X − y‖ − ½ E‖X − X′‖ of an ensemble [R, ..., N, 3] for the truth ref [..., N, 3],
    with ‖·‖ the RMSD norm ‖z‖ = √(1/N Σ_i ‖z_i‖²) (the Euclidean norm of the 3N-vector over √N; a scaled norm
    keeps the score strictly proper and gives it the RMSD's length unit). Lower is better; for one replica it is
    the RMSD of that replica. ``fair=True`` averages the R(R−1) pairs r ≠ r′ (unbiased for the ensemble's
    distribution, so ensembles of different sizes compare); ``fair=False`` divides by R²."""
    e = np.asarray(ens, np.float64)
    r = e.shape[0]
    obs = rmsd(e, ref).mean(0)
    if r < 2:
        return obs
    pair = np.zeros(e.shape[1:-2])
    for i in range(r - 1):
        pair += rmsd(e[i + 1:], e[i]).sum(0)
    pair *= 2.0 / (r * (r - 1) if fair else r * r)
    return obs - 0.5 * pair


def crps(ens, ref, *, fair: bool = True) -> np.ndarray:
    """[...] continuous ranked probability score CRPS = E|X − y| − ½ E|X − X′| of every scalar of an ensemble
    [R, ...] for the truth ref [...]: the one-dimensional energy score. E|X − X′| comes from the sorted replicas,
    Σ_{r,r′} |x_r − x_r′| = 2 Σ_i (2i − R − 1) x_(i) (i = 1 … R), over R(R−1) pairs (``fair``) or R²."""
    e = np.sort(np.asarray(ens, np.float64), axis=0)
    r = e.shape[0]
    obs = np.abs(e - np.asarray(ref, np.float64)).mean(0)
    if r < 2:
        return obs
    w = (2 * np.arange(1, r + 1) - r - 1).reshape((r,) + (1,) * (e.ndim - 1))
    pair = 2 * (w * e).sum(0) / (r * (r - 1) if fair else r * r)
    return obs - 0.5 * pair


def crps_positions(ens, ref, *, fair: bool = True) -> np.ndarray:
    """[...] :func:`crps` of every coordinate of ens [R, ..., N, 3] against ref [..., N, 3], averaged over nodes
    and coordinates (length unit)."""
    return crps(ens, ref, fair=fair).mean(axis=(-1, -2))


# ----------------------------------------------------------------------------------------------------------
# distributions: Wasserstein, Jensen–Shannon (of histograms), RMSF
# ----------------------------------------------------------------------------------------------------------


def wasserstein_1d(a, b) -> float:
    """First Wasserstein (earth mover's) distance between the empirical distributions of the samples a and b (any
    sizes): W₁ = ∫ |F_a(t) − F_b(t)| dt, exact for step CDFs (same unit as the samples). NaN when either sample
    has a non-finite value or is empty."""
    a = np.ravel(np.asarray(a, np.float64))
    b = np.ravel(np.asarray(b, np.float64))
    if a.size == 0 or b.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    a, b = np.sort(a), np.sort(b)
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(a, grid[:-1], side="right") / a.size
    fb = np.searchsorted(b, grid[:-1], side="right") / b.size
    return float(np.sum(np.abs(fa - fb) * np.diff(grid)))


def histogram_js(a, b, *, bins: int = 30, value_range: tuple[float, float] | None = None,
                 base: float = 2.0) -> float:
    """Jensen–Shannon divergence (:func:`mdsurrogate.analysis.ramachandran.jensen_shannon`; bits for ``base=2``) of
    the histograms of samples a and b on ``bins`` shared bins over ``value_range``
    (default: the joint finite range of a and b). Values outside the range are counted in the end bins (so a
    runaway rollout's mass is not dropped); non-finite values are counted in the upper end bin."""
    a = np.ravel(np.asarray(a, np.float64))
    b = np.ravel(np.asarray(b, np.float64))
    if a.size == 0 or b.size == 0:
        return float("nan")
    if value_range is None:
        both = np.concatenate([a, b])
        both = both[np.isfinite(both)]
        if both.size == 0:
            return float("nan")
        value_range = (float(both.min()), float(both.max()))
    lo, hi = value_range
    if not hi > lo:
        hi = lo + 1e-12

    def hist(v):
        v = np.where(np.isfinite(v), v, hi)
        return np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))[0]

    return jensen_shannon(hist(a), hist(b), base=base)


def rmsf(frames, *, superpose_to=None) -> np.ndarray:
    """[N] root-mean-square fluctuation of every node over frames [F, N, 3]: √(1/F Σ_f ‖x_f,i − x̄_i‖²), x̄ the mean
    position (length unit). ``superpose_to`` [N, 3]: superpose every frame onto it first (Kabsch), so that rigid
    motion of the whole system does not count as fluctuation."""
    f = np.asarray(frames, np.float64)
    if superpose_to is not None:
        f = superpose_onto(f, superpose_to)
    c = f - f.mean(0)
    return np.sqrt((c * c).sum(-1).mean(0))


def profile_comparison(a, b) -> dict:
    """Compare two per-node profiles (e.g. RMSF [N]): RMS difference (their unit) and Pearson correlation (NaN
    when either is constant)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    diff = float(np.sqrt(np.mean((a - b) ** 2)))
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        corr = float("nan")
    else:
        corr = float(np.corrcoef(a, b)[0, 1])
    return {"rms_difference": diff, "correlation": corr}
