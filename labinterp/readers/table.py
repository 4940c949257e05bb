"""Read a delimited text file into a frame of text columns, keeping each row's line number.

The fast path is pyarrow's multi-threaded CSV reader. It cannot tell line numbers, so it is
used only when every record is exactly one line (no blank lines, no ragged rows, no quoted
line breaks); otherwise the standard-library reader, which tracks lines, takes over.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from labinterp.errors import InputFileError
from labinterp.readers.sniff import Sniffed, display_name, open_binary

MAX_LINE_BYTES = 64 * 1024 * 1024  # longer lines are damage, not data
FAST_BLOCK_BYTES = 1024 * 1024  # pyarrow's default: enough blocks to keep every core busy
STR = pd.ArrowDtype(pa.string())


@dataclass
class Table:
    frame: pd.DataFrame  # original header names, all text (pyarrow strings)
    source_row: np.ndarray  # 1-based physical line of each record


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
    """Whether `_fast_mapped` tries the file."""
    return not sniffed.compressed and sniffed.encoding in ("utf-8", "utf-8-sig")


def _file_bytes(path: Path, sniffed: Sniffed) -> tuple[bytes, bool]:
    """The file as UTF-8 without a byte-order mark, and whether bytes had to be changed
    (transcoded, or damaged UTF-8 replaced) to make it so."""
    with open_binary(path) as fh:
        data = fh.read()
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


def _fast_mapped(path: Path, sniffed: Sniffed) -> pa.Table | None:
    """`_fast` on the file mapped into memory, for a plain UTF-8 file; None if it cannot.

    Saves reading the file into a bytes object and checking it in one thread: pyarrow
    checks the text while it converts the blocks, on every core.
    """
    if not _mappable(sniffed) or path.stat().st_size == 0:  # an empty file cannot be mapped
        return None
    data = pa.memory_map(str(path)).read_buffer()
    if data[:3].to_pybytes() == b"\xef\xbb\xbf":
        data = data[3:]
    return _fast(data, sniffed.delimiter, check_utf8=True)


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
    data: bytes | None = None
    tbl = _fast_mapped(path, sniffed)
    if tbl is None:
        data, repaired = _file_bytes(path, sniffed)
        # the mapped parse already failed on these very bytes, unless they were repaired
        tbl = _fast(data, sniffed.delimiter) if repaired or not _mappable(sniffed) else None
    if tbl is not None and tbl.num_rows:
        # every row of the fast parse is one physical line, blank lines included (as rows
        # of empty fields), so row i is line i + 1; blank lines are then dropped
        blank = _blank_rows(tbl)
        if not blank[0]:  # a blank first line hides the header: the slow path finds it
            header = _unique_header(_first_row(tbl))
            keep = np.flatnonzero(~blank[1:]) + 1
            whole = len(keep) == tbl.num_rows - 1  # then drop the header row without a copy
            body = tbl.slice(1) if whole else tbl.take(pa.array(keep))
            frame = pd.DataFrame(
                {name: text_series(col) for name, col in zip(header, body.columns, strict=True)}
            )
            return Table(frame, (keep + 1).astype(np.int64))
    if data is None:
        data, _ = _file_bytes(path, sniffed)
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    _line_too_long(path, data)
    return _slow(path, data, sniffed.delimiter)


def _no_header(path: Path) -> InputFileError:
    return InputFileError(
        "the file has no header line.",
        file=display_name(path),
        fix="export with column headers, or pass a mapping file (--mapping).",
    )


def _slow(path: Path, data: bytes, delimiter: str) -> Table:
    text = data.decode("utf-8", errors="replace")
    csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    records: list[list[str]] = []
    lines: list[int] = []
    ragged: list[tuple[int, int]] = []
    last_line = 0
    try:
        for record in reader:
            start_line = last_line + 1
            last_line = reader.line_num
            if not record or all(not f.strip() for f in record):
                continue  # blank line
            if header is None:
                header = _unique_header(record)
                continue
            if len(record) != len(header):
                ragged.append((start_line, len(record)))
                record = (record + [""] * len(header))[: len(header)]
            records.append(record)
            lines.append(start_line)
    except csv.Error as exc:
        raise InputFileError(
            f"the table structure breaks near line {reader.line_num} ({exc}).",
            file=display_name(path),
            row=reader.line_num,
            fix="check for an unclosed quote near that line and re-export.",
        ) from exc
    if header is None:
        raise _no_header(path)
    columns = list(zip(*records, strict=True)) if records else [()] * len(header)
    frame = pd.DataFrame(
        {name: text_array(list(col)) for name, col in zip(header, columns, strict=True)}
    )
    table = Table(frame, np.asarray(lines, dtype=np.int64))
    table.ragged = ragged  # type: ignore[attr-defined]
    return table


_HEADER_SPLIT = re.compile(r"\s+")


STREAM_BLOCK_BYTES = 16 * 1024 * 1024  # pyarrow block per streamed read; batches gather blocks


def iter_delimited(path: Path, sniffed: Sniffed, batch_rows: int) -> Iterator[Table]:
    """Stream a large one-line-per-record file in batches of about `batch_rows` rows.

    Used by the audit for inputs larger than memory. Files that need the slow path
    (blank lines, ragged rows) are small in practice and are read whole.
    """
    if sniffed.encoding not in ("utf-8", "utf-8-sig") or sniffed.compressed:
        yield read_delimited(path, sniffed)
        return
    with open(path, "rb") as fh:
        head = fh.read(PROBE)
    if b"\n\n" in head.replace(b"\r\n", b"\n"):
        yield read_delimited(path, sniffed)
        return
    opts = pacsv.ReadOptions(block_size=STREAM_BLOCK_BYTES, column_names=None)
    try:
        reader = pacsv.open_csv(
            str(path),
            read_options=opts,
            parse_options=pacsv.ParseOptions(delimiter=sniffed.delimiter),
            convert_options=pacsv.ConvertOptions(
                strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid:
        yield read_delimited(path, sniffed)
        return
    names = _unique_header(reader.schema.names)
    schema = pa.schema([(n, pa.string()) for n in reader.schema.names])
    reader.close()
    reader = pacsv.open_csv(
        str(path),
        read_options=opts,
        parse_options=pacsv.ParseOptions(delimiter=sniffed.delimiter),
        convert_options=pacsv.ConvertOptions(
            column_types=schema, strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    next_row = 2
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in reader:
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= batch_rows:
            yield _table_from_batches(pending, names, next_row)
            next_row += pending_rows
            pending, pending_rows = [], 0
    if pending or next_row == 2:
        yield _table_from_batches(pending, names, next_row)


PROBE = 1024 * 1024


def _table_from_batches(batches: list[pa.RecordBatch], names: list[str], first_row: int) -> Table:
    if batches:
        tbl = pa.Table.from_batches(batches)
        frame = tbl.to_pandas(types_mapper=pd.ArrowDtype)
    else:
        frame = pd.DataFrame({n: text_array([]) for n in names})
    frame.columns = names
    rows = np.arange(first_row, first_row + len(frame), dtype=np.int64)
    return Table(frame, rows)
