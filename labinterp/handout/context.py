"""Turn one patient's RESULTS and FINDINGS rows into the plain dict a handout template gets.

Pure pandas and arithmetic: no HTML, no wording (wording lives in templates/handout/), no I/O.
Every text field is NFC-normalized here so odd Unicode (decomposed accents, compatibility
forms) looks the same in the PDF as on screen. Numbers for the SVG charts are computed here
as plain floats in a fixed 0-100 coordinate box, so the templates only place shapes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from labinterp import __version__
from labinterp.errors import LabinterpError
from labinterp.grading import ANALYTE_TERMS
from labinterp.guards import HEMOLYSIS_SENSITIVE
from labinterp.parameters import as_compared
from labinterp.resources import read_reference_toml
from labinterp.rules.base import TIER_RANK

# Order in which analytes appear on the handout: the ones the patterns are about first.
ANALYTE_ORDER = (
    "magnesium",
    "calcium",
    "calcium_corrected",
    "calcium_ionized",
    "potassium",
    "vitamin_d_25oh",
    "vitamin_d2_25oh",
    "vitamin_d3_25oh",
    "pth",
    "phosphate",
    "crp",
    "albumin",
    "creatinine",
    "egfr",
    "alp",
)
PATTERN_ORDER = (
    "hypomagnesemia_hypocalcemia",
    "hypomagnesemia_hypokalemia",
    "vitamin_d_resistance",
)

# The tests whose result a rule's CTCAE grade is about (the engine's grade_term per rule):
# a fired finding's grade puts a line in the urgent box, naming the test, only where the
# handout could not grade that test's latest result itself.
FINDING_GRADED_TESTS: dict[str, tuple[str, ...]] = {
    "hypomagnesemia_hypocalcemia": ("magnesium",),
    "vitamin_d_resistance": ("magnesium",),
    "hypomagnesemia_hypokalemia": ("potassium",),
    "hypercalcemia_hypomagnesemia": ("calcium_ionized", "calcium_corrected", "calcium"),
}
# P1's threshold below which magnesium is low enough to stop PTH (its "supported" tier).
MG_PTH_FAILURE = "p1_mg_pth_failure_below"
# The fields of an evidence record (schema.EVIDENCE_RECORD) a handout words from.
EVIDENCE_KEYS = (
    "role",
    "analyte",
    "comparator",
    "value",
    "value_reported",
    "range_low",
    "range_high",
    "range_low_reported",
    "range_high_reported",
    "derived",
    "grade",  # the engine's grade of the result (a derived corrected Ca's grades its Ca)
    "source_file",
    "source_row",
)

# ctcae_grade's signature: (term, value, unit, lln, uln, *, comparator) -> grade or None
Grader = Callable[..., int | None]


# Bidirectional formatting characters (embeddings, overrides, isolates, marks): in a lab
# comment they would be applied, and "Muestra OK \u202eamolisis\u202c" would print reversed.
# The text is shown as the characters stand, as patient ids already are (normalize).
BIDI_CONTROLS = dict.fromkeys(
    [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)


def nfc(value: Any) -> str:
    """Text for a template: missing becomes "", everything else NFC-normalized str without
    bidirectional formatting characters (BIDI_CONTROLS)."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return unicodedata.normalize("NFC", str(value)).translate(BIDI_CONTROLS)


_COMMA_DECIMAL = re.compile(r"[<>=≤≥\s]*-?\d+,\d+")


def _like_value(number_text: str, value_text: str) -> str:
    """`number_text` ("0.7") written with a decimal comma ("0,7") where the lab's value on
    the same line is ("0,55"): one line, one way of writing decimals."""
    if _COMMA_DECIMAL.fullmatch(value_text.strip()):
        return number_text.replace(".", ",")
    return number_text


