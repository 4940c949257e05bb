"""Write outputs so that a crash or a bad input never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from labinterp.errors import OutputError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _mode_for(target: Path) -> int:
    """The permissions a file written to `target` gets: those of the file it replaces (an
    administrator may have made a handout or an audit file readable by its owner only),
    else what a plain open() would give a new file."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def take_mode(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Give `source` the permissions of `target`, if `target` is a file."""
    target = Path(target)
    if target.is_file():
        os.chmod(source, _mode_for(target))


def replace_keeping_mode(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """os.replace(source, target), the file keeping `target`'s permissions if it exists."""
    take_mode(source, target)
    os.replace(source, target)


# errno values of a device (or a user's quota) with no room left
NO_SPACE = frozenset(
    code for code in (getattr(errno, "ENOSPC", None), getattr(errno, "EDQUOT", None)) if code
)
# the prefix of the staging and scratch folders inside an output folder (labinterp.staging)
STAGING_PREFIX = ".labinterp-"


def shown_folder(folder: str | os.PathLike[str]) -> Path:
    """The folder to name in a message about a write into `folder`: the output folder
    itself when `folder` is (inside) one of our staging folders there."""
    folder = Path(folder)
    for at in (folder, *folder.parents):
        if at.name.startswith(STAGING_PREFIX):
            folder = at.parent
    return folder


def write_failed(exc: OSError, folder: str | os.PathLike[str]) -> OutputError:
    """The error to report for `exc`, raised while writing an output into `folder`."""
    where = shown_folder(folder)
    if exc.errno in NO_SPACE:
        return OutputError(
            f"no space left on the device holding '{where}'.",
            fix="free some space there, or write the output to another folder.",
        )
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return OutputError(
        f"cannot write in the folder '{where}' ({reason}).",
        fix="choose a folder you can write to, with room for the output.",
    )


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`.

    The temporary file lives in the same folder so the final rename is atomic on POSIX.
    On any exception the temporary file is removed and `target` is left untouched.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        if folder.exists():
            raise OutputError(
                f"'{folder}' is not a folder, so '{target.name}' cannot be written in it.",
                fix="choose an output path in a folder.",
            )
        raise OutputError(
            f"the output folder '{folder}' does not exist.",
            fix="create it first or choose another output path.",
        )
    if target.is_dir():
        raise OutputError(
            f"'{target}' is a folder, not a file.", fix="give a file name (or another path)."
        )
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise write_failed(exc, folder) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600: give the result the permissions of the file it replaces,
        # or those a plain open() would give a new one
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            # a full disk, a quota, a device error: the user's to fix, not a bug
            raise write_failed(exc, folder) from exc
        raise


@contextlib.contextmanager
def atomic_open(
    target: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces `target` only if the block succeeds."""
    if "b" in mode:
        encoding = None
    with (
        atomic_path(target) as tmp,
        open(tmp, mode, encoding=encoding, newline="" if "b" not in mode else None) as fh,
    ):
        yield fh


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(target, "wb") as fh:
        fh.write(data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_open(target, "w") as fh:
        fh.write(text)
