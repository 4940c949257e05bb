"""`labinterp interpret FILE...`: the findings table for one or more lab exports.

On a terminal (`--format table`, the default) it prints compact columns, one line per
patient x rule x episode, and with `--patient` each fired or suppressed finding's note and
evidence below them, then each patient's rejected rows counted by reason; `--format
csv|json` gives the full findings table only (the same columns as the Python API; the
rejected rows, with their patient_id, are `labinterp check FILE --rejected --format csv`).
`--status` and `--rule` keep only some findings (a large export has mostly `not_fired`
ones). Findings go to stdout; a one-line count goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap

import pandas as pd

from labinterp import schema
from labinterp.cli_check import add_input_options
from labinterp.errors import LabinterpError
from labinterp.interpret import interpret_results
from labinterp.output import FORMATS, write_table
from labinterp.reading import read, times_in_utc
from labinterp.rules import REGISTRY
from labinterp.rules.vitamin_d_resistance import GUIDELINES

log = logging.getLogger("labinterp")

# Columns shown on a terminal; machine formats get every column of the findings table.
TABLE_COLUMNS = (
    "patient_id",
    "rule_id",
    "status",
    "tier",
    "grade",
    "evidence_at",
    "missing_inputs",
    "suppressed_by",
    "caveats",
)


# What the terminal table's columns mean, for `interpret --help`; kept beside `compact`,
# which makes them.
TABLE_EPILOG = """\
columns of the terminal table (a column no finding fills is left out):
  patient_id      the patient's id as the export gives it
  rule_id         the pattern, guard or context finding the row is about
  status          fired, not_fired, indeterminate (an input is missing) or suppressed
                  (a guard vetoed it)
  tier            the rule's tier of a fired finding (supported or possible, serial or single);
                  for ckd_context the KDIGO stage of the lowest eGFR
  grade           CTCAE v5 grade of the result a fired finding is graded on (the Mg for
                  Mg/Ca and vitamin D, the K for Mg/K, the Ca for high Ca with low Mg);
                  "\u2265N" when that result was censored ("<0.5"): grade N or worse
  when            time of the latest result the finding cites, else the start of its
                  episode; "when (UTC)" when the export printed times with an offset
  missing_inputs  the analytes an indeterminate finding needed and did not have
  suppressed      the guard that vetoed the finding (e.g. edta_contamination)
  caveats         what qualifies the finding, ";"-joined (e.g. albumin_unknown,
                  preliminary_result, grade_at_least)

--format csv or json gives every column, with the evidence and the note; --patient
prints the note and evidence of each fired or suppressed finding below the table.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpret",
        help="flag Mg-linked patterns (with guards and CTCAE grades) in lab exports",
        description="Read the export(s) and print one finding per patient x rule x episode.",
        epilog=TABLE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(p)
    p.add_argument(
        "--patient",
        metavar="ID",
        action="append",
        help=(
            "only this patient (repeatable); the table then also counts the patient's"
            " rejected rows by reason, for a patient whose every row was rejected too (csv"
            " and json hold the findings only: 'labinterp check FILE --rejected --format csv'"
            " lists rejected rows with their patient_id); an id in no row of the files is"
            " an error"
        ),
    )
    p.add_argument(
        "--status",
        choices=schema.STATUSES,
        action="append",
        help="only findings with this status (repeatable), e.g. --status fired",
    )
    p.add_argument(
        "--rule",
        metavar="RULE_ID",
        choices=[r.id for r in REGISTRY],
        action="append",
        help="only findings of this rule (repeatable), e.g. --rule hypomagnesemia_hypokalemia",
    )
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    add_guideline_option(p)
    p.set_defaults(run=run)


def add_guideline_option(p: argparse.ArgumentParser) -> None:
    """The vitamin D guideline setting every command that interprets shares."""
    p.add_argument(
        "--vitamin-d-guideline",
        choices=sorted(GUIDELINES),
        default="iom2011",
        help="25-OH vitamin D sufficiency cut-off: IOM 2011 (default) or Endocrine Society 2011",
    )


def details(findings: pd.DataFrame) -> str:
    """Below the table, for `--patient`: each fired or suppressed finding's note (the
    clinician's text) and evidence, the columns too long for a line of the table."""
    shown = findings[findings["status"].isin(["fired", "suppressed"]).to_numpy()]
    when = shown["evidence_at"].fillna(shown["episode_start"]).dt.strftime("%Y-%m-%d %H:%M")
    lines = []
    for row, seen in zip(shown.to_dict("records"), when.fillna(""), strict=True):
        tier = f" {row['tier']}" if row["tier"] else ""
        head = f"{row['patient_id']}  {row['rule_id']}: {row['status']}{tier}"
        lines.append(f"\n{head}  ({seen})\n" if seen else f"\n{head}\n")
        for label, text in (("note", row["note"]), ("evidence", row["evidence"])):
            if isinstance(text, str) and text:
                wrapped = textwrap.fill(
                    text, width=96, initial_indent=f"  {label}: ", subsequent_indent="    "
                )
                lines.append(wrapped + "\n")
    return "".join(lines)


