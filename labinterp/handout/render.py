"""HTML from templates, PDF from HTML: the expensive objects are built once per process.

`Renderer` holds the parsed handout stylesheet (one `CSS` object per paper size and print
size), one `FontConfiguration`, and the line breaks and Pango layouts of the text it has
rendered (labinterp/handout/linebreaks.py), so a batch pays for them once per worker
instead of once per handout. The jinja2 Environment (with its compiled templates) is shared by every
Renderer of a process: batch workers inherit it already compiled from the fork server.

Two costs WeasyPrint would pay for every handout are avoided without changing a byte of the
PDF (tests/test_handout_render.py compares against plain `weasyprint.HTML(string=...)`):

- parsing: the markup our templates make is well-formed XML, so the C XML parser builds the
  element tree WeasyPrint's pure-Python HTML5 parser would build, ~50 times faster
  (`parse_markup`); anything it cannot read goes through the HTML5 parser as before;
- the user-agent stylesheet: WeasyPrint cascades its whole HTML5 sheet (forms, tables,
  footnotes, bidi, sixteen page-margin boxes) over every element; handouts get only the
  rules of that sheet that can apply to their elements (templates/handout/ua.css), as long
  as they hold no other element (`UA_TAGS`): an edited template that does gets the full one.
"""

from __future__ import annotations

import atexit
import dis
import gc
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import cssselect2
import jinja2
from weasyprint import CSS, HTML
from weasyprint.text.fonts import FontConfiguration

from labinterp.handout import fonts
from labinterp.handout.fetcher import ASSET_BASE, SafeFetcher
from labinterp.handout.linebreaks import LineBreakMemory, remembering
from labinterp.resources import template_dir

LANGS = ("en", "es")
PAPERS = {"a4": "A4", "letter": "letter"}
PDF_OPTIONS: dict[str, Any] = {"pdf_variant": "pdf/ua-1"}
# Without HarfBuzz's subsetter WeasyPrint cuts every font down with fontTools, ~13 ms per
# font and handout even for our small fonts (it decompiles their kerning tables first).
# Embedding the two cut-down fonts whole instead saves ~25 ms per handout and adds ~33 kB
# to each PDF (with HarfBuzz, subsetting stays cheaper: ~8 ms less than compressing them).
WHOLE_FONTS: dict[str, Any] = {**PDF_OPTIONS, "full_fonts": True}


def hb_subset() -> bool:
    """Whether WeasyPrint subsets fonts with HarfBuzz (Debian: libharfbuzz-subset0)."""
    from weasyprint.pdf import fonts as pdf_fonts

    if not getattr(pdf_fonts, "harfbuzz_subset", None):
        return False
    try:
        return bool(pdf_fonts.harfbuzz.hb_version_atleast(4, 1, 0))
    except AttributeError:
        return False


def pdf_options(html: str) -> dict[str, Any]:
    """WeasyPrint options for one handout's markup: PDF/UA-1, and how fonts are embedded.

    Fonts are embedded whole only when fontTools would subset them and the text needs
    nothing but the cut-down fonts: a fallback font (another script in a name or comment)
    would be embedded whole too, and those are large, so such a handout is subset as before.
    """
    if not hb_subset() and fonts.font_file("handout-sans.ttf") and fonts.covers(html):
        return WHOLE_FONTS
    return PDF_OPTIONS


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
    # large print: a taller bottom margin holds the running disclaimer at the body size
    bottom = "@page { margin-bottom: 42mm; }\n" if large_print else ""
    return (
        bottom + f"@page {{ size: {size}; }}\n"
        f":root {{ --base: {base}pt; }}\n"
        f"html {{ font-size: {base}pt; }}\n"
    )


# The namespace the HTML5 parser gives inline SVG; our markup leaves it implicit, as HTML does.
_SVG_OPEN = '<svg xmlns="http://www.w3.org/2000/svg" '


def parse_markup(html: str) -> ET.Element | None:
    """The element tree of our handout markup, from the C XML parser; None if it is not XML.

    Templates close every element and write void elements as `<meta ... />`, and autoescape
    turns every `<`, `&` and quote of the data into a reference, so the markup is XML and
    gives the same tree as the HTML5 parser (inline SVG in the SVG namespace, text and
    white space kept as they are). A literal `<svg ` can only come from our templates. A
    document that is not XML (a template edited into looser HTML, a control character in
    an export) returns None. The XML parser loads no DTD and no external entity.
    """
    try:
        return ET.fromstring(html.replace("<svg ", _SVG_OPEN))
    except ET.ParseError:
        return None


# The HTML elements templates/handout/ua.css holds WeasyPrint's user-agent rules for.
UA_TAGS = frozenset(
    {
        *("html", "head", "meta", "title", "body", "header", "section", "article", "div"),
        *("h1", "h2", "h3", "h4", "p", "span", "ul", "li"),
    }
)
_SVG_TAG = "{http://www.w3.org/2000/svg}"


