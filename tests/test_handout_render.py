"""The handout renderer's shortcuts change nothing in the PDF.

The renderer parses its markup with the C XML parser and cascades a user-agent stylesheet cut
down to the rules that apply to handouts (labinterp/handout/render.py). These tests hold both
to what plain WeasyPrint makes of the same markup: the same element tree as its HTML5 parser
for every sample patient and variant, and the same PDF, byte for byte.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import tinyhtml5
from pypdf import PdfReader
from weasyprint import HTML

from labinterp.handout import fonts
from labinterp.handout.context import build_context
from labinterp.handout.fetcher import ASSET_BASE
from labinterp.handout.render import (
    PDF_OPTIONS,
    WHOLE_FONTS,
    HandoutHTML,
    make_document,
    parse_markup,
    pdf_options,
    shared_renderer,
    tree_input,
)

SAMPLE = Path(__file__).resolve().parent.parent / "labinterp" / "sample_data" / "clinic_export.csv"
ODD = '<img src="file:///etc/passwd"> & "quotes" \'apostrophes\' </p> \u00bfqu\u00e9? \u2264 1.3'


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bundled sample, plus one patient whose id and comments hold markup and quotes."""
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    results = read(SAMPLE).results
    first = results["patient_id"].iloc[0]
    odd = results[results["patient_id"] == first].copy()
    odd["patient_id"] = ODD
    if "comment" in odd.columns:
        odd["comment"] = ODD
    results = pd.concat([results, odd], ignore_index=True)
    return results, interpret_results(results)


def _shape(element) -> list:
    return [
        (e.tag, sorted(e.attrib.items()), e.text, e.tail)
        for e in element.iter()  # document order
    ]


def _markup(tables, pid: str, lang: str, large_print: bool, paper: str = "A4") -> str:
    results, findings = tables
    ctx = build_context(results, findings, pid, lang=lang, large_print=large_print, paper=paper)
    return shared_renderer().html(ctx)


def test_xml_tree_is_the_html5_tree_for_every_sample_handout(tables) -> None:
    results, _ = tables
    pids = sorted(set(results["patient_id"]))
    assert ODD in pids
    for pid in pids:
        for lang in ("en", "es"):
            for large in (False, True):
                html = _markup(tables, pid, lang, large)
                root = parse_markup(html)
                assert root is not None, (pid, lang, large)
                expected = tinyhtml5.parse(html, namespace_html_elements=False)
                assert _shape(root) == _shape(expected), (pid, lang, large)


@pytest.mark.parametrize(
    ("lang", "large_print", "paper"), [("en", False, "A4"), ("es", True, "letter")]
)
def test_pdf_is_byte_for_byte_what_plain_weasyprint_makes(tables, lang, large_print, paper):
    assert tree_input()
    renderer = shared_renderer()
    results, _ = tables
    for pid in [ODD, *sorted(set(results["patient_id"]))[:3]]:
        html = _markup(tables, pid, lang, large_print, paper)
        ours = renderer.pdf(html, paper=paper, large_print=large_print)
        plain = HTML(string=html, base_url=ASSET_BASE, url_fetcher=renderer.fetcher).write_pdf(
            stylesheets=renderer.stylesheets(paper, large_print),
            font_config=renderer.font_config,
            **pdf_options(html),
        )
        assert ours == plain, pid


def test_markup_that_is_not_xml_goes_through_the_html5_parser() -> None:
    html = '<!DOCTYPE html><html lang="en"><head><title>t</title></head><body><p>a<br>b &nbsp;c'
    assert parse_markup(html) is None
    doc = make_document(html, shared_renderer().fetcher)
    assert isinstance(doc, HandoutHTML) and not doc.handout_ua
    pdf = doc.write_pdf(**PDF_OPTIONS)
    assert "a" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_elements_the_handout_ua_sheet_lacks_get_weasyprints_own(tables) -> None:
    """A template edited to use, say, <strong> or <ol> still renders as plain WeasyPrint would."""
    renderer = shared_renderer()
    html = _markup(tables, sorted(set(tables[0]["patient_id"]))[0], "en", False)
    assert make_document(html, renderer.fetcher).handout_ua
    edited = html.replace("<h2>", "<h2><strong>!</strong> ", 1).replace(
        "<ul>", '<ol start="3"><li>one</li></ol><ul dir="ltr">', 1
    )
    assert parse_markup(edited) is not None
    assert not make_document(edited, renderer.fetcher).handout_ua
    plain = HTML(string=edited, base_url=ASSET_BASE, url_fetcher=renderer.fetcher).write_pdf(
        stylesheets=renderer.stylesheets("A4", False),
        font_config=renderer.font_config,
        **pdf_options(edited),
    )
    assert renderer.pdf(edited, paper="A4", large_print=False) == plain


def test_fonts_are_embedded_whole_only_without_harfbuzz_and_for_text_they_hold(
    tables, monkeypatch
) -> None:
    import weasyprint.pdf.fonts as pdf_fonts

    if fonts.font_file("handout-sans.ttf") is None:
        pytest.skip("DejaVu Sans is not installed: handouts use the system's fonts")
    latin = _markup(tables, sorted(set(tables[0]["patient_id"]))[0], "es", False)
    assert fonts.covers(latin) and not fonts.covers("\u0418\u0432\u0430\u043d")
    assert pdf_options(latin.replace("</h1>", "\u0418\u0432\u0430\u043d</h1>")) == PDF_OPTIONS
    monkeypatch.setattr(pdf_fonts, "harfbuzz_subset", None)
    assert pdf_options(latin) == WHOLE_FONTS
    assert pdf_options(latin.replace("</h1>", "\u0418\u0432\u0430\u043d</h1>")) == PDF_OPTIONS
    reader = PdfReader(io.BytesIO(shared_renderer().pdf(latin, paper="A4", large_print=False)))
    names = set()
    for page in reader.pages:
        resources: Any = page["/Resources"]
        for font in resources["/Font"].values():
            cid: Any = font.get_object()["/DescendantFonts"][0]
            desc = cid.get_object()["/FontDescriptor"]
            assert "/FontFile2" in desc
            names.add(str(desc["/FontName"]).split("+")[-1])
    assert names == {"Handout-Sans", "Handout-Sans-Bold"}
