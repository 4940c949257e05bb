"""HL7 v2 result messages (ORU^R01, OUL^R22) -> RAW rows, one per OBX segment.

Lab systems and analyzers send results as HL7 v2: one segment per line, fields split by
the separator the MSH segment declares (`|`), components by `^`. A message names its
patient (PID), its orders (OBR), each with its results (OBX, with comments in the NTE
segments that follow) and the specimen they were measured on (SPM, after the results in an
ORU^R01 order, before the orders in OUL^R22; OBR-15 in HL7 v2.3). This module only
flattens those segments into the RAW fields the other formats fill; units, values, ranges
and dates are read by the same normalizer as every other export.

Each OBX is one input row; its `source_row` is the segment's number in the file (its line,
whether segments end in CR, LF or CRLF). An OBX whose result status (OBX-11) says it holds
no result to interpret (deleted, wrong, cannot be obtained, pending) is rejected with reason
`hl7_status`, like a FHIR Observation entered in error. The others keep their status, so
that one the lab later replaced (by a correction, or a preliminary result by the final one)
is rejected as `superseded` when the reader looks for repeats.

Messages are read one after the other (`iter_hl7`), so a file of any size is read in
batches of whole messages.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from labinterp.schema import raw_from_records

# Segments that open a message, or a batch or file of messages (HL7 v2.5.1 sec. 2.10).
MESSAGE_HEADERS = ("MSH", "FHS", "BHS")

# OBX-11 result statuses (HL7 table 0085) whose OBX holds no result to interpret.
_NO_RESULT = {
    "D": "the result was deleted (result status D); nothing to fix",
    "W": "the result was reported in error (result status W); nothing to fix",
    "X": "the result could not be obtained (result status X); nothing to fix",
    "I": "the result is pending (result status I); read its final result when it is sent",
    "N": "the test was not asked for (result status N); nothing to fix",
}
_LOINC_SYSTEMS = {"LN", "LOINC"}
# HL7 timestamp: YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]
_TIMESTAMP = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?$"
)


# MSH-18 character sets (HL7 table 0211) -> Python codecs, for hexadecimal escapes (\Xhh..\)
_CHARSETS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "ISO IR100": "latin-1",
    "UNICODE": "utf-16-be",
    "UNICODE UTF-16": "utf-16-be",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
}


def _codec(charset: str) -> str:
    """The codec of an MSH-18 character set ("8859/1" -> "iso8859-1"); UTF-8 when the
    message names none or one this table does not know."""
    name = charset.strip().upper()
    codec = "iso8859-" + name[5:] if name.startswith("8859/") else _CHARSETS.get(name, "utf-8")
    try:
        return codecs.lookup(codec).name
    except LookupError:  # "8859/99"
        return "utf-8"


@dataclass
class _Encoding:
    """The delimiters a message declares in MSH-1 and MSH-2, and its character set (MSH-18)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    codec: str = "utf-8"

    @classmethod
    def from_header(cls, segment: str) -> _Encoding:
        if len(segment) < 4:
            return cls()
        sep = segment[3]
        chars = segment[4:].split(sep, 1)[0]
        found = list(chars[:4])
        found += ["^", "~", "\\", "&"][len(found) :]  # the defaults for those not declared
        return cls(sep, *found) if sep.strip() else cls()

    def unescape(self, text: str) -> str:
        """Text with HL7 escape sequences turned back into characters.

        The delimiters (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\) and hexadecimal characters (\\Xhh..\\, in
        the message's character set) are decoded; a formatting command (\\.br\\ line break,
        \\.sp\\, \\.in+4\\...) becomes a space and highlighting (\\H\\ \\N\\) nothing. Locally
        defined escapes (\\Z..\\) stay as they are: the unit table knows the one labs use for
        the micro sign.
        """
        e = self.escape
        if e not in text:
            return text
        pattern = re.escape(e) + r"([FSTREHN]|X[0-9A-Fa-f]+|\.[a-z]{2}[+-]?\d*)" + re.escape(e)

        def decode(m: re.Match[str]) -> str:
            code = m.group(1)
            simple = {
                "F": self.field,
                "S": self.component,
                "T": self.subcomponent,
                "R": self.repetition,
                "E": self.escape,
                "H": "",
                "N": "",
            }
            if code in simple:
                return simple[code]
            if code.startswith("."):
                return " "
            try:
                data = bytes.fromhex(code[1:])
            except ValueError:
                return m.group(0)
            try:
                return data.decode(self.codec)
            except UnicodeDecodeError:  # a lone byte such as B5 (micro sign) is Latin-1
                return data.decode("latin-1")

        return re.sub(pattern, decode, text)