def rejected_counts(rejected: pd.DataFrame) -> str:
    """Below the table, for `--patient`: each patient's rejected rows, counted by reason
    (most first), so that findings missing for a result that could not be read show why."""
    lines = []
    for pid, rows in rejected.groupby("patient_id", sort=True):
        counts = rows["reason"].value_counts()
        by_reason = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        said = ", ".join(f"{n} {reason}" for reason, n in by_reason)
        lines.append(f"\n{pid}  rejected rows: {len(rows)} ({said})\n")
    if lines:
        lines.append("  `labinterp check FILE --rejected` lists each with its reason\n")
    return "".join(lines)


def compact(findings: pd.DataFrame, utc: bool = False) -> pd.DataFrame:
    """The terminal's columns. The time is when the finding was seen (its latest cited
    result), else the start of its episode: an episode of daily results can run for weeks.
    `utc`: the export printed times with an offset from UTC, which the findings hold in
    UTC, so the time column says so."""
    out = findings.loc[:, list(TABLE_COLUMNS)].copy()
    seen = out["evidence_at"].fillna(findings["episode_start"])
    out["evidence_at"] = seen.dt.strftime("%Y-%m-%d %H:%M").fillna("")
    out["grade"] = out["grade"].astype("string").fillna("")
    # a grade from a censored result is a least one ("<0.5 mmol/L" Mg: grade 2 or worse)
    at_least = findings["caveats"].fillna("").str.split(";").apply(lambda c: "grade_at_least" in c)
    out.loc[at_least.to_numpy(dtype=bool), "grade"] = "\u2265" + out["grade"]
    # columns nothing in this table fills only widen it on a terminal (machine formats keep them)
    optional = ("tier", "grade", "missing_inputs", "suppressed_by", "caveats")
    out = out.drop(columns=[c for c in optional if not (out[c].fillna("") != "").any()])
    when = "when (UTC)" if utc else "when"
    return out.rename(columns={"evidence_at": when, "suppressed_by": "suppressed"})


def run(args: argparse.Namespace) -> int:
    result = read(args.files, mapping=args.mapping, date_format=args.date_format)
    # ids are trimmed when read, so the ones asked for are too
    wanted = [p.strip() for p in args.patient] if args.patient else None
    if wanted:
        # an id in no row of the files (a typo, another export): an empty table would look
        # like "nothing to flag". An id whose rows were all rejected is shown, with them.
        unknown = (
            set(wanted)
            - set(result.results["patient_id"].dropna())
            - set(result.rejected["patient_id"].dropna())
        )
        if unknown:
            raise LabinterpError(
                f"{len(unknown)} of the {len(set(wanted))} requested patient ids "
                f"{'is' if len(unknown) == 1 else 'are'} in no row of the files read.",
                fix="the ids read are in the patient_id column of 'labinterp check FILE --format"
                " csv'; or leave out --patient.",
            )
    findings = interpret_results(
        result.results, patient=wanted, vitamin_d_guideline=args.vitamin_d_guideline
    )
    fired = int((findings["status"] == "fired").sum())
    counts = f"{len(findings)} findings ({fired} fired) from {result.rows_in} rows read"
    rejected = result.rejected
    if wanted:  # the requested patients' rows not interpreted
        rejected = rejected[rejected["patient_id"].isin(wanted).to_numpy(na_value=False)]
    if len(rejected):  # rows not interpreted: say so, and where to see why
        whose = " of the requested patients" if wanted else ""
        counts += (
            f" ({len(rejected)} rejected{whose}: `labinterp check FILE --rejected` lists them"
            " with the reason)"
        )
    if args.status or args.rule:
        keep = findings["status"].isin(args.status or schema.STATUSES) & findings["rule_id"].isin(
            args.rule or [r.id for r in REGISTRY]
        )
        findings = findings[keep.to_numpy()].reset_index(drop=True)
        counts += f"; {len(findings)} shown (--status/--rule)"
    log.info("%s", counts)
    if args.format == "table":
        write_table(compact(findings, utc=times_in_utc(result.results)), "table")
        if wanted:  # a few patients: what each finding that fired or was vetoed rests on
            sys.stdout.write(details(findings))
            sys.stdout.write(rejected_counts(rejected))
    else:
        write_table(findings, args.format)
    return 0
