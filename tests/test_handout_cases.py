"""Patient handouts: a far-out result of a sample suspected of contamination, caveats said
where they belong, the urgent box kept whole on page one, and patients without a handout.
"""

from __future__ import annotations

import html
import io
import re
from pathlib import Path

import pytest
from handout_exports import SAMPLE, write_export, write_unprintable_id_export
from handout_exports import handout_context as _context
from handout_exports import handout_html as _html
from handout_exports import sample_html as _sample_html
from pypdf import PdfReader

from labinterp.handout import render_batch, render_handout
from labinterp.handout.api import _grader, load_inputs
from labinterp.handout.context import build_context
from labinterp.handout.render import shared_renderer

WHEN = "2024-03-01 08:00"


def _pdf_pages(data: bytes) -> list[str]:
    return [re.sub(r"\s+", " ", p.extract_text() or "") for p in PdfReader(io.BytesIO(data)).pages]


@pytest.fixture(scope="module")
def sample():
    return load_inputs(SAMPLE, None)


# -- 1. a far-out K of a draw suspected of EDTA contamination still calls for a call today --


@pytest.mark.parametrize("lang", ["en", "es"])
def test_a_far_out_potassium_of_a_suspected_contaminated_draw_is_urgent(tmp_path, lang) -> None:
    """K 8.4 with a low Ca on one draw: the EDTA guard fires, but only a few such samples
    are contaminated (CLINICAL.md sec. 5: recollect before acting), so the K is still
    listed in the urgent box, with a repeat test right away, and no good-news words."""
    path = write_export(
        tmp_path,
        [("E-1", WHEN, "K", "8.4"), ("E-1", WHEN, "Ca", "8.2"), ("E-1", WHEN, "Mg", "2.0")],
    )
    ctx = _context(path, "E-1", lang)
    assert any(g["rule_id"] == "edta_contamination" for g in ctx["guards"])
    urgent = [(u["analyte"], u["grade"], u["sample_issue"]) for u in ctx["urgent"]]
    assert urgent == [("potassium", 4, True)]
    html = _html(ctx)
    if lang == "en":
        assert "Call your clinician today about them" in html
        assert "a repeat test is needed right away" in html
        assert "the test needs to be repeated right away" in html
        assert "does not mean anything is wrong" not in html
    else:
        assert "Llame hoy a su médico" in html
        assert "hay que repetir el análisis enseguida" in html
        assert "no quiere decir que algo esté mal" not in html.lower()


def test_the_sample_patient_with_a_suspected_contaminated_draw_lists_its_potassium(
    sample,
) -> None:
    res, fnd = sample
    ctx = build_context(res, fnd, "DEMO-008", grader=_grader())
    assert "potassium" in [u["analyte"] for u in ctx["urgent"]]


# -- 2. and 3. what albumin does to a calcium result -----------------------------------------


def test_a_missing_albumin_is_said_to_matter_when_it_is_low(sample) -> None:
    """It is low protein (albumin) that makes calcium look low, not protein."""
    html = _sample_html(sample, "DEMO-003")
    assert "We did not have a protein test (albumin)" in html
    assert "Low protein can make calcium look lower than it really is" in html


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("en", "Ask your clinician if a free (ionized) calcium test would help"),
        ("es", "una prueba de calcio libre (iónico)"),
    ],
)
def test_a_calcium_adjusted_for_a_very_low_albumin_is_called_less_certain(
    sample, tmp_path, lang, words
) -> None:
    """Below 30 g/L of albumin the corrected calcium is unreliable (CLINICAL.md sec. 3): the
    sheet says so and suggests a free (ionized) calcium, for a pattern found with it and
    for one it ruled out (DEMO-004's albumin 2.4 g/dL)."""
    assert words in _sample_html(sample, "DEMO-004", lang)
    assert words not in _sample_html(sample, "DEMO-003", lang)
    path = write_export(
        tmp_path,
        [("A-1", WHEN, "Mg", "1.2"), ("A-1", WHEN, "Ca", "7.0"), ("A-1", WHEN, "Alb", "2.4")],
    )
    ctx = _context(path, "A-1", lang)
    fired = [f for f in ctx["fired_patterns"] if "corrected_ca_low_albumin" in f["caveats"]]
    assert [f["rule_id"] for f in fired] == ["hypomagnesemia_hypocalcemia"]
    assert _html(ctx).count(words) == 1