class _Segment:
    """One segment's fields: `get(n)` is field n as HL7 numbers it."""

    __slots__ = ("_first", "enc", "fields", "name")

    def __init__(self, name: str, fields: list[str], enc: _Encoding) -> None:
        self.name = name
        # MSH counts its field separator as field 1, so MSH-2 is the text after it
        self.fields = [name, enc.field, *fields[1:]] if name in MESSAGE_HEADERS else fields
        self.enc = enc
        self._first: dict[int, list[str]] = {}

    def get(self, n: int) -> str:
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def first(self, n: int) -> list[str]:
        """The components of the first repetition of field n (escapes not yet decoded),
        split once per field: a result reads several components of the same fields."""
        parts = self._first.get(n)
        if parts is None:
            value = self.get(n)
            if self.enc.repetition in value:
                value = value.split(self.enc.repetition, 1)[0]
            parts = self._first[n] = value.split(self.enc.component)
        return parts

    def components(self, n: int, count: int) -> list[str]:
        """The first `count` components of the first repetition of field n, decoded, each
        its first subcomponent only ("" for those the field does not have)."""
        enc = self.enc
        out = []
        for text in self.first(n)[:count]:
            if enc.subcomponent in text:
                text = text.split(enc.subcomponent, 1)[0]
            if enc.escape in text:
                text = enc.unescape(text)
            out.append(text.strip())
        return out + [""] * (count - len(out))

    def component(self, n: int, k: int) -> str:
        """Component k (1-based) of the first repetition of field n, decoded."""
        return self.components(n, k)[k - 1]


@dataclass
class _Specimen:
    """What an SPM segment says about the results it describes."""

    id: str = ""
    time: str = ""  # SPM-17, as ISO text
    type: tuple[str, str] = ("", "")  # SPM-4: code, text
    notes: list[str] = field(default_factory=list)  # SPM-24's condition, then its NTEs


@dataclass
class _Context:
    """What the segments before an OBX said about it."""

    patient: dict[str, str] = field(default_factory=dict)
    order_time: str = ""
    order_notes: list[str] = field(default_factory=list)
    # OBR-15 specimen source (HL7 v2.3 and earlier, which have no SPM): code, text
    order_specimen: tuple[str, str] = ("", "")
    specimen: _Specimen | None = None  # the SPM that describes the next OBX, if known yet


def looks_like_hl7(text: str) -> bool:
    """Whether text (the head of a file) starts with an HL7 v2 header segment."""
    head = text.lstrip("\ufeff \t\r\n")[:4]
    return head[:3] in MESSAGE_HEADERS and len(head) == 4 and not head[3].isalnum()


def timestamp_text(value: str, offset: str = "") -> str:
    """An HL7 timestamp as ISO 8601 text the date reader takes ("20240301083000-0500" ->
    "2024-03-01T08:30:00-05:00"); other text is returned as it is, to be rejected there.

    A time without an offset is in the sender's time zone (HL7 v2.5.1 sec. 2.A.22): it
    takes `offset` ("-0500"), the one the message header's time (MSH-7) carries."""
    m = _TIMESTAMP.match(value.strip())
    if not m:
        return value.strip()
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    if not month or not day:
        return value.strip()  # a month or a year is not a collection time
    text = f"{year}-{month}-{day}"
    if hour:
        text += f"T{hour}:{minute or '00'}:{second or '00'}"
        if fraction:
            text += f".{fraction}"
        zone = zone or offset
        if zone:
            text += f"{zone[:3]}:{zone[3:]}"
    return text


def _offset(value: str) -> str:
    """The UTC offset ("-0500") an HL7 timestamp carries, else ""."""
    m = _TIMESTAMP.match(value.strip())
    return (m.group(8) or "") if m else ""


def _specimen_source(obr: _Segment) -> tuple[str, str]:
    """OBR-15's specimen source code and text ("UR&Urine"): its first component is coded,
    so its parts are subcomponents."""
    enc = obr.enc
    code, text = [*obr.first(15)[0].split(enc.subcomponent), "", ""][:2]
    return enc.unescape(code).strip(), enc.unescape(text).strip()


def _patient_id(pid: _Segment) -> str:
    """PID-3's medical record number (identifier type MR) if it lists one, else its first
    identifier that is not a social security number, else its first, else PID-2 (older
    messages)."""
    enc = pid.enc
    first = other = ""
    for repetition in pid.get(3).split(enc.repetition):
        parts = repetition.split(enc.component)
        number = enc.unescape(parts[0].split(enc.subcomponent, 1)[0]).strip()
        if not number:
            continue
        kind = parts[4].split(enc.subcomponent, 1)[0].strip().upper() if len(parts) > 4 else ""
        if kind == "MR":
            return number
        other = other or (number if kind != "SS" else "")
        first = first or number
    return other or first or pid.component(2, 1)


