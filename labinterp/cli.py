"""The `labinterp` command line: check, interpret, handout, audit, demo.

Data goes to stdout, progress and messages to stderr. Exit codes: 0 ok, 2 bad input or
usage (any LabinterpError), 1 unexpected error. Each subcommand's options and behaviour
live in its own module (cli_*.py); this file only wires them together.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Sequence

from labinterp import __version__, cli_audit, cli_check, cli_demo, cli_handout, cli_interpret
from labinterp.atomic import NO_SPACE
from labinterp.errors import LabinterpError

log = logging.getLogger("labinterp")

# errno values of a write that failed for want of room: the user's to fix, not a bug
_NO_ROOM = NO_SPACE | {errno.EFBIG}

_COMMANDS = (cli_check, cli_interpret, cli_handout, cli_audit, cli_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labinterp",
        description="Read lab exports, flag magnesium-linked patterns, write handouts and audits.",
    )
    parser.add_argument("--version", action="version", version=f"labinterp {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.register(sub)
    return parser


def _configure_logging(*, quiet: bool) -> None:
    """Our own messages go to stderr; third-party libraries stay at warnings.

    Only the "labinterp" logger gets a handler. Libraries such as fontTools (font
    subsetting) and WeasyPrint log at INFO, sometimes with text from the export, so the
    root logger is left at its default level and never shows their chatter.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("labinterp: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signum)  # the signal's number: the exit code says which it was


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    if argv is None:
        # The program's work is done and it exits next: a Ctrl-C or SIGTERM arriving now
        # (after the default handlers are back, during shutdown) would end it with a
        # signal's status and no word, though everything is written.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    # --debug is an option of labinterp itself; after the command it is taken all the same
    # (the error message suggests adding it, and people add it at the end)
    tokens = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in tokens:
        tokens = ["--debug", *(t for t in tokens if t != "--debug")]
    try:
        args = parser.parse_args(tokens)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    _configure_logging(quiet=getattr(args, "quiet", False))
    # SIGTERM (what `timeout`, systemd and batch schedulers send) stops a run as Ctrl-C
    # does, through the same clean-up: no scratch data or temporary files left behind
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a full disk under a redirected stdout shows here, not at exit
        return code
    except LabinterpError as exc:
        # paths stay whole (not broken at a hyphen), to be copied from the message
        message = textwrap.fill(
            f"labinterp: {exc}", width=100, break_on_hyphens=False, break_long_words=False
        )
        sys.stderr.write(message + "\n")
        return 2
    except KeyboardInterrupt as exc:
        sys.stderr.write(
            "labinterp: interrupted; outputs already there are left as they were, and no"
            " output was left half-written.\n"
        )
        # 128 + the signal's number, as shells report it: 130 for Ctrl-C, 143 for SIGTERM
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        return 128 + int(signum)
    except BrokenPipeError:
        return 0
    except OSError as exc:
        if exc.errno is None or exc.errno not in _NO_ROOM:
            return _unexpected(exc, args)
        # no room left where the output goes (stdout redirected to a full disk, a scratch
        # file): the user's to fix, not a bug
        _discard_stdout()
        sys.stderr.write(
            f"labinterp: cannot write the output: {os.strerror(exc.errno)}. Fix: free some"
            " space on the device the output goes to, or write it to another one.\n"
        )
        return 2
    except Exception as exc:
        return _unexpected(exc, args)


def _unexpected(exc: Exception, args: argparse.Namespace) -> int:
    """Last resort: never a bare traceback for users."""
    if getattr(args, "debug", False):
        raise exc
    sys.stderr.write(
        f"labinterp: unexpected error ({type(exc).__name__}). This is a bug in labinterp; "
        "run again with --debug and report the traceback (it contains no patient data "
        "unless your file names do).\n"
    )
    return 1


def _discard_stdout() -> None:
    """Drop what stdout still holds when it cannot be written (a full disk): Python would
    try again at exit, and report the failure with a traceback."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
