"""Non-CSV tabular inputs: Excel workbooks, Parquet, JSON arrays / JSON Lines of flat records."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labinterp.errors import InputFileError
from labinterp.readers.sniff import Sniffed, display_name
from labinterp.readers.table import Table, _unique_header, text_array


def _record_text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else _text(v)


def _as_text_frame(records: dict[str, list[Any]]) -> pd.DataFrame:
    out = {}
    for name, values in records.items():
        out[name] = text_array([_record_text(v) for v in values])
    return pd.DataFrame(out)


def _text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return repr(v)  # keep "7.0" as the file's number, the normalizer handles it
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def read_xlsx(path: Path) -> Table:
    """First worksheet of a workbook exported like the CSVs (header in row 1)."""
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for damaged files
        raise InputFileError(
            f"the workbook cannot be opened ({type(exc).__name__}).",
            file=display_name(path),
            fix="open it in a spreadsheet program and save it again as .xlsx or CSV.",
        ) from exc
    ws = wb.worksheets[0]
    header: list[str] | None = None
    rows: list[list[Any]] = []
    lines: list[int] = []
    for excel_row, values in enumerate(ws.iter_rows(values_only=True), start=1):
        if values is None or all(v is None or str(v).strip() == "" for v in values):
            continue
        if header is None:
            header = _unique_header(["" if v is None else str(v) for v in values])
            continue
        cells = list(values)[: len(header)] + [None] * max(0, len(header) - len(values))
        rows.append([_cell(v) for v in cells])
        lines.append(excel_row)
    wb.close()
    if header is None:
        raise InputFileError(
            "the first worksheet is empty.",
            file=display_name(path),
            fix="put the results on the first sheet with a header row.",
        )
    columns = {name: [r[i] for r in rows] for i, name in enumerate(header)}
    return Table(_as_text_frame(columns), np.asarray(lines, dtype=np.int64))


def _cell(v: Any) -> Any:
    if hasattr(v, "isoformat"):
        return v.isoformat(sep=" ") if hasattr(v, "hour") else v.isoformat()
    return v


def read_parquet(path: Path) -> Table:
    try:
        tbl = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable_parquet(path, exc) from exc
    return _parquet_table(tbl, 1)


def iter_parquet(path: Path, batch_rows: int) -> Iterator[Table]:
    """A Parquet file in batches of `batch_rows` rows (the audit, for inputs larger than
    memory); rows are numbered through the file as `read_parquet` numbers them."""
    try:
        source = pq.ParquetFile(path)
        first_row = 1
        for batch in source.iter_batches(batch_size=batch_rows):
            yield _parquet_table(pa.Table.from_batches([batch]), first_row)
            first_row += batch.num_rows
        if first_row == 1:  # no rows: still one (empty) batch, with the columns
            yield _parquet_table(source.schema_arrow.empty_table(), 1)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable_parquet(path, exc) from exc


def _unreadable_parquet(path: Path, exc: Exception) -> InputFileError:
    return InputFileError(
        f"the Parquet file cannot be read ({exc}).",
        file=display_name(path),
        fix="re-export it.",
    )


def _parquet_table(tbl: pa.Table, first_row: int) -> Table:
    """Parquet rows as text columns (what the reader maps and normalizes), numbered from
    `first_row`."""
    frame = pd.DataFrame(
        {
            name: text_array(_parquet_text(tbl.column(i)))
            for i, name in enumerate(_unique_header(tbl.column_names))
        }
    )
    return Table(frame, np.arange(first_row, first_row + len(frame), dtype=np.int64))


def _parquet_text(col: pa.ChunkedArray) -> list[str]:
    if pa.types.is_timestamp(col.type):
        return [("" if v is None else v.isoformat(sep=" ")) for v in col.to_pylist()]
    if pa.types.is_floating(col.type):
        # float32 storage prints 1.8 as 1.7999999523162842; the normalizer rounds it
        values = col.to_numpy(zero_copy_only=False)
        return ["" if np.isnan(v) else repr(float(v)) for v in values]
    return ["" if v is None else str(v) for v in col.to_pylist()]


def load_json(path: Path, sniffed: Sniffed) -> Any:
    opener = gzip.open if sniffed.compressed else open
    try:
        with opener(path, "rt", encoding=sniffed.encoding) as fh:
            if sniffed.kind == "ndjson":
                out = []
                for i, line in enumerate(fh, start=1):
                    if line.strip():
                        out.append((i, json.loads(line)))
                return out
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"the JSON is malformed ({exc.msg}).",
            file=display_name(path),
            row=exc.lineno,
            fix="re-export the file; JSON cannot be repaired by hand reliably.",
        ) from exc


def records_table(path: Path, numbered: list[tuple[int, dict[str, Any]]]) -> Table:
    """Flat JSON objects (one per result) into a text table."""
    names: list[str] = []
    seen: set[str] = set()
    for _, rec in numbered:
        for key in rec:
            if key not in seen:
                seen.add(key)
                names.append(key)
    if not names:
        raise InputFileError(
            "the JSON holds no records.", file=display_name(path), fix="export the results again."
        )
    columns = {name: [rec.get(name) for _, rec in numbered] for name in names}
    return Table(_as_text_frame(columns), np.asarray([n for n, _ in numbered], dtype=np.int64))
