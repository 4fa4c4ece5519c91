"""Calibrate a stochastic propagator's noise so that its ensemble spread matches its error.

A propagator trained by Gaussian likelihood on one step learns the one-step residual; chained, its ensembles can be
over- or under-dispersed (the residual of one step is not the error of k steps, and a projection onto bond lengths
removes part of every draw). One scalar gain g multiplies every noise scale (σ and τ) at sampling time. Starting
from the checkpoint's gain, each round rolls R replicas out for K steps from held-out starts and multiplies g by
the geometric mean over k = 1 … K of RMSE(ensemble mean) / spread, the inverse of the spread–skill ratio, so that
the ratio approaches 1 (a calibrated ensemble). The gain is stored in the checkpoint (``extra["noise_gain"]``) and
used by every rollout of it (``Surrogate.noise_gain``).

With independent draws the spread of a chained ensemble grows like √k, while the error of a coarse-grained
propagator often grows faster (slow motions the model does not resolve persist over several steps), so one gain
cannot match every horizon: too wide at k = 1 or too narrow at k = K. ``memory=True`` also fits the noise memory ρ
(``StochasticPropagator.draw``: consecutive draws correlated by ρ, each still N(0, I)), which sets how fast the
spread grows without changing the first step's: for each ρ of a grid one measurement gives the ratios r_k, and
since a gain only shifts every log r_k by the same amount, the ρ whose log r_k vary least over k is kept; the gain
rounds then run with it. ρ is stored beside the gain (``extra["noise_memory"]``).

Spread–skill over k ≤ K says nothing about what happens after K: a chain whose sampled displacement feeds the next
step's velocity can amplify its own noise and reach non-finite coordinates a few steps later. After the gain rounds,
a stability probe (:func:`stability_probe`) rolls the same number of ensembles out from the same split (or
``probe_split``) for ``probe_steps`` (default 2K) steps, with no reference needed, and the record says how many
reached non-finite coordinates and when (``record["probe"]``; the CLI prints a warning). It measures; it does not
change g or ρ.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import ParameterError

#: the noise memories ρ tried by ``calibrate_noise(memory=True)``
MEMORY_GRID = (0.0, 0.2, 0.4, 0.55, 0.7, 0.8, 0.9)


def _spread_skill(surrogate, *, steps, dataset, split, starts, replicas, seed) -> np.ndarray:
    """[K] spread–skill ratios of the surrogate's ensembles at k = 1 … K (NaN where undefined)."""
    from .fidelity import rollout_fidelity

    res = rollout_fidelity(surrogate, steps=int(steps), dataset=dataset, split=split, starts=int(starts),
                           replicas=int(replicas), seed=seed, n_boot=50, guard="finite")
    return np.asarray([np.nan if v is None else v for v in res["ensemble"]["spread_skill"]], dtype=float)


def stability_probe(surrogate, *, steps: int, dataset=None, split: str = "val", starts: int = 20,
                    replicas: int = 16, seed: int = 0) -> dict:
    """Roll ``replicas`` replicas of ``starts`` samples of ``split`` (spread evenly) out for ``steps`` steps with
    only non-finite states stopping a chain, and count the ensembles that stopped.

    Returns {``steps``, ``starts``, ``replicas``, ``split``, ``non_finite`` (ensembles stopped), ``first_stop``
    (the earliest step at which one stopped, or None), ``stopped_at`` [one step per stopped ensemble]}.
    """
    from ..data.dataset import Dataset
    from .ensemble import ensemble_rollout
    from .fidelity import dataset_starts, resolve_guard

    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset or surrogate.dataset.path)
    picks, _ = dataset_starts(ds, surrogate, split=split, steps=0, starts=int(starts))  # no reference needed
    guard = resolve_guard("finite")
    stopped_at = []
    for fs in picks:
        res = ensemble_rollout(surrogate, fs.state, int(steps), int(replicas), seed, guard=guard)
        if res.stopped:
            stopped_at.append(res.steps_done + 1)
    return {"steps": int(steps), "starts": len(picks), "replicas": int(replicas), "split": split,
            "non_finite": len(stopped_at), "first_stop": min(stopped_at) if stopped_at else None,
            "stopped_at": stopped_at}


