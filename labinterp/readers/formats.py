"""Non-CSV tabular inputs: Excel workbooks, Parquet, SAS transport (.xpt), JSON arrays /
JSON Lines of flat records."""

from __future__ import annotations

import datetime
import gzip
import itertools
import json
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labinterp.errors import DamagedFileError, InputFileError
from labinterp.readers.sniff import HEADER_SEARCH_ROWS, Sniffed, display_name, header_position
from labinterp.readers.table import Table, _unique_header, text_array, with_units_row


def _record_text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else _text(v)


def _as_text_frame(records: dict[str, list[Any]]) -> pd.DataFrame:
    out = {}
    for name, values in records.items():
        out[name] = text_array([_record_text(v) for v in values])
    return pd.DataFrame(out)


class JsonNumber(float):
    """A JSON number with a fraction or exponent, as a float that keeps its text: "4.20"
    is the number 4.2 to every reader of the document (ranges, ages, validators), and
    "4.20" to the RAW table, whose value_raw is the exact decimal as printed (its last
    decimal says how precisely the lab reported it; see readers.duplicates)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self) -> tuple[type[JsonNumber], tuple[str]]:
        return (JsonNumber, (self.text,))


def number_text(v: Any) -> str:
    """A JSON number as the document printed it ("4.20", "1E-22"); "7.0" for a float 7."""
    if isinstance(v, JsonNumber):
        return v.text
    if isinstance(v, float) and v.is_integer():
        return repr(v)
    return str(v)


def _text(v: Any) -> str:
    if isinstance(v, JsonNumber):
        return v.text
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return repr(v)  # keep "7.0" as the file's number, the normalizer handles it
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def read_xlsx(path: Path, sheet: int = 0) -> Table:
    """A worksheet (by its position) of a workbook exported like the CSVs (header in its
    first row that holds anything, or below a title block: see table.header_position)."""
    (tbl,) = iter_xlsx(path, None, sheet)
    return tbl


def xlsx_sheet_names(path: Path) -> list[str]:
    """The names of a workbook's sheets (worksheets and chart sheets), in order."""
    from python_calamine import CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises several types for damaged files
        raise _unopenable_workbook(path, exc) from exc
    try:
        return list(workbook.sheet_names)
    finally:
        workbook.close()


def iter_xlsx(path: Path, batch_rows: int | None, sheet: int = 0) -> Generator[Table]:
    """`read_xlsx` in batches of `batch_rows` rows (None: one table), each row numbered by
    its row in the sheet. python-calamine reads the sheet ~18x faster than openpyxl did
    (200,000 rows: 1.7 s against 30.5 s) but holds it whole; a sheet has at most 1,048,576
    rows (a full one: ~1.2 GB at the audit's peak)."""

    from python_calamine import CalamineWorkbook, SheetTypeEnum

    try:
        workbook = CalamineWorkbook.from_path(str(path))
        name = workbook.sheet_names[sheet]
        chart = workbook.sheets_metadata[sheet].typ == SheetTypeEnum.ChartSheet
        found = workbook.get_sheet_by_index(sheet)
        cells = found.iter_rows()  # blank rows included
        merged = found.merged_cell_ranges or []
    except Exception as exc:  # calamine raises several types for damaged files
        raise _unopenable_workbook(path, exc) from exc
    try:
        if chart:  # calamine reads a chart sheet as an empty one
            raise InputFileError(
                f"the sheet '{name}' is a chart, not a table.",
                file=display_name(path),
                fix="put the results on a worksheet with a header row.",
            )
        yield from _sheet_tables(path, cells, batch_rows, name, _group_label_rows(merged))
    finally:
        workbook.close()


def _group_label_rows(merged: list[tuple[tuple[int, int], tuple[int, int]]]) -> set[int]:
    """The sheet rows (1-based) holding a label merged across columns of its row only: a
    group header ("Patient" over MRN and Name) above the row that names the columns."""
    return {top + 1 for (top, left), (bottom, right) in merged if top == bottom and right > left}


def xlsx_unsaved_formulas(path: Path, sheet: int) -> list[tuple[int, int]]:
    """(row, column), both 1-based, of the sheet's formula cells saved without the value
    they compute: programs that write workbooks without computing them (openpyxl, some
    report tools) leave the value out, and every reader then sees an empty cell. [] when
    the workbook's parts cannot be found (calamine read it: nothing is known to be lost)."""
    import xml.etree.ElementTree as ET
    import zipfile

    rel = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
    try:
        with zipfile.ZipFile(path) as z:
            sheets = [
                e
                for e in ET.fromstring(z.read("xl/workbook.xml")).iter()
                if e.tag.endswith("}sheet")
            ]
            rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
            targets = {e.get("Id"): e.get("Target", "") for e in rels}
            target = targets[sheets[sheet].get(rel)]
            part = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
            found = []
            with z.open(part) as fh:
                carry = b""
                while chunk := fh.read(1 << 22):
                    text = carry + chunk
                    cut = text.rfind(b"</c>") + 4  # whole cells only: the rest waits
                    if cut < 4:
                        carry = text
                        continue
                    if b"<f" in text[:cut]:
                        found += [
                            (int(m[2]), _column_number(m[1]))
                            for m in _UNSAVED_FORMULA.finditer(text[:cut])
                        ]
                    carry = text[cut:]
            return found
    except (KeyError, IndexError, ET.ParseError, zipfile.BadZipFile, ValueError):
        return []


