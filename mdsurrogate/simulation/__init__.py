"""Using a trained propagator: the :class:`Surrogate` (loaded once from a run), the one step-and-guard loop
(:class:`~mdsurrogate.simulation.rollout.Chain`), rollouts to arrays and files, where a rollout starts
(``initial_state``), and ``.mdsr`` files whose frames are computed on demand."""

from .guard import StabilityGuard
from .rollout import Chain, RolloutResult, rollout, rollout_to_file
from .surrogate import Surrogate

__all__ = ["Chain", "RolloutResult", "StabilityGuard", "Surrogate", "rollout", "rollout_to_file"]