# -- 4. the note about a result not made final sits under the finding that uses it ----------


@pytest.mark.parametrize(
    ("lang", "note", "mg_k", "vit_d"),
    [
        (
            "en",
            "Some of this uses a result the lab has not made final yet",
            "Low magnesium with low potassium</h3>",
            "<h3>Vitamin D",
        ),
        (
            "es",
            "Parte de esto usa un resultado que el laboratorio aún no ha dado como final",
            "Magnesio bajo con potasio bajo</h3>",
            "<h3>Vitamina D",
        ),
    ],
)
def test_the_preliminary_result_note_follows_the_finding_that_uses_it(
    sample, lang, note, mg_k, vit_d
) -> None:
    """DEMO-021's preliminary result is the potassium of the Mg/K pattern: its note comes
    right after that pattern's text, before the vitamin D part, and only once."""
    html = _sample_html(sample, "DEMO-021", lang)
    assert html.count(note) == 1
    after = html[html.index(mg_k) :]
    assert after.index(note) < after.index(vit_d)
    assert after.index("</article>") < after.index(note)


# -- 5. the box of when to get help stays whole on page one in large print -------------------


def _box_lines(markup: str) -> list[str]:
    """Every sentence and list line of the urgent box, without white space."""
    box = re.search(r'<section class="urgent">(.*?)</section>', markup, re.S)
    assert box is not None
    lines = re.findall(r"<(?:li|p)[^>]*>(.*?)</(?:li|p)>", box.group(1), re.S)
    return [re.sub(r"\s+", "", html.unescape(re.sub(r"<[^>]+>", "", x))) for x in lines]


@pytest.mark.parametrize(
    ("pid", "lang", "paper"),
    [
        ("DEMO-001", "en", "A4"),
        ("DEMO-005", "en", "A4"),
        ("DEMO-013", "es", "letter"),
        ("DEMO-021", "es", "letter"),
        ("DEMO-017", "en", "letter"),
    ],
)
def test_the_urgent_box_is_whole_on_page_one_in_large_print(sample, pid, lang, paper) -> None:
    res, fnd = sample
    ctx = build_context(res, fnd, pid, lang=lang, paper=paper, large_print=True, grader=_grader())
    lines = _box_lines(shared_renderer().html(ctx))
    assert len(lines) >= 5  # the emergency signs at least
    first_page = re.sub(r"\s+", "", _pdf_pages(shared_renderer().render(ctx))[0])
    assert [x for x in lines if x not in first_page] == []


# -- 6. a pattern not checked on a spoiled draw, checked on a later one ----------------------


@pytest.mark.parametrize(
    ("lang", "later", "repeat"),
    [
        ("en", "A later test from 14 Jun 2024 was checked", "may repeat the test"),
        ("es", "Un análisis posterior, del 14 jun 2024, sí se revisó", "tal vez repita"),
    ],
)
def test_a_pattern_checked_on_a_later_draw_is_not_said_to_need_a_repeat(
    sample, tmp_path, lang, later, repeat
) -> None:
    """DEMO-007's 11 Jun draw is suspected of contamination, and its 14 Jun repeat was
    checked (Mg/Ca and Mg/K did not show up): the sheet says so instead of "your clinician
    may repeat the test". A spoiled draw without a later one still says it."""
    unchecked = "We did not check this pattern" if lang == "en" else "No revisamos este patrón"

    def paragraphs(html: str) -> list[str]:
        return [p for p in re.findall(r"<p>(.*?)</p>", html) if unchecked in p]

    said = paragraphs(_sample_html(sample, "DEMO-007", lang))
    assert len(said) == 2  # the Mg/Ca and the Mg/K patterns
    assert all(later in p and repeat not in p for p in said)
    path = write_export(tmp_path, [("E-1", WHEN, "K", "5.9"), ("E-1", WHEN, "Ca", "8.2")])
    said = paragraphs(_html(_context(path, "E-1", lang)))
    assert said and all(repeat in p and later[:12] not in p for p in said)


# -- 7. a patient id no installed font can draw ---------------------------------------------


