"""`labinterp audit`: audit whole record sets into a folder of tables and an HTML report."""

from __future__ import annotations

import argparse
import json
import sys

from labinterp.cli_check import date_format_arg
from labinterp.cli_handout import positive_int
from labinterp.cli_interpret import add_guideline_option

ENGINES = ("local", "dask")  # as in labinterp.audit.core; kept here so --help stays fast


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="audit exports: findings, patients, rejected rows, summary and an HTML report",
        description=(
            "Read every named export (files or folders), interpret each patient and write "
            "findings.csv/.parquet, patients.csv, rejected_rows.csv, summary.json and "
            "report.html into DIR. Progress goes to stderr when it is a terminal."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="FILE_OR_FOLDER", help="exports to audit")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: bounded memory on this machine (default); dask: a Dask cluster",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address, e.g. tcp://host:8786 (implies --engine dask; "
        "the output folder must be reachable by the workers at the same path)",
    )
    p.add_argument("--mapping", metavar="M.toml", help="column mapping file for the exports")
    p.add_argument(
        "--date-format",
        metavar="FMT",
        type=date_format_arg,
        help="date format, e.g. %%d/%%m/%%Y %%H:%%M",
    )
    add_guideline_option(p)
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="processes that interpret patients with the local engine (default: one per "
        "core, at most 2; each holds one part of the patients in memory, a few hundred MB)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary on stderr")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from labinterp.audit import audit
    from labinterp.audit.outputs import OutputsWritten

    if args.scheduler and args.engine != "dask":
        args.engine = "dask"
    try:
        summary = audit(
            args.paths,
            args.output,
            engine=args.engine,
            scheduler=args.scheduler,
            mapping=args.mapping,
            date_format=args.date_format,
            vitamin_d_guideline=args.vitamin_d_guideline,
            progress=not args.quiet and sys.stderr.isatty(),
            workers=args.workers,
        )
    except OutputsWritten:
        # Ctrl-C or SIGTERM came too late to stop anything: the audit is complete, and a
        # script must not take it for one that failed
        sys.stderr.write(
            f"labinterp: interrupted after the audit had written its outputs; {args.output} "
            "holds this run's complete outputs.\n"
        )
        return 0
    if not args.quiet:
        fired = {
            rule: sum(by_status.get("fired", {}).values())
            for rule, by_status in summary["counts"].items()
        }
        not_followed = {
            rule: f["not_followed_up"]
            for rule, f in summary["follow_up"].items()
            if f["not_followed_up"]
        }
        sys.stderr.write(
            f"labinterp: audited {summary['rows_in']:,} rows ({summary['rows_used']:,} used, "
            f"{summary['rows_rejected']:,} rejected), {summary['patients']:,} patients; "
            f"patients fired per rule: {json.dumps(fired, sort_keys=True)}; "
            f"of them with no later test: {json.dumps(not_followed, sort_keys=True)}; "
            f"wrote {args.output}\n"
        )
    return 0
