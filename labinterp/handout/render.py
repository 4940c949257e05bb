"""HTML from templates, PDF from HTML: the expensive objects are built once per process.

`Renderer` holds the parsed handout stylesheet (one `CSS` object per paper size and print
size) and one `FontConfiguration`, so a batch pays for them once per worker instead of once
per handout. The jinja2 Environment (with its compiled templates) is shared by every
Renderer of a process: batch workers inherit it already compiled from the fork server.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import jinja2
from weasyprint import CSS, HTML
from weasyprint.text.fonts import FontConfiguration

from labinterp.handout.fetcher import ASSET_BASE, SafeFetcher
from labinterp.resources import template_dir

LANGS = ("en", "es")
PAPERS = {"a4": "A4", "letter": "letter"}
PDF_OPTIONS: dict[str, Any] = {"pdf_variant": "pdf/ua-1"}

# Elements laid out as blocks (and the SVG shapes): white space next to their tags never
# shows, but WeasyPrint still builds and lays out a box for every such run of it.
_BLOCK_TAGS = frozenset(
    [
        "html",
        "head",
        "body",
        "meta",
        "title",
        "header",
        "footer",
        "section",
        "article",
        "div",
        "p",
        "ul",
        "ol",
        "li",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "svg",
        "line",
        "rect",
        "polygon",
        "polyline",
        "path",
        "text",
    ]
)
_GAP = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)([^<>]*)>(\s+)(?=<(/?)([A-Za-z][A-Za-z0-9]*))")


def _squeeze_gap(m: re.Match[str]) -> str:
    tag = f"<{m.group(1)}{m.group(2)}{m.group(3)}>"
    if m.group(2).lower() in _BLOCK_TAGS or m.group(6).lower() in _BLOCK_TAGS:
        return tag
    return tag + " "  # between two inline elements the space is a word break: keep one


def squeeze(html: str) -> str:
    """`html` without the white space between tags that cannot show (template indentation).

    White space between two inline elements is kept as one space; text is never touched.
    """
    return _GAP.sub(_squeeze_gap, html)


def make_environment() -> jinja2.Environment:
    """The single templating environment: autoescaped, strict about undefined names."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        # every handout template stays compiled (the default keeps only the last 400)
        cache_size=-1,
    )
    return env


@cache
def shared_environment() -> jinja2.Environment:
    """The process's Environment; `compile_templates` fills it before workers fork."""
    return make_environment()


def compile_templates() -> int:
    """Compile every handout template now rather than on a worker's first handout."""
    env = shared_environment()
    names = env.list_templates(filter_func=lambda name: name.startswith("handout/"))
    for name in names:
        if name.endswith(".j2"):
            env.get_template(name)
    return len(names)


def page_css(paper: str, large_print: bool) -> str:
    """The page-size and type-size rules that differ between variants."""
    size = PAPERS.get(paper.lower(), "A4")
    base = 17 if large_print else 14
    return (
        f"@page {{ size: {size}; }}\n"
        f":root {{ --base: {base}pt; }}\n"
        f"html {{ font-size: {base}pt; }}\n"
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run one document without Python's cyclic garbage collector, then collect once.

    Laying out a handout makes ~100,000 short-lived objects; the collector would otherwise
    run dozens of times per document and walk every live object of the process (pandas,
    WeasyPrint's caches) each time it reaches the oldest generation. One young-generation
    collection afterwards frees the document's reference cycles just the same.
    """
    if not gc.isenabled():  # the caller manages the collector itself
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(1)


class Renderer:
    """Renders handout contexts to HTML and PDF, reusing stylesheets and fonts."""

    def __init__(self, fetch_log: list[str] | None = None) -> None:
        self.env = shared_environment()
        self.fetcher = SafeFetcher(log=fetch_log)
        self.font_config = FontConfiguration()
        self._css_text = (template_dir() / "handout" / "handout.css").read_text("utf-8")
        self._sheets: dict[tuple[str, bool], list[CSS]] = {}

    def stylesheets(self, paper: str, large_print: bool) -> list[CSS]:
        key = (paper.lower(), large_print)
        if key not in self._sheets:
            self._sheets[key] = [
                CSS(
                    string=self._css_text + page_css(paper, large_print),
                    base_url=ASSET_BASE,
                    # Our own stylesheet loads only our fonts; `fetch_log` watches what the
                    # (untrusted) document asks for, so the stylesheet gets its own fetcher.
                    url_fetcher=SafeFetcher(),
                    font_config=self.font_config,
                )
            ]
        return self._sheets[key]

    def html(self, context: dict[str, Any]) -> str:
        return squeeze(self.env.get_template("handout/handout.html.j2").render(**context))

    def pdf(self, html: str, *, paper: str, large_print: bool) -> bytes:
        with gc_paused():
            doc = HTML(string=html, base_url=ASSET_BASE, url_fetcher=self.fetcher)
            out = doc.write_pdf(
                stylesheets=self.stylesheets(paper, large_print),
                font_config=self.font_config,
                **PDF_OPTIONS,
            )
        assert out is not None
        return bytes(out)

    def render(self, context: dict[str, Any]) -> bytes:
        return self.pdf(
            self.html(context), paper=context["paper"], large_print=context["large_print"]
        )


@cache
def shared_renderer() -> Renderer:
    """One Renderer per process (batch workers call this from their initializer)."""
    return Renderer()