def _value(obx: _Segment) -> str:
    """OBX-5 as the result text the normalizer reads: a structured numeric (SN) as
    "<0.5" or "1.2", a coded value by its text, repetitions joined by spaces."""
    kind = obx.get(2).strip().upper()
    enc = obx.enc
    value = obx.get(5)
    if kind == "NM" and not any(c in value for c in (enc.repetition, enc.component, enc.escape)):
        return value.strip()  # the common case: a plain number
    texts = []
    for repetition in value.split(enc.repetition):
        parts = [enc.unescape(p) for p in repetition.split(enc.component)]
        if kind == "SN":
            comparator, number, separator, second = [*parts, "", "", "", ""][:4]
            comparator = "" if comparator.strip() == "=" else comparator  # "=" says "exactly"
            if separator or second:  # a range or ratio ("1-5", "1:128"): text, never a number
                texts.append(f"{comparator}{number}{separator}{second}".strip())
            else:
                texts.append(f"{comparator}{number}".strip())
        elif kind in ("CE", "CWE", "CNE", "CF"):
            texts.append((parts[1] if len(parts) > 1 and parts[1] else parts[0]).strip())
        else:
            texts.append(enc.component.join(parts).strip())
    return " ".join(t for t in texts if t)


def _test(obx: _Segment) -> dict[str, str]:
    """OBX-3: a LOINC code where either triplet is coded in LOINC, the local code and the
    name of the test."""
    code, name, system, alt_code, alt_name, alt_system = obx.components(3, 6)
    out = {"loinc": "", "test_code": "", "test_name": name or alt_name}
    if system.upper() in _LOINC_SYSTEMS:
        out["loinc"], out["test_code"] = code, alt_code
    elif alt_system.upper() in _LOINC_SYSTEMS:
        out["loinc"], out["test_code"] = alt_code, code
    else:
        out["test_code"] = code
    return out


def _row(obx: _Segment, number: int, ctx: _Context, offset: str) -> dict[str, Any]:
    unit_code, unit_text = obx.components(6, 2)
    spm = ctx.specimen or _Specimen()  # no SPM yet: the one that follows may describe it
    flags = [
        obx.enc.unescape(f).split(obx.enc.component, 1)[0].strip()
        for f in obx.get(8).split(obx.enc.repetition)
    ]
    return {
        "source_row": number,
        **ctx.patient,
        # the specimen's collection time, else the order's (OBR-7), else the result's own
        "collected_at": spm.time or ctx.order_time or timestamp_text(obx.component(14, 1), offset),
        "specimen_id": spm.id,
        **_test(obx),
        "value_raw": _value(obx),
        "unit_raw": unit_code or unit_text,
        "range_raw": obx.enc.unescape(obx.get(7)).strip(),
        "flag": ";".join(f for f in flags if f),
        "comment": "",
        # the lists themselves, not copies: NTE segments that come later still reach them
        "_notes": ([], ctx.order_notes, spm.notes),  # its own, its order's, its SPM's
        "_specimen": spm.type if any(spm.type) else ctx.order_specimen,
    }


def _specimen(spm: _Segment, offset: str) -> _Specimen:
    """The specimen an SPM segment describes."""
    return _Specimen(
        id=spm.component(2, 1) or spm.component(2, 2),
        time=timestamp_text(spm.component(17, 1), offset),
        type=(spm.component(4, 1), spm.component(4, 2)),
        # SPM-24 specimen condition (HL7 table 0493): "HEM^Hemolyzed" is a quality note
        notes=[spm.component(24, 2) or spm.component(24, 1)],
    )


def _describe(rows: list[dict[str, Any]], spm: _Specimen) -> None:
    """Give an SPM's specimen to the results of its order read before it (ORU^R01 puts the
    SPM after the OBX segments of its order); its collection time comes first (SPM-17, else
    OBR-7, else OBX-14), its type before OBR-15's."""
    for row in rows:
        row["specimen_id"] = spm.id
        row["collected_at"] = spm.time or row["collected_at"]
        if any(spm.type):
            row["_specimen"] = spm.type
        own, order, _ = row["_notes"]
        row["_notes"] = (own, order, spm.notes)


def hl7_raw(text: str, source_file: str) -> tuple[pd.DataFrame, list[tuple[Any, ...]]]:
    """RAW rows for every OBX segment of `text` (one or more messages), plus (segment
    number, reason, detail) for those that hold no result to interpret."""
    # one batch at most (batch_rows=None); none when the text holds no OBX at all
    batches = list(iter_hl7(re.split(r"\r\n|\r|\n", text), source_file, batch_rows=None))
    return batches[0] if batches else (raw_from_records([], source_file), [])