def calibrate_noise(surrogate, *, dataset=None, split: str = "val", steps: int = 5, starts: int = 20,
                    replicas: int = 16, rounds: int = 2, seed: int = 0, memory: bool = False,
                    bounds: tuple[float, float] = (0.05, 20.0), probe_steps: int | None = None,
                    probe_split: str | None = None, progress=None) -> dict:
    """Find the noise gain g that brings the spread–skill ratio of ``surrogate``'s ensembles towards 1.

    Args:
        surrogate: a Surrogate with a stochastic propagator; its ``noise_gain`` is set to the result.
        dataset, split: the held-out data the ensembles are judged on (default: the dataset the model was trained
            on, its validation split).
        steps: K, horizons 1 … K whose ratios are averaged (geometric mean).
        starts, replicas: starts spread evenly over the split, and replicas per start (R ≥ 2).
        rounds: how many measure-and-rescale rounds (the ratio is close to linear in g, so 2 usually suffice).
        seed: seeds the replicas (the same seed in every round, so rounds differ only by g).
        memory: also fit the noise memory ρ over ``MEMORY_GRID`` (needs K ≥ 2; see the module docstring);
            False keeps the surrogate's ρ.
        bounds: the gain is kept within these limits.
        probe_steps: steps of the stability probe run with the final gain and ρ (default 2K; 0 = no probe).
        probe_split: the split the probe starts from (default ``split``; held-out starts find more blow-ups than
            the training span, whose states the model has fitted).
        progress: ``progress(round, rounds)`` after each round.

    Returns {``gain``, ``memory`` (ρ), ``rounds``: [{``gain``, ``spread_skill`` [K]}, …] (the ratio measured with
    that gain), ``memory_search``: [{``memory``, ``spread_skill`` [K], ``log_spread``}, …] (only when fitted),
    ``probe`` (:func:`stability_probe`'s record, unless ``probe_steps = 0``), ``steps``, ``starts``, ``replicas``,
    ``split``}.
    """
    if not surrogate.stochastic:
        raise ParameterError("{surrogate} is not stochastic: only a propagator with a noise head (model.noise) has "
                             "a noise to calibrate", surrogate=str(surrogate.path or surrogate.name))
    for name, value, least in (("steps", steps, 1), ("starts", starts, 1), ("replicas", replicas, 2),
                               ("rounds", rounds, 1)):
        if int(value) < least:
            raise ParameterError("{name} must be at least {least}, not {value}", name=name, least=str(least),
                                 value=str(value))
    if probe_split is not None and probe_split not in ("train", "val", "test"):
        raise ParameterError("unknown {probe_split} {value}; choose one of train, val, test",
                             probe_split="probe_split", value=repr(probe_split))
    if probe_steps is not None and int(probe_steps) < 0:
        raise ParameterError("{probe_steps} must be ≥ 0 (0 = no stability probe), not {value}",
                             probe_steps="probe_steps", value=str(probe_steps))
    if memory and int(steps) < 2:
        raise ParameterError("{memory} needs {steps} ≥ 2 (the memory sets how the spread grows with k), not "
                             f"{int(steps)}", memory="memory=True", steps="steps")
    measure = dict(steps=steps, dataset=dataset, split=split, starts=starts, replicas=replicas, seed=seed)
    search = []
    if memory:
        for rho in MEMORY_GRID:
            surrogate.noise_memory = rho
            ratio = _spread_skill(surrogate, **measure)
            good = np.isfinite(ratio) & (ratio > 0)
            spread = float(np.log(ratio[good]).std()) if good.sum() == len(ratio) else math.inf
            search.append({"memory": rho, "spread_skill": ratio.tolist(), "log_spread": spread})
        surrogate.noise_memory = min(search, key=lambda t: t["log_spread"])["memory"]
    lo, hi = bounds
    history = []
    for r in range(int(rounds)):
        ratio = _spread_skill(surrogate, **measure)
        history.append({"gain": float(surrogate.noise_gain), "spread_skill": ratio.tolist()})
        good = np.isfinite(ratio) & (ratio > 0)
        if not good.any():
            break
        factor = math.exp(-float(np.log(ratio[good]).mean()))
        surrogate.noise_gain = float(min(hi, max(lo, surrogate.noise_gain * factor)))
        if progress is not None:
            progress(r + 1, int(rounds))
    record = {"gain": float(surrogate.noise_gain), "memory": float(surrogate.noise_memory), "rounds": history,
              "steps": int(steps), "starts": int(starts), "replicas": int(replicas), "split": split}
    if search:
        record["memory_search"] = search
    probe_steps = 2 * int(steps) if probe_steps is None else int(probe_steps)
    if probe_steps > 0:
        record["probe"] = stability_probe(surrogate, steps=probe_steps, dataset=dataset, split=probe_split or split,
                                          starts=starts, replicas=replicas, seed=seed)
    return record


def store_noise_gain(checkpoint_path: str | os.PathLike, gain: float, record: dict | None = None,
                     memory: float | None = None) -> None:
    """Write ``gain`` (the noise ``memory`` ρ when given, and the calibration ``record``) into the checkpoint file,
    atomically."""
    from ..training.checkpoint import Checkpoint

    ck = Checkpoint.load(checkpoint_path)
    ck.extra = {**ck.extra, "noise_gain": float(gain)}
    if memory is not None:
        ck.extra["noise_memory"] = float(memory)
    if record is not None:
        ck.extra["noise_calibration"] = record
    ck.save(ck.path)


def calibrate_run(run: str | os.PathLike, *, steps: int, device="auto", **options) -> dict:
    """Calibrate the stochastic propagator of a run directory or checkpoint (see :func:`calibrate_noise`; options
    pass on) and store the gain in its checkpoint file. Returns the calibration record."""
    from .surrogate import Surrogate

    sur = Surrogate.load(run, device=device)
    record = calibrate_noise(sur, steps=steps, **options)
    store_noise_gain(sur.path, record["gain"], record, memory=record["memory"])
    return record


def calibrate_if_asked(recipe, run_dir: str | os.PathLike, *, device="auto") -> dict | None:
    """After training: calibrate the run's noise when its recipe asks (``train.calibrate_noise = K`` > 0, seeded
    with ``train.seed``; ``train.calibrate_memory`` and ``train.calibrate_split`` pass on); the calibration record,
    or None."""
    t = recipe.train
    if not t.calibrate_noise:
        return None
    return calibrate_run(run_dir, steps=t.calibrate_noise, device=device, seed=t.seed, memory=t.calibrate_memory,
                         split=t.calibrate_split)
