"""Small clinic exports for the handout tests: one row per (patient, time, test, result);
and the template context and HTML of a patient's handout, as the tests inspect them."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

SAMPLE = Path(__file__).resolve().parents[1] / "labinterp" / "sample_data" / "clinic_export.csv"

HEADER = [
    "patient_id",
    "sex",
    "birth_date",
    "collected_at",
    "specimen_id",
    "test",
    "loinc",
    "result",
    "unit",
    "reference_range",
    "flag",
    "comment",
]
# test key -> (name, LOINC, unit, the lab's range)
TESTS = {
    "Mg": ("Magnesium", "19123-9", "mg/dL", "1.6-2.6"),
    "K": ("Potassium", "2823-3", "mmol/L", "3.5-5.1"),
    "Ca": ("Calcium", "17861-6", "mg/dL", "8.5-10.5"),
    "iCa": ("Calcium, ionized", "1994-3", "mmol/L", "1.15-1.32"),
    "CaCorr": ("Calcium, corrected", "29265-6", "mg/dL", "8.5-10.5"),
    "Alb": ("Albumin", "1751-7", "g/dL", "3.5-5.0"),
    "PTH": ("PTH", "2731-8", "pg/mL", "15-65"),
    "eGFR": ("eGFR", "33914-3", "mL/min/1.73m2", ">60"),
    "Na": ("Sodium", "2951-2", "mmol/L", "135-145"),
}


def write_export(
    tmp_path: Path, rows: list[tuple], name: str = "export.csv", specimens: bool = False
) -> Path:
    """rows: (patient, when, test key, result[, range[, flag[, comment[, birth date]]]]),
    a woman's results; `specimens`: each row its own specimen id ("S0", "S1", ...)."""
    path = tmp_path / name
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for n, (pid, when, key, result, *more) in enumerate(rows):
            test, loinc, unit, rng = TESTS[key]
            rng = more[0] if len(more) > 0 else rng
            flag = more[1] if len(more) > 1 else ""
            comment = more[2] if len(more) > 2 else ""
            born = more[3] if len(more) > 3 else "1960-01-01"
            specimen = f"S{n}" if specimens else ""
            out.writerow(
                [pid, "F", born, when, specimen, test, loinc, result, unit, rng, flag, comment]
            )
    return path


def write_unprintable_id_export(tmp_path: Path) -> Path:
    """An export of two patients, one with an id in a script (Greek) that a test makes
    undrawable by the fonts."""
    path = tmp_path / "export.csv"
    path.write_text(
        "patient_id,collected_at,test,result,unit,range\n"
        "Ωμέγα-7,2024-03-01 08:00,Magnesium,1.2,mg/dL,1.6-2.6\n"
        "P-2,2024-03-01 08:00,Magnesium,1.2,mg/dL,1.6-2.6\n",
        encoding="utf-8",
    )
    return path


def handout_context(path: Path, pid: str, lang: str = "en", **kw: Any) -> Any:
    """The template context of patient `pid`'s handout from the export at `path`, with
    the patient's rejected rows as render_handout gives them."""
    from labinterp.handout.api import _grader, load_inputs
    from labinterp.handout.context import build_context

    res, fnd = load_inputs(path, None)
    rejected = res.attrs["rejected_by_patient"].get(pid, {})
    return build_context(res, fnd, pid, lang=lang, grader=_grader(), rejected=rejected, **kw)


def handout_html(ctx: Any) -> str:
    """A handout's HTML with runs of white space made one space (for `in` checks)."""
    from labinterp.handout.render import shared_renderer

    return re.sub(r"\s+", " ", shared_renderer().html(ctx))


def sample_html(sample: Any, pid: str, lang: str = "en") -> str:
    """The HTML of a bundled sample patient's handout; `sample` is load_inputs(SAMPLE)."""
    from labinterp.handout.api import _grader
    from labinterp.handout.context import build_context

    res, fnd = sample
    return handout_html(build_context(res, fnd, pid, lang=lang, grader=_grader()))
