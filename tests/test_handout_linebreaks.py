"""Line breaks remembered across handouts: same PDF, and a memory that is really used."""

from __future__ import annotations

from pathlib import Path

import pytest
from weasyprint import HTML

from labinterp.handout.context import build_context
from labinterp.handout.fetcher import ASSET_BASE
from labinterp.handout.linebreaks import (
    LineBreakMemory,
    properties_read,
    remembering,
    style_properties,
)
from labinterp.handout.render import Renderer, pdf_options

SAMPLE = Path(__file__).resolve().parent.parent / "labinterp" / "sample_data" / "clinic_export.csv"


@pytest.fixture(scope="module")
def sample_markup() -> list[str]:
    """Markup of three sample handouts in both languages."""
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    results = read(SAMPLE).results
    findings = interpret_results(results)
    renderer = Renderer()
    pids = sorted(set(results["patient_id"]))[:3]
    return [
        renderer.html(build_context(results, findings, pid, lang=lang, large_print=False))
        for lang in ("en", "es")
        for pid in pids
    ]


def test_the_scan_finds_what_line_breaking_reads() -> None:
    properties = style_properties()
    assert properties is not None
    for name in ("font_family", "font_size", "font_weight", "lang", "white_space", "hyphens"):
        assert name in properties


def test_the_scan_gives_up_on_reads_it_cannot_follow() -> None:
    assert properties_read("a = style['lang']\nb = self.style['font_size']") == (
        "font_size",
        "lang",
    )
    assert properties_read("key = 'lang'\na = style[key]") is None
    assert properties_read("a = style.get('lang')") is None
    assert properties_read("a = getattr(style, 'lang')") is None
    assert properties_read("m = style.font_config.font_map\nc = style.cache") == ()


def test_remembered_breaks_give_the_same_pdf_as_plain_weasyprint(sample_markup) -> None:
    renderer = Renderer()
    sheets = renderer.stylesheets("A4", False)
    # twice over: the second round is answered from memory almost entirely
    ours = [renderer.pdf(h, paper="A4", large_print=False) for h in sample_markup * 2]
    assert renderer.line_breaks.hits > 4 * renderer.line_breaks.misses
    assert renderer.line_breaks.layout_hits > 4 * renderer.line_breaks.layout_misses
    for html, pdf in zip(sample_markup * 2, ours, strict=True):
        plain = HTML(string=html, base_url=ASSET_BASE, url_fetcher=renderer.fetcher).write_pdf(
            stylesheets=sheets, font_config=renderer.font_config, **pdf_options(html)
        )
        assert pdf == plain


def test_memory_is_used_only_inside_remembering(sample_markup) -> None:
    renderer = Renderer()
    renderer.pdf(sample_markup[0], paper="A4", large_print=False)
    seen = (renderer.line_breaks.hits, renderer.line_breaks.misses)
    assert seen[1] > 0
    # WeasyPrint used directly, with the same fonts, asks the memory nothing
    HTML(string=sample_markup[0], base_url=ASSET_BASE).write_pdf(font_config=renderer.font_config)
    assert (renderer.line_breaks.hits, renderer.line_breaks.misses) == seen


def test_memory_starts_over_when_full_and_never_shares_a_layout(sample_markup) -> None:
    renderer = Renderer()
    renderer.line_breaks = LineBreakMemory(max_entries=50)
    renderer.pdf(sample_markup[0], paper="A4", large_print=False)
    assert 0 < len(renderer.line_breaks.answers) <= 50
    assert renderer.line_breaks.misses > 50  # it did fill up and start over

    memory = LineBreakMemory()
    answers = []

    def original(text, style, context, max_width, spacing, is_line_start, minimum):
        class Layout:  # what WeasyPrint returns: a layout with its Pango objects let go
            pass

        layout = Layout()
        layout.text = text
        return layout, len(text), None, 10.0, 5.0, 4.0

    style = _Style(font_size=12.0, font_family=["Sans"])
    with remembering(memory):
        for _ in range(3):
            answers.append(
                memory.split_first_line(
                    original,
                    ("font_family", "font_size"),
                    "words",
                    style,
                    None,
                    100.0,
                    0,
                    True,
                    False,
                )
            )
    assert (memory.misses, memory.hits) == (1, 2)
    layouts = [a[0] for a in answers]
    assert len({id(x) for x in layouts}) == 3  # each caller may change its own
    assert {x.text for x in layouts} == {"words"}
    # another size is another answer
    other = _Style(font_size=14.0, font_family=["Sans"])
    memory.split_first_line(
        original, ("font_family", "font_size"), "words", other, None, 100.0, 0, True, False
    )
    assert memory.misses == 2


def test_text_that_may_end_in_an_ellipsis_shares_no_layouts() -> None:
    # Drawing an ellipsis changes the Pango layout's text: sharing it would cut the same
    # text elsewhere too. Here the same words, in the same style, are cut and not cut.
    words = "Magnesium helps your muscles relax after calcium makes them tighten."
    cut = "width: 25mm; overflow: hidden; text-overflow: ellipsis"
    html = (
        '<html lang="en"><body style="white-space: nowrap">'
        f'<p>{words}</p><div style="{cut}">{words}</div><p>{words}</p></body></html>'
    )
    renderer = Renderer()
    sheets = renderer.stylesheets("A4", False)
    before = renderer.line_breaks.layout_hits + renderer.line_breaks.layout_misses
    ours = [renderer.pdf(html, paper="A4", large_print=False) for _ in range(2)]
    assert renderer.line_breaks.layout_hits + renderer.line_breaks.layout_misses == before
    plain = HTML(string=html, base_url=ASSET_BASE, url_fetcher=renderer.fetcher).write_pdf(
        stylesheets=sheets, font_config=renderer.font_config, **pdf_options(html)
    )
    assert ours == [plain, plain]


class _Style(dict):
    font_config = object()
