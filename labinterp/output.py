"""Tabular output for the CLI: a readable table on a terminal, CSV or JSON when asked."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

FORMATS = ("table", "json", "csv")

# A first character that makes a spreadsheet treat a text cell as a formula (OWASP CSV
# injection): = + - @ tab, carriage return. One pattern for the pandas and Arrow versions.
_FORMULA_START = r"^[=+\-@\t\r]"
_SIGNED_NUMBER = r"^[-+]?[0-9]+(?:\.[0-9]+)?$"  # cannot carry a formula


def iso_seconds(times: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Naive timestamps as ISO 8601 text to the second ("2022-10-14T06:20:00"), nulls kept.

    Arrow's text cast of whole seconds prints "2022-10-14 06:20:00" (with four-digit or
    signed years as strftime does); swapping the space for the "T" gives strftime's
    "%Y-%m-%dT%H:%M:%S" at a third of its cost, and ~6x faster than numpy's
    datetime_as_string.
    """
    if times.type.tz is not None:  # labinterp's tables hold naive times only
        raise ValueError("time zone-aware timestamps are not expected here")
    seconds = times.cast(pa.timestamp("s"), safe=False)  # whole seconds: no fraction printed
    return pc.replace_substring(seconds.cast(pa.string()), " ", "T", max_replacements=1)


def number_text(d: pa.Array, digits: int) -> pa.Array:
    """Numbers as short text, rounded to `digits` decimals ("1.5", "2", not "2.0").

    Not finite: null (no number to print; JSON has no "inf"). Beyond 1e15 rounding to a
    few decimals changes nothing, and Arrow's round overflows near the largest doubles:
    those are printed as they are.
    """
    d = pc.if_else(pc.is_finite(d), d, pa.scalar(None, d.type))
    small = pc.less(pc.abs(d), 1e15)
    # scaled, rounded and divided back: Arrow's own round multiplies by 10**-digits at the
    # end, which is inexact (28.275 came out as 28.275000000000002); a division is correctly
    # rounded, so the shortest text of the result is the rounded number
    scale = 10.0**digits
    rounded = pc.divide(pc.round(pc.multiply(pc.if_else(small, d, 0.0), scale)), scale)
    text = pc.cast(pc.if_else(small, rounded, d), pa.string())
    # Arrow prints whole numbers without ".0"; the regex is only a guard, so run it only
    # where it would change something
    if pc.any(pc.ends_with(text, ".0")).as_py():
        text = pc.replace_substring_regex(text, r"\.0$", "")
    return text


