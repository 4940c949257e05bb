"""Recognise what kind of file we were given before reading it."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labinterp.errors import DamagedFileError, InputFileError, InputNotFoundError
from labinterp.readers.hl7v2 import looks_like_hl7

PROBE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Sniffed:
    kind: str  # "delimited" | "xlsx" | "json" | "ndjson" | "parquet" | "xpt" | "hl7v2"
    encoding: str  # python codec name for text kinds
    delimiter: str  # for "delimited"
    compressed: bool  # gzip


def display_name(path: Path) -> str:
    """How a file is named in messages and in source_file: its name, not where it lives."""
    return path.name


# Files in a folder that are documentation or pictures, never exports: passed over unread.
_NOT_EXPORTS = {
    *(".md", ".rst", ".pdf", ".html", ".htm"),
    *(".png", ".jpg", ".jpeg", ".toml", ".yaml", ".yml"),
}


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, bool]]:
    """Files named directly, plus the files inside named folders (sorted, recursive, hidden
    ones left out), each with whether it was found in a folder.

    Every command reads a folder this way. A folder holds side tables too (an item
    dictionary, demographics: MIMIC's D_LABITEMS and PATIENTS beside LABEVENTS), so a file
    found in a folder that turns out not to be an export is skipped with its reason by the
    reader; a file named directly that is not an export is an error.
    """
    out: list[tuple[Path, bool]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and f.suffix.lower() not in _NOT_EXPORTS
            )
            out.extend((f, True) for f in found)
        elif p.is_file():
            out.append((p, False))
        elif p.exists():  # a device, a pipe: nothing an export is saved as
            raise InputFileError(
                "this is not a regular file.",
                file=str(p),
                fix="save the export as a file and name that file.",
            )
        else:
            raise InputNotFoundError(
                "this path does not exist.",
                file=str(p),
                fix="check the path, or name a file or folder that exists.",
            )
    if not out:
        raise InputNotFoundError(
            "no export files were found in the paths given.",
            fix="name the export files, or a folder that contains them.",
        )
    # a file named twice (or by two paths) is read once, as where it was first named
    found_in_folder: dict[Path, bool] = {}
    for f, in_folder in out:
        found_in_folder.setdefault(f, in_folder)
    return [(f, found_in_folder[f]) for f in unique_files([f for f, _ in out])]


def unique_files(paths: list[Path]) -> list[Path]:
    """`paths` without repeats of a file (the same file named twice, or by two paths): its
    rows would all come back as duplicates of themselves."""
    seen: set[str] = set()
    out = []
    for p in paths:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def display_names(paths: Sequence[Path]) -> list[str]:
    """Names for files read together (their source_file): each file's name, or, for files
    that share a name, as many of their last folders as tell them apart
    ("a/export.csv", "b/export.csv"), so no two files' rows are confused."""
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    labels = [p.name for p in paths]
    depth = 1
    while len(set(labels)) < len(labels) and depth < max(len(x) for x in parts):
        depth += 1
        seen = Counter(labels)
        labels = [
            "/".join(x[-depth:]) if seen[label] > 1 else label
            for x, label in zip(parts, labels, strict=True)
        ]
    return labels


GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    """Named .gz, or starting with gzip's magic bytes: a compressed export saved without
    the suffix is still read (not called binary)."""
    if path.suffix == ".gz":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == GZIP_MAGIC
    except OSError:
        return False


def open_binary(path: Path) -> io.BufferedIOBase:
    if is_gzip(path):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _head(path: Path) -> bytes:
    try:
        with open_binary(path) as fh:
            return fh.read(PROBE_BYTES)
    except EOFError as exc:
        # it starts as gzip and ends early: an export cut short, never skipped in a folder
        raise DamagedFileError(
            f"the compressed file ends in the middle, after line {_lines_before_end(path)}"
            " (it was cut short in copying or downloading).",
            file=display_name(path),
            fix="copy or download the file again; its rows after that line are missing.",
        ) from exc
    except gzip.BadGzipFile as exc:
        raise InputFileError(
            f"the file looks compressed but cannot be decompressed ({exc}).",
            file=display_name(path),
            fix="re-export the file, or decompress it yourself and pass the plain file.",
        ) from exc


def _lines_before_end(path: Path) -> int:
    """How many whole lines a compressed file cut short holds before it ends (decompressed
    piece by piece: gzip's reader gives nothing of a read that hits the end)."""
    lines = 0
    inflate = zlib.decompressobj(wbits=31)  # 31: the gzip wrapper
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 16):
                lines += inflate.decompress(chunk).count(b"\n")
    except (zlib.error, OSError):
        pass
    return lines


