"""HTML from templates, PDF from HTML: the expensive objects are built once per process.

`Renderer` holds the one jinja2 Environment, the parsed handout stylesheet (one `CSS`
object per paper size and print size) and one `FontConfiguration`, so a batch pays for
them once per worker instead of once per handout.
"""

from __future__ import annotations

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


def make_environment() -> jinja2.Environment:
    """The single templating environment: autoescaped, strict about undefined names."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    return env


def page_css(paper: str, large_print: bool) -> str:
    """The page-size and type-size rules that differ between variants."""
    size = PAPERS.get(paper.lower(), "A4")
    base = 17 if large_print else 14
    return (
        f"@page {{ size: {size}; }}\n"
        f":root {{ --base: {base}pt; }}\n"
        f"html {{ font-size: {base}pt; }}\n"
    )


class Renderer:
    """Renders handout contexts to HTML and PDF, reusing stylesheets and fonts."""

    def __init__(self, fetch_log: list[str] | None = None) -> None:
        self.env = make_environment()
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
        return self.env.get_template("handout/handout.html.j2").render(**context)

    def pdf(self, html: str, *, paper: str, large_print: bool) -> bytes:
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