# a formula cell without its value: <c r="D4"><f>3.5-0.4</f><v /></c>, or no <v> at all
_UNSAVED_FORMULA = re.compile(
    rb'<c r="([A-Z]+)(\d+)"[^>]*>\s*<f\b(?:[^>]*/>|[^>]*>[^<]*</f>)'
    rb"\s*(?:<v\s*/>|<v>\s*</v>)?\s*</c>"
)


def _column_number(letters: bytes) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ch - ord("A") + 1
    return n


def _unopenable_workbook(path: Path, exc: Exception) -> InputFileError:
    return InputFileError(
        f"the workbook cannot be opened ({type(exc).__name__}).",
        file=display_name(path),
        fix="open it in a spreadsheet program and save it again as .xlsx or CSV.",
    )


def _sheet_tables(
    path: Path,
    cells: Iterator[list[Any]],
    batch_rows: int | None,
    name: str,
    group_rows: set[int],
) -> Iterator[Table]:
    filled = (
        (excel_row, values)
        for excel_row, values in enumerate(cells, start=1)
        if not all(v is None or str(v).strip() == "" for v in values)
    )
    # the header is the first row as wide as the table: a title block may sit above it
    first = list(itertools.islice(filled, HEADER_SEARCH_ROWS))
    if not first:
        raise InputFileError(
            f"the worksheet '{name}' is empty.",
            file=display_name(path),
            fix="put the results on a sheet with a header row.",
        )
    # Merged group labels above the column names ("Patient" over MRN and Name) fill a few
    # cells and would be taken for a narrow header: they are skipped like a title. A row
    # filling more than half the next row's cells is the header itself, one name merged.
    groups = 0
    while (
        groups + 1 < len(first)
        and first[groups][0] in group_rows
        and 2 * _filled(first[groups][1]) <= _filled(first[groups + 1][1])
    ):
        groups += 1
    at = groups + header_position([values for _, values in first[groups:]])
    header_line, header_values = first[at]
    header_line = header_line if at else 1  # 1 also when only blank rows are above it
    header = _unique_header(["" if v is None else str(v) for v in header_values])
    below = first[at + 1 :]
    named = with_units_row(header, list(below[0][1])) if below else None
    if named is not None:  # a row of units under the header is part of it, not a result
        header, below = named, below[1:]
    rows: list[list[Any]] = []
    lines: list[int] = []
    yielded = False
    for excel_row, values in itertools.chain(below, filled):
        cells_of_row = list(values)[: len(header)] + [None] * max(0, len(header) - len(values))
        rows.append([_cell(v) for v in cells_of_row])
        lines.append(excel_row)
        if batch_rows is not None and len(rows) >= batch_rows:
            yield _sheet_table(header, rows, lines, header_line)
            rows, lines, yielded = [], [], True
    if rows or not yielded:  # a header without rows: one empty table, with the columns
        yield _sheet_table(header, rows, lines, header_line)


def _filled(values: list[Any]) -> int:
    return sum(1 for v in values if v is not None and str(v).strip())


def _sheet_table(
    header: list[str], rows: list[list[Any]], lines: list[int], header_line: int
) -> Table:
    columns = {name: [r[i] for r in rows] for i, name in enumerate(header)}
    return Table(_as_text_frame(columns), np.asarray(lines, dtype=np.int64), header_line)