def detect_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    bom_less = _utf16_without_bom(head)
    if bom_less:
        return bom_less
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A probe can end in the middle of a multi-byte character; only an error well
        # before the end means the text is not UTF-8.
        if exc.start >= len(head) - 4:
            return "utf-8"
        return "latin-1"


def _utf16_without_bom(head: bytes) -> str:
    """ "utf-16-le" or "utf-16-be" for UTF-16 text saved without its byte order mark (ASCII
    text then has a zero byte beside each character: every second byte is zero, at odd
    positions for little-endian), else ""."""
    sample = head[: 4096 - 4096 % 2]
    if len(sample) < 4:
        return ""
    even, odd = sample[0::2], sample[1::2]

    def text(half: bytes) -> bool:  # the other half: printable ASCII, tabs and line ends
        printable = sum(1 for b in half if 32 <= b < 127 or b in (9, 10, 13))
        return printable > 0.9 * len(half)

    if odd.count(0) > 0.9 * len(odd) and text(even):
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even) and text(odd):
        return "utf-16-be"
    return ""


def _looks_binary(head: bytes, encoding: str) -> bool:
    if encoding.startswith("utf-16") or not head:
        return False
    sample = head[:8192]
    if b"\x00" in sample:
        return True
    control = sum(1 for b in sample if b < 32 and b not in (9, 10, 13, 12))
    return control > len(sample) * 0.05


# A title block above the table ("Lab results - Clinic A", "Exported 2024-03-05", a blank
# line) is a few lines: the header is looked for among the first rows that hold anything.
HEADER_SEARCH_ROWS = 30
TITLE_CELLS = 2  # a title line fills at most this many cells ("Exported", "2024-03-05")