def test_an_id_no_font_can_draw_is_named_by_file_and_flagged_on_the_sheet(
    tmp_path, monkeypatch, caplog
) -> None:
    """The warning names each handout file that prints empty boxes, never the id, and the
    sheet itself says its id could not be printed (the id is the check that the right
    patient gets the sheet)."""
    from labinterp.handout import fonts

    path = write_unprintable_id_export(tmp_path)
    monkeypatch.setattr(fonts, "_drawable", lambda char: char.isascii())  # no Greek font
    out = tmp_path / "one.pdf"
    with caplog.at_level("WARNING"):
        pdf = render_handout(path, None, "Ωμέγα-7", output=out)
    assert "1 handout holds characters" in caplog.text and str(out) in caplog.text
    assert "Some characters of this ID could not be printed" in " ".join(_pdf_pages(pdf))
    assert "could not be printed" not in " ".join(_pdf_pages(render_handout(path, None, "P-2")))
    caplog.clear()
    folder = tmp_path / "all"
    folder.mkdir()
    with caplog.at_level("WARNING"):
        index = render_batch(path, None, folder, workers=1)
    greek = index.loc[index["patient_id"] == "Ωμέγα-7", "file"].item()
    assert "1 handout holds characters" in caplog.text and greek in caplog.text
    assert "Ωμέγα" not in caplog.text
    pages = _pdf_pages((folder / greek).read_bytes())
    assert "Some characters of this ID could not be printed" in pages[0]


# -- 8. a patient whose every row was rejected ----------------------------------------------


def _rejected_export(tmp_path: Path) -> Path:
    path = tmp_path / "export.csv"
    path.write_text(
        "patient_id,collected_at,test,result,unit,range\n"
        "REJ-1,2024-03-01 08:00,Magnesium,17,mmol/L,0.70-1.00\n"
        "REJ-1,2024-03-01 08:00,C-reactive protein,235,mg/dL,<10\n"
        "OK-1,2024-03-01 08:00,Magnesium,1.2,mg/dL,1.6-2.6\n",
        encoding="utf-8",
    )
    return path


def test_a_patient_whose_rows_were_all_rejected_is_told_why(tmp_path, caplog) -> None:
    """Not "all of this patient's results are of other tests" (they are tests labinterp
    covers, rejected as suspected unit errors): the reasons, counted, without values; a
    batch says how many rows could not be used and why, without ids."""
    from labinterp.errors import LabinterpError

    path = _rejected_export(tmp_path)
    with pytest.raises(LabinterpError) as err:
        render_handout(path, None, "REJ-1")
    message = str(err.value)
    assert "every row of this patient was rejected" in message
    assert "2 with a value implausible for its unit (suspected unit error)" in message
    assert "other tests" not in message and "17" not in message and "235" not in message
    folder = tmp_path / "all"
    folder.mkdir()
    with caplog.at_level("WARNING"):
        index = render_batch(path, None, folder, workers=1)
    assert list(index["patient_id"]) == ["OK-1"]
    # counted in patients, not rows (REJ-1 has two)
    assert "1 patient of the files read has no handout" in caplog.text
    assert "rows with a value implausible for its unit (suspected unit error): 1" in caplog.text
    assert index.attrs["patients_without_handout"] == 1
    assert "REJ" not in caplog.text and "235" not in caplog.text


# -- 9. Spanish wording and a box split across pages ----------------------------------------


def test_spanish_words_agree_and_name_the_band_as_it_prints(sample) -> None:
    """ "Vitamina D ... Baja", "PTH ... Alta" (feminine names), the shaded band is not
    called grey (it prints light green), and "las de otras" (relaciones)."""
    html = _sample_html(sample, "DEMO-013", "es")

    def status_of(name: str) -> list[str]:
        part = html[html.index(f"<h3>{name}") :]
        return re.findall(r'class="status status-\w+">(\w[\w ]*)<', part)[:1]

    assert status_of("Vitamina D</h3>") == ["Baja"]
    assert status_of("PTH (") == ["Alta"]
    assert status_of("Magnesio</h3>") in (["Bajo"], ["En rango"])  # masculine stays
    assert "La parte sombreada es el rango" in html and "gris" not in html
    assert "las de otras" in html and "las de otros" not in html


@pytest.mark.parametrize(("pid", "paper"), [("DEMO-001", "A4"), ("DEMO-017", "letter")])
def test_why_magnesium_matters_is_never_split_across_pages(sample, pid, paper) -> None:
    res, fnd = sample
    pages = _pdf_pages(render_handout(res, fnd, pid, paper=paper))
    first = [i for i, p in enumerate(pages) if "Why magnesium matters" in p]
    last = [i for i, p in enumerate(pages) if "make your kidneys lose potassium" in p]
    assert len(first) == 1 and first == last
