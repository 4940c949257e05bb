"""`labinterp demo`: the whole job on the bundled sample export, into one folder.

    labinterp demo -o labinterp-demo

Reads the sample (every row accounted for), prints the fired findings, and writes the
batch audit (audit/) and one PDF handout per patient (handouts/). It is what the README's
first command runs, so a new user sees every output labinterp makes in one go.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from labinterp.atomic import write_failed
from labinterp.errors import OutputError
from labinterp.output import write_table

SAMPLE = "clinic_export.csv"


def sample_path() -> Path:
    """The bundled sample export (inside the installed package)."""
    return Path(str(resources.files("labinterp") / "sample_data" / SAMPLE))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run check, interpret, audit and handouts on the bundled sample",
        description="Run the whole job on the bundled sample export.",
    )
    p.add_argument(
        "-o",
        "--output",
        default="labinterp-demo",
        metavar="DIR",
        help="folder for the outputs (created if missing; default labinterp-demo)",
    )
    p.add_argument("--no-handouts", action="store_true", help="skip the PDF handouts")
    p.add_argument("-q", "--quiet", action="store_true", help="print less")
    p.set_defaults(run=run)


def _folder(path: Path) -> Path:
    """`path`, made a folder if it is not one yet; an OutputError (exit 2) if it cannot be."""
    existing = next((at for at in (path, *path.parents) if at.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OutputError(
            f"'{existing}' is a file, but the demo writes a folder of outputs at '{path}'.",
            fix="pass another folder with -o.",
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(exc, path.parent) from exc
    return path


def run(args: argparse.Namespace) -> int:
    from labinterp.audit.core import audit
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    out = _folder(Path(args.output))
    sample = sample_path()
    say = (lambda text: None) if args.quiet else (lambda text: sys.stderr.write(text + "\n"))

    result = read(sample)
    say(
        f"sample export {sample.name}: {result.rows_in} rows in = {result.rows_used} used + "
        f"{result.rows_rejected} rejected, {result.results['patient_id'].nunique()} patients"
    )
    findings = interpret_results(result.results)
    shown = findings[findings["status"].isin(["fired", "suppressed"])]
    columns = ["patient_id", "rule_id", "status", "tier", "grade", "suppressed_by", "caveats"]
    sys.stdout.write(
        "Findings (fired and suppressed) in the bundled sample; the evidence for each"
        " is in audit/findings.csv:\n"
    )
    write_table(shown[columns], "table")

    audit_dir = _folder(out / "audit")
    summary = audit([sample], audit_dir, progress=False)
    say(
        f"audit written to {audit_dir}/ (report.html, findings.csv, summary.json, ...)"
        f" - {summary.get('patients', '?')} patients"
    )

    if not args.no_handouts:
        from labinterp.handout import render_batch

        handout_dir = _folder(out / "handouts")
        index = render_batch(result.results, findings, handout_dir)
        say(f"{len(index)} handouts written to {handout_dir}/ (index.csv maps files to patients)")
    return 0