def header_position(rows: list[list[Any]]) -> int:
    """Which of `rows` (a file's first rows that hold anything) is the header: the first one
    about as wide as the table. Exports often print a title block above the table, one cell
    per line or padded with empty cells to the table's width by a spreadsheet; those lines
    fill at most two cells, where a header names at least three columns (patient, test,
    value) and at least half as many as the widest row. 0 when the first row qualifies,
    when a row above the first wide one fills more than two cells (then it is no title
    but a narrow header above ragged rows), or when no row is wide enough to tell."""
    filled = [sum(1 for v in r if v is not None and str(v).strip()) for r in rows]
    if not filled:
        return 0
    need = max(3, -(-max(filled) // 2))  # ceil(widest / 2), at least 3
    for i, n in enumerate(filled):
        if n >= need:
            return i
        if n > TITLE_CELLS:  # not a title line: a narrow header (ragged rows follow)
            return 0
    return 0


DELIMITERS = ",;\t|"


def detect_delimiter(text_head: str) -> str:
    lines = [ln for ln in text_head.splitlines()[:50] if ln.strip()]
    if not lines:
        return ","
    try:
        found = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=DELIMITERS).delimiter
    except csv.Error:
        # Fall back to the candidate that splits the header into the most fields.
        found = max(DELIMITERS, key=lines[0].count)
    first = next(csv.reader(lines[:1], delimiter=found), [])
    if sum(1 for f in first if f.strip()) > TITLE_CELLS:
        return found
    # The first line is narrow: a title block above the table may have misled the guess
    # (its words hold no delimiter, an export date may hold a comma). Take the delimiter
    # under which most rows below the header have the header's number of fields.
    return max(DELIMITERS, key=lambda d: (_agreeing_rows(lines, d), d == found))


def _agreeing_rows(lines: list[str], delimiter: str) -> int:
    """How many of `lines`, from the header header_position finds on, have as many fields
    as that header, when split at `delimiter` (0 for a header of one field)."""
    rows = list(csv.reader(lines, delimiter=delimiter))
    at = header_position(rows[:HEADER_SEARCH_ROWS])
    width = len(rows[at])
    return 0 if width < 2 else sum(1 for r in rows[at:] if len(r) == width)


def sniff(path: Path) -> Sniffed:
    if not path.exists():
        raise InputNotFoundError(
            "no such file.", file=str(path), fix="check the spelling and the folder."
        )
    if path.is_dir():
        raise InputFileError(
            "this is a folder, not a file.",
            file=display_name(path),
            fix="name the export files inside it, or give the folder to a command or to `read`.",
        )
    if path.stat().st_size == 0:
        raise InputFileError(
            "the file is empty.", file=display_name(path), fix="export the results again."
        )
    compressed = is_gzip(path)
    head = _head(path)
    if not head.strip():
        raise InputFileError(
            "the file holds no data (only blank space).",
            file=display_name(path),
            fix="export the results again.",
        )
    if head.startswith(b"PAR1"):
        return Sniffed("parquet", "", "", compressed)
    if head.startswith(b"HEADER RECORD*******LIB"):  # SAS transport, version 5 or 8
        return Sniffed("xpt", "", "", compressed)
    if path.suffix.lower() == ".toml":
        raise InputFileError(
            "this is a TOML file (a mapping file?), not a lab export.",
            file=display_name(path),
            fix="pass a mapping file with --mapping FILE, and the export itself as the input.",
        )
    if path.suffix.lower() == ".sas7bdat" or path.name.lower().endswith(".sas7bdat.gz"):
        raise InputFileError(
            "this is a SAS dataset (.sas7bdat), which labinterp does not read.",
            file=display_name(path),
            fix="save it as a SAS transport file (.xpt, with the XPORT engine) or as CSV,"
            " and pass that.",
        )
    if head.startswith(b"PK\x03\x04"):
        if not compressed and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if any(n.startswith("xl/") for n in zf.namelist()):
                    return Sniffed("xlsx", "", "", compressed)
        elif not compressed:
            # A ZIP archive (a workbook is one) keeps its table of contents at the end:
            # one that starts as ZIP but has none was cut short, and its rows would be
            # lost unseen if it were skipped as "not an export"
            raise DamagedFileError(
                "the file starts as a ZIP archive (an .xlsx workbook is one) but its end is"
                " missing: it was cut short while being copied or saved.",
                file=display_name(path),
                fix="copy or export the file again.",
            )
        raise InputFileError(
            "this is a ZIP archive, not a lab export.",
            file=display_name(path),
            fix="unpack it and pass the CSV, Excel or FHIR files inside.",
        )
    if head.startswith((b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"\xd0\xcf\x11\xe0")):
        raise InputFileError(
            "this is a document or image (PDF, picture or old .xls), not a lab export.",
            file=display_name(path),
            fix="export the results as CSV, .xlsx or FHIR JSON.",
        )
    encoding = detect_encoding(head)
    if _looks_binary(head, encoding):
        raise InputFileError(
            "the file is binary, not text.",
            file=display_name(path),
            fix="export the results as CSV, .xlsx or FHIR JSON.",
        )
    text = head.decode(encoding, errors="replace").lstrip("\ufeff")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        first_line = stripped.split("\n", 1)[0].strip()
        if first_line.endswith("}") and "\n" in stripped.strip():
            return Sniffed("ndjson", encoding, "", compressed)
        return Sniffed("json", encoding, "", compressed)
    if stripped.startswith("["):
        return Sniffed("json", encoding, "", compressed)
    if looks_like_hl7(stripped):
        return Sniffed("hl7v2", encoding, "", compressed)
    return Sniffed("delimited", encoding, detect_delimiter(text), compressed)
