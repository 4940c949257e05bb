"""Line breaks and shaped text remembered from one handout to the next.

WeasyPrint asks Pango to shape and break every run of text of every document anew, once
to lay it out (`weasyprint.text.line_break.split_first_line`, ~14 ms of a ~93 ms handout)
and once more to draw it (`Layout.reactivate`, which SVG text does letter by letter). Most
of a handout's text is the same in all of them: headings, explanations, questions, the
disclaimer in every page's footer, the words of the number lines. In a batch, ~95% of
these calls repeat one an earlier handout made.

The answer of `split_first_line` depends only on its arguments: the text, the width
available, the justification spacing, two flags, and the style properties the
line-breaking code reads (its `context` argument only caches hyphenation dictionaries).
What `reactivate` makes (a Pango layout to draw from) depends only on the layout's text and
justification spacing and on the same style properties. `LineBreakMemory` keeps both by
those inputs, and `remembering(memory)` makes WeasyPrint use it while one document renders;
outside it, WeasyPrint runs as it is. The PDFs are byte-identical either way
(tests/test_handout_render.py, tests/test_handout_linebreaks.py).

Which style properties matter is read from WeasyPrint's own source (`style_properties`),
and the shape of its `Layout` class is checked: a WeasyPrint this cannot follow gets no
memory, rather than wrong answers.
"""

from __future__ import annotations

import copy
import dis
import inspect
import re
import threading
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
# Pango layouts kept for drawing: a few kB of Pango objects each.
MAX_LAYOUTS = 5_000


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
    """Answers of `split_first_line` by its arguments, and Pango layouts made to draw a
    text by its text and style (one memory per Renderer)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_layouts: int = MAX_LAYOUTS) -> None:
        self.max_entries = max_entries
        self.max_layouts = max_layouts
        self.answers: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.layouts: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0
        self.layout_hits = 0
        self.layout_misses = 0

    def split_first_line(self, original: Any, properties: tuple[str, ...], *args: Any) -> Any:
        # the context only caches hyphenation dictionaries: not part of the answer
        text, style, _context, max_width, justification_spacing, *flags = args
        try:
            key = (text, max_width, justification_spacing, *flags, *_style_key(style, properties))
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

    def reactivate(
        self, original: Any, properties: tuple[str, ...], layout: Any, style: Any
    ) -> None:
        """What `original(layout, style)` does, with the Pango layout an earlier call made
        for the same text and style when there is one.

        The Pango objects are shared, not copied: drawing only reads them (except for an
        ellipsis, which `remembering` rules out), and the key holds the thread, as Pango
        objects must not be used by two threads at once.
        """
        try:
            key = (
                threading.get_ident(),
                layout.text,
                layout.justification_spacing,
                *_style_key(style, properties),
            )
            state = self.layouts.get(key)
        except (AttributeError, KeyError, TypeError):
            original(layout, style)
            return
        if state is None:
            self.layout_misses += 1
            original(layout, style)
            # everything reactivation sets; the box's width limit is its own
            state = {k: v for k, v in vars(layout).items() if k not in ("style", "max_width")}
            if len(self.layouts) >= self.max_layouts:
                self.layouts.clear()
            self.layouts[key] = state
            return
        self.layout_hits += 1
        vars(layout).update(state)
        layout.style = style


def _style_key(style: Any, properties: tuple[str, ...]) -> tuple[Any, ...]:
    """What of `style` shaping depends on: its fonts, and the values of `properties`
    (lists, the font families of SVG text, as tuples)."""
    values = [style[name] for name in properties]
    return (id(style.font_config), *[tuple(v) if isinstance(v, list) else v for v in values])


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
# What `Layout.__init__` sets besides what `setup` does (WeasyPrint 70); reactivation
# (`setup` and `set_text`) sets everything else a layout holds.
_LAYOUT_OWN = frozenset({"justification_spacing", "max_width"})
# The memory in use, and whether drawing may share Pango layouts.
_active: ContextVar[tuple[LineBreakMemory, bool] | None] = ContextVar(
    "labinterp_line_breaks", default=None
)


@cache
def _install() -> bool:
    """Route WeasyPrint's `split_first_line` and `Layout.reactivate` through the active
    memory, if any.

    Done once per process. `split_first_line` is replaced where the layout code looks it
    up: inline and preferred-width layout import it by name, SVG text imports it from its
    module at each call. With no memory active the originals are called at once.
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
        active = _active.get()
        if active is None:
            return original(*args)
        return active[0].split_first_line(original, properties, *args)

    for module in (line_break, inline, preferred):
        module.split_first_line = split_first_line

    original_reactivate = line_break.Layout.reactivate
    if _assigned(line_break.Layout.__init__) == _LAYOUT_OWN:

        def reactivate(layout: Any, style: Any) -> None:
            active = _active.get()
            if active is None or not active[1]:
                original_reactivate(layout, style)
                return
            active[0].reactivate(original_reactivate, properties, layout, style)

        line_break.Layout.reactivate = reactivate
    return True


def _assigned(function: Any) -> frozenset[str]:
    """The attributes `function` assigns to objects (from its bytecode)."""
    try:
        return frozenset(
            ins.argval for ins in dis.get_instructions(function) if ins.opname == "STORE_ATTR"
        )
    except TypeError:
        return frozenset()


@contextmanager
def remembering(memory: LineBreakMemory, *, share_layouts: bool = True) -> Iterator[None]:
    """Let WeasyPrint answer repeated line breaks from `memory` within this block, and,
    with `share_layouts`, draw repeated texts from Pango layouts made before. A document
    or stylesheet that may cut text with an ellipsis must not share them (drawing the
    ellipsis changes the layout)."""
    if not _install():
        yield
        return
    token = _active.set((memory, share_layouts))
    try:
        yield
    finally:
        _active.reset(token)