def _num(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def fmt_number(value: float | None) -> str:
    """A range limit as a person would write it: 0.7 not 0.7000000001, 150 not 150.0."""
    if value is None:
        return ""
    text = f"{value:.4g}"
    if "e" in text:  # very large or small: fall back to plain decimals
        text = f"{value:f}".rstrip("0").rstrip(".")
    return text


def _date(ts: Any) -> dict[str, int] | None:
    if ts is None or ts is pd.NaT or (isinstance(ts, float) and math.isnan(ts)):
        return None
    try:
        t = pd.Timestamp(ts)
    except (TypeError, ValueError):
        return None
    if pd.isna(t):
        return None
    return {"y": int(t.year), "m": int(t.month), "d": int(t.day)}


def classify(value: float | None, comparator: str, low: float | None, high: float | None) -> str:
    """ "low" | "normal" | "high" | "unknown" for a reported value against the lab's range.

    A censored value counts as low or high only when the whole interval it stands for lies
    outside the range ("<0.5" with a range from 0.7 is low; "<0.9" with 0.7 is unknown),
    and in range only when it lies inside ("<0.5" with a range 0-10, as no lab value is
    below zero).
    """
    if value is None:
        return "unknown"
    if low is None and high is None:
        return "unknown"
    if comparator in ("<", "<="):
        if low is not None and value <= low:
            return "low"
        # a lab value is never below zero: "<0.5" with a range from 0 lies inside it
        if high is not None and value <= high and (low is None or low <= 0):
            return "normal"
        return "unknown"
    if comparator in (">", ">="):
        if high is not None and value >= high:
            return "high"
        if low is not None and value >= low and high is None:
            return "normal"
        return "unknown"
    if low is not None and value < low:
        return "low"
    if high is not None and value > high:
        return "high"
    return "normal"


def number_line(
    value: float | None, low: float | None, high: float | None
) -> dict[str, Any] | None:
    """Positions (0-100) of the range band and the value on a scale that shows both."""
    if value is None or (low is None and high is None):
        return None
    lo = low if low is not None else min(0.0, value)
    hi = high if high is not None else max(lo * 2 if lo > 0 else 1.0, value)
    span = max(hi - lo, abs(hi) * 0.1, 1e-9)
    start = min(lo - 0.5 * span, value - 0.15 * span)
    if lo >= 0 and start < 0:
        start = 0.0
    end = max(hi + 0.5 * span, value + 0.15 * span)

    def pos(x: float) -> float:
        return round(100.0 * (x - start) / (end - start), 2)

    return {
        "band_from": pos(lo),
        "band_to": pos(hi),
        "band_open_left": low is None,
        "band_open_right": high is None,
        "value_at": min(max(pos(value), 1.0), 99.0),
        "low_text": fmt_number(low),
        "high_text": fmt_number(high),
    }


def trend_line(
    points: list[tuple[pd.Timestamp, float]], low: float | None, high: float | None
) -> dict[str, Any] | None:
    """A small line chart (0-100 box) for a test done two or more times."""
    pts = [(t, v) for t, v in points if t is not None and not pd.isna(t)]
    if len(pts) < 2:
        return None
    pts.sort(key=lambda p: p[0])
    values = [v for _, v in pts]
    bounds = [*values, *(x for x in (low, high) if x is not None)]
    vmin, vmax = min(bounds), max(bounds)
    pad = (vmax - vmin) * 0.15 or abs(vmax) * 0.1 or 1.0
    vmin, vmax = vmin - pad, vmax + pad
    t0, t1 = pts[0][0].value, pts[-1][0].value
    width = (t1 - t0) or 1

    def y(v: float) -> float:
        return round(100.0 - 100.0 * (v - vmin) / (vmax - vmin), 2)

    coords = [{"x": round(5 + 90.0 * (t.value - t0) / width, 2), "y": y(v)} for t, v in pts]
    return {
        "points": coords,
        "path": " ".join(f"{c['x']},{c['y']}" for c in coords),
        "band_top": y(high) if high is not None else 0.0,
        "band_bottom": y(low) if low is not None else 100.0,
        "has_band": low is not None or high is not None,
        "first": _date(pts[0][0]),
        "last": _date(pts[-1][0]),
        "count": len(pts),
    }


Row = dict[str, Any]  # one RESULTS or FINDINGS row as a plain dict (column -> value)


def _grade_for(
    grader: Grader | None, analyte: str, status: str, row: Row
) -> tuple[int | None, str]:
    """The result's CTCAE grade and its direction ("low" for a hypo- term, "high" for a
    hyper- one); (None, "") when it has none.

    A low or high result is graded by the term of its side. A result not compared with a
    range (none printed, as for a child; or a censored value the range cannot place) is
    graded too, by both terms: grade 3-4 cut-offs are absolute (K < 2.5 mmol/L is grade 4
    with or without a lower limit), and such a value must still reach the urgent box.
    Grades 1-2 need the limits, so only a grade of 3 or more counts there.
    """
    if grader is None or analyte not in ANALYTE_TERMS:
        return None, ""
    if status in ("low", "high"):
        sides = [status]
    elif status == "unknown":
        sides = ["low", "high"]
    else:
        return None, ""
    value = _num(row.get("value_reported"))
    unit = nfc(row.get("unit_reported"))
    if value is None or not unit:
        return None, ""
    for side in sides:
        term = ANALYTE_TERMS[analyte][0 if side == "low" else 1]
        try:
            grade = grader(
                term,
                value,
                unit,
                _num(row.get("range_low_reported")),
                _num(row.get("range_high_reported")),
                comparator=nfc(row.get("comparator")) or None,  # "<2.5" K is grade 4
            )
        except (KeyError, ValueError, TypeError, LookupError):
            # A term or unit the grader does not know: no grade rather than a guessed one.
            continue
        if grade is None or pd.isna(grade):
            continue
        if status == side or int(grade) >= 3:
            return int(grade), side
    return None, ""


def censored_text(raw: str, comparator: str, value: float | None, lang: str) -> str:
    """The value as the sheet prints it: as the lab wrote it, except a censored value written
    in words ("LESS THAN 0.4") on a sheet in another language than English, which becomes
    its parsed comparator and number ("< 0.4"; with a decimal comma where the lab wrote
    one). Symbols and digits ("<0.4") read the same in any language and are kept."""
    if lang == "en" or not comparator or value is None or not any(c.isalpha() for c in raw):
        return raw
    number = fmt_number(value)
    if "," in raw and "." not in raw:
        number = number.replace(".", ",")
    return f"{comparator} {number}"


def _result_dict(row: Row, grader: Grader | None, lang: str = "en") -> dict[str, Any]:
    comparator = nfc(row.get("comparator"))
    value = _num(row.get("value_reported"))
    low = _num(row.get("range_low_reported"))
    high = _num(row.get("range_high_reported"))
    if value is None:  # fall back to the canonical value and range when needed
        value = _num(row.get("value"))
        if value is not None:
            low, high = _num(row.get("range_low")), _num(row.get("range_high"))
    status = classify(value, comparator, low, high)
    value_text = nfc(row.get("value_raw")) or nfc(row.get("text_result"))
    reported = _num(row.get("value_reported"))
    value_text = censored_text(value_text, comparator, reported, lang)
    if not value_text and value is not None:
        value_text = comparator + fmt_number(value)
    unit_text = nfc(row.get("unit_raw")) or nfc(row.get("unit_reported"))
    range_unit = nfc(row.get("unit_reported")) or unit_text
    analyte = nfc(row.get("analyte"))
    grade, graded_as = _grade_for(grader, analyte, status, row)
    return {
        "date": _date(row.get("collected_at")),
        "time": "",  # set by _clock_where_needed
        "value_text": value_text,
        "unit_text": unit_text,
        "comparator": comparator,
        "is_number": value is not None,
        "status": status,
        "low_text": fmt_number(low),
        "high_text": fmt_number(high),
        # the range as the line shows it: with the decimal comma the lab's value has
        "low_shown": _like_value(fmt_number(low), value_text),
        "high_shown": _like_value(fmt_number(high), value_text),
        "range_unit": range_unit,
        "range_origin": nfc(row.get("range_origin")) or "unknown",
        "comment": nfc(row.get("comment")),
        "numberline": number_line(value, low, high),
        "grade": grade,
        "graded_as": graded_as,  # the side the grade is about: "low", "high" or ""
        "sample_issue": any(
            q.startswith(("contamination", "hemoly")) for q in _split(row.get("quality"))
        ),
        # hemolysis (not a suspected contamination) means a high K or Mg is not interpreted
        "hemolyzed": any(q.startswith("hemoly") for q in _split(row.get("quality"))),
        # the lab may still change it (a final result would have replaced it)
        "preliminary": nfc(row.get("result_status")) == "preliminary",
        "_value": value,
        "_ts": row.get("collected_at"),
        "_sample": _sample_key(row),
    }


def _row_key(row: Row) -> tuple[str, int | None]:
    """The input row a result, or a value derived from it, came from."""
    number = _num(row.get("source_row"))
    return nfc(row.get("source_file")), None if number is None else int(number)


def _corrected_calcium_grades(fnd: list[Row]) -> dict[tuple[str, int | None], int | None]:
    """The engine's grade of each corrected Ca it worked out from a total Ca and an
    albumin (the evidence records of the findings), by the total Ca's input row."""
    grades: dict[tuple[str, int | None], int | None] = {}
    for f in fnd:
        records = _evidence_of(f)
        for r in records:
            if r.get("analyte") == "calcium_corrected" and r.get("derived"):
                grade = _num(r.get("grade"))
                grades[_row_key(r)] = None if grade is None else int(grade)
    return grades


def _sample_key(row: Row) -> tuple[Any, str]:
    """The sample a result comes from: its collection time and specimen id (the engine's
    draw, split by specimen; episodes._whole_sample)."""
    when = row.get("collected_at")
    return (when if _present(when) else None, nfc(row.get("specimen_id")).strip())


def _spoiled_samples(
    res: list[Row], fnd: list[Row]
) -> tuple[set[tuple[Any, str]], set[tuple[Any, str]]]:
    """The samples (`_sample_key`) whose results may be false, to be marked on the sheet,
    and among them the hemolyzed ones (whose high K or Mg is not interpreted; a draw
    only suspected of contamination is still acted on, after a repeat: CLINICAL.md sec. 5).

    Hemolysis is a property of the tube: a note on one result (often the K) marks every
    result of the same sample, as the engine reads it. A draw a guard flagged (suspected
    EDTA contamination) is the draw its finding cites, at the finding's evidence time, with
    any result sharing a specimen id with it; every flagged draw counts, not only the one of
    the guard's entry on the sheet. Other draws of the same day are not marked: in a
    hospital stay they are often clean, and a pattern may rest on them. A guard without an
    evidence time flagged the undated results, which the engine reads as one draw (split
    by specimen id, if any), as in a survey export.
    """
    dated = [r for r in res if _present(r.get("collected_at"))]
    hemolyzed = {_sample_key(r) for r in dated if "hemolyzed" in _split(r.get("quality"))}
    spoiled = set(hemolyzed)
    guards = [f for f in fnd if nfc(f.get("kind")) == "guard" and nfc(f.get("status")) == "fired"]
    flagged_at = {pd.Timestamp(f["evidence_at"]) for f in guards if _present(f["evidence_at"])}
    drawn = [r for r in dated if pd.Timestamp(r["collected_at"]) in flagged_at]
    if any(not _present(f["evidence_at"]) for f in guards):
        drawn += [r for r in res if not _present(r.get("collected_at"))]
    specimens = {nfc(r.get("specimen_id")).strip() for r in drawn} - {""}
    spoiled |= {_sample_key(r) for r in drawn}
    spoiled |= {_sample_key(r) for r in res if nfc(r.get("specimen_id")).strip() in specimens}
    return spoiled, hemolyzed


def _clock_where_needed(items: list[dict[str, Any]]) -> None:
    """Give a result its clock time ("17:10") where the same test has results at different
    times of the same day (a hospital stay), so that the patient can tell them apart. A
    day's single result, or results printed without a time, keep the date alone."""
    times_of_day: dict[tuple[int, int, int], set[str]] = {}
    for i in items:
        if i["date"] and _present(i["_ts"]):
            clock = pd.Timestamp(i["_ts"]).strftime("%H:%M")
            i["time"] = clock
            times_of_day.setdefault(_date_key(i["date"]), set()).add(clock)
    for i in items:
        if i["date"] and len(times_of_day.get(_date_key(i["date"]), ())) < 2:
            i["time"] = ""


def _split(text: Any) -> list[str]:
    return [p for p in (s.strip() for s in nfc(text).split(";")) if p]


def light_evidence(value: Any) -> list[dict[str, Any]]:
    """A finding's evidence records (a list of dicts, or the JSON text a CSV holds) cut
    down to what a handout words from (EVIDENCE_KEYS); [] when there are none."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if value is None or isinstance(value, (float, int)) or value is pd.NA:
        return []
    try:
        records = list(value)
    except TypeError:
        return []
    return [{k: r.get(k) for k in EVIDENCE_KEYS} for r in records if isinstance(r, dict)]


def _family(analyte: str) -> str:
    """calcium, ionized calcium and corrected calcium are all "calcium" to a patient."""
    return "calcium" if analyte.startswith("calcium") else analyte


def _mg_pth_failure(record: dict[str, Any]) -> bool:
    """A magnesium record below P1's PTH-failure threshold, compared as the engine does."""
    value, reported = _num(record.get("value")), _num(record.get("value_reported"))
    if value is None:
        return False
    try:
        vals, limits = as_compared(
            MG_PTH_FAILURE,
            np.array([value]),
            np.array([reported if reported is not None else np.nan]),
        )
    except (LabinterpError, KeyError, ValueError):
        return False
    v, limit = float(vals[0]), float(limits[0])
    if math.isnan(v):
        v = value
    comparator = nfc(record.get("comparator"))
    if comparator in (">", ">="):
        return False
    return v <= limit if comparator == "<" else v < limit


def _evidence_facts(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What a finding's evidence holds, for wording only what it supports: the tests
    (families, see _family) it cites as low, high, in range, or without a number, and
    whether a magnesium it cites is below P1's PTH-failure threshold, and whether it cites a
    vitamin D summed from D2 and D3 (known only within bounds, where a part was too low to
    measure). `known` is False when the finding came without its evidence records
    (nothing may be assumed)."""
    facts: dict[str, Any] = {
        "known": bool(records),
        "low": set(),
        "high": set(),
        "normal": set(),
        "unreported": set(),
        "mg_very_low": False,
        "vitamin_d_summed": False,
        "vitamin_d_summed_bound": False,
    }
    for r in records:
        analyte = nfc(r.get("analyte"))
        if analyte == "vitamin_d_25oh" and r.get("derived") is True:
            facts["vitamin_d_summed"] = True
            facts["vitamin_d_summed_bound"] |= nfc(r.get("comparator")) != ""
        if not analyte or r.get("derived") is True:
            continue
        value = _num(r.get("value_reported"))
        low, high = _num(r.get("range_low_reported")), _num(r.get("range_high_reported"))
        if value is None:
            value = _num(r.get("value"))
            low, high = _num(r.get("range_low")), _num(r.get("range_high"))
        if value is None:
            facts["unreported"].add(_family(analyte))
            continue
        status = classify(value, nfc(r.get("comparator")), low, high)
        if status in ("low", "high", "normal"):
            facts[status].add(_family(analyte))
        if analyte == "magnesium" and _mg_pth_failure(r):
            facts["mg_very_low"] = True
    return facts


def _plain_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """Sets as sorted lists: a template context holds plain types only."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in facts.items()}


def _evidence_of(finding: Row) -> list[dict[str, Any]]:
    """A finding's evidence records as the handout reads them: cut down already by the
    batch (`evidence_brief`), else from its evidence_json."""
    brief = finding.get("evidence_brief")
    return brief if isinstance(brief, list) else light_evidence(finding.get("evidence_json"))


def _finding_dict(row: Row) -> dict[str, Any]:
    grade = row.get("grade")
    records = _evidence_of(row)
    return {
        "rule_id": nfc(row.get("rule_id")),
        "kind": nfc(row.get("kind")),
        "status": nfc(row.get("status")),
        "tier": nfc(row.get("tier")),
        "grade": None if grade is None or pd.isna(grade) else int(grade),
        "start": _date(row.get("episode_start")),
        "end": _date(row.get("episode_end")),
        "seen": _date(row.get("evidence_at")),  # the latest result it cites
        "missing": _split(row.get("missing_inputs")),
        "suppressed_by": nfc(row.get("suppressed_by")),
        "caveats": _split(row.get("caveats")),
        "ev": _evidence_facts(records),
    }


def _why_missing(f: dict[str, Any], results: dict[str, list[dict[str, Any]]]) -> dict[str, list]:
    """A finding's missing inputs grouped by what the patient should be told:
    `damaged` (a hemolyzed sample's result was not used), `no_range` (measured, but no range
    to compare it with), `unused` (measured, but not at the time of the other tests or not
    a number), `untested` (no result on the sheet at all)."""
    why: dict[str, list[str]] = {"damaged": [], "no_range": [], "unused": [], "untested": []}
    for analyte in f["missing"]:
        items = results.get(analyte, [])
        if not items:
            why["untested"].append(analyte)
        # a hemolyzed sample's K or Mg is not used to say they are not low (the engine's guard)
        elif "hemolyzed" in f["caveats"] and analyte in HEMOLYSIS_SENSITIVE:
            why["damaged"].append(analyte)
        elif "range_unknown" in f["caveats"] and all(
            i["range_origin"] == "unknown" for i in items if i["is_number"]
        ):
            why["no_range"].append(analyte)
        else:
            why["unused"].append(analyte)
    return why


def _dedupe_findings(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per rule, keeping its most telling outcome across episodes: the worst
    status, then the strongest tier (TIER_RANK, as the audit's row), with the caveats and
    missing inputs of the episodes that share both, and the highest grade of any. With
    when it fired: `seen_last` and `seen_first`, the dates of the latest and earliest
    results of the episodes it fired in, and `seen_times`, on how many dates (a record of
    years can hold patterns long past; the sheet says when each was seen). And
    `checked_later`: for a rule not checked on a spoiled draw (suppressed), the date of a
    later draw where it was checked and did not fire, else None: the sheet then says that
    later test was checked rather than "your clinician may repeat the test"."""
    rank = {"fired": 0, "suppressed": 1, "indeterminate": 2, "not_fired": 3}

    def key(f: dict[str, Any]) -> tuple[int, int]:
        return (rank.get(f["status"], 9), -TIER_RANK.get(f["tier"], 0))

    best: dict[str, dict[str, Any]] = {}
    grade: dict[str, int] = {}
    fired_on: dict[str, set[tuple[int, int, int]]] = {}
    checked_on: dict[str, tuple[int, int, int]] = {}  # the latest draw it did not fire on
    # the grade of the latest episode it fired in (the urgent box is about now, not then)
    last_fired: dict[str, tuple[tuple[int, int, int], int | None]] = {}
    for f in items:
        rule = f["rule_id"]
        if f["status"] == "fired" and f["seen"]:
            day = _date_key(f["seen"])
            fired_on.setdefault(rule, set()).add(day)
            prev_day, prev_grade = last_fired.get(rule, ((0, 0, 0), None))
            if day > prev_day:
                last_fired[rule] = (day, f["grade"])
            elif day == prev_day and f["grade"] is not None:
                last_fired[rule] = (day, max(f["grade"], prev_grade or 0))
        if f["status"] == "not_fired" and f["seen"]:
            checked_on[rule] = max(checked_on.get(rule, (0, 0, 0)), _date_key(f["seen"]))
        if f["grade"] is not None:
            grade[rule] = max(grade.get(rule, f["grade"]), f["grade"])
        cur = best.get(rule)
        if cur is None or key(f) < key(cur):
            best[rule] = f
        elif key(f) == key(cur):
            # the same outcome in several episodes: keep the union of caveats and inputs
            cur["caveats"] = sorted({*cur["caveats"], *f["caveats"]})
            cur["missing"] = sorted({*cur["missing"], *f["missing"]})
            cur["ev"] = {
                k: (v | f["ev"][k]) if isinstance(v, set) else (v or f["ev"][k])
                for k, v in cur["ev"].items()
            }
    for rule, f in best.items():
        f["grade"] = grade.get(rule)
        f["grade_last"] = last_fired.get(rule, ((0, 0, 0), None))[1]
        f["ev"] = _plain_facts(f["ev"])
        days = sorted(fired_on.get(rule, ())) if f["status"] == "fired" else []
        f["seen_first"] = _day(days[0]) if days else None
        f["seen_last"] = _day(days[-1]) if days else None
        f["seen_times"] = len(days)
        later = checked_on.get(rule)
        f["checked_later"] = (
            _day(later)
            if f["status"] == "suppressed" and later and later > _date_key(f["seen"])
            else None
        )
    return list(best.values())


def _day(key: tuple[int, int, int]) -> dict[str, int]:
    return {"y": key[0], "m": key[1], "d": key[2]}


def _records(frame: pd.DataFrame) -> list[Row]:
    """Rows as plain dicts, column by column (iterrows/to_dict build a Series per row)."""
    columns = {c: frame[c].tolist() for c in frame.columns}
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _present(value: Any) -> bool:
    return value is not None and not bool(pd.isna(value))


def _as_printed(res: list[Row], fnd: list[Row]) -> tuple[list[Row], list[Row]]:
    """The rows with their times on the clock the lab printed them with.

    collected_at is UTC where the file printed an offset ("2018-05-26T23:21:43-07:00" is
    kept as 06:21 on the 27th); a patient must read the 26th, as on the lab's report. A
    finding's episode times are the times of its results, so each moves by the offset of
    the result at that time (or, for a derived time, the offset the patient's results
    mostly have).
    """
    offset_at: dict[Any, int | None] = {}
    for r in res:
        if _present(r.get("collected_at")):
            offset_at.setdefault(r["collected_at"], _offset(r))
    printed = [m for m in offset_at.values() if m is not None]
    if not printed:  # no offsets printed: the times are as the lab printed them
        return res, fnd
    usual = Counter(printed).most_common(1)[0][0]

    def moved(ts: Any, minutes: int | None) -> Any:
        if not _present(ts) or minutes is None:
            return ts
        return pd.Timestamp(ts) + pd.Timedelta(minutes=minutes)

    res = [{**r, "collected_at": moved(r.get("collected_at"), _offset(r))} for r in res]
    fnd = [
        {
            **f,
            **{
                k: moved(f.get(k), offset_at.get(f.get(k), usual))
                for k in ("episode_start", "episode_end", "evidence_at")
            },
        }
        for f in fnd
    ]
    return res, fnd


def _offset(row: Row) -> int | None:
    minutes: Any = row.get("utc_offset_min")
    return int(minutes) if _present(minutes) else None


def _ts_key(row: Row) -> tuple[bool, Any]:
    ts = row.get("collected_at")
    missing = not _present(ts)
    return (missing, 0 if missing else ts)


def build_context(
    results: pd.DataFrame,
    findings: pd.DataFrame,
    patient_id: str,
    *,
    lang: str = "en",
    large_print: bool = False,
    paper: str = "A4",
    grader: Grader | None = None,
    today: dt.date | None = None,
    rejected: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The template context for one patient (plain dicts, lists, str, int, float, bool).
    `rejected`: the patient's rejected rows counted by reason, where they are known."""
    return context_from_rows(
        _records(results[results["patient_id"] == patient_id]),
        _records(findings[findings["patient_id"] == patient_id]),
        patient_id,
        lang=lang,
        large_print=large_print,
        paper=paper,
        grader=grader,
        today=today,
        rejected=rejected,
    )


# Reasons a row is rejected that say nothing about a result of the patient's that could not
# be read: tests labinterp does not interpret, results the sheet shows in another row (a
# repeat, a result the lab replaced, a draw's total beside its parts) and rows that reach
# no patient (without an id, or with an id a spreadsheet damaged).
_NOT_UNREAD = frozenset(
    {
        "out_of_scope",
        "duplicate",
        "superseded",
        "sample_quality_index",
        "race_adjusted_egfr",
        "vitamin_d_component",
        "missing_patient_id",
        "damaged_patient_id",
    }
)


def _unread(rejected: dict[str, int] | None) -> dict[str, Any] | None:
    """How many of the patient's results could not be read, and the reasons (most rows
    first), for the sheet's line about them; None when there are none (or not known)."""
    said = {r: n for r, n in (rejected or {}).items() if r not in _NOT_UNREAD and n > 0}
    if not said:
        return None
    reasons = sorted(said, key=lambda r: (-said[r], r))
    return {"count": sum(said.values()), "reasons": reasons}


def rows_by_patient(frame: pd.DataFrame) -> dict[str, list[Row]]:
    """Every row of a RESULTS or FINDINGS table as a dict, grouped by patient id (one pass)."""
    out: dict[str, list[Row]] = {}
    for row in _records(frame):
        out.setdefault(row["patient_id"], []).append(row)
    return out


RESULTS_SHOWN_PER_TEST = 3  # number lines per test; earlier results are counted and trended
URGENT_SHOWN = 6  # far-out-of-range results listed in the urgent box, newest first


def _urgent_findings(
    found: list[dict[str, Any]],
    latest_of: dict[str, list[dict[str, Any]]],
    listed: set[str],
) -> list[dict[str, Any]]:
    """Urgent-box lines from fired findings graded 3-4 in their latest episode, each naming
    the test the grade is about (FINDING_GRADED_TESTS). Only where that test's latest
    results are not in range, not later than the finding, and not graded by the handout
    itself (then the result's own line, or its absence, says it)."""
    out: list[dict[str, Any]] = []
    for f in found:
        if f["status"] != "fired" or f["kind"] == "guard":
            continue
        if f.get("grade_last") is None or f["grade_last"] < 3:
            continue
        for test in FINDING_GRADED_TESTS.get(f["rule_id"], ()):
            latest = latest_of.get(test)
            if not latest or test in listed:
                continue
            if any(i["status"] == "normal" or i["grade"] is not None for i in latest):
                break  # the handout graded it, or it is back in range: not urgent now
            if f["seen_last"] and _date_key(latest[0]["date"]) > _date_key(f["seen_last"]):
                break  # a later result of the test replaced the one graded
            out.append(
                {
                    "analyte": test,
                    "rule_id": f["rule_id"],
                    "grade": f["grade_last"],
                    "date": f["seen_last"],
                }
            )
            listed.add(test)
            break
    return out


def _date_key(d: dict[str, int] | None) -> tuple[int, int, int]:
    return (d["y"], d["m"], d["d"]) if d else (0, 0, 0)


def _load_handout_settings(data: dict[str, Any]) -> dict[str, int]:
    entry = data["urgent_recent"]
    if entry["unit"] != "d" or not isinstance(entry["value"], int) or entry["value"] < 0:
        raise TypeError("urgent_recent must be a whole number of days ('d')")
    return {"urgent_recent_days": entry["value"]}


@cache
def handout_settings() -> dict[str, int]:
    """reference_ranges/handout.toml, read once."""
    return read_reference_toml("handout.toml", _load_handout_settings)


def _recent(day: dict[str, int] | None, newest: dict[str, int] | None) -> bool:
    """Whether a result of `day` is recent next to the patient's newest draw (`newest`):
    within `urgent_recent` days of it (reference_ranges/handout.toml). An undated result,
    or a patient without dates, counts as recent: nothing says it is old."""
    if day is None or newest is None:
        return True
    gap = dt.date(*_date_key(newest)) - dt.date(*_date_key(day))
    return gap.days <= handout_settings()["urgent_recent_days"]


def context_from_rows(
    res: list[Row],
    fnd: list[Row],
    patient_id: str,
    *,
    lang: str = "en",
    large_print: bool = False,
    paper: str = "A4",
    grader: Grader | None = None,
    today: dt.date | None = None,
    rejected: dict[str, int] | None = None,
) -> dict[str, Any]:
    """`build_context` for one patient's rows already turned into dicts (batch workers)."""
    res, fnd = _as_printed(res, fnd)
    analytes: list[dict[str, Any]] = []
    every_result: dict[str, list[dict[str, Any]]] = {}  # all of them, shown or not
    known = {a: i for i, a in enumerate(ANALYTE_ORDER)}
    by_analyte: dict[str, list[Row]] = {}
    for row in res:
        a = row.get("analyte")
        if _present(a):
            by_analyte.setdefault(nfc(a), []).append(row)
    present = sorted(by_analyte, key=lambda a: (known.get(a, 99), a))
    spoiled, hemolyzed = _spoiled_samples(res, fnd)
    corrected_grades = _corrected_calcium_grades(fnd)
    latest_of: dict[str, list[dict[str, Any]]] = {}
    for analyte in present:
        rows = sorted(by_analyte[analyte], key=_ts_key)  # stable, missing dates last
        items = [_result_dict(r, grader, lang) for r in rows]
        for i, row in zip(items, rows, strict=True):
            sample = i.pop("_sample")
            i["sample_issue"] = i["sample_issue"] or sample in spoiled
            is_hemolyzed = i.pop("hemolyzed") or sample in hemolyzed
            is_high = "high" in (i["status"], i["graded_as"])
            if is_hemolyzed and is_high and analyte in HEMOLYSIS_SENSITIVE:
                # a hemolyzed tube raises K and Mg: a high one is not interpreted (sec. 5).
                # A draw only suspected of EDTA contamination keeps its grade: few high K
                # samples are contaminated, so a far-out K still calls for a call today
                # (and a repeat test right away).
                i["grade"] = None
            if analyte == "calcium" and _row_key(row) in corrected_grades:
                # a total Ca with an albumin beside it is graded by its corrected value
                # (CTCAE grades corrected Ca): low albumin alone lowers the total
                i["grade"] = corrected_grades[_row_key(row)]
        numeric = [
            (pd.Timestamp(i["_ts"]), i["_value"])
            for i in items
            if i["_value"] is not None and not pd.isna(i["_ts"])
        ]
        latest = items[-1]
        trend = None
        if len(numeric) >= 2:
            lows = {i["low_text"] for i in items}
            highs = {i["high_text"] for i in items}
            units = {i["range_unit"] for i in items}
            same_scale = len(units) == 1
            low = _num(latest["low_text"]) if len(lows) == 1 and same_scale else None
            high = _num(latest["high_text"]) if len(highs) == 1 and same_scale else None
            trend = trend_line(numeric, low, high) if same_scale else None
            if trend is not None:
                trend["unit"] = latest["range_unit"]
                firsts = [i for i in items if i["_value"] is not None]
                trend["first_value"] = firsts[0]["value_text"]
                trend["last_value"] = firsts[-1]["value_text"]
        # the latest result of the test (all of them where one time holds several): the
        # urgent box is about these only, never about a value a later result replaced
        dated = [i for i in items if _present(i["_ts"])]
        if dated:
            last_ts = max(pd.Timestamp(i["_ts"]) for i in dated)
            latest_of[analyte] = [i for i in dated if pd.Timestamp(i["_ts"]) == last_ts]
        else:
            latest_of[analyte] = list(items)
        _clock_where_needed(items)
        for i in items:
            del i["_value"], i["_ts"]
        every_result[analyte] = items
        # A hospital stay can hold hundreds of results of one test; a handout that drew a
        # number line for each would run to dozens of pages. The latest few get number
        # lines, the earlier ones are counted and stay visible in the trend line.
        shown = items[-RESULTS_SHOWN_PER_TEST:]
        analytes.append(
            {"id": analyte, "results": shown, "earlier": len(items) - len(shown), "trend": trend}
        )

    every = [_finding_dict(r) for r in fnd]
    found = _dedupe_findings(dict(f) for f in every)
    for f in found:
        f["missing_why"] = _why_missing(f, every_result)
    patterns = sorted(
        (f for f in found if f["kind"] == "pattern" or f["rule_id"] in PATTERN_ORDER),
        key=lambda f: (
            PATTERN_ORDER.index(f["rule_id"]) if f["rule_id"] in PATTERN_ORDER else 9,
            f["rule_id"],
        ),
    )
    guards = [f for f in found if f["kind"] == "guard" and f["status"] == "fired"]
    context_rules = [
        f
        for f in found
        if f["kind"] not in ("pattern", "guard")
        and f["status"] == "fired"
        and f["rule_id"] not in PATTERN_ORDER
    ]

    # The newest draw of the patient's: a far-out result calls for a call today only when
    # it is recent next to it (never next to today's date: the sheet must not change with
    # the day it is printed).
    dates: list[Any] = [d for d in (r.get("collected_at") for r in res) if _present(d)]
    newest = _date(max(dates)) if dates else None
    urgent_all = [
        {
            "analyte": analyte,
            **{
                k: r[k]
                for k in (
                    "date",
                    "time",
                    "value_text",
                    "unit_text",
                    "grade",
                    "sample_issue",
                    "preliminary",
                )
            },
            # the side of its grade: a value the lab gave no range for is graded all the same
            "status": r["graded_as"] or r["status"],
            "no_range": r["status"] == "unknown",
        }
        for analyte, latest in latest_of.items()
        for r in latest
        if r["grade"] is not None and r["grade"] >= 3
    ]
    # newest first, capped: the list is a prompt to call the clinician, not a log
    urgent_all.sort(key=lambda u: _date_key(u["date"]), reverse=True)
    urgent = [u for u in urgent_all if _recent(u["date"], newest)]
    urgent_past = [u for u in urgent_all if not _recent(u["date"], newest)]
    urgent_more = max(0, len(urgent) - URGENT_SHOWN)
    urgent = urgent[:URGENT_SHOWN]
    urgent_past_more = max(0, len(urgent_past) - URGENT_SHOWN)
    urgent_past = urgent_past[:URGENT_SHOWN]
    listed = {u["analyte"] for u in (*urgent, *urgent_past)}
    from_findings = _urgent_findings(found, latest_of, listed)
    urgent_findings = [f for f in from_findings if _recent(f["date"], newest)]
    urgent_past_findings = [f for f in from_findings if not _recent(f["date"], newest)]
    # the findings about low magnesium: what "Why magnesium matters" and the food section
    # go with (a context finding about low magnesium counts as much as a pattern)
    mg_findings = [f for f in patterns if f["status"] == "fired"] + [
        f for f in context_rules if "hypomagnesemia" in f["rule_id"]
    ]
    # total calcium low while a corrected or ionized calcium is in range
    pseudo = [f for f in patterns if "pseudo_hypocalcemia" in f["caveats"]]
    albumin_low = any(i["status"] == "low" for i in every_result.get("albumin", []))
    # a pattern checked with a calcium adjusted for an albumin below 30 g/L (CLINICAL.md
    # sec. 3): the adjustment is less certain. A fired finding's own text says so.
    ca_adjustment_uncertain = any(
        "corrected_ca_low_albumin" in f["caveats"] for f in patterns if f["status"] != "fired"
    )

    today = today or dt.date.today()
    unread = _unread(rejected)
    return {
        "lang": lang,
        "large_print": bool(large_print),
        "paper": "letter" if paper.lower() == "letter" else "A4",
        "patient_id": nfc(patient_id),
        "tool": f"labinterp {__version__}",
        "made_on": {"y": today.year, "m": today.month, "d": today.day},
        "first_date": _date(min(dates)) if dates else None,
        "last_date": _date(max(dates)) if dates else None,
        "analytes": analytes,
        "patterns": patterns,
        "fired_patterns": [f for f in patterns if f["status"] == "fired"],
        "guards": guards,
        "context_findings": context_rules,
        # a finding cites one of two different results of a test recorded at one time
        "conflicting_results": any(
            "conflicting_results" in f["caveats"] for f in (*patterns, *guards, *context_rules)
        ),
        # a pattern checked that did not show up rests on a result the lab had not made
        # final (a finding on the sheet carries the note under it, handout.html.j2)
        "preliminary_unchecked": any(
            "preliminary_result" in f["caveats"] for f in patterns if f["status"] == "not_fired"
        ),
        # a vitamin D the lab marks low: the vitamin D pattern judges it by a guideline's
        # cut-off, lower than the ranges labs print (CLINICAL.md sec. 4), which the sheet says
        "vitamin_d_low_by_lab": any(
            r["status"] == "low" for r in latest_of.get("vitamin_d_25oh", [])
        ),
        "urgent": urgent,
        "urgent_more": urgent_more,
        "urgent_findings": urgent_findings,
        # a far-out result of a sample that may be spoiled: still a call today, for a repeat
        "urgent_spoiled": any(u["sample_issue"] for u in urgent),
        # grade 3-4 latest results from well before the newest draw: asked about, not urgent
        "urgent_past": urgent_past,
        "urgent_past_more": urgent_past_more,
        "urgent_past_findings": urgent_past_findings,
        # some result is far out of range, now or in the past: no wording that sounds like
        # good news ("this does not mean anything is wrong") anywhere on the sheet
        "far_out": bool(urgent_all or from_findings),
        # results of this patient's that could not be read (a unit not known, no value):
        # the sheet says how many and why, and says nothing that sounds like good news
        "unread": unread,
        "mg_findings": mg_findings,
        "pseudo_hypocalcemia": bool(pseudo),
        "albumin_low": albumin_low,
        "ca_adjustment_uncertain": ca_adjustment_uncertain,
        "source_files": sorted(
            {nfc(s) for s in (r.get("source_file") for r in res) if _present(s)}
        ),
    }
