"""Tasks: what a kind of model brings to the one training loop (see :mod:`.base`).

``make_task(recipe, data_path)`` picks the task from the recipe (its ``[model] name``): a propagator or a
learned potential.
"""

from __future__ import annotations

from .base import Task
from .potential import PotentialFrames, PotentialTask, evaluate_potential
from .propagator import PropagatorTask

TASKS: dict[str, type[Task]] = {"propagator": PropagatorTask, "potential": PotentialTask}


def make_task(recipe, data_path: str) -> Task:
    """The task object of ``recipe`` (``recipe.task``) on the dataset at ``data_path``."""
    return TASKS[recipe.task](recipe, data_path)


__all__ = ["TASKS", "PotentialFrames", "PotentialTask", "PropagatorTask", "Task", "evaluate_potential", "make_task"]
