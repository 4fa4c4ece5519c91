"""Calibrate a stochastic propagator's noise so that its ensemble spread matches its error.

A propagator trained by Gaussian likelihood on one step learns the one-step residual; chained, its ensembles can be
over- or under-dispersed (the residual of one step is not the error of k steps, and a projection onto bond lengths
removes part of every draw). One scalar gain g multiplies every noise scale (σ and τ) at sampling time. Starting
from the checkpoint's gain, each round rolls R replicas out for K steps from held-out starts and multiplies g by
the geometric mean over k = 1 … K of RMSE(ensemble mean) / spread, the inverse of the spread–skill ratio, so that
the ratio approaches 1 (a calibrated ensemble). The gain is stored in the checkpoint (``extra["noise_gain"]``) and
used by every rollout of it (``Surrogate.noise_gain``).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import ParameterError


def calibrate_noise(surrogate, *, dataset=None, split: str = "val", steps: int = 5, starts: int = 20,
                    replicas: int = 16, rounds: int = 2, seed: int = 0,
                    bounds: tuple[float, float] = (0.05, 20.0), progress=None) -> dict:
    """Find the noise gain g that brings the spread–skill ratio of ``surrogate``'s ensembles towards 1.

    Args:
        surrogate: a Surrogate with a stochastic propagator; its ``noise_gain`` is set to the result.
        dataset, split: the held-out data the ensembles are judged on (default: the dataset the model was trained
            on, its validation split).
        steps: K, horizons 1 … K whose ratios are averaged (geometric mean).
        starts, replicas: starts spread evenly over the split, and replicas per start (R ≥ 2).
        rounds: how many measure-and-rescale rounds (the ratio is close to linear in g, so 2 usually suffice).
        seed: seeds the replicas (the same seed in every round, so rounds differ only by g).
        bounds: the gain is kept within these limits.
        progress: ``progress(round, rounds)`` after each round.

    Returns {``gain``, ``rounds``: [{``gain``, ``spread_skill`` [K]}, …] (the ratio measured with that gain),
    ``steps``, ``starts``, ``replicas``, ``split``}.
    """
    from .fidelity import rollout_fidelity

    if not surrogate.stochastic:
        raise ParameterError("{surrogate} is not stochastic: only a propagator with a noise head (model.noise) has "
                             "a noise to calibrate", surrogate=str(surrogate.path or surrogate.name))
    for name, value, least in (("steps", steps, 1), ("starts", starts, 1), ("replicas", replicas, 2),
                               ("rounds", rounds, 1)):
        if int(value) < least:
            raise ParameterError("{name} must be at least {least}, not {value}", name=name, least=str(least),
                                 value=str(value))
    lo, hi = bounds
    history = []
    for r in range(int(rounds)):
        res = rollout_fidelity(surrogate, steps=int(steps), dataset=dataset, split=split, starts=int(starts),
                               replicas=int(replicas), seed=seed, n_boot=50, guard="finite")
        ratio = np.asarray([np.nan if v is None else v for v in res["ensemble"]["spread_skill"]],
                           dtype=float)
        history.append({"gain": float(surrogate.noise_gain), "spread_skill": ratio.tolist()})
        good = np.isfinite(ratio) & (ratio > 0)
        if not good.any():
            break
        factor = math.exp(-float(np.log(ratio[good]).mean()))
        surrogate.noise_gain = float(min(hi, max(lo, surrogate.noise_gain * factor)))
        if progress is not None:
            progress(r + 1, int(rounds))
    return {"gain": float(surrogate.noise_gain), "rounds": history, "steps": int(steps), "starts": int(starts),
            "replicas": int(replicas), "split": split}


def store_noise_gain(checkpoint_path: str | os.PathLike, gain: float, record: dict | None = None) -> None:
    """Write ``gain`` (and the calibration ``record``) into the checkpoint file, atomically."""
    from ..training.checkpoint import Checkpoint

    ck = Checkpoint.load(checkpoint_path)
    ck.extra = {**ck.extra, "noise_gain": float(gain)}
    if record is not None:
        ck.extra["noise_calibration"] = record
    ck.save(ck.path)


def calibrate_run(run: str | os.PathLike, *, steps: int, device="auto", **options) -> dict:
    """Calibrate the stochastic propagator of a run directory or checkpoint (see :func:`calibrate_noise`; options
    pass on) and store the gain in its checkpoint file. Returns the calibration record."""
    from .surrogate import Surrogate

    sur = Surrogate.load(run, device=device)
    record = calibrate_noise(sur, steps=steps, **options)
    store_noise_gain(sur.path, record["gain"], record)
    return record


def calibrate_if_asked(recipe, run_dir: str | os.PathLike, *, device="auto") -> dict | None:
    """After training: calibrate the run's noise when its recipe asks (``train.calibrate_noise = K`` > 0, seeded
    with ``train.seed``); the calibration record, or None."""
    steps = getattr(recipe.train, "calibrate_noise", 0)
    if not steps:
        return None
    return calibrate_run(run_dir, steps=steps, device=device, seed=recipe.train.seed)