def _cell(v: Any) -> Any:
    """A cell as the reader's text; dates and times in ISO form ("2024-03-01 08:30:00",
    "2024-03-01", "08:30:00"). A whole number is the integer a spreadsheet shows
    (Excel stores every number as a float: an item id 50960 must not read "50960.0")."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return int(v)
    # datetime is a subclass of date, so it is tested first; a time-only cell (a separate
    # "collection time" column) is a datetime.time, whose isoformat takes no separator.
    if isinstance(v, datetime.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
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
    first_row = 1
    try:
        source = pq.ParquetFile(path)
        for batch in source.iter_batches(batch_size=batch_rows):
            yield _parquet_table(pa.Table.from_batches([batch]), first_row)
            first_row += batch.num_rows
        if first_row == 1:  # no rows: still one (empty) batch, with the columns
            yield _parquet_table(source.schema_arrow.empty_table(), 1)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable_parquet(path, exc, rows_read=first_row > 1) from exc


_PARQUET_MAGIC = b"PAR1"


def _unreadable_parquet(path: Path, exc: Exception, rows_read: bool = False) -> InputFileError:
    """A Parquet file that fails to read. One that starts as Parquet does (or broke after
    rows were read) is damaged, most often copied or written only in part, and is never
    skipped from a folder; any other file is simply not Parquet."""
    try:
        with path.open("rb") as fh:
            starts_as_parquet = fh.read(len(_PARQUET_MAGIC)) == _PARQUET_MAGIC
    except OSError:
        starts_as_parquet = False
    damaged = rows_read or starts_as_parquet
    return (DamagedFileError if damaged else InputFileError)(
        f"the Parquet file cannot be read ({exc}).",
        file=display_name(path),
        fix="copy or export it again in full." if damaged else "re-export it.",
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


def read_xpt(path: Path) -> Table:
    """A SAS transport file (XPORT, version 5 or 8: the format of CDISC SDTM submissions)."""
    (tbl,) = iter_xpt(path, None)
    return tbl


def iter_xpt(path: Path, batch_rows: int | None) -> Iterator[Table]:
    """`read_xpt` in batches of `batch_rows` observations (None: one table), each row
    numbered by its observation number. Read with pyreadstat, which turns values with a
    SAS date, time or datetime format into dates and times (SAS stores them as numbers of
    days or seconds since 1960)."""
    import pyreadstat

    first_row = 1
    try:
        with _uncompressed(path) as plain:
            if batch_rows is None:
                frame, _ = pyreadstat.read_xport(str(plain))
                chunks: Iterable[tuple[pd.DataFrame, Any]] = [(frame, None)]
            else:
                chunks = pyreadstat.read_file_in_chunks(
                    pyreadstat.read_xport, str(plain), chunksize=batch_rows
                )
            for frame, _ in chunks:
                yield _xpt_table(frame, first_row)
                first_row += len(frame)
    except (pyreadstat.PyreadstatError, pyreadstat._readstat_parser.ReadstatError) as exc:
        raise InputFileError(
            f"the SAS transport file cannot be read ({exc}).",
            file=display_name(path),
            fix="write it out again as .xpt (version 5 or 8), or export the data as CSV.",
        ) from exc


@contextmanager
def _uncompressed(path: Path) -> Iterator[Path]:
    """`path` itself, or for a gzip-compressed file a temporary plain copy (pyreadstat reads
    files by name), removed afterwards."""
    if path.suffix != ".gz":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="labinterp-") as tmp:
        plain = Path(tmp) / path.stem
        with gzip.open(path, "rb") as src, plain.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        yield plain


def _xpt_table(frame: pd.DataFrame, first_row: int) -> Table:
    """SAS values as the text the reader maps and normalizes: numbers as written, dates and
    times in ISO form, missing values empty."""

    def text(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
            return ""
        if isinstance(value, datetime.datetime):
            return value.isoformat(sep=" ")
        if isinstance(value, (datetime.date, datetime.time)):
            return value.isoformat()
        if isinstance(value, float):
            return repr(value)
        return str(value)

    columns = _unique_header([str(c) for c in frame.columns])
    out = pd.DataFrame(
        {
            name: text_array([text(v) for v in frame.iloc[:, i].tolist()])
            for i, name in enumerate(columns)
        }
    )
    return Table(out, np.arange(first_row, first_row + len(out), dtype=np.int64))


def load_json(path: Path, sniffed: Sniffed) -> Any:
    """The parsed document, or for NDJSON a list of (line number, parsed line)."""
    if sniffed.kind == "ndjson":
        return list(iter_ndjson(path, sniffed))
    with _json_errors(path, sniffed):
        opener = gzip.open if sniffed.compressed else open
        with opener(path, "rt", encoding=sniffed.encoding) as fh:
            return _json_value(path, fh.read(), None)


def iter_ndjson(
    path: Path, sniffed: Sniffed, wanted: Callable[[str], bool] | None = None
) -> Iterator[tuple[int, Any]]:
    """(line number, parsed line) for each line of an NDJSON file that is not blank, read
    one line at a time; `wanted(text)` picks the lines to parse (the others are skipped)."""
    with _json_errors(path, sniffed):
        opener = gzip.open if sniffed.compressed else open
        with opener(path, "rt", encoding=sniffed.encoding) as fh:
            parsed = False  # a line was JSON: the file is an export, a bad line is damage
            for i, line in enumerate(fh, start=1):
                if line.strip() and (wanted is None or wanted(line)):
                    try:
                        value = _json_value(path, line, i)
                    except InputFileError as exc:
                        if not parsed:
                            raise
                        raise DamagedFileError(
                            exc.problem, file=exc.file, row=i, fix=exc.fix
                        ) from exc
                    parsed = True
                    yield i, value


@contextmanager
def _json_errors(path: Path, sniffed: Sniffed) -> Iterator[None]:
    """Damaged text or compression met while reading a JSON file, as InputFileError."""
    try:
        yield
    except UnicodeDecodeError as exc:
        # the encoding was guessed from the start of the file; a damaged byte further on
        # would change a value if it were replaced, so the file is refused instead
        raise DamagedFileError(
            f"the file is not valid {sniffed.encoding} text beyond its start (a damaged byte).",
            file=display_name(path),
            fix="re-export the file as UTF-8.",
        ) from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # damaged past the sniffed start
        raise DamagedFileError(
            f"the file cannot be decompressed past some point ({exc}).",
            file=display_name(path),
            fix="re-export the file, or decompress it yourself and pass the plain file.",
        ) from exc


_BROKEN_OFF = re.compile(r"[A-Za-z0-9.+\-]*")


def _json_value(path: Path, text: str, line: int | None) -> Any:
    """`text` parsed; `line` is the NDJSON line it came from (None for a whole document).

    A whole document that stops in the middle (a copy or download cut short), or a FHIR
    one that is malformed, is a damaged export (DamagedFileError: never skipped in a
    folder); any other malformed document may be a file that is not an export at all."""
    try:
        return json.loads(text, parse_float=JsonNumber)
    except json.JSONDecodeError as exc:
        # cut short: the parser stopped in a string that never closes, or at a last token
        # that the end of the text broke off ("", "tr", "1.", "-1.2e")
        cut_short = line is None and (
            exc.msg.startswith("Unterminated string")
            or bool(_BROKEN_OFF.fullmatch(text[exc.pos :].rstrip()))
        )
        # (an NDJSON line: iter_ndjson tells a damaged file from one that is not an export)
        damaged = line is None and (cut_short or '"resourceType"' in text[:4096])
        raise (DamagedFileError if damaged else InputFileError)(
            f"the JSON {'ends in the middle' if cut_short else 'is malformed'} ({exc.msg}).",
            file=display_name(path),
            row=exc.lineno if line is None else line,
            fix="re-export the file; JSON cannot be repaired by hand reliably.",
        ) from exc
    except RecursionError as exc:  # e.g. thousands of "[": Python's parser recurses per level
        raise InputFileError(
            "the JSON is nested too deeply to read (too many levels of [ or { inside each other).",
            file=display_name(path),
            row=line,
            fix="re-export the file; a lab export is never nested this deeply.",
        ) from exc
    except ValueError as exc:
        # the only other error json raises: an integer longer than Python converts
        raise InputFileError(
            f"the JSON holds a number with more than {sys.get_int_max_str_digits()} digits.",
            file=display_name(path),
            row=line,
            fix="re-export the file; a lab value never has that many digits.",
        ) from exc


def records_table(path: Path, numbered: list[tuple[int, Any]]) -> Table:
    """Flat JSON objects (one per result) into a text table."""
    return _records_table(_record_names(path, numbered), numbered)


def iter_records(path: Path, sniffed: Sniffed, batch_rows: int) -> Iterator[Table]:
    """JSON Lines of flat records in batches of `batch_rows` lines, for inputs larger than
    memory. A first pass finds every field any line has (and refuses a line that is not a
    record, before any row is handed on), a second reads the batches."""
    names = _record_names(path, iter_ndjson(path, sniffed))
    batch: list[tuple[int, Any]] = []
    for numbered in iter_ndjson(path, sniffed):
        batch.append(numbered)
        if len(batch) >= batch_rows:
            yield _records_table(names, batch)
            batch = []
    if batch:
        yield _records_table(names, batch)


def _record_names(path: Path, numbered: Iterable[tuple[int, Any]]) -> list[str]:
    """Every field of the records, in order of first appearance; refuses anything that is
    not a list of flat records."""
    names: list[str] = []
    seen: set[str] = set()
    for _, rec in numbered:
        if not isinstance(rec, dict):
            raise InputFileError(
                "the JSON is not a list of flat records or FHIR resources.",
                file=display_name(path),
                fix="export lab results as CSV, or as FHIR Observations.",
            )
        for key in rec:
            if key not in seen:
                seen.add(key)
                names.append(key)
    if not names:
        raise InputFileError(
            "the JSON holds no records.", file=display_name(path), fix="export the results again."
        )
    return names


def _records_table(names: list[str], numbered: list[tuple[int, Any]]) -> Table:
    columns = {name: [rec.get(name) for _, rec in numbered] for name in names}
    return Table(_as_text_frame(columns), np.asarray([n for n, _ in numbered], dtype=np.int64))
