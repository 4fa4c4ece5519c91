"""The Typer application, its consoles, and what every command shares: error handling, JSON output, options.

Thin by design: a command parses flags, maps them onto library parameters, calls the library and shows
progress. A library error (``UserError``) is printed as one red sentence and exit code 2; anything unexpected
as one sentence and exit code 1; ``MDSURROGATE_DEBUG=1`` shows tracebacks instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys

import typer
from rich.console import Console

from ..errors import UserError

app = typer.Typer(
    help="Learned E(n)-equivariant surrogates of particle and molecular simulations: ingest, train, roll out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
)
ingest_app = typer.Typer(help="Turn a simulation or trajectory into a training dataset.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
plot_app = typer.Typer(help="Figures (PNG, PDF, SVG): skeletons and training curves. Needs matplotlib, the "
                       "optional extra `plot`.", no_args_is_help=True)
app.add_typer(plot_app, name="plot")

def _console(stderr: bool = False) -> Console:
    """A rich console; written to a file or a pipe (no terminal, no COLUMNS), it is 120 columns wide instead of
    rich's 80, so that the figures in wide tables (the demo's fidelity table) are not cut to "+0.0…"."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not (hasattr(stream, "isatty") and stream.isatty()) and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=120 if wide else None)


err = _console(stderr=True)
out = _console()


def version_text() -> str:
    """``mdsurrogate X.Y.Z (torch …, Python …)``."""
    import platform

    import torch

    from .. import __version__

    return f"mdsurrogate {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


def _print_version(value: bool):
    if value:
        sys.stdout.write(version_text() + "\n")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the mdsurrogate, torch and Python versions and exit.")):
    """Learned E(n)-equivariant surrogates of particle and molecular simulations: ingest, train, roll out."""


def fail(message: str, code: int = 2):
    """Print one red sentence on stderr and exit with ``code`` (2: bad input)."""
    from rich.markup import escape

    # escaped: "[plot]" is no markup
    err.print(f"[bold red]error:[/] {escape(as_flags(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    from rich.markup import escape

    err.print(f"[bold yellow]warning:[/] {escape(as_flags(message))}", highlight=False, soft_wrap=True)


def friendly(fn):
    """Turn user errors into one sentence and exit code 2; unexpected errors into exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings_as_notes():
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except (UserError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            if os.environ.get("MDSURROGATE_DEBUG"):
                raise
            fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - last line of defence: never a traceback for users
            if os.environ.get("MDSURROGATE_DEBUG"):
                raise
            fail(f"{exc.__class__.__name__}: {exc} (set MDSURROGATE_DEBUG=1 for the traceback)", code=1)

    return wrapper


#: library parameters whose CLI option has another name
PARAMETER_ALIASES = {"cutoff_nm": "cutoff"}


def as_flags(message: str) -> str:
    """A library error names parameters in backquotes (`frame_ps`); the CLI speaks in options: `frame_ps` becomes
    --frame-ps (``PARAMETER_ALIASES`` for the few options named otherwise)."""
    import re

    def flag(match):
        return "--" + PARAMETER_ALIASES.get(match.group(1), match.group(1)).replace("_", "-")

    return re.sub(r"`([a-z_][a-z0-9_]*)`", flag, message) if "`" in message else message


@contextlib.contextmanager
def warnings_as_notes():
    """Python warnings raised while a command runs become one yellow ``warning:`` line each (once per message),
    not a file name, line number and source line; those of MDAnalysis (notes about its own guesses) are dropped."""
    import warnings

    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text not in seen:
            seen.add(text)
            warn(text)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", module=r"MDAnalysis(\.|$)")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def input_errors():
    """Inside an ingest: a ValueError from a source (infeasible parameters, malformed file) is bad input."""
    try:
        yield
    except ValueError as exc:
        fail(str(exc))


def emit_json(obj: dict) -> None:
    """Print one JSON object as the last line of stdout."""
    sys.stdout.write(json.dumps(obj, default=float) + "\n")
    sys.stdout.flush()


def command_line() -> str:
    """The command as the user typed it (recorded in run directories)."""
    import shlex

    return "mdsurrogate " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# -- options shared by several commands (typer reads these defaults as metadata; sharing them is safe) ---------
NEW_DATASET = typer.Argument(..., help="Dataset directory to create.")
OVERWRITE = typer.Option(False, help="Replace an existing output (only once the new one is complete).")
JSON_OUT = typer.Option(False, "--json", help="Print the result as one JSON object on the last line of stdout.")
DEVICE = typer.Option("auto", help="auto (CUDA when available), cpu or cuda\\[:i].")
MODEL_RUN = typer.Argument(..., help="Run directory (uses best.pt) or checkpoint file.")
