"""Errors caused by user input. The CLI prints their message as one sentence and exits non-zero."""


class UserError(Exception):
    """Base class: a problem with what the user passed (file, recipe, option), not a bug."""


def run_script(main) -> None:
    """Entry point for example scripts: bad input (a UserError or ValueError) is one line on stderr and exit
    code 2, never a traceback; otherwise exit with ``main()``'s return code."""
    import sys

    try:
        sys.exit(main())
    except (UserError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


class RecipeError(UserError, ValueError):
    """A recipe or ``--set`` override is invalid."""


class CheckpointError(UserError, ValueError):
    """A file is not an mdsurrogate checkpoint, or is of the wrong kind for the task."""


class ParameterError(UserError):
    """A user error whose message names parameters as ``{placeholders}``.

    ``str(exc)`` names them as the library's parameters (``resume=True``, ``run_dir``); a front end renders the
    same sentence in its own terms with :meth:`render` (the CLI: ``--resume``, ``--out``).
    """

    def __init__(self, template: str, **params: str):
        self.template = template
        self.params = params
        super().__init__(template.format(**params))

    def render(self, names: dict[str, str]) -> str:
        """The message with each placeholder replaced by ``names[placeholder]`` (else the library's name)."""
        return self.template.format(**{k: names.get(k, v) for k, v in self.params.items()})