def json_strings(d: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """JSON string literals, escaped without a per-row Python call (control characters
    become spaces)."""
    d = pc.replace_substring(d, "\\", "\\\\")
    d = pc.replace_substring(d, '"', '\\"')
    d = pc.replace_substring_regex(d, r"[\x00-\x1f]", " ")
    quote, nothing = pa.scalar('"', d.type), pa.scalar("", d.type)
    return pc.binary_join_element_wise(quote, d, quote, nothing)


def _nested(df: pd.DataFrame) -> list[str]:
    """The columns holding lists (the evidence records)."""
    return [
        str(name)
        for name, dtype in df.dtypes.items()
        if isinstance(dtype, pd.ArrowDtype) and pa.types.is_list(dtype.pyarrow_dtype)
    ]


def _with_text_evidence(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with nested columns (evidence_json) as JSON text, for CSV."""
    nested = _nested(df)
    if not nested:
        return df
    from labinterp.interpret import evidence_json_text  # the engine's text machinery

    return df.assign(**{name: evidence_json_text(df[name]) for name in nested})


def _json_values(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """One JSON value per row, as text ("null" where missing or not finite)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = json_strings(column)
    elif pa.types.is_timestamp(kind):
        text = json_strings(iso_seconds(column))  # digits, "-", "T", ":": nothing to escape
    elif pa.types.is_floating(kind):
        finite = pc.if_else(pc.is_finite(column), column, pa.scalar(None, kind))
        text = pc.cast(finite, pa.string())
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        text = pc.cast(column, pa.string())
    else:  # nothing else is in labinterp's tables; Python's json for anything new
        text = pa.array([json.dumps(v, ensure_ascii=False) for v in column.to_pylist()])
    return pc.cast(pc.fill_null(text, "null"), pa.large_string())


def neutralize_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with a single quote.

    Only text columns are touched, so numeric columns stay numeric; a text cell that is a
    plain signed number ("-1.5") is left alone because it cannot carry a formula.
    """
    out = df.copy()
    for name in out.columns:
        col = out[name]
        if not (pd.api.types.is_string_dtype(col.dtype) or col.dtype == object):
            continue
        text = col.astype("string")
        risky = text.str.contains(_FORMULA_START, regex=True, na=False) & ~text.str.contains(
            _SIGNED_NUMBER, regex=True, na=False
        )
        if risky.any():
            out[name] = text.mask(risky, "'" + text)
    return out


def neutralize_text_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """`neutralize_formulas` for one Arrow text column (no conversion to pandas)."""
    risky = pc.and_(
        pc.match_substring_regex(column, _FORMULA_START),
        pc.invert(pc.match_substring_regex(column, _SIGNED_NUMBER)),
    )
    if not pc.any(risky).as_py():
        return column
    quote = pa.scalar("'", column.type)
    joined = pc.binary_join_element_wise(quote, column, pa.scalar("", column.type))
    return pc.if_else(risky, joined, column)


def json_records(df: pd.DataFrame) -> pa.Buffer:
    """The rows as a JSON array of objects (UTF-8, ending in a newline), one field per
    line as json.dumps(indent=2) lays them out, a nested value (the evidence records)
    compact on its line.

    Built column by column with Arrow compute: Python's json module with an indent takes
    its pure-Python path, a minute and 8 GB for the findings of a million-row export.
    """
    if df.empty:
        return pa.py_buffer(b"[]\n")
    nested = _nested(df)
    table = pa.Table.from_pandas(df.drop(columns=nested), preserve_index=False)
    text = pa.large_string()
    pieces: list[pa.Scalar | pa.ChunkedArray] = []
    for i, name in enumerate(str(c) for c in df.columns):
        if name in nested:
            from labinterp.interpret import evidence_json_text

            records = pa.chunked_array([pa.array(evidence_json_text(df[name]))])
            values = pc.cast(pc.fill_null(records, "null"), text)
        else:
            values = _json_values(table.column(name))
        head = "  {\n" if i == 0 else ",\n"
        pieces += [pa.scalar(f"{head}    {json.dumps(name, ensure_ascii=False)}: ", text), values]
    rows = pc.binary_join_element_wise(*pieces, pa.scalar("\n  }", text), pa.scalar("", text))
    # the rows joined in Arrow, not as a million Python strings
    one = pa.LargeListArray.from_arrays(pa.array([0, len(rows)], pa.int64()), rows.combine_chunks())
    joined = pc.binary_join(one, pa.scalar(",\n", text))
    whole = pc.binary_join_element_wise(
        pa.scalar("[\n", text), joined, pa.scalar("\n]\n", text), pa.scalar("", text)
    )
    start, end = np.frombuffer(whole.buffers()[1], dtype=np.int64)[whole.offset : whole.offset + 2]
    return whole.buffers()[2].slice(int(start), int(end - start))


def _csv_ready(table: pa.Table) -> pa.Table:
    """Times as ISO text to the second, text cells neutralized; numbers stay numbers."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            column = iso_seconds(column)
        elif pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column = neutralize_text_column(column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def write_csv(table: pa.Table, sink: str | os.PathLike[str] | BinaryIO) -> None:
    """`table` as CSV, written by Arrow (every text cell quoted, missing cells empty)."""
    pacsv.write_csv(_csv_ready(table), sink)


def _write_bytes(stream: TextIO, write: Callable[[Any], None]) -> None:
    """`write(sink)` to the binary stream under `stream` (UTF-8 bytes, no text round trip),
    or through memory for a text-only stream such as io.StringIO."""
    binary = getattr(stream, "buffer", None)
    if binary is not None:
        stream.flush()  # what the text layer holds goes first
        write(binary)
        binary.flush()
    else:
        sink = pa.BufferOutputStream()
        write(sink)
        stream.write(sink.getvalue().to_pybytes().decode("utf-8"))


def write_table(
    df: pd.DataFrame, fmt: str, stream: TextIO | None = None, below: str | None = None
) -> None:
    """`df` in `fmt`. `below`: a column of sentences (a rejected row's detail, which ends
    in its fix) that a terminal table writes whole, wrapped under each row, not cut."""
    stream = stream or sys.stdout
    if fmt == "csv":
        # as the audit writes its CSV files (Arrow's writer: ~15x pandas' to_csv)
        table = pa.Table.from_pandas(_with_text_evidence(df), preserve_index=False)
        _write_bytes(stream, lambda sink: write_csv(table, sink))
    elif fmt == "json":
        records = json_records(df)
        _write_bytes(stream, lambda sink: sink.write(records))
    else:
        stream.write(_text_table(df, below) + "\n")


# A cell longer than this is cut on a terminal (the machine formats keep it whole).
_CELL_WIDTH = 60


# The indent of a sentence written under its row (see _text_table's `below`).
_BELOW_INDENT = "    "


def _texts(column: pd.Series) -> list[str]:
    return ["" if v is None or v is pd.NA or v != v else str(v) for v in column.tolist()]


def _text_table(df: pd.DataFrame, below: str | None = None) -> str:
    """Columns aligned left, two spaces apart, for reading on a terminal; the column
    `below` written whole under each row, wrapped to the terminal's width."""
    if not len(df):
        return "(no rows)"
    shown = [c for c in df.columns if c != below]
    columns = [str(c) for c in shown]
    cells = []
    for c in shown:
        texts = _texts(df[c])
        cells.append([t if len(t) <= _CELL_WIDTH else t[: _CELL_WIDTH - 1] + "…" for t in texts])
    widths = [max([len(name), *map(len, col)]) for name, col in zip(columns, cells, strict=True)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    rows = [line(row) for row in zip(*cells, strict=True)]
    if below is not None and below in df.columns:
        width = max(40, shutil.get_terminal_size(fallback=(100, 24)).columns - 1)
        wrapped: dict[str, str] = {}  # most rows share a few sentences: wrap each once
        for i, text in enumerate(_texts(df[below])):
            if text and text not in wrapped:
                wrapped[text] = textwrap.fill(
                    text,
                    width,
                    initial_indent=_BELOW_INDENT,
                    subsequent_indent=_BELOW_INDENT,
                    break_long_words=False,  # an option or a file name stays whole
                    break_on_hyphens=False,
                )
            if text:
                rows[i] += "\n" + wrapped[text]
    return "\n".join([line(columns), *rows])