def iter_hl7(
    lines: Iterable[str], source_file: str, batch_rows: int | None = 100_000
) -> Iterator[tuple[pd.DataFrame, list[tuple[Any, ...]]]]:
    """`hl7_raw` in batches of whole messages with about `batch_rows` OBX segments each
    (None: one batch), for files larger than memory. `lines` are the file's segments, one
    per line, in order (a text file opened with universal newlines gives them).

    A message only refers to its own segments, so batches are independent; a result the
    lab replaced in a later message is found after reading, by its result status
    (`reading.deduplicate`).
    """
    enc = _Encoding()
    ctx = _Context()
    rows: list[dict[str, Any]] = []
    invalid: list[tuple[Any, ...]] = []
    untied: list[dict[str, Any]] = []  # the current order's rows read before any SPM of it
    notes: list[str] | None = None  # where an NTE segment's comment goes
    offset = ""  # MSH-7's UTC offset: that of the message's times that carry none
    in_order = False  # an OBR was read since the message or patient began
    # the message names its specimen before its orders (OUL^R22): one SPM describes the
    # orders that follow it, where an ORU^R01 order names its own after its results
    specimen_first = False
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n").lstrip("\ufeff")
        name = line[:3]
        if name in MESSAGE_HEADERS:
            enc = _Encoding.from_header(line)
        if len(line) < 4 or line[3] != enc.field:
            continue  # blank, or not a segment (a stray line): holds no result
        seg = _Segment(name, line.split(enc.field), enc)
        if name == "MSH":  # a new message: nothing carries over
            if batch_rows is not None and len(rows) + len(invalid) >= batch_rows:
                yield _finished(rows, source_file), invalid
                rows, invalid = [], []
            ctx, untied, notes = _Context(), [], None
            in_order = specimen_first = False
            enc.codec = _codec(seg.component(18, 1))
            offset = _offset(seg.component(7, 1))
        elif name == "PID":
            ctx = _Context(
                patient={
                    "patient_id": _patient_id(seg),
                    "birth_date": timestamp_text(seg.component(7, 1)),
                    "sex": seg.component(8, 1),
                }
            )
            untied, notes = [], None  # notes on the patient are not on a result
            in_order = specimen_first = False
        elif name == "OBR":
            ctx.order_time = timestamp_text(seg.component(7, 1), offset)
            ctx.order_specimen = _specimen_source(seg)
            ctx.order_notes, untied = [], []
            if not specimen_first:  # the previous order's SPM is not this one's
                ctx.specimen = None
            in_order = True
            notes = ctx.order_notes  # before any result: a note on the whole order
        elif name == "SPM":
            specimen_first = specimen_first or not in_order
            ctx.specimen = _specimen(seg, offset)
            # the first SPM of an order describes the results before it; an OBX after an
            # SPM (in its SPECIMEN group) is described by that SPM as it is read
            _describe(untied, ctx.specimen)
            untied = []
            notes = ctx.specimen.notes
        elif name == "OBX":
            status = seg.get(11).strip().upper()[:1]
            if status in _NO_RESULT:
                test = _test(seg)
                unit_code, unit_text = seg.components(6, 2)
                shown = {  # which test was dropped, as the rejected table shows it
                    "test": test["test_name"] or test["test_code"] or test["loinc"],
                    "value_raw": _value(seg),
                    "unit_raw": unit_code or unit_text,
                    "patient_id": ctx.patient.get("patient_id", ""),
                }
                invalid.append((number, "hl7_status", _NO_RESULT[status], shown))
                notes = None
                continue
            row = _row(seg, number, ctx, offset)
            # P, F, C, ...: the reader keeps the final or corrected result of a test
            row["result_status"] = status
            rows.append(row)
            if ctx.specimen is None:
                untied.append(row)
            notes = row["_notes"][0]
        elif name == "NTE" and notes is not None:
            notes.append(" ".join(enc.unescape(r) for r in seg.get(3).split(enc.repetition)))
    if rows or invalid:
        yield _finished(rows, source_file), invalid


def _finished(rows: list[dict[str, Any]], source_file: str) -> pd.DataFrame:
    """The RAW rows of whole messages, their notes and specimen types filled in."""
    for row in rows:
        own, order, specimen = row.pop("_notes")
        row["comment"] = " ".join(n.strip() for n in (*order, *specimen, *own) if n.strip())
        # SPM-4's (else OBR-15's) code and text: the reader rejects a blood test on urine
        # or another fluid
        row["specimen_type"] = " ".join(p for p in row.pop("_specimen") if p)
    return raw_from_records(rows, source_file)
