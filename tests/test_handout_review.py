"""Patient handouts: the problems a clinical review of the handouts found (Spanish, large
print, batches), each with the export that showed it.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd
from pypdf import PdfReader

from labinterp.handout.api import _grader, load_inputs
from labinterp.handout.context import build_context
from labinterp.handout.render import shared_renderer

HEADER = [
    "patient_id",
    "sex",
    "birth_date",
    "collected_at",
    "test",
    "loinc",
    "result",
    "unit",
    "reference_range",
    "flag",
    "comment",
]
TESTS = {
    "Mg": ("Magnesium", "19123-9", "mg/dL", "1.6-2.6"),
    "K": ("Potassium", "2823-3", "mmol/L", "3.5-5.1"),
    "Ca": ("Calcium", "17861-6", "mg/dL", "8.5-10.5"),
    "iCa": ("Calcium, ionized", "1994-3", "mmol/L", "1.15-1.32"),
    "PTH": ("PTH", "2731-8", "pg/mL", "15-65"),
    "eGFR": ("eGFR", "33914-3", "mL/min/1.73m2", ">60"),
    "Na": ("Sodium", "2951-2", "mmol/L", "135-145"),
}


def _export(tmp_path: Path, rows: list[tuple], name: str = "export.csv") -> Path:
    """rows: (patient, when, test key, result[, range[, flag[, comment[, birth date]]]])."""
    path = tmp_path / name
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for pid, when, key, result, *more in rows:
            test, loinc, unit, rng = TESTS[key]
            rng = more[0] if len(more) > 0 else rng
            flag = more[1] if len(more) > 1 else ""
            comment = more[2] if len(more) > 2 else ""
            born = more[3] if len(more) > 3 else "1960-01-01"
            out.writerow([pid, "F", born, when, test, loinc, result, unit, rng, flag, comment])
    return path


def _context(path: Path, pid: str, lang: str = "en", **kw):
    res, fnd = load_inputs(path, None)
    return build_context(res, fnd, pid, lang=lang, grader=_grader(), **kw)


def _html(ctx) -> str:
    return re.sub(r"\s+", " ", shared_renderer().html(ctx))


def _pdf_pages(data: bytes) -> list[str]:
    return [re.sub(r"\s+", " ", p.extract_text() or "") for p in PdfReader(io.BytesIO(data)).pages]


# -- A. a batch into a folder used before ---------------------------------------------------


def test_a_batch_removes_the_handouts_an_earlier_run_left_and_says_how_many(
    tmp_path, capsys
) -> None:
    from labinterp.cli import main

    out = tmp_path / "out"
    out.mkdir()
    stale = ["handout-0003.pdf", "handout-0021.pdf", "handout-12345.pdf"]
    kept = ["handout-1.pdf", "notes.pdf", "handout-0004.pdf.bak", "HANDOUT-0005.PDF"]
    for name in stale + kept:
        (out / name).write_bytes(b"%PDF- another patient's results")
    (out / "handout-0006.pdf").mkdir()  # not a file: left alone
    path = _export(
        tmp_path,
        [
            ("P-1", "2024-04-10 08:00", "Mg", "1.2"),
            ("P-2", "2024-04-10 08:00", "Mg", "2.0"),
        ],
    )
    assert main(["handout", str(path), "--all", "-o", str(out), "--workers", "1", "-q"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["handout-0001.pdf", "handout-0002.pdf", "index.csv", "handout-0006.pdf", *kept]
    )
    index = pd.read_csv(out / "index.csv", dtype=str)
    assert list(index["file"]) == ["handout-0001.pdf", "handout-0002.pdf"]
    err = capsys.readouterr().err
    assert "removed 3 handouts an earlier run left" in err  # said even with -q
    assert "P-1" not in err and "P-2" not in err


def test_handout_help_says_a_missing_folder_is_made(tmp_path, capsys) -> None:
    from labinterp.cli import main

    main(["handout", "--help"])
    help_text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "existing folder" not in help_text
    assert "made if missing" in help_text
    path = _export(tmp_path, [("P-1", "2024-04-10 08:00", "Mg", "1.2")])
    new = tmp_path / "new" / "dir"
    assert main(["handout", str(path), "--all", "-o", str(new), "--workers", "1", "-q"]) == 0
    assert (new / "handout-0001.pdf").is_file()
