"""`labinterp check FILE...`: how labinterp reads an export, before anything is interpreted.

Prints, per file, the format and the column mapping it used (as a mapping file the user can
copy and edit), then the row accounting, results per analyte and unit, where ranges came
from, and why rows were rejected.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import cast

import pandas as pd

from labinterp.catalog import name_index, normalise_name
from labinterp.errors import LabinterpError
from labinterp.output import FORMATS, write_table
from labinterp.reading import ReadResult, read
from labinterp.test_names import read_test_name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="show how an export is read: mapping, units, row accounting",
        description="Read the export(s) and report how every row was handled.",
    )
    add_input_options(p)
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    p.add_argument(
        "--rejected",
        action="store_true",
        help="also list every rejected row with its reason (with --format csv: the rejected"
        " rows instead of the results)",
    )
    p.set_defaults(run=run)


def add_input_options(p: argparse.ArgumentParser) -> None:
    """Options every command that reads exports shares."""
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE_OR_FOLDER",
        help="lab export(s): CSV, xlsx, Parquet, JSON, FHIR, HL7 v2; or folders holding them",
    )
    p.add_argument("--mapping", metavar="TOML", help="column mapping file (see `check` output)")
    p.add_argument(
        "--date-format",
        metavar="FMT",
        type=date_format_arg,
        help="strftime format of the collection time, e.g. '%%d/%%m/%%Y %%H:%%M'",
    )


def date_format_arg(text: str) -> str:
    """A --date-format checked when the command line is read: a format that cannot read
    back a date it wrote ('%Q', no directive at all) is a usage error, not a failure later."""
    sample = dt.datetime(2024, 3, 15, 8, 30, 45, tzinfo=dt.UTC)  # %z, %Z too
    try:
        dt.datetime.strptime(sample.strftime(text), text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a date format labinterp can read dates with ({exc});"
            " use strftime directives, e.g. '%d/%m/%Y %H:%M'"
        ) from exc
    if "%" not in text:
        raise argparse.ArgumentTypeError(
            f"'{text}' has no strftime directive; e.g. '%d/%m/%Y %H:%M'"
        )
    return text


# Quality notes the reader puts on a row whose printed range it did not use.
RANGE_NOTES = {
    "unreadable_range": "no limit could be read from its text (quality: unreadable_range)",
    "implausible_range": "a limit is impossible for the unit (quality: implausible_range)",
}


def summary(result: ReadResult) -> dict[str, object]:
    res, rej = result.results, result.rejected
    by_analyte = (
        res.groupby(["analyte", "unit_reported"], dropna=False).size().reset_index(name="rows")
        if len(res)
        else pd.DataFrame(columns=["analyte", "unit_reported", "rows"])
    )
    return {
        "rows_in": result.rows_in,
        "rows_used": result.rows_used,
        "rows_rejected": result.rows_rejected,
        "patients": int(res["patient_id"].nunique()),
        "rejected_by_reason": {k: int(v) for k, v in rej["reason"].value_counts().items()},
        "range_origin": {k: int(v) for k, v in res["range_origin"].value_counts().items()},
        # rows whose printed range was not used: unreadable text, or an impossible limit
        "range_not_used": {note: n for note, n in _notes_counted(res["quality"]).items() if n},
        "utc_offsets": _offsets(res["utc_offset_min"]),
        # results used per result status the export gave (none: the export gave none)
        "result_status": {k: int(v) for k, v in res["result_status"].value_counts().items()},
        # a medication column, the medication records of their own that name a medicine
        # the patterns read (FHIR resources), and the results whose medicines name vitamin
        # D (they can strengthen the vitamin D pattern) or a medicine that lowers Mg
        "medication_column": any("medication" in f.fields for f in result.files),
        "medication_records": sum(f.medication_records for f in result.files)
        + sum(int(s.get("medication_records", 0)) for s in result.skipped),
        "vitamin_d_supplement_rows": _flagged(res, "vitamin_d_supplement"),
        "mg_lowering_medication_rows": _flagged(res, "mg_lowering_medication"),
        # results named as calcium whose printed range is an ionized calcium's
        "ionized_calcium_by_range_rows": _flagged(res, "ionized_calcium_by_range"),
        # eGFR lines with a race coefficient read because their draw had no other
        "race_adjusted_egfr_rows": _flagged(res, "race_adjusted_egfr"),
        # test names that are no catalog spelling as they stand, read by their words
        "names_read_by_words": _names_read_by_words(res),
        # the tests not read, most rows first: what to check for a test labinterp missed
        "tests_not_read": [
            {"test": str(t), "rows": int(n)}
            for t, n in rej.loc[rej["reason"] == "out_of_scope", "test"]
            .fillna("")
            .value_counts()
            .items()
        ],
        "results_by_analyte_and_unit": [
            {"analyte": a, "unit": u if isinstance(u, str) else "", "rows": int(n)}
            for a, u, n in by_analyte.itertuples(index=False)
        ],
        "files": [
            {
                "file": f.name,
                "format": f.format,
                "columns_from": f.plan,
                "rows_in": f.rows_in,
                "rows_used": f.rows_used,
                "rows_rejected": f.rows_rejected,
                "undated": f.undated,
                "header_line": f.header_line,
                "warnings": list(f.warnings),
                # columns holding values that feed no field: ignored, so say so
                "unused_columns": list(f.unused_columns),
                "mapping": f.mapping_toml,
            }
            for f in result.files
        ],
        "skipped_files": result.skipped,
    }


def _names_read_by_words(results: pd.DataFrame) -> list[dict[str, object]]:
    """The test names the reader read by dropping words that never change the test
    (reference_ranges/test_names.toml: "CALCIUM, TOTAL, SERUM" as calcium), with their
    analyte and rows, so that a user can see each reading and correct it with a mapping."""
    if not len(results):
        return []
    counts = results.groupby(["test_label", "analyte"], dropna=True, observed=True).size()
    out: list[dict[str, object]] = []
    for key, n in counts.items():
        label, analyte = cast(tuple[str, str], key)
        if normalise_name(label) in name_index() or read_test_name(label) != analyte:
            continue  # a catalog spelling, or read by its code, LOINC or a mapping
        out.append({"test": label, "analyte": analyte, "rows": int(n)})
    return out


def _flagged(results: pd.DataFrame, flag: str) -> int:
    """How many results carry `flag` among their quality flags."""
    return int(results["quality"].fillna("").str.contains(rf"(?:^|;){flag}(?:;|$)").sum())


def _notes_counted(quality: pd.Series) -> dict[str, int]:
    """Rows per note of RANGE_NOTES in the ";"-joined quality flags."""
    return {
        note: int(quality.str.contains(rf"(?:^|;){note}(?:;|$)", na=False).sum())
        for note in RANGE_NOTES
    }


def _offsets(minutes: pd.Series) -> dict[str, int]:
    """Rows per UTC offset the times were printed with ("-07:00": 106), in offset order."""
    counts = minutes.dropna().astype(int).value_counts().sort_index()
    out = {}
    for m, n in zip(counts.index.tolist(), counts.tolist(), strict=True):
        out[f"{'-' if m < 0 else '+'}{abs(m) // 60:02d}:{abs(m) % 60:02d}"] = int(n)
    return out


def column_report(exc: LabinterpError) -> str:
    """The column names read from a file whose columns could not be used, numbered: what
    a mapping file names. They are the file's own cells (a headerless export's first row
    is a patient's result), so they are printed here, where the user asked for a report
    of the file, and never in an error message or the log."""
    shown = exc.columns_read[:_COLUMNS_LISTED]
    lines = [
        f"== {exc.file}: the column names read on row {exc.row or 1}, to name in a mapping file:"
    ]
    lines += [f"   column {n}: {name!r}" for n, name in enumerate(shown, start=1)]
    if len(exc.columns_read) > len(shown):
        lines.append(f"   ... and {len(exc.columns_read) - len(shown)} more")
    return "\n".join(lines) + "\n"


_COLUMNS_LISTED = 60


def run(args: argparse.Namespace) -> int:
    try:
        result = read(args.files, mapping=args.mapping, date_format=args.date_format)
    except LabinterpError as exc:
        if exc.columns_read and args.format == "table":
            sys.stdout.write(column_report(exc))  # then the error, on stderr
        raise
    info = summary(result)
    out = sys.stdout
    if args.format == "json":
        if args.rejected:
            info["rejected"] = json.loads(result.rejected.to_json(orient="records"))
        out.write(json.dumps(info, indent=2) + "\n")
        return 0
    if args.format == "csv":
        write_table(result.rejected if args.rejected else result.results, "csv", out)
        return 0
    for f in info["files"]:  # type: ignore[attr-defined]
        out.write(f"== {f['file']}: {f['format']}, columns from {f['columns_from']}\n")
        if f["header_line"] > 1:
            out.write(
                f"   header on line {f['header_line']}: the lines above it are a title, not"
                " results\n"
            )
        if f["undated"]:
            out.write("   no collection-time column: each row is treated as one draw\n")
        for warning in f["warnings"]:
            out.write(f"   warning: {warning}\n")
        unused = f["unused_columns"]
        if unused and not any("not used" in w for w in f["warnings"]):
            out.write(f"   columns not used: {', '.join(unused)}\n")
        if f["mapping"]:
            out.write("".join(f"   {line}\n" for line in f["mapping"].splitlines()))
        out.write(
            f"   rows: {f['rows_in']} in = {f['rows_used']} used + {f['rows_rejected']} rejected\n"
        )
    for s in result.skipped:
        out.write(f"== {s['file']}: skipped, found in a folder but not a lab export\n")
        out.write(f"   {s['reason']}\n")
    out.write(
        f"\nTotal: {info['rows_in']} rows in = {info['rows_used']} used + "
        f"{info['rows_rejected']} rejected; {info['patients']} patients\n"
    )
    if info["rows_used"]:  # a file none of whose rows was used has nothing to list here
        out.write("\nResults by analyte and reported unit:\n")
        for item in info["results_by_analyte_and_unit"]:  # type: ignore[attr-defined]
            out.write(
                f"   {item['analyte']:<18} {item['unit'] or '(text)':<16} {item['rows']:>8}\n"
            )
        out.write("\nReference ranges from: ")
        out.write(", ".join(f"{k} {v}" for k, v in info["range_origin"].items()) + "\n")  # type: ignore[attr-defined]
    names = cast(list[dict[str, object]], info["names_read_by_words"])
    if names:
        out.write(
            "\nTest names read by their words (reference_ranges/test_names.toml; a mapping"
            " file's [tests] overrides any):\n"
        )
        for item in names[:20]:
            rows = f"{item['rows']} row{'' if item['rows'] == 1 else 's'}"
            out.write(f"   {item['test']!r} -> {item['analyte']} ({rows})\n")
        if len(names) > 20:
            out.write(f"   ... and {len(names) - 20} more (--format json lists them all)\n")
    not_read = cast(list[dict[str, object]], info["tests_not_read"])
    if not_read:
        shown = ", ".join(f"{t['test']!r} {t['rows']}" for t in not_read[:12])
        more = f", and {len(not_read) - 12} more" if len(not_read) > 12 else ""
        out.write(
            f"\nTests not read (out_of_scope), most rows first: {shown}{more}.\n"
            "   A test labinterp interprets under another name can be named in a mapping"
            " file's [tests].\n"
        )
    for note, n in info["range_not_used"].items():  # type: ignore[attr-defined]
        why = RANGE_NOTES[note]
        out.write(f"   {n} rows printed a range that was not used: {why}\n")
    if info["ionized_calcium_by_range_rows"]:
        out.write(
            f"   {info['ionized_calcium_by_range_rows']} results named as calcium were read as"
            " ionized calcium: their printed range is an ionized calcium's"
            " (quality: ionized_calcium_by_range)\n"
        )
    if info["race_adjusted_egfr_rows"]:
        out.write(
            f"   {info['race_adjusted_egfr_rows']} eGFR results used were computed with a race"
            " coefficient, with no line without race for their draw"
            " (quality: race_adjusted_egfr)\n"
        )
    if info["utc_offsets"]:
        rows = ", ".join(f"{k}: {v}" for k, v in info["utc_offsets"].items())  # type: ignore[attr-defined]
        out.write(
            f"\nTimes printed with an offset from UTC ({rows} rows): kept in UTC for the\n"
            "patterns and the audit; handouts show the dates as the lab printed them.\n"
        )
    statuses = result.results["result_status"].value_counts()
    if len(statuses):
        listed = ", ".join(f"{k} {v}" for k, v in statuses.items())
        not_given = result.rows_used - int(statuses.sum())
        out.write(f"\nResult status: {listed}; not given {not_given}\n")
    if info["medication_column"] or info["medication_records"]:
        records = info["medication_records"]
        out.write(
            f"\nMedicines: {records} medication record(s) name a vitamin D supplement or a "
            "medicine that lowers Mg\n"
            if records
            else "\nMedicines, from the medication column:\n"
        )
        out.write(
            f"   results used while on vitamin D        {info['vitamin_d_supplement_rows']:>8}"
            "   (can strengthen the vitamin D pattern)\n"
            f"   results used while on a PPI or diuretic{info['mg_lowering_medication_rows']:>8}"
            "   (said in the clinician's text)\n"
        )
    if info["rejected_by_reason"]:
        out.write("\nRejected rows by reason:\n")
        for reason, n in info["rejected_by_reason"].items():  # type: ignore[attr-defined]
            out.write(f"   {reason:<28} {n:>8}\n")
    if args.rejected and len(result.rejected):
        out.write("\n")
        # the detail ends in the fix: written whole under its row, not cut to a cell
        write_table(result.rejected, "table", out, below="detail")
    return 0
