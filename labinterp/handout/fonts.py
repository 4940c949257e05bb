"""The handout typeface: the system's DejaVu Sans cut down once per process to the text range.

Every PDF embeds a subset of the fonts it uses, and WeasyPrint makes that subset from the
whole font file for every document: ~6,000 glyphs of DejaVu Sans, twice (regular and bold).
That costs a few ms with HarfBuzz and ~120 ms per font with fontTools (what WeasyPrint falls
back to without libharfbuzz-subset0). Handing it a font that holds only Latin, Latin-1,
Latin Extended-A and common punctuation (~400 glyphs, no hinting) makes the per-document
subset cheap either way. Characters outside that range (a name or comment from the export
in another script) still print: the stylesheet lists the full system fonts after this one.

The cut-down fonts are served to WeasyPrint as `labinterp-asset:/handout/fonts/<file>` by
the SafeFetcher; when DejaVu Sans is not installed there is nothing to serve, the
@font-face rules are skipped and the stylesheet's fallback fonts are used as before.
"""

from __future__ import annotations

import io
import re
from functools import cache
from typing import Any

FAMILY = "DejaVu Sans"
# Served file name -> fontconfig style of the system font it is cut from.
FILES = {"handout-sans.ttf": "Book", "handout-sans-bold.ttf": "Bold"}
RANGES = (
    (0x0020, 0x007E),  # Basic Latin
    (0x00A0, 0x017F),  # Latin-1 Supplement, Latin Extended-A (es: ñ, á, ¿, ¡; µ, °, ±)
    (0x2010, 0x2027),  # dashes, quotes, bullet, ellipsis
    (0x2030, 0x203A),  # per mille, primes, angle quotes
    (0x20AC, 0x20AC),  # euro
    (0x2190, 0x2193),  # arrows
    (0x2212, 0x2212),  # minus
    (0x2264, 0x2265),  # less/greater than or equal
)


# Any character the cut-down fonts do not hold (white space aside).
_OUTSIDE = re.compile("[^\t\n\r" + "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi in RANGES) + "]")


def covers(text: str) -> bool:
    """Whether the cut-down fonts hold every character of `text` (no fallback font needed)."""
    return _OUTSIDE.search(text) is None


def _system_font(family: str, style: str) -> str | None:
    """Path of the installed font file for family/style, if fontconfig has exactly it."""
    from weasyprint.text.ffi import ffi, fontconfig

    pattern = ffi.gc(fontconfig.FcPatternCreate(), fontconfig.FcPatternDestroy)
    fontconfig.FcPatternAddString(pattern, b"family", family.encode())
    fontconfig.FcPatternAddString(pattern, b"style", style.encode())
    fontconfig.FcConfigSubstitute(ffi.NULL, pattern, 0)  # FcMatchPattern
    fontconfig.FcDefaultSubstitute(pattern)
    result = ffi.new("FcResult *")
    match = fontconfig.FcFontMatch(ffi.NULL, pattern, result)
    if match == ffi.NULL:
        return None
    match = ffi.gc(match, fontconfig.FcPatternDestroy)
    value = ffi.new("FcChar8 **")
    if fontconfig.FcPatternGetString(match, b"family", 0, value) != 0:
        return None
    if ffi.string(value[0]).decode("utf-8", "replace") != family:
        return None  # fontconfig substituted another family: do not cut that one down
    if fontconfig.FcPatternGetString(match, b"file", 0, value) != 0:
        return None
    return ffi.string(value[0]).decode("utf-8", "surrogateescape")


@cache
def font_file(name: str) -> bytes | None:
    """The cut-down font served as handout/fonts/<name>, or None (not ours, or not installed)."""
    style = FILES.get(name)
    if style is None:
        return None
    path = _system_font(FAMILY, style)
    if path is None:
        return None
    from fontTools import subset
    from fontTools.ttLib import TTFont, TTLibError

    options = subset.Options(
        hinting=False,
        layout_features=["kern", "liga", "clig", "calt", "ccmp", "locl", "mark", "mkmk"],
        name_IDs=["*"],
        notdef_outline=True,
        glyph_names=False,
    )
    options.drop_tables += ["FFTM"]  # FontForge timestamps: fontTools cannot subset them
    try:
        font = TTFont(path)
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=[u for lo, hi in RANGES for u in range(lo, hi + 1)])
        subsetter.subset(font)
        out = io.BytesIO()
        font.save(out)
    except (OSError, TTLibError, KeyError, ValueError):
        return None
    return out.getvalue()


@cache
def _fontconfig() -> Any:
    """libfontconfig through ctypes, with the few calls a charset query needs; None where
    it cannot be loaded (nothing is then said about missing characters)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("fontconfig")
    try:
        fc = ctypes.CDLL(name or "libfontconfig.so.1")
    except OSError:
        return None
    pointer = ctypes.c_void_p
    for call, result, args in (
        ("FcPatternCreate", pointer, []),
        ("FcPatternDestroy", None, [pointer]),
        ("FcCharSetCreate", pointer, []),
        ("FcCharSetDestroy", None, [pointer]),
        ("FcCharSetAddChar", ctypes.c_int, [pointer, ctypes.c_uint32]),
        ("FcPatternAddCharSet", ctypes.c_int, [pointer, ctypes.c_char_p, pointer]),
        ("FcObjectSetBuild", pointer, [ctypes.c_char_p, pointer]),
        ("FcObjectSetDestroy", None, [pointer]),
        ("FcFontList", pointer, [pointer, pointer, pointer]),
        ("FcFontSetDestroy", None, [pointer]),
    ):
        function = getattr(fc, call)
        function.restype, function.argtypes = result, args
    return fc


@cache
def _drawable(char: str) -> bool:
    """Whether any installed font has a glyph for `char` (fontconfig's list of the fonts
    whose charset holds it); True when fontconfig cannot be asked."""
    import ctypes

    fc = _fontconfig()
    if fc is None:
        return True
    pattern, charset = fc.FcPatternCreate(), fc.FcCharSetCreate()
    objects = fc.FcObjectSetBuild(b"family", None)
    try:
        fc.FcCharSetAddChar(charset, ord(char))
        fc.FcPatternAddCharSet(pattern, b"charset", charset)
        fonts = fc.FcFontList(None, pattern, objects)
        if not fonts:
            return True
        count = ctypes.cast(fonts, ctypes.POINTER(ctypes.c_int))[0]  # FcFontSet.nfont
        fc.FcFontSetDestroy(fonts)
        return count > 0
    finally:
        fc.FcObjectSetDestroy(objects)
        fc.FcCharSetDestroy(charset)
        fc.FcPatternDestroy(pattern)


def undrawable(text: str) -> bool:
    """Whether `text` holds a character no installed font can draw: the PDF would show an
    empty box for it (a patient id in a script the machine has no font for)."""
    if covers(text):
        return False
    return any(not _drawable(c) for c in set(text) if not c.isspace() and c.isprintable())
