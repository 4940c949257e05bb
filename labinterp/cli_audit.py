"""`labinterp audit`: audit whole record sets into a folder of tables and an HTML report."""

from __future__ import annotations

import argparse
import sys
from typing import Any

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
        sys.stderr.write(summary_text(summary, args.output))
    return 0


def summary_text(summary: dict[str, Any], output: str) -> str:
    """What the audit found, for a person on stderr: rows and patients, then one line per
    rule that fired with its patients by tier and, where the rule calls for a later test,
    how many had none. Counts and rule names only: no patient id, no value."""
    from labinterp.rules import REGISTRY

    lines = [
        f"labinterp: audited {summary['rows_in']:,} rows ({summary['rows_used']:,} used, "
        f"{summary['rows_rejected']:,} rejected), {summary['patients']:,} patients; "
        f"wrote {output}"
    ]
    order = {rule.id: i for i, rule in enumerate(REGISTRY)}  # guard, patterns, context
    rules = sorted(summary["counts"], key=lambda r: (order.get(r, len(order)), r))
    fired = {r: summary["counts"][r].get("fired", {}) for r in rules}
    width = max((len(r) for r in rules if fired[r]), default=0)
    for rule in (r for r in rules if fired[r]):
        by_tier = fired[rule]
        n = sum(by_tier.values())
        line = f"  fired: {rule:<{width}} {n:>{len(str(summary['patients']))},} patient"
        line += "" if n == 1 else "s"
        tiers = sorted(((t, k) for t, k in by_tier.items() if t), key=lambda tk: (-tk[1], tk[0]))
        if tiers:
            line += " (" + ", ".join(f"{t} {k:,}" for t, k in tiers) + ")"
        follow = summary.get("follow_up", {}).get(rule)
        if follow:
            names = list(follow["analytes"])
            wanted = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
            line += f"; {follow['not_followed_up']:,} with no later test ({wanted})"
            if follow["undated"]:
                line += f", {follow['undated']:,} cannot tell (undated)"
        lines.append(line)
    never = [r for r in rules if not fired[r]]
    if not any(fired.values()):
        lines.append("  fired: nothing")
    if never:
        lines.append(f"  fired for no patient: {', '.join(never)}")
    return "\n".join(lines) + "\n"
