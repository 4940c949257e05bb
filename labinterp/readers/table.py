"""Read a delimited text file into a frame of text columns, keeping each row's line number.

The fast path is pyarrow's multi-threaded CSV reader. It cannot tell line numbers, so it is
used only when every record is exactly one line (no blank lines, no ragged rows, no quoted
line breaks); otherwise the standard-library reader, which tracks lines, takes over.
"""

from __future__ import annotations

import codecs
import csv
import io
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from labinterp import units
from labinterp.errors import DamagedFileError, InputFileError
from labinterp.readers.sniff import (
    HEADER_SEARCH_ROWS,
    Sniffed,
    display_name,
    header_position,
    open_binary,
)

MAX_LINE_BYTES = 64 * 1024 * 1024  # longer lines are damage, not data
FAST_BLOCK_BYTES = 1024 * 1024  # pyarrow's default: enough blocks to keep every core busy
STR = pd.ArrowDtype(pa.string())


@dataclass
class Table:
    frame: pd.DataFrame  # original header names, all text (pyarrow strings)
    source_row: np.ndarray  # 1-based physical line of each record
    # line (or sheet row) of the header when a title block sits above it; else 1
    header_line: int = 1


def _unique_header(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, raw in enumerate(names):
        name = raw.strip().lstrip("\ufeff") or f"column_{i + 1}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 0
        out.append(name)
    return out


def _mappable(sniffed: Sniffed) -> bool:
    """Whether `read_delimited` parses the file from a memory map."""
    return not sniffed.compressed and sniffed.encoding in ("utf-8", "utf-8-sig")


def _file_bytes(path: Path, sniffed: Sniffed) -> tuple[bytes, bool]:
    """The file as UTF-8 without a byte-order mark, and whether bytes had to be changed
    (transcoded, or damaged UTF-8 replaced) to make it so."""
    with open_binary(path) as fh:
        data = _checked_read(path, fh)(-1)  # a damaged compressed file: bad input
    repaired = False
    if sniffed.encoding not in ("utf-8", "utf-8-sig"):
        # pyarrow reads UTF-8 only; transcode once (Latin-1 and UTF-16 exports are small).
        data = data.decode(sniffed.encoding, errors="replace").encode("utf-8")
        repaired = True
    elif not data.isascii():  # ASCII is valid UTF-8; checking is 6x cheaper than decoding
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:  # a damaged byte must not reach pyarrow
            data = data.decode("utf-8", errors="replace").encode("utf-8")
            repaired = True
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data, repaired


def _line_too_long(path: Path, data: bytes) -> None:
    """Refuse a file with a line longer than MAX_LINE_BYTES (checked only when the fast
    path could not read the file: a successful parse in 1 MB blocks proves every line is
    shorter than that)."""
    if len(data) <= MAX_LINE_BYTES:
        return
    breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    starts = np.concatenate(([0], breaks + 1))
    stops = np.concatenate((breaks, [len(data)]))
    too_long = np.flatnonzero(stops - starts > MAX_LINE_BYTES)
    if len(too_long):
        line = int(too_long[0]) + 1
        raise InputFileError(
            f"line {line} is longer than {MAX_LINE_BYTES // (1024 * 1024)} MB, which no lab"
            " export produces; the file is damaged or is not a table.",
            file=display_name(path),
            row=line,
            fix="re-export the file; if it was edited, check for a missing line break"
            " or an unclosed quote near that line.",
        )


def _fast(data: bytes | pa.Buffer, delimiter: str, check_utf8: bool = False) -> pa.Table | None:
    """The file as a table of text columns (the header is row 0), or None if pyarrow fails.

    Small blocks let pyarrow parse on every core; a record longer than a block fails, so
    a failure is retried with blocks as large as the longest line allowed. `check_utf8`:
    pyarrow validates the text (else the caller has).
    """
    text_columns = _text_columns(_head(data), delimiter)
    return _pyarrow_csv(data, delimiter, FAST_BLOCK_BYTES, text_columns, check_utf8) or (
        _pyarrow_csv(data, delimiter, MAX_LINE_BYTES, text_columns, check_utf8)
    )


def _head(data: bytes | pa.Buffer) -> bytes:
    """The start of `data` as bytes, up to and past the first line break if there is one
    within MAX_LINE_BYTES (a mapped file is not copied whole for its header)."""
    for size in (FAST_BLOCK_BYTES, MAX_LINE_BYTES):
        head = data[:size]
        if isinstance(head, pa.Buffer):
            head = head.to_pybytes()
        if b"\n" in head or len(head) == len(data):
            break
    return head


def _mapped(path: Path, sniffed: Sniffed) -> pa.Buffer | None:
    """A plain UTF-8 file mapped into memory, without its byte-order mark (None for other
    files). Parsing the map saves reading the file into a bytes object and checking it in
    one thread: pyarrow checks the text while it converts the blocks, on every core."""
    if not _mappable(sniffed) or path.stat().st_size == 0:  # an empty file cannot be mapped
        return None
    data = pa.memory_map(str(path)).read_buffer()
    return data[3:] if data[:3].to_pybytes() == b"\xef\xbb\xbf" else data


# The fast path's text type: large strings are what pandas' "string[pyarrow]" stores, so
# wrapping the columns in pandas (text_series) costs no cast per column.
_TEXT = pa.large_string()


def _text_columns(data: bytes, delimiter: str) -> dict[str, pa.DataType]:
    """Columns pyarrow would infer as text anyway, declared as text up front.

    The header is row 0, so a column whose header cell is not a number, date or boolean
    is text from the first block on; declaring it saves the inference and the cast. Other
    columns (an empty or numeric header cell) keep pyarrow's inference, whose conversions
    (007 -> 7) the reader has always had.
    """
    end = data.find(b"\n")
    header = _pyarrow_csv(data[: len(data) if end < 0 else end + 1], delimiter, FAST_BLOCK_BYTES)
    if header is None:
        return {}
    return {f.name: _TEXT for f in header.schema if f.type == _TEXT}


def _pyarrow_csv(
    data: bytes | pa.Buffer,
    delimiter: str,
    block_size: int,
    column_types: dict[str, pa.DataType] | None = None,
    check_utf8: bool = False,
) -> pa.Table | None:
    try:
        tbl = pacsv.read_csv(
            pa.BufferReader(data),  # zero-copy; a Python file object is read under the GIL
            read_options=pacsv.ReadOptions(block_size=block_size, autogenerate_column_names=True),
            # A quoted line break yields rows of the wrong width, which fail the parse;
            # blank lines stay as rows of empty fields. Every row of a parse that succeeds
            # is then exactly one physical line.
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=column_types or {},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=check_utf8,
            ),
        )
        # autogenerated names + everything as text: cast every column to text (a column
        # pyarrow took for binary fails here when its bytes are not UTF-8)
        return pa.table(
            [tbl.column(name).cast(_TEXT) for name in tbl.column_names], names=tbl.column_names
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _blank_rows(tbl: pa.Table) -> np.ndarray:
    """Rows whose every field is empty (blank lines)."""
    blank = np.ones(tbl.num_rows, dtype=bool)
    for col in tbl.columns:
        blank &= _empty_fields(col)
        if not blank.any():  # the usual case: decided by the first column
            break
    return blank


def _empty_fields(col: pa.ChunkedArray) -> np.ndarray:
    """Per row, whether the large-string field is empty or missing."""
    if col.null_count:
        empty = pc.fill_null(pc.equal(pc.binary_length(col), 0), True)
        return np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
    # equal neighbouring offsets: read straight from the offsets buffers
    parts = [np.zeros(0, dtype=bool)]
    for chunk in col.chunks:
        offsets = np.frombuffer(
            chunk.buffers()[1], dtype=np.int64, count=len(chunk) + 1, offset=chunk.offset * 8
        )
        parts.append(offsets[1:] == offsets[:-1])
    return np.concatenate(parts)


def _first_row(tbl: pa.Table) -> list[str]:
    # an empty header cell above a number column is null; pandas has always printed "<NA>"
    return ["<NA>" if v is None else str(v) for v in (col[0].as_py() for col in tbl.columns)]


def text_series(column: pa.ChunkedArray | pa.Array) -> pd.Series:
    """A pyarrow text column as a pandas "string[pyarrow]" Series, without copying the text."""
    return pd.Series(pd.arrays.ArrowStringArray(column))


def text_array(values: list[str]) -> pd.api.extensions.ExtensionArray:
    """Python strings as a pyarrow text column of dtype STR (None -> missing)."""
    return pd.arrays.ArrowExtensionArray(pa.array(values, type=pa.string()))


def read_delimited(path: Path, sniffed: Sniffed) -> Table:
    raw: bytes | None = None
    data: bytes | pa.Buffer | None = _mapped(path, sniffed)
    tbl, quoted = None, None
    if data is not None:
        with ThreadPoolExecutor(max_workers=1) as side:
            # the scan for quote characters (see _row_lines) runs beside the parse
            scan = side.submit(_has_quote, data)
            tbl = _fast(data, sniffed.delimiter, check_utf8=True)
            quoted = scan.result()
    if data is None or tbl is None:
        raw, repaired = _file_bytes(path, sniffed)
        data, quoted = raw, None
        # the mapped parse already failed on these very bytes, unless they were repaired
        tbl = _fast(raw, sniffed.delimiter) if repaired or not _mappable(sniffed) else None
    if tbl is not None and tbl.num_rows:
        fast = _fast_table(tbl, data, 0, quoted)
        if fast is not None:
            return fast
    if raw is None:
        raw, _ = _file_bytes(path, sniffed)
    return _slow(path, raw, sniffed.delimiter)


def _fast_table(
    tbl: pa.Table, data: bytes | pa.Buffer, line_offset: int, quoted: bool | None = None
) -> Table | None:
    """A successful fast parse of `data` (row 0 the header) as a Table, with blank lines
    dropped; line numbers are those of `data` plus `line_offset`. None when the first row
    is blank (it hides the header: the slow path finds it). `quoted`: whether `data` holds
    a quote character, if known."""
    blank = _blank_rows(tbl)
    if blank[0] or _title_above(tbl):
        return None  # the slow path finds the header
    tbl, line_of_row = _row_lines(tbl, data, quoted)
    header = _unique_header(_first_row(tbl))
    keep = np.flatnonzero(~blank[1:]) + 1
    whole = len(keep) == tbl.num_rows - 1  # then drop the header row without a copy
    body = tbl.slice(1) if whole else tbl.take(pa.array(keep))
    frame = pd.DataFrame(
        {name: text_series(col) for name, col in zip(header, body.columns, strict=True)}
    )
    lines = keep + 1 if line_of_row is None else line_of_row[keep]
    return Table(frame, (lines + line_offset).astype(np.int64))


def _title_above(tbl: pa.Table) -> bool:
    """Whether the first parsed row is a title line above the header (see header_position):
    a spreadsheet saved as CSV pads it with delimiters, so it parses as a header would.
    Or whether a row of units follows the header (see with_units_row). Either way the
    careful path reads the file."""
    head = [list(r.values()) for r in tbl.slice(0, HEADER_SEARCH_ROWS).to_pylist()]
    if header_position(head) > 0:
        return True
    return len(head) > 1 and with_units_row(_unique_header(list(head[0])), head[1]) is not None


def with_units_row(header: list[str], row: list[Any]) -> list[str] | None:
    """The header with each test column's unit, when `row`, the first row below it, is a
    row of units: some exports print them on a line of their own ("", "", "mg/dL",
    "mmol/L"), which makes them wide exports with units in the headers ("Magnesium
    (mg/dL)"). None when `row` is not one: every filled cell must be a unit labinterp
    knows, and some cell must be empty (the patient and date columns have no unit)."""
    cells = ["" if v is None else str(v).strip() for v in row][: len(header)]
    filled = [c for c in cells if c]
    if not filled or len(filled) == len(header) or any(units.lookup(c) is None for c in filled):
        return None
    return [
        f"{name} ({cells[i]})" if i < len(cells) and cells[i] else name
        for i, name in enumerate(header)
    ]


_SCAN_BYTES = 4 * 1024 * 1024  # byte scans go by slices: no file-sized temporary arrays


def _has_quote(data: bytes | pa.Buffer) -> bool:
    if isinstance(data, bytes):
        return b'"' in data
    text = np.frombuffer(data, dtype=np.uint8)
    return any(
        np.any(text[start : start + _SCAN_BYTES] == ord('"'))
        for start in range(0, len(text), _SCAN_BYTES)
    )


def _line_ends(text: np.ndarray) -> int:
    """Line breaks in `text` as pyarrow counts them: "\\n", "\\r\\n" and a lone "\\r"."""
    ends = 0
    for start in range(0, len(text), _SCAN_BYTES):
        part = text[start : start + _SCAN_BYTES]
        # the byte after each (at the very end of the text, one short)
        after = text[start + 1 : start + _SCAN_BYTES + 1]
        lone_cr = part == ord("\r")
        lone_cr[: len(after)] &= after != ord("\n")
        ends += int(np.count_nonzero(part == ord("\n"))) + int(np.count_nonzero(lone_cr))
    return ends


def _row_lines(
    tbl: pa.Table, data: bytes | pa.Buffer, quoted: bool | None = None
) -> tuple[pa.Table, np.ndarray | None]:
    """The 1-based line on which each row of a fast parse starts (None: row i is line
    i + 1), and the table with line breaks inside values written as "\\n".

    pyarrow keeps a line break that is inside a quoted field when the whole record falls
    in one parse block; such a record spans several lines. Without quote characters there
    is none (one scan, the usual case); with them, the line ends of the file are counted
    and, only if they outnumber the rows, each row's lines are counted from its values.
    The slow path writes every line break as "\\n"; the fast one then does the same.
    """
    if not (_has_quote(data) if quoted is None else quoted):
        return tbl, None
    text = np.frombuffer(data, dtype=np.uint8)
    ends = _line_ends(text)
    if len(text) and text[-1] not in (ord("\n"), ord("\r")):
        ends += 1  # the last line has no line break
    if ends == tbl.num_rows:
        return tbl, None
    spans = np.ones(tbl.num_rows, dtype=np.int64)
    columns = []
    for col in tbl.columns:
        if pc.any(pc.match_substring(col, "\r")).as_py():
            col = pc.replace_substring(pc.replace_substring(col, "\r\n", "\n"), "\r", "\n")
        if pc.any(pc.match_substring(col, "\n")).as_py():
            spans += pc.fill_null(pc.count_substring(col, "\n"), 0).to_numpy(zero_copy_only=False)
        columns.append(col)
    starts = np.concatenate(([1], 1 + np.cumsum(spans[:-1])))
    return pa.table(columns, names=tbl.column_names), starts


def _no_header(path: Path) -> InputFileError:
    return InputFileError(
        "the file has no header line.",
        file=display_name(path),
        fix="export with column headers, or pass a mapping file (--mapping).",
    )


def _slow(path: Path, data: bytes, delimiter: str, line_offset: int = 0) -> Table:
    """`data` (UTF-8) read with the standard-library reader, every line break as "\\n";
    line numbers are the lines of `data` plus `line_offset` (a chunk of a larger file)."""
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    _line_too_long(path, data)
    text = data.decode("utf-8", errors="replace")
    csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[list[str]] = []
    lines: list[int] = []
    last_line = 0
    try:
        for record in reader:
            start_line = last_line + 1
            last_line = reader.line_num
            if not record or all(not f.strip() for f in record):
                continue  # blank line
            records.append(record)
            lines.append(start_line + line_offset)
    except csv.Error as exc:
        line = reader.line_num + line_offset
        raise InputFileError(
            f"the table structure breaks near line {line} ({exc}).",
            file=display_name(path),
            row=line,
            fix="check for an unclosed quote near that line and re-export.",
        ) from exc
    if not records:
        raise _no_header(path)
    at = header_position(records[:HEADER_SEARCH_ROWS]) if line_offset == 0 else 0
    header = _unique_header(records[at])
    header_line = lines[at] if at else 1  # 1 also when only blank lines are above it
    records, lines = records[at + 1 :], lines[at + 1 :]
    named = with_units_row(header, records[0]) if records and line_offset == 0 else None
    if named is not None:  # the units row is part of the header, not a result
        header, records, lines = named, records[1:], lines[1:]
    ragged: list[tuple[int, int]] = []
    for i, record in enumerate(records):
        if len(record) != len(header):
            ragged.append((lines[i], len(record)))
            records[i] = (record + [""] * len(header))[: len(header)]
    columns = list(zip(*records, strict=True)) if records else [()] * len(header)
    frame = pd.DataFrame(
        {name: text_array(list(col)) for name, col in zip(header, columns, strict=True)}
    )
    table = Table(frame, np.asarray(lines, dtype=np.int64), header_line)
    table.ragged = ragged  # type: ignore[attr-defined]
    return table


STREAM_BLOCK_BYTES = 16 * 1024 * 1024  # smallest chunk of a file read in batches


def iter_delimited(path: Path, sniffed: Sniffed, batch_rows: int) -> Iterator[Table]:
    """A file in batches of about `batch_rows` records (at least STREAM_BLOCK_BYTES each),
    for inputs larger than memory, gzip-compressed or not.

    The file is read in pieces cut at line breaks; each piece, behind the header line, is
    parsed exactly as `read_delimited` parses a whole file: pyarrow on every core when each
    record is one line, else the standard-library reader (blank lines, ragged rows, quoted
    line breaks, damaged UTF-8), and the line numbers are the file's. A cut never falls
    inside a quoted field (an odd count of quote characters since the last cut means it
    would). Latin-1 pieces are converted to UTF-8 first (a line break is the same byte in
    both), and UTF-16 text as it is read (a spreadsheet's "Unicode text"). Files that fit
    in one piece are read whole.
    """
    if sniffed.encoding not in ("utf-8", "utf-8-sig", "latin-1", "utf-16"):
        yield read_delimited(path, sniffed)
        return
    latin1 = sniffed.encoding == "latin-1"
    with open_binary(path) as fh:
        read = _checked_read(path, fh)
        if sniffed.encoding == "utf-16":  # spreadsheets' "Unicode text": read as UTF-8
            read = _transcoded(read, "utf-16")
        head = read(FAST_BLOCK_BYTES)
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:]
        title = _title_bytes(head, sniffed.delimiter)  # lines above the header, if any
        title_lines = head[:title].count(b"\n")
        head = head[title:]
        header_end = head.find(b"\n") + 1
        header = head[:header_end]
        fields = header.replace(sniffed.delimiter.encode(), b"").replace(b'"', b"").strip()
        size = max(STREAM_BLOCK_BYTES, batch_rows * len(head) // max(head.count(b"\n"), 1))
        rest = head[header_end:] + read(size) if header_end > 0 and fields else b""
        if len(rest) <= size:
            # one piece anyway, or the header is not on the first line: read it whole
            yield read_delimited(path, sniffed)
            return
        names: list[str] | None = None
        line = title_lines + 2  # the line number the next piece starts on
        for piece in _pieces(read, rest, size):
            text = header + piece
            tbl = _chunk(path, sniffed, text.decode("latin-1").encode() if latin1 else text, line)
            tbl.header_line = title_lines + 1 if title else 1
            if names is None:
                names = list(tbl.frame.columns)
            else:  # the same header line, whichever way a piece was parsed
                tbl.frame.columns = names
            yield tbl
            line += _line_ends(np.frombuffer(piece, dtype=np.uint8))


def _title_bytes(head: bytes, delimiter: str) -> int:
    """How many bytes of a file's first block come before its header line: the title block
    of header_position, found among the first non-blank lines (a title line holds no
    quoted line break)."""
    starts: list[int] = []
    rows: list[list[str]] = []
    at = 0
    while len(rows) < HEADER_SEARCH_ROWS:
        end = head.find(b"\n", at)
        if end < 0:
            break
        line = head[at:end].decode("utf-8", errors="replace")
        fields = next(csv.reader([line], delimiter=delimiter), [])
        if any(f.strip() for f in fields):
            starts.append(at)
            rows.append(fields)
        at = end + 1
    found = header_position(rows)
    return starts[found] if found else 0


def _checked_read(path: Path, fh: io.BufferedIOBase) -> Callable[[int], bytes]:
    """`fh.read`, with damage to a compressed file reported as bad input."""

    def read(n: int) -> bytes:
        try:
            return fh.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise DamagedFileError(
                f"the file cannot be decompressed past some point ({exc}).",
                file=display_name(path),
                fix="re-export the file, or decompress it yourself and pass the plain file.",
            ) from exc

    return read


def _transcoded(read: Callable[[int], bytes], encoding: str) -> Callable[[int], bytes]:
    """`read` of a text stream in `encoding`, giving UTF-8 bytes instead: at least `n` a
    call but at the end, as a plain read gives `n` (the callers size their pieces by it).
    A character cut between two reads is completed by the next; bytes that are not text
    in `encoding` become U+FFFD, as in a whole read."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")

    def read_utf8(n: int) -> bytes:
        out = b""
        while len(out) < n:
            block = read(n)
            out += decoder.decode(block, final=not block).encode("utf-8")
            if not block:
                break
        return out

    return read_utf8


def _pieces(read: Callable[[int], bytes], pending: bytes, size: int) -> Iterator[bytes]:
    """`pending` and the rest of the stream `read` in pieces of whole lines, each at least
    `size` bytes but the last, never cut inside a quoted field (see `_cut`)."""
    at_end = False
    while pending:
        cut = _cut(np.frombuffer(pending, dtype=np.uint8), size)
        while cut == len(pending) and not at_end:  # no cut yet: read on
            block = read(size)
            at_end = not block
            pending += block
            cut = _cut(np.frombuffer(pending, dtype=np.uint8), size)
        yield pending[:cut]
        pending = pending[cut:]


def _cut(text: np.ndarray, size: int) -> int:
    """Where the first piece of `text` ends: just after the first line break past `size`
    bytes that is outside quotes; len(text) when there is none (yet)."""
    stop = size
    quotes = 0
    done = 0
    while stop < len(text):
        breaks = np.flatnonzero(text[stop : stop + FAST_BLOCK_BYTES] == ord("\n"))
        if not len(breaks):
            stop += FAST_BLOCK_BYTES
            continue
        stop += int(breaks[0]) + 1
        quotes += int(np.count_nonzero(text[done:stop] == ord('"')))
        done = stop
        # an even count: the break ends a record; an odd one: it is inside a quoted field,
        # unless the quotes are stray (then give up looking after the longest line allowed)
        if quotes % 2 == 0 or stop - size > MAX_LINE_BYTES:
            return stop
    return len(text)


def _chunk(path: Path, sniffed: Sniffed, data: bytes, first_line: int) -> Table:
    """A chunk of a file (header line + whole lines from line `first_line`) as a Table with
    the file's line numbers; the same steps as `read_delimited`."""
    tbl = _fast(data, sniffed.delimiter, check_utf8=True)
    if tbl is None:
        repaired = data.decode("utf-8", errors="replace").encode("utf-8")
        if repaired != data:  # damaged UTF-8, replaced: the fast path may read it now
            data = repaired
            tbl = _fast(data, sniffed.delimiter)
    if tbl is not None and tbl.num_rows:
        fast = _fast_table(tbl, data, first_line - 2)
        if fast is not None:
            return fast
    return _slow(path, data, sniffed.delimiter, first_line - 2)
