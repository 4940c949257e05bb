"""Line breaks remembered from one handout to the next.

WeasyPrint asks Pango to shape and break every run of text of every document anew
(`weasyprint.text.line_break.split_first_line`, ~14 ms of a ~93 ms handout). Most of a
handout's text is the same in all of them: headings, explanations, questions, the
disclaimer in every page's footer, the words of the number lines. In a batch, ~95% of
these calls repeat one an earlier handout made.

The answer of `split_first_line` depends only on its arguments: the text, the width
available, the justification spacing, two flags, and the style properties the
line-breaking code reads (its `context` argument only caches hyphenation dictionaries).
`LineBreakMemory` keeps the answers by those arguments, and `remembering(memory)` makes
WeasyPrint use it while one document renders; outside it, WeasyPrint runs as it is. The
PDFs are byte-identical either way (tests/test_handout_render.py).

Which style properties the answer depends on is read from WeasyPrint's own source
(`style_properties`): a WeasyPrint that reads its style in a way that scan cannot follow
gets no memory, rather than wrong answers.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any

# Attributes of a style object the line-breaking code may use without changing its answer:
# the font configuration is part of the key; the others are caches and a copy.
_NEUTRAL_ATTRIBUTES = frozenset({"font_config", "cache", "copy"})
# Entries kept before the memory starts over: ~1 kB each. The text that repeats from
# handout to handout is back after the next handout.
MAX_ENTRIES = 20_000


@cache
def style_properties() -> tuple[str, ...] | None:
    """The style properties WeasyPrint's line breaking reads, or None if that cannot be
    told from its source."""
    try:
        from weasyprint.text import fonts, line_break

        return properties_read(inspect.getsource(line_break) + inspect.getsource(fonts))
    except (ImportError, OSError, TypeError):
        return None


def properties_read(source: str) -> tuple[str, ...] | None:
    """The style properties `source` reads, if every read names its property
    (`style['name']`) and nothing else is taken from a style object; else None."""
    literal = re.findall(r"""\bstyle\[(['"])(\w+)\1\]""", source)
    if len(literal) != len(re.findall(r"\bstyle\[", source)):
        return None  # a property named by a variable: the key could miss it
    attributes = set(re.findall(r"\bstyle\.(\w+)", source))
    if not attributes <= _NEUTRAL_ATTRIBUTES or re.search(r"getattr\(\s*(self\.)?style\b", source):
        return None
    return tuple(sorted({name for _, name in literal}))


class LineBreakMemory:
    """Answers of `split_first_line`, by its arguments (one per Renderer)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.answers: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.hits = 0
        self.misses = 0

    def split_first_line(self, original: Any, properties: tuple[str, ...], *args: Any) -> Any:
        # the context only caches hyphenation dictionaries: not part of the answer
        text, style, _context, max_width, justification_spacing, *flags = args
        try:
            key = (
                text,
                max_width,
                justification_spacing,
                *flags,
                id(style.font_config),
                *[_hashable(style[name]) for name in properties],
            )
            answer = self.answers.get(key)
        except (AttributeError, KeyError, TypeError):  # not a style we can key: no memory
            return original(*args)
        if answer is None:
            self.misses += 1
            answer = original(*args)
            if hasattr(answer[0], "layout"):  # a live Pango layout cannot be shared
                return answer
            if len(self.answers) >= self.max_entries:
                self.answers.clear()
            self.answers[key] = (copy.copy(answer[0]), *answer[1:])
            return answer
        self.hits += 1
        # Each text box gets a layout of its own: drawing may change its text (ellipsis).
        return (copy.copy(answer[0]), *answer[1:])


def _hashable(value: Any) -> Any:
    """Lists (font families of SVG text) as tuples; anything else as it is."""
    return tuple(value) if isinstance(value, list) else value


# The arguments of weasyprint.text.line_break.split_first_line (as of WeasyPrint 70).
_PARAMETERS = (
    "text",
    "style",
    "context",
    "max_width",
    "justification_spacing",
    "is_line_start",
    "minimum",
)
_active: ContextVar[LineBreakMemory | None] = ContextVar("labinterp_line_breaks", default=None)


@cache
def _install() -> bool:
    """Route WeasyPrint's calls of `split_first_line` through the active memory, if any.

    Done once per process. The function is replaced where the layout code looks it up:
    inline and preferred-width layout import it by name, SVG text imports it from its
    module at each call. With no memory active the original is called at once.
    """
    properties = style_properties()
    if properties is None:
        return False
    from weasyprint.layout import inline, preferred
    from weasyprint.text import line_break

    original = line_break.split_first_line
    if any(m.split_first_line is not original for m in (inline, preferred)):
        return False  # someone else replaced it already: leave it alone
    if tuple(inspect.signature(original).parameters) != _PARAMETERS:
        return False  # other arguments than these could change the answer

    def split_first_line(
        text: str,
        style: Any,
        context: Any,
        max_width: Any,
        justification_spacing: Any,
        is_line_start: bool = True,
        minimum: bool = False,
    ) -> Any:
        args = (text, style, context, max_width, justification_spacing, is_line_start, minimum)
        memory = _active.get()
        if memory is None:
            return original(*args)
        return memory.split_first_line(original, properties, *args)

    for module in (line_break, inline, preferred):
        module.split_first_line = split_first_line
    return True


@contextmanager
def remembering(memory: LineBreakMemory) -> Iterator[None]:
    """Let WeasyPrint answer repeated line breaks from `memory` within this block."""
    if not _install():
        yield
        return
    token = _active.set(memory)
    try:
        yield
    finally:
        _active.reset(token)
