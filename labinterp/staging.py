"""Staging folders: outputs are made in a hidden folder inside the output folder, then put
in place together, so a run stopped part-way leaves the previous outputs whole.

A staging folder holds patient data. It is removed when its run ends, however it ends;
one left by a run killed outright (SIGKILL, the OOM killer, a crash of the machine) is
removed by the next run into the same folder, and worker processes remove it (and exit)
when the process that started them has died.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

# How often a worker checks that the run that started it still runs.
WATCH_EVERY_S = 0.25


def running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:  # no /proc (not Linux): taken as running
        return True
    fields = stat.rsplit(")", 1)[-1].split()
    return not fields or fields[0] != "Z"


def make(folder: Path, prefix: str) -> Path:
    """A new staging folder in `folder`, named `prefix`, this process's id and a random
    part: the id tells a later run whether this one still runs (see `remove_stale`).
    Absolute: its path is handed to worker processes."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=folder)).absolute()


def remove_stale(folder: Path, prefix: str) -> None:
    """Remove the staging folders named by `make` with `prefix` that a run killed outright
    left in `folder`: they hold patient data. One whose process still runs is another
    run's, and stays."""
    for old in folder.glob(f"{prefix}*"):
        pid = old.name[len(prefix) :].split("-", 1)[0]
        if not (old.is_dir() and not old.is_symlink() and pid.isdigit()) or running(int(pid)):
            continue
        shutil.rmtree(old, ignore_errors=True)


def watch_parent(parent: int, folder: str | None) -> None:
    """Exit this worker process once `parent` (the run that started it) has died, removing
    `folder` (its staging or scratch folder) first.

    A run killed outright cannot stop its workers, and a worker holds the write end of its
    own task pipe, so it would wait on it forever (and a worker of a fork server keeps the
    server alive with it). The worker's parent is `parent`, or a fork server `parent`
    started: once either is gone (the worker is adopted by another process, or `parent`
    no longer runs), the folder holds patient data no running process owns. A thread
    rather than prctl(PR_SET_PDEATHSIG): it works on every platform, for a fork server's
    workers too, and can clean up before exiting.
    """
    first = os.getppid()

    def gone() -> bool:
        return os.getppid() != first or not running(parent)

    def watch() -> None:
        while not gone():
            time.sleep(WATCH_EVERY_S)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        os._exit(1)

    if gone():  # died before this worker got here
        watch()
    threading.Thread(target=watch, name="labinterp-parent-watch", daemon=True).start()


_DEFERRED = ("SIGINT", "SIGTERM")


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM while the block runs (the renames of the outputs, which
    must happen all or none), then treat them as the handlers in place would. Yields the
    signals held. Signal handlers belong to the main thread: elsewhere nothing is held."""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    numbers = [getattr(signal, name) for name in _DEFERRED if hasattr(signal, name)]
    previous = {n: signal.getsignal(n) for n in numbers}
    for n in numbers:
        signal.signal(n, lambda signum, frame: held.append(signum))
    try:
        yield held
    finally:
        for n, handler in previous.items():
            signal.signal(n, handler)
    for signum in held[:1]:
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)  # Python's own raises KeyboardInterrupt, as the CLI's does
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)
