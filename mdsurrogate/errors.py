"""Errors caused by user input. The CLI prints their message as one sentence and exits non-zero."""


class UserError(Exception):
    """Base class: a problem with what the user passed (file, recipe, option), not a bug."""


class RecipeError(UserError, ValueError):
    """A recipe or ``--set`` override is invalid."""


class CheckpointError(UserError, ValueError):
    """A file is not an mdsurrogate checkpoint, or is of the wrong kind for the task."""