def ua_covers(root: ET.Element) -> bool:
    """Whether the handout user-agent sheet styles this tree as WeasyPrint's own would."""
    for element in root.iter():
        tag = element.tag
        if tag not in UA_TAGS and not tag.startswith(_SVG_TAG):
            return False
        if "dir" in element.attrib or "hidden" in element.attrib:  # rules left out
            return False
    return True


@cache
def _ua_sheets() -> list[CSS]:
    text = (template_dir() / "handout" / "ua.css").read_text("utf-8")
    return [CSS(string=text, base_url=ASSET_BASE, url_fetcher=SafeFetcher())]


class HandoutHTML(HTML):
    """`weasyprint.HTML` from markup or from a parsed tree; with the handout user-agent
    stylesheet when `handout_ua` is set (`from_tree` sets it when `ua_covers` the tree)."""

    handout_ua = False

    def _ua_stylesheets(self, forms: bool = False) -> list[CSS]:
        if self.handout_ua and not forms:
            return _ua_sheets()
        return list(super()._ua_stylesheets(forms))

    @classmethod
    def from_tree(cls, root: ET.Element, *, base_url: str, url_fetcher: Any) -> HandoutHTML:
        """What `HTML(string=...)` sets up, for a tree already parsed (see `tree_input`)."""
        doc = cls.__new__(cls)
        doc.handout_ua = ua_covers(root)
        doc.base_url = base_url
        doc.url_fetcher = url_fetcher
        doc.media_type = "print"
        doc.wrapper_element = cssselect2.ElementWrapper.from_html_root(root, content_language=None)
        doc.etree_element = doc.wrapper_element.etree_element
        return doc


# What `weasyprint.HTML.__init__` sets on a document (WeasyPrint 61 to 70).
_HTML_STATE = frozenset(
    {"base_url", "url_fetcher", "media_type", "wrapper_element", "etree_element"}
)


@cache
def tree_input() -> bool:
    """Whether this WeasyPrint sets up its documents the way `HandoutHTML.from_tree` does.

    Read from the code of `HTML.__init__`, so a WeasyPrint version that keeps more (or
    other) state falls back to parsing markup instead of rendering half set up.
    """
    try:
        stored = {
            ins.argval for ins in dis.get_instructions(HTML.__init__) if ins.opname == "STORE_ATTR"
        }
    except TypeError:
        return False
    return stored == _HTML_STATE and callable(getattr(HTML, "_ua_stylesheets", None))


def make_document(html: str, url_fetcher: Any) -> HTML:
    """The WeasyPrint document for handout markup: parsed as XML when it can be."""
    root = parse_markup(html) if tree_input() else None
    if root is None:
        return HandoutHTML(string=html, base_url=ASSET_BASE, url_fetcher=url_fetcher)
    return HandoutHTML.from_tree(root, base_url=ASSET_BASE, url_fetcher=url_fetcher)


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
        self.line_breaks = LineBreakMemory()
        # drawing an ellipsis changes a Pango layout: where one may be drawn, none is shared
        self._css_may_cut = "ellipsis" in self._css_text

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
        share = not self._css_may_cut and "ellipsis" not in html
        with gc_paused(), remembering(self.line_breaks, share_layouts=share):
            doc = make_document(html, self.fetcher)
            out = doc.write_pdf(
                stylesheets=self.stylesheets(paper, large_print),
                font_config=self.font_config,
                **pdf_options(html),
            )
        assert out is not None
        return bytes(out)

    def render(self, context: dict[str, Any]) -> bytes:
        return self.pdf(
            self.html(context), paper=context["paper"], large_print=context["large_print"]
        )


@cache
def shared_renderer() -> Renderer:
    """One Renderer per process (batch workers call this from their initializer).

    The batch's fork server makes it and renders with it before forking, so every worker
    inherits it warm: stylesheets parsed, fonts loaded, font caches filled.
    """
    return Renderer()


def _leave_font_folder_to_parent() -> None:
    """In a forked child, never remove the inherited FontConfiguration's font folder.

    WeasyPrint deletes a FontConfiguration's temporary font files when the object is
    finalized; a child that inherited the shared Renderer uses the parent's folder, which
    the parent (still serving other children) removes when it is done with it.
    """
    if shared_renderer.cache_info().currsize:
        font_config = shared_renderer().font_config
        if getattr(font_config, "_folder", None) is not None:
            font_config._folder = None


def _release_shared_renderer() -> None:
    """Let go of the shared Renderer at exit, while the interpreter is still whole.

    Left to the interpreter's final teardown, its FontConfiguration's Pango font map can be
    finalized before Pango objects that still refer to it, and the process crashes on its
    way out (after its work is done, but with a failing exit status).
    """
    if shared_renderer.cache_info().currsize:
        shared_renderer.cache_clear()
        gc.unfreeze()  # the batch's fork server froze it out of the collector
        gc.collect()


os.register_at_fork(after_in_child=_leave_font_folder_to_parent)
atexit.register(_release_shared_renderer)
