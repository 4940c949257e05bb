"""Patient handouts: the problems a clinical review of the handouts found (Spanish, large
print, batches), each with the export that showed it.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pytest
from handout_exports import write_export
from pypdf import PdfReader

from labinterp.handout import render_handout
from labinterp.handout.api import _grader, load_inputs
from labinterp.handout.context import build_context
from labinterp.handout.render import shared_renderer


def _export(tmp_path: Path, rows: list[tuple], name: str = "export.csv") -> Path:
    return write_export(tmp_path, rows, name)


def _context(path: Path, pid: str, lang: str = "en", **kw):
    res, fnd = load_inputs(path, None)
    return build_context(res, fnd, pid, lang=lang, grader=_grader(), **kw)


def _html(ctx) -> str:
    return re.sub(r"\s+", " ", shared_renderer().html(ctx))


SAMPLE = Path(__file__).resolve().parents[1] / "labinterp" / "sample_data" / "clinic_export.csv"


@pytest.fixture(scope="module")
def sample():
    return load_inputs(SAMPLE, None)


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


# -- B. far-out values the lab gave no range for -------------------------------------------


def _child_without_ranges(tmp_path: Path) -> Path:
    when, born = "2024-03-01 08:00", "2019-05-01"
    return _export(
        tmp_path,
        [
            ("PED-2", when, "K", "2.1", "", "LL", "", born),
            ("PED-2", when, "Mg", "0.5", "", "LL", "", born),
            ("PED-2", when, "iCa", "0.7", "", "LL", "", born),
        ],
    )


def test_critical_values_without_a_range_are_graded_and_urgent(tmp_path) -> None:
    path = _child_without_ranges(tmp_path)
    ctx = _context(path, "PED-2")
    urgent = {(u["analyte"], u["status"], u["grade"], u["no_range"]) for u in ctx["urgent"]}
    assert urgent == {
        ("potassium", "low", 4, True),
        ("magnesium", "low", 4, True),
        ("calcium_ionized", "low", 4, True),
    }
    # each result line still says it was not compared with a range
    assert {r["status"] for a in ctx["analytes"] for r in a["results"]} == {"unknown"}
    for lang, call, calm in (
        ("en", "Call your clinician today", "does not mean anything is wrong"),
        ("es", "Llame hoy a su médico", "no quiere decir que algo esté mal"),
    ):
        html = _html(_context(path, "PED-2", lang=lang))
        assert call in html
        assert calm not in html
    html = _html(ctx)
    assert "Potassium: 2.1 mmol/L (1 Mar 2024), low, far from the usual values" in html


def test_a_value_without_a_range_short_of_grade_3_is_not_urgent(tmp_path) -> None:
    born = "2019-05-01"
    path = _export(tmp_path, [("PED-3", "2024-03-01 08:00", "K", "3.2", "", "", "", born)])
    ctx = _context(path, "PED-3")
    assert ctx["urgent"] == [] and ctx["urgent_past"] == []
    assert ctx["analytes"][0]["results"][0]["grade"] is None


# -- C. the urgent box is about recent results ---------------------------------------------


def test_an_old_critical_latest_result_is_asked_about_not_urgent(tmp_path) -> None:
    path = _export(
        tmp_path,
        [
            ("OLD-1", "2019-02-01 08:00", "K", "2.3"),
            ("OLD-1", "2019-02-01 08:00", "Mg", "1.9"),
            ("OLD-1", "2024-05-01 08:00", "Mg", "2.0"),
        ],
    )
    ctx = _context(path, "OLD-1")
    assert ctx["urgent"] == [] and ctx["urgent_findings"] == []
    assert [(u["analyte"], u["value_text"]) for u in ctx["urgent_past"]] == [("potassium", "2.3")]
    for lang, call, past in (
        ("en", "Call your clinician today", "A past result was far from the range"),
        ("es", "Llame hoy a su médico", "Un resultado anterior estaba muy fuera del rango"),
    ):
        html = _html(_context(path, "OLD-1", lang=lang))
        assert call not in html and "urgent care" not in html and "urgencias" not in html
        assert past in html and "2.3 mmol/L" in html


def test_a_critical_result_days_before_the_newest_draw_is_still_urgent(tmp_path) -> None:
    from labinterp.handout.context import handout_settings

    days = handout_settings()["urgent_recent_days"]
    newest = pd.Timestamp("2024-05-10 08:00")
    edge = newest - pd.Timedelta(days=days)
    path = _export(
        tmp_path,
        [
            ("R-1", f"{edge:%Y-%m-%d %H:%M}", "K", "2.3"),
            ("R-1", f"{edge - pd.Timedelta(days=1):%Y-%m-%d %H:%M}", "Ca", "5.5"),
            ("R-1", f"{newest:%Y-%m-%d %H:%M}", "Mg", "2.0"),
        ],
    )
    # the same handout whatever day it is made on
    ctx = _context(path, "R-1", today=pd.Timestamp("2031-01-01").date())
    assert [u["analyte"] for u in ctx["urgent"]] == ["potassium"]
    assert [u["analyte"] for u in ctx["urgent_past"]] == ["calcium"]
    html = _html(ctx)
    assert "Call your clinician today" in html and "A past result was far" in html


def test_the_recent_window_is_a_data_file_with_its_source() -> None:
    import tomllib

    from labinterp.resources import reference_file

    entry = tomllib.loads(reference_file("handout.toml").read_text("utf-8"))["urgent_recent"]
    assert entry["unit"] == "d" and entry["value"] > 0
    assert "labinterp judgement" in entry["source"]


# -- D. no reassurance while a pattern could not be checked --------------------------------


@pytest.mark.parametrize("pid", ["DEMO-009", "DEMO-012", "DEMO-020"])
def test_no_reassurance_while_a_pattern_was_not_checked(sample, pid) -> None:
    res, fnd = sample
    for lang, comfort in (("en", "That is good to know"), ("es", "Es bueno saberlo")):
        ctx = build_context(res, fnd, pid, lang=lang, grader=_grader())
        statuses = {p["status"] for p in ctx["patterns"]}
        html = _html(ctx)
        if statuses & {"indeterminate", "suppressed"}:
            assert comfort not in html
        assert "None of the magnesium patterns we look for showed up" not in html or (
            statuses == {"not_fired"}
        )


def test_reassurance_only_when_every_pattern_was_checked(tmp_path) -> None:
    path = _export(
        tmp_path,
        [
            ("OK-1", "2024-04-10 08:00", "Mg", "2.0"),
            ("OK-1", "2024-04-10 08:00", "K", "4.2"),
            ("OK-1", "2024-04-10 08:00", "Ca", "9.5"),
        ],
    )
    ctx = _context(path, "OK-1")
    statuses = {p["rule_id"]: p["status"] for p in ctx["patterns"]}
    assert "indeterminate" in statuses.values()  # no vitamin D: P2 not checked
    html = _html(ctx)
    assert "That is good to know" not in html
    assert "Some of the magnesium patterns we look for did not show up" in html


# -- E. the urgent box stays on the first page ----------------------------------------------


def _first_page_has_the_box(pdf: bytes, lang: str) -> bool:
    page = _pdf_pages(pdf)[0]
    head = "When to get help right away" if lang == "en" else "Cuándo pedir ayuda ya"
    lead = "Call your clinician today" if lang == "en" else "Llame hoy a su médico"
    return head in page and lead in page


@pytest.mark.parametrize("paper", ["A4", "letter"])
@pytest.mark.parametrize("lang", ["en", "es"])
def test_the_urgent_box_starts_on_page_one_in_large_print(sample, lang, paper) -> None:
    res, fnd = sample
    pdf = render_handout(res, fnd, "DEMO-008", lang=lang, paper=paper, large_print=True)
    assert _first_page_has_the_box(pdf, lang)


def test_a_long_urgent_list_starts_on_page_one_and_may_go_on(tmp_path) -> None:
    when = "2024-03-01 08:00"
    path = _export(
        tmp_path,
        [
            ("LONG-1", when, "K", "2.1"),
            ("LONG-1", when, "Mg", "0.5"),
            ("LONG-1", when, "iCa", "0.7"),
            ("LONG-1", when, "Ca", "5.5"),
        ],
    )
    pdf = render_handout(path, None, "LONG-1", lang="es", paper="letter", large_print=True)
    assert _first_page_has_the_box(pdf, "es")


# -- G. P1 "possible" with a raised PTH says the PTH response is present --------------------


def test_p1_possible_with_a_raised_pth_says_the_body_responds(sample) -> None:
    res, fnd = sample
    for lang, words in (
        # "may": a raised PTH is consistent with a response, it does not prove it
        ("en", "Your PTH was high. This may mean your body is making more PTH"),
        ("es", "Su PTH estaba alta. Eso puede querer decir que el cuerpo está respondiendo"),
    ):
        ctx = build_context(res, fnd, "DEMO-002", lang=lang, grader=_grader())
        p1 = next(p for p in ctx["patterns"] if p["rule_id"] == "hypomagnesemia_hypocalcemia")
        assert (p1["status"], p1["tier"], p1["ev"]["high"]) == ("fired", "possible", ["pth"])
        assert words in _html(ctx)


# -- H. Spanish wording -----------------------------------------------------------------------

CALQUES = ("lazo", " tics", "dejan ir", "hace falta", "eGFR", "hablar con él", "Magnesio, Calcio")


@pytest.mark.parametrize("pid", ["DEMO-001", "DEMO-002", "DEMO-005", "DEMO-012", "DEMO-014"])
def test_spanish_handouts_use_natural_words(sample, pid) -> None:
    res, fnd = sample
    html = _html(build_context(res, fnd, pid, lang="es", grader=_grader()))
    assert not [c for c in CALQUES if c in html]


def test_spanish_wording_of_the_hand_written_templates() -> None:
    root = Path(__file__).resolve().parents[1] / "templates" / "handout" / "es"
    text = " ".join(p.read_text("utf-8") for p in root.rglob("*.j2"))
    assert not [c for c in CALQUES if c in text]
    assert "espasmos o temblores musculares" in text
    assert "los riñones pierden mucho potasio" in text
    assert "FGe (filtrado glomerular estimado)" in text


def test_test_names_inside_a_sentence_are_lower_case_and_joined_with_y(tmp_path) -> None:
    path = _child_without_ranges(tmp_path)
    es = _html(_context(path, "PED-2", lang="es"))
    assert 'no dio un rango para <span class="data">el potasio y el magnesio</span>' in es
    assert "así que no sabemos si estaban bajos" in es
    en = _html(_context(path, "PED-2"))
    assert 'did not give a range for <span class="data">potassium and magnesium</span>' in en


def test_a_single_day_of_tests_is_not_from_a_day_to_the_same_day(tmp_path) -> None:
    path = _child_without_ranges(tmp_path)
    assert "Análisis del 1 mar 2024." in _html(_context(path, "PED-2", lang="es"))
    assert "Lab tests from 1 Mar 2024." in _html(_context(path, "PED-2"))
    two = _export(
        tmp_path,
        [("T-1", "2024-03-01 08:00", "Mg", "2.0"), ("T-1", "2024-03-05 08:00", "Mg", "2.1")],
        name="two.csv",
    )
    html = _html(_context(two, "T-1", lang="es"))
    assert "Análisis del 1 mar 2024 al 5 mar 2024." in html


# -- I. odd text from the export --------------------------------------------------------------


def test_bidi_controls_are_stripped_from_every_displayed_text(tmp_path) -> None:
    rlo, pdf_, lri, pdi = "\u202e", "\u202c", "\u2066", "\u2069"
    path = _export(
        tmp_path,
        [
            (
                f"MRN-{lri}77{pdi}",
                "2024-03-01 08:00",
                "Mg",
                "1.2",
                "1.6-2.6",
                "L",
                f"Muestra OK {rlo}amolisis{pdf_} fin \u200f",
            )
        ],
    )
    res, fnd = load_inputs(path, None)
    pid = res["patient_id"].iloc[0]
    ctx = build_context(res, fnd, pid, lang="es", grader=_grader())
    comment = ctx["analytes"][0]["results"][0]["comment"]
    assert comment == "Muestra OK amolisis fin "
    assert not re.search("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]", _html(ctx))
    text = " ".join(_pdf_pages(shared_renderer().render(ctx)))
    assert "amolisis" in text and "sisiloma" not in text


def test_a_long_id_without_break_points_stays_on_the_page(tmp_path) -> None:
    import shutil
    import subprocess

    if not shutil.which("pdftotext"):
        pytest.skip("poppler's pdftotext is not installed")
    long_id = "LONG-" + "A" * 131
    path = _export(tmp_path, [(long_id, "2024-03-01 08:00", "Mg", "1.2")])
    for large in (False, True):
        pdf = tmp_path / "long.pdf"
        render_handout(path, None, long_id, large_print=large, output=pdf)
        out = subprocess.run(
            ["pdftotext", "-bbox", "-f", "1", "-l", "1", str(pdf), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        width = float(re.search(r'<page width="([0-9.]+)"', out).group(1))
        words = re.findall(r'xMax="([0-9.]+)"[^>]*>([^<]*A{8}[^<]*)</word>', out)
        assert "".join(w for _, w in words).count("A") == 131
        assert max(float(x) for x, _ in words) <= width


# -- J. a censored value written in English words, on a Spanish sheet ------------------------


def test_a_censored_value_in_english_words_prints_as_symbol_and_number_in_spanish(
    tmp_path,
) -> None:
    path = _export(
        tmp_path,
        [
            ("C-1", "2024-03-01 08:00", "Mg", "LESS THAN 0.4", "1.6-2.6", "L"),
            ("C-1", "2024-03-02 08:00", "Mg", "menor de 0,5", "1.6-2.6", "L"),
            ("C-1", "2024-03-03 08:00", "Mg", "<0.6", "1.6-2.6", "L"),
            ("C-1", "2024-03-04 08:00", "Mg", "1.8"),
        ],
    )
    shown = {
        lang: [r["value_text"] for r in _context(path, "C-1", lang=lang)["analytes"][0]["results"]]
        for lang in ("en", "es")
    }
    assert shown["en"] == ["menor de 0,5", "<0.6", "1.8"]  # the latest 3; as the lab wrote
    # words with a decimal comma in a file of points: read, so symbols on a Spanish sheet,
    # with the comma the lab wrote
    assert shown["es"] == ["< 0,5", "<0.6", "1.8"]
    ctx = _context(path, "C-1", lang="es")
    assert ctx["analytes"][0]["trend"]["first_value"] == "< 0.4"
    assert "LESS THAN" not in _html(ctx)


# -- K. a range open on one side -------------------------------------------------------------


def test_a_one_sided_range_draws_no_zone_word_past_its_open_end(tmp_path) -> None:
    path = _export(tmp_path, [("E-1", "2024-03-01 08:00", "eGFR", "28")])
    for lang, low, high in (("en", "low", "high"), ("es", "bajo", "alto")):
        html = _html(_context(path, "E-1", lang=lang))
        svg = re.search(r'<svg class="numberline".*?</svg>', html).group(0)
        zones = re.findall(r'text-anchor="middle">([^<]+)</text>', svg)
        assert high not in zones
        assert low in zones


# -- M. type of 14 pt or more (CLINICAL.md sec. 8) -------------------------------------------


def _smallest_type(pdf: bytes) -> float:
    sizes: list[float] = []

    def visit(text, cm, tm, font, size) -> None:
        if text.strip():
            scale = abs(tm[3]) * abs(cm[3]) if tm[3] else 1.0
            sizes.append(size * scale)

    for page in PdfReader(io.BytesIO(pdf)).pages:
        page.extract_text(visitor_text=visit)
    return min(sizes)


@pytest.mark.parametrize(
    ("pid", "lang", "large", "paper"),
    [("DEMO-007", "es", False, "A4"), ("DEMO-009", "en", False, "letter")],
)
def test_every_text_is_14_pt_or_larger(sample, pid, lang, large, paper) -> None:
    res, fnd = sample
    pdf = render_handout(res, fnd, pid, lang=lang, large_print=large, paper=paper)
    assert _smallest_type(pdf) >= 13.95  # disclaimer, range and notes lines, chart labels


# -- L. a patient whose results are all of other tests ---------------------------------------


def test_a_patient_with_only_other_tests_is_not_told_they_have_no_results(tmp_path, capsys) -> None:
    from labinterp.cli import main

    path = _export(
        tmp_path,
        [("NONE-1", "2024-03-01 08:00", "Na", "139"), ("MG-1", "2024-03-01 08:00", "Mg", "1.2")],
    )
    code = main(["handout", str(path), "--patient", "NONE-1", "-o", str(tmp_path / "n.pdf")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "no results for the requested patient id" not in err
    assert "no result of a test labinterp covers" in err
    # the rows' true fate, counted by reason (a sodium is of a test labinterp does not read)
    assert "every row of this patient was rejected" in err
    assert "1 of a test labinterp does not interpret" in err
    assert "NONE-1" not in err
