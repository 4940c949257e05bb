"""`labinterp handout`: printable PDF handouts for one patient or for every patient.

    labinterp handout FILE... --patient ID -o out.pdf
    labinterp handout FILE... --all -o DIR/

A batch names files handout-0001.pdf, ... and writes index.csv mapping them back to
patient ids, so the file names themselves carry nothing identifying. Progress goes to
stderr (only on a terminal); patient ids and values never go to the log.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from labinterp.cli_check import add_input_options
from labinterp.cli_interpret import add_guideline_option
from labinterp.errors import LabinterpError
from labinterp.readers.sniff import expand_paths

log = logging.getLogger("labinterp")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more (a usage error otherwise, exit 2)."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, not '{text}'")
    return number


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "handout",
        help="write printable PDF handouts for patients",
        description="Write a printable, accessible PDF handout for one patient or all patients.",
    )
    add_input_options(p)  # FILE..., --mapping, --date-format, as for check and interpret
    add_guideline_option(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--patient", metavar="ID", help="patient id to write a handout for")
    who.add_argument("--all", action="store_true", help="one handout per patient into a folder")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="PATH",
        help=(
            "PDF file (with --patient), or folder (with --all; made if missing; handouts "
            "an earlier run left there are removed)"
        ),
    )
    p.add_argument("--lang", choices=("en", "es"), default="en", help="language (default en)")
    p.add_argument("--large-print", action="store_true", help="larger type")
    p.add_argument(
        "--paper",
        type=str.lower,
        choices=("a4", "letter"),
        default="a4",
        help="paper size (default a4)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="processes for --all (default: all cores)",
    )
    p.set_defaults(run=run)


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\rhandouts [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from labinterp.handout import render_batch, render_handout

    # a path that does not exist fails here, before any worker starts
    expand_paths(args.files)
    source = [Path(name) for name in args.files]
    reading = {
        "mapping": args.mapping,
        "date_format": args.date_format,
        "vitamin_d_guideline": args.vitamin_d_guideline,
    }
    if args.all:
        out = Path(args.output)
        if out.exists() and not out.is_dir():
            raise LabinterpError(
                f"'{args.output}' is a file, but --all writes a folder of PDFs.",
                fix="pass a folder with -o DIR/.",
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LabinterpError(
                f"cannot create the folder '{args.output}' ({exc.strerror}).",
                fix="choose a folder you can write to.",
            ) from exc
        index = render_batch(
            source,
            None,
            out,
            lang=args.lang,
            large_print=args.large_print,
            paper=args.paper,
            workers=args.workers,
            progress=_Progress(not args.quiet),
            **reading,
        )
        if not args.quiet:
            noun = "handout" if len(index) == 1 else "handouts"
            log.info("wrote %d %s and index.csv to %s", len(index), noun, out)
        return 0
    render_handout(
        source,
        None,
        args.patient.strip(),  # ids are trimmed when read
        lang=args.lang,
        large_print=args.large_print,
        paper=args.paper,
        output=args.output,
        **reading,
    )
    if not args.quiet:
        log.info("wrote the handout to %s", args.output)
    return 0
