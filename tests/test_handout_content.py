"""Patient handouts: what the wording claims is what the results and findings hold.

Each test builds its own export (tmp_path) or uses the bundled sample, and checks the
template context, the HTML or the PDF text.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd
import pytest
from handout_exports import SAMPLE, write_export, write_unprintable_id_export
from handout_exports import handout_context as _context
from handout_exports import handout_html as _html
from handout_exports import sample_html as _sample_html
from pypdf import PdfReader

from labinterp.handout import render_handout
from labinterp.handout.api import load_inputs
from labinterp.handout.context import classify, context_from_rows
from labinterp.handout.render import shared_renderer


def _export(tmp_path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """rows: (patient, when, test key, result) -> a clinic export CSV, a specimen per row."""
    return write_export(tmp_path, rows, specimens=True)


def _pdf_text(data: bytes) -> str:
    return " ".join(
        re.sub(r"\s+", " ", p.extract_text() or "") for p in PdfReader(io.BytesIO(data)).pages
    )


@pytest.fixture(scope="module")
def sample():
    return load_inputs(SAMPLE, None)


# -- 1. the urgent box is about the latest result of each test -----------------------------


def test_old_critical_results_followed_by_normal_ones_do_not_call_for_urgent_care(
    tmp_path,
) -> None:
    path = _export(
        tmp_path,
        [
            ("OLD-01", "2022-01-10 08:00", "K", "2.4"),
            ("OLD-01", "2022-01-10 08:00", "Mg", "0.6"),
            ("OLD-01", "2024-04-10 08:00", "K", "4.2"),
            ("OLD-01", "2024-04-10 08:00", "Mg", "2.0"),
        ],
    )
    ctx = _context(path, "OLD-01")
    assert ctx["urgent"] == [] and ctx["urgent_findings"] == []
    for lang, call in (("en", "Call your clinician today"), ("es", "Llame hoy a su médico")):
        text = _pdf_text(render_handout(path, None, "OLD-01", lang=lang))
        assert call not in text
        assert "0.6 mg/dL" in text and "2.4 mmol/L" in text  # still shown, with their dates


def test_a_critical_latest_result_still_calls_for_urgent_care(tmp_path) -> None:
    path = _export(
        tmp_path,
        [
            ("NEW-01", "2022-01-10 08:00", "K", "4.2"),
            ("NEW-01", "2024-04-10 08:00", "K", "2.4"),
            ("NEW-01", "2024-04-10 08:00", "Mg", "2.0"),
        ],
    )
    ctx = _context(path, "NEW-01")
    assert [(u["analyte"], u["value_text"]) for u in ctx["urgent"]] == [("potassium", "2.4")]


def test_a_censored_critical_result_is_graded_by_what_its_bound_proves(tmp_path) -> None:
    # "<2.5 mmol/L" K is below 2.5: grade 4 (the value 2.5 itself would be grade 3)
    path = _export(
        tmp_path,
        [("CEN-01", "2024-04-10 08:00", "K", "<2.5"), ("CEN-01", "2024-04-10 08:00", "Mg", "2.0")],
    )
    ctx = _context(path, "CEN-01")
    assert [(u["analyte"], u["grade"]) for u in ctx["urgent"]] == [("potassium", 4)]


# -- 2. total calcium is graded; every urgent line names its test ---------------------------


@pytest.mark.parametrize(
    ("result", "status"), [("5.5", "low"), ("<2.0", "low"), ("4.1", "low"), ("14.5", "high")]
)
def test_total_calcium_far_out_of_range_is_graded_and_urgent(tmp_path, result, status) -> None:
    path = _export(
        tmp_path,
        [("CA-01", "2024-05-01 09:00", "Ca", result), ("CA-01", "2024-05-01 09:00", "Mg", "1.2")],
    )
    ctx = _context(path, "CA-01")
    (calcium,) = (a for a in ctx["analytes"] if a["id"] == "calcium")
    assert calcium["results"][-1]["grade"] == 4
    assert [(u["analyte"], u["status"]) for u in ctx["urgent"]] == [("calcium", status)]
    for lang, name in (("en", "Calcium: "), ("es", "Calcio: ")):
        html = _html(_context(path, "CA-01", lang))
        assert f"{name}{result.replace('<', '&lt;')} mg/dL" in html
        assert "A result" not in html and "Un valor" not in html


def test_a_total_calcium_with_albumin_is_urgent_by_its_corrected_value(tmp_path) -> None:
    """CTCAE grades corrected Ca: a total Ca lowered by a low albumin alone (6.8 mg/dL
    with albumin 2.0 g/dL: 8.4 corrected, grade 1) calls for no urgent care; one whose
    corrected value is as low (6.0 with albumin 3.9: 6.08, grade 3) does."""
    path = _export(
        tmp_path,
        [
            ("ALB-01", "2024-05-01 09:00", "Ca", "6.8"),
            ("ALB-01", "2024-05-01 09:00", "Alb", "2.0"),
            ("ALB-01", "2024-05-01 09:00", "Mg", "1.9"),
            ("ALB-02", "2024-05-01 09:00", "Ca", "6.0"),
            ("ALB-02", "2024-05-01 09:00", "Alb", "3.9"),
            ("ALB-02", "2024-05-01 09:00", "Mg", "1.2"),
        ],
    )
    assert _context(path, "ALB-01")["urgent"] == []
    urgent = _context(path, "ALB-02")["urgent"]
    assert [(u["analyte"], u["value_text"], u["grade"]) for u in urgent] == [("calcium", "6.0", 3)]


def test_a_high_potassium_of_a_hemolyzed_sample_is_not_urgent(tmp_path) -> None:
    """A high K or Mg of a hemolyzed sample is not interpreted (CLINICAL.md sec. 5): the
    sheet marks the sample, it does not send the patient to urgent care. A low K of such a
    sample is still low (hemolysis only raises it)."""
    path = tmp_path / "export.csv"
    rows = [
        ("H-01", "Potassium", "6.8", "mmol/L", "3.5-5.1"),
        ("H-01", "Magnesium", "4.1", "mg/dL", "1.6-2.6"),
        ("H-02", "Potassium", "2.4", "mmol/L", "3.5-5.1"),
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["patient_id", "collected_at", "test", "result", "unit", "range", "comment"])
        for pid, name, value, unit, rng in rows:
            out.writerow([pid, "2024-05-01 09:00", name, value, unit, rng, "Hemolyzed specimen"])
    assert _context(path, "H-01")["urgent"] == []
    urgent = _context(path, "H-02")["urgent"]
    assert [(u["analyte"], u["grade"], u["sample_issue"]) for u in urgent] == [
        ("potassium", 4, True)
    ]


def test_an_urgent_line_from_a_finding_names_the_test() -> None:
    """Without per-result grades (no grader), a fired finding graded 4 still gives a line,
    naming the test its grade is about, never "A result"."""
    res = [
        {
            "patient_id": "P",
            "analyte": analyte,
            "collected_at": pd.Timestamp("2024-05-01 09:00"),
            "value_reported": value,
            "value_raw": str(value),
            "unit_reported": "mg/dL",
            "range_low_reported": low,
            "range_high_reported": high,
        }
        for analyte, value, low, high in (
            ("calcium", 14.5, 8.5, 10.5),
            ("magnesium", 1.2, 1.6, 2.6),
        )
    ]
    fnd = [
        {
            "patient_id": "P",
            "rule_id": "hypercalcemia_hypomagnesemia",
            "kind": "context",
            "status": "fired",
            "grade": 4,
            "evidence_at": res[0]["collected_at"],
        }
    ]
    for lang, name in (("en", "Calcium"), ("es", "Calcio")):
        ctx = context_from_rows(res, fnd, "P", lang=lang, grader=None)
        assert [f["analyte"] for f in ctx["urgent_findings"]] == ["calcium"]
        html = _html(ctx)
        assert f'<li class="data">{name} (1 ' in html
        assert "A result" not in html and "Un valor" not in html


# -- 3. a context finding about low magnesium is a finding -----------------------------------


def test_a_context_finding_alone_is_not_called_good_news(sample) -> None:
    en = _sample_html(sample, "DEMO-018")
    assert "High calcium with low magnesium" in en
    assert "That is good to know" not in en
    assert "Why magnesium matters" in en and "Food and supplements" in en
    es = _sample_html(sample, "DEMO-018", "es")
    assert "Calcio alto con magnesio bajo" in es and "Es bueno saberlo" not in es


# -- 4. only the reasons the evidence holds --------------------------------------------------


def test_a_supported_low_ca_pattern_names_only_its_own_reason(sample, tmp_path) -> None:
    # DEMO-019: no PTH at all, magnesium very low
    en = _sample_html(sample, "DEMO-019")
    assert "PTH was not high" not in en and "magnesium was very low" in en
    es = _sample_html(sample, "DEMO-019", "es")
    assert "PTH no estaba alta" not in es and "magnesio estaba muy bajo" in es
    # PTH cited and in range, magnesium low but not very low
    path = _export(
        tmp_path,
        [
            ("PTH-01", "2024-05-01 09:00", "Mg", "1.4"),
            ("PTH-01", "2024-05-01 09:00", "CaCorr", "7.6"),
            ("PTH-01", "2024-05-01 09:00", "PTH", "30"),
        ],
    )
    ctx = _context(path, "PTH-01")
    (p1,) = (f for f in ctx["patterns"] if f["rule_id"] == "hypomagnesemia_hypocalcemia")
    assert (p1["status"], p1["tier"]) == ("fired", "supported")
    en = _html(ctx)
    assert "Your PTH was not high" in en and "magnesium was very low" not in en
    assert "PTH no estaba alta" in _html(_context(path, "PTH-01", "es"))


def test_a_contaminated_sample_is_described_from_its_evidence(sample) -> None:
    # DEMO-007: high K, and a calcium the lab did not report because of contamination
    en = _sample_html(sample, "DEMO-007")
    assert "high potassium and low calcium" not in en
    assert "did not give a number for calcium" in en
    es = _sample_html(sample, "DEMO-007", "es")
    assert "el calcio bajo a la vez" not in es and "no dio una cifra de calcio" in es


# -- 5. low calcium from low albumin ---------------------------------------------------------


def test_low_calcium_from_low_albumin_is_explained(sample) -> None:
    en = _sample_html(sample, "DEMO-004")
    assert "calcium looks low partly because a blood protein called albumin is low" in en
    assert "That is good to know" not in en
    es = _sample_html(sample, "DEMO-004", "es")
    assert "la albúmina, está baja" in es


# -- 6. layout ---------------------------------------------------------------------------------


def test_censored_value_inside_a_range_from_zero_is_in_range() -> None:
    assert classify(0.5, "<", 0.0, 10.0) == "normal"
    assert classify(0.9, "<", 0.7, 10.0) == "unknown"
    assert classify(0.5, "<", 0.7, 10.0) == "low"


def test_large_print_enlarges_chart_labels_and_keeps_each_urgent_line_whole(tmp_path) -> None:
    path = _export(
        tmp_path,
        [
            ("LP-01", f"2024-05-0{d} 09:00", "Mg", v)
            for d, v in ((1, "1.2"), (2, "1.4"), (3, "1.9"))
        ],
    )
    sizes = {}
    for large in (False, True):
        html = shared_renderer().html(_context(path, "LP-01", large_print=large))
        sizes[large] = [int(s) for s in re.findall(r'<svg[^>]*font-size="(\d+)"', html)]
        assert "Magnesium</strong>, over time" in html  # the chart carries its test's name
    assert min(sizes[True]) >= 19 > max(sizes[False])
    css = (Path(__file__).resolve().parents[1] / "templates/handout/handout.css").read_text()
    # the box itself may break, so that it starts on page 1 in large print (test_handout_review)
    assert re.search(r"\.urgent li \{[^}]*break-inside: avoid", css)
    assert not re.search(r"\.urgent \{[^}]*break-inside: avoid", css)


def test_the_api_takes_what_read_returns_and_workers_must_be_positive(capsys) -> None:
    """render_handout takes a `labinterp.read` result as `interpret` does; --workers 0 is
    a usage error, not a silent default."""
    import labinterp
    from labinterp.cli import main

    result = labinterp.read(SAMPLE)
    pdf = labinterp.render_handout(result, labinterp.interpret(result), "DEMO-001")
    assert pdf.startswith(b"%PDF")
    assert main(["handout", str(SAMPLE), "--all", "-o", "unused", "--workers", "0"]) == 2
    assert "1 or more" in capsys.readouterr().err


def test_a_range_is_written_with_the_decimal_comma_of_its_value(tmp_path) -> None:
    """A lab that writes "0,55" gets its range as "0,7-1", not "0.7-1", on the same line."""
    path = tmp_path / "export.csv"
    path.write_text(
        "patient_id;collected_at;test;result;unit;range\n"
        "H-1;2024-01-15 08:00;Magnesio;0,55;mmol/L;0,70 - 1,00\n"
        "H-1;2024-01-15 08:00;Potasio;4;mmol/L;3,5 - 5,1\n",
        encoding="utf-8",
    )
    html = _html(_context(path, "H-1", "es"))
    assert "Rango: 0,7–1 mmol/L" in html
    assert "Rango: 3.5–5.1 mmol/L" in html  # a whole-number value shows no way of its own


def test_a_vitamin_d_low_by_the_lab_range_but_not_by_the_pattern_is_explained(sample) -> None:
    """DEMO-012's 24 ng/mL is low by the lab's 30-100 but not below the IOM cut-off the
    vitamin D pattern uses (20 ng/mL): the sheet says why it is low yet 'not seen'."""
    for lang, words in (
        ("en", "Your lab marks your vitamin D as low"),
        ("es", "marca su vitamina D"),
    ):
        assert words in _sample_html(sample, "DEMO-012", lang)
        assert words not in _sample_html(sample, "DEMO-001", lang)


def test_characters_no_installed_font_draws_are_warned_of_without_the_id(
    tmp_path, monkeypatch, caplog
) -> None:
    """A patient id in a script the machine has no font for prints as empty boxes: the
    run says how many handouts, never which ids."""
    from labinterp.handout import fonts

    path = write_unprintable_id_export(tmp_path)
    with caplog.at_level("WARNING"):
        render_handout(path, None, "P-2")
    assert "no installed font" not in caplog.text  # Latin: the bundled fonts hold it
    monkeypatch.setattr(fonts, "_drawable", lambda char: False)  # a machine without Greek
    with caplog.at_level("WARNING"):
        render_handout(path, None, "Ωμέγα-7")
    assert "1 handout holds characters" in caplog.text and "Ωμέγα" not in caplog.text


SUMMED_EXPORT = (
    "patient_id,sex,birth_date,collected_at,test,result,unit,reference_range\n"
    "A,F,1960-01-01,2024-01-02 08:00,25-OH Vitamin D3,12,ng/mL,\n"
    "A,F,1960-01-01,2024-01-02 08:00,25-OH Vitamin D2,{d2},ng/mL,\n"
    "A,F,1960-01-01,2024-01-02 08:00,Magnesium,1.4,mg/dL,1.6-2.6\n"
)


@pytest.mark.parametrize(
    ("lang", "summed", "bound", "part"),
    [
        (
            "en",
            "We added the two parts to get your total vitamin D.",
            "One part was too low",
            "Vitamin D2 (one part of your vitamin D)",
        ),
        (
            "es",
            "Nosotros sumamos las dos partes para tener su vitamina D total.",
            "Una parte estaba tan baja",
            "Vitamina D2 (una parte de su vitamina D)",
        ),
    ],
)
def test_a_vitamin_d_summed_from_d2_and_d3_is_explained(
    tmp_path: Path, lang: str, summed: str, bound: str, part: str
) -> None:
    """A finding citing a total vitamin D summed from D2 and D3 says, in plain words, that
    it was added up (as a corrected calcium is explained), and that it is known only
    within bounds where one part was too low to measure; each part is listed by name."""
    for d2, censored in (("3", False), ("<4", True)):
        path = tmp_path / f"summed_{censored}.csv"
        path.write_text(SUMMED_EXPORT.format(d2=d2), encoding="utf-8")
        html = _html(_context(path, "A", lang=lang))
        assert summed in html and part in html
        assert (bound in html) is censored
