"""Atomic file writes: nothing the user had is overwritten or lost if a write fails half-way.

A new file is written under a unique temporary name beside its target (:func:`reserve_partial`:
``NAME.partial-<8 hex>.EXT``, so two writers aimed at one path never share a file), then moved onto the target in
one step (:func:`publish`): a reader sees the old file or the complete new one, never half of one; a kill leaves
at most the partial file. The target's folder is created when missing.

Permissions: files are created with mode ``0666`` filtered by the process umask (``0644`` under umask 022), as
``open()`` would, not ``0600`` as :func:`tempfile.mkstemp` makes them: checkpoints, ``.mdsr`` files and
trajectories on shared storage are readable by whoever could read the user's other files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from ..errors import UserError

__all__ = ["OutputExistsError", "OutputPathError", "atomic_file", "ensure_parent", "publish", "refuse_existing",
           "reserve_partial"]


class OutputExistsError(UserError, FileExistsError):
    """The output file exists and replacing it was not asked for (``overwrite=False``)."""


class OutputPathError(UserError, OSError):
    """The output cannot be created there (its folder is a file, or cannot be made)."""


def ensure_parent(path: str | os.PathLike) -> Path:
    """Create ``path``'s folder (and its parents) when missing; :class:`OutputPathError` when that is impossible."""
    return ensure_folder(Path(path).parent, what=path)


def ensure_folder(folder: str | os.PathLike, *, what: str | os.PathLike | None = None) -> Path:
    """Create the folder (and its parents) when missing; :class:`OutputPathError` naming ``what`` (default: the
    folder) when that is impossible."""
    folder = Path(folder)
    what = folder if what is None else what
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise OutputPathError(f"cannot write {what}: {blocker} is a file, not a folder") from None
    except PermissionError:
        raise OutputPathError(f"cannot write {what}: no permission to create the folder {folder}") from None
    return folder


def probe_folder(path: str | os.PathLike) -> None:
    """Check that the folder ``path`` exists or can be created (:class:`OutputPathError` otherwise, in one
    sentence), leaving nothing behind: folders this check creates are removed again, so that a command that fails
    later does not leave an empty folder."""
    path = Path(path)
    missing = [p for p in [path, *path.parents] if not p.exists()]
    ensure_folder(path)
    for folder in missing:  # deepest first
        try:
            folder.rmdir()
        except OSError:  # filled or removed meanwhile: leave it
            break


def reserve_partial(path: str | os.PathLike, *, suffix: str | None = None) -> Path:
    """Create an empty file with a unique name beside ``path`` and return its path.

    The name is ``<stem>.partial-<8 hex digits><suffix>`` (``suffix`` defaults to ``path``'s extension, so that
    readers recognise the format of a partial trajectory); it is created exclusively (``O_EXCL``) with mode
    ``0666 & ~umask``. The folder of ``path`` is created when missing.
    """
    path = Path(path)
    ensure_parent(path)
    suffix = path.suffix if suffix is None else suffix
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    for _ in range(64):
        candidate = path.with_name(f"{stem}.partial-{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}") from None
        os.close(fd)
        return candidate
    raise OutputPathError(f"cannot find a free temporary name beside {path}")  # pragma: no cover


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform or file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(partial: str | os.PathLike, path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Move the finished ``partial`` onto ``path`` in one step.

    ``overwrite=True`` replaces an existing ``path`` atomically. ``overwrite=False`` never replaces one, even if it
    appeared while the partial file was being written (a hard link fails on an existing name; where links are
    unsupported, an existence check precedes the rename): :class:`OutputExistsError` then, and ``partial`` is kept
    with its content.
    """
    partial, path = Path(partial), Path(path)
    if overwrite:
        os.replace(partial, path)
    else:
        try:
            os.link(partial, path)
        except FileExistsError:
            raise OutputExistsError(f"{path} appeared while it was being written and was left as it is; the new "
                                    f"content is in {partial}") from None
        except OSError:  # no hard links here (some network or FAT file systems)
            if path.exists():
                raise OutputExistsError(f"{path} appeared while it was being written and was left as it is; the "
                                        f"new content is in {partial}") from None
            os.replace(partial, path)
        else:
            os.unlink(partial)
    _fsync_dir(path.parent)
    return path


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
    """:class:`OutputExistsError` when ``path`` exists and ``overwrite`` is False."""
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path} already exists; pass overwrite=True to replace it")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", *, overwrite: bool = True):
    """Yield a file object for a unique temporary file beside ``path``; on success it is flushed, fsynced and moved
    onto ``path`` in one step (:func:`publish`), on any error it is removed and ``path`` is left as it was.

    ``overwrite=False`` refuses (:class:`OutputExistsError`) when ``path`` exists, before anything is written.
    The file gets mode ``0666 & ~umask``; the folder is created when missing.
    """
    refuse_existing(path, overwrite)
    tmp = reserve_partial(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    publish(tmp, path, overwrite=overwrite)
