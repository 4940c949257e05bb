"""RAW rows -> canonical RESULTS rows + REJECTED rows (each with a machine-readable reason).

Every input row ends in exactly one of the two tables. The work is done on the distinct
values of each column (a few hundred test, unit, range and date spellings even in a
million-row export) and the answers are gathered back to the rows with integer codes, so
the cost per row is a handful of array look-ups.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from labinterp import units
from labinterp.catalog import analyte_for, analytes, fallback_ranges
from labinterp.errors import DateFormatError, UnitError
from labinterp.resources import reference_file
from labinterp.schema import REJECTED, RESULTS, conform

SIGNIFICANT_DIGITS = 6  # no lab reports more; removes float32 noise (1.7999999523 -> 1.8)


@dataclass(frozen=True)
class Options:
    date_format: str | None = None  # strftime format forced by the user
    decimal: str | None = None  # "," for decimal-comma files; None = detect
    tests: tuple[tuple[str, str], ...] = ()  # user mapping: test label/code -> analyte
    undated: bool = False  # the file has no collection-time column at all


# ---------------------------------------------------------------- distinct-value helper


def _factorize(columns: Sequence[pd.Series]) -> tuple[np.ndarray, pd.DataFrame]:
    """Integer key per row over several columns, and one representative row per key."""
    codes = np.zeros(len(columns[0]), dtype=np.int64)
    for col in columns:
        c, uniques = pd.factorize(col, use_na_sentinel=False)
        codes = codes * (len(uniques) + 1) + c
        codes, _ = pd.factorize(codes)  # keep keys dense so they never overflow
    k = int(codes.max()) + 1 if len(codes) else 0
    first_idx = np.empty(k, dtype=np.int64)
    # assignment with repeated indices keeps the last write: reversed order -> first row
    first_idx[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    reps = pd.DataFrame({i: col.iloc[first_idx].to_numpy() for i, col in enumerate(columns)})
    return codes.astype(np.int64), reps


def _by_distinct(
    columns: Sequence[pd.Series], func: Callable[..., tuple], n_out: int
) -> list[np.ndarray]:
    """Apply `func` once per distinct combination of `columns`; gather outputs to rows."""
    inverse, reps = _factorize(columns)
    results = [func(*row) for row in reps.itertuples(index=False, name=None)]
    out = []
    for k in range(n_out):
        values = np.asarray([r[k] for r in results], dtype=object)
        out.append(values[inverse] if len(values) else np.empty(0, dtype=object))
    return out


def _text(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


# ---------------------------------------------------------------- values

_COMPARATORS = {
    "<": "<",
    "<=": "<=",
    "=<": "<=",
    "≤": "<=",
    ">": ">",
    ">=": ">=",
    "=>": ">=",
    "≥": ">=",
}
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SYMBOLIC = re.compile(rf"^(?P<cmp><=|>=|=<|=>|≤|≥|<|>)?\s*(?P<num>{_NUMBER})$")
_WORDED = re.compile(
    rf"^(?P<cmp>less than or equal to|greater than or equal to|less than|greater than|below|"
    rf"above|under|over)\s*(?P<num>{_NUMBER})$",
    re.IGNORECASE,
)
_WORD_CMP = {
    "less than or equal to": "<=",
    "greater than or equal to": ">=",
    "less than": "<",
    "greater than": ">",
    "below": "<",
    "under": "<",
    "above": ">",
    "over": ">",
}


def _round_sig(x: float) -> float:
    if x == 0 or not np.isfinite(x):
        return x
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}")


def parse_value(text: str, decimal: str) -> tuple[str, float | None]:
    """('<', 0.5) for '<0.5'; ('', 7.9) for '7.9'; ('', None) when not a number."""
    s = text.strip()
    if decimal == ",":
        s = s.replace(".", "").replace(",", ".") if re.search(r"\d,\d", s) else s
    m = _SYMBOLIC.match(s)
    if m:
        return _COMPARATORS.get(m.group("cmp") or "", ""), _round_sig(float(m.group("num")))
    m = _WORDED.match(s)
    if m:
        return _WORD_CMP[m.group("cmp").lower()], _round_sig(float(m.group("num")))
    return "", None


def _value_of(value_raw: object, valuenum_raw: object, comparator_raw: object, decimal: str):
    """(comparator, number, text_result, reason) for one distinct value triple."""
    text = _text(value_raw)
    cmp_, number = parse_value(text, decimal) if text else ("", None)
    if number is None:
        num_text = _text(valuenum_raw)
        if num_text:
            _, number = parse_value(num_text, ".")
            cmp_ = ""
    extra_cmp = _COMPARATORS.get(_text(comparator_raw), "")
    if number is not None:
        return (extra_cmp or cmp_, number, "", "")
    if text:
        return ("", None, text, "")
    return ("", None, "", "missing_value")


# ---------------------------------------------------------------- analytes


def _analyte_of(hint: object, loinc: object, code: object, name: object, tests: dict[str, str]):
    h, lc, cd, nm = _text(hint), _text(loinc), _text(code), _text(name)
    if h:
        return (h, "")
    for label in (nm, cd, lc):
        if label and label in tests:
            return (tests[label], "")
    found = analyte_for(lc or None, cd or None, nm or None)
    if found:
        return (found, "")
    if not (lc or cd or nm):
        return ("", "missing_test")
    return ("", "out_of_scope")


# ---------------------------------------------------------------- units


def _unit_of(analyte: str, unit_raw: object):
    """(factor, reported spelling, system, reason, detail)."""
    raw = _text(unit_raw)
    if not analyte:
        return (np.nan, raw, "", "", "")
    if not raw:
        return (np.nan, "", "", "unknown_unit", "the result has no unit")
    try:
        f = units.factor(analyte, raw)
    except UnitError as exc:
        reason = "unknown_unit" if units.lookup(raw) is None else "unit_not_valid_for_analyte"
        return (np.nan, raw, "", reason, exc.problem)
    alias = units.lookup(raw)
    assert alias is not None
    return (f, alias.raw, alias.system, "", "")


@cache
def _loinc_properties() -> dict[str, str]:
    import csv

    with reference_file("loinc_properties.csv").open(encoding="utf-8", newline="") as fh:
        return {row["loinc"]: row["property"] for row in csv.DictReader(fh)}


def _unit_kind(spelling: str) -> str:
    alias = units.lookup(spelling)
    if alias is None:
        return ""
    expr = alias.pint_expr
    if "mole" in expr or "equivalent" in expr:
        return "substance"
    if "gram" in expr:
        return "mass"
    return ""


# ---------------------------------------------------------------- dates

_ISO = re.compile(
    r"^\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$"
)
_SLASH = re.compile(
    r"^(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})(?:[ T](\d{1,2}:\d{2}(?::\d{2})?)(\s?[AaPp][Mm])?)?$"
)
_DOT = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{2}|\d{4})(?:[ T](\d{1,2}:\d{2}(?::\d{2})?))?$")


def _slash_order(values: list[str], file_label: str) -> str:
    """'mdy' or 'dmy' for a file's slash dates, decided from the whole file, never per row."""
    first_gt12 = second_gt12 = False
    for v in values:
        m = _SLASH.match(v)
        if m:
            first_gt12 |= int(m.group(1)) > 12
            second_gt12 |= int(m.group(2)) > 12
    if first_gt12 and second_gt12:
        raise DateFormatError(
            "the file mixes day-first and month-first dates.",
            file=file_label,
            fix="pass --date-format (for example --date-format '%m/%d/%Y %H:%M').",
        )
    if second_gt12:
        return "mdy"
    if first_gt12:
        return "dmy"
    raise DateFormatError(
        "every date in the file could be read as month/day or as day/month.",
        file=file_label,
        fix="pass --date-format '%m/%d/%Y %H:%M' (US) or '%d/%m/%Y %H:%M' (European).",
    )


def parse_dates(
    distinct: list[str], file_label: str, forced: str | None
) -> tuple[list[pd.Timestamp | None], list[str]]:
    """Timestamps (naive, UTC when the text had an offset) and a reject reason per value.

    Works on the file's distinct date strings, one vectorized parse per date shape.
    """
    values = pd.Series(distinct, dtype=object)
    stamps = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    reasons = pd.Series("", index=values.index, dtype=object)
    reasons[values == ""] = "missing_date"
    if forced:
        parsed = pd.to_datetime(values, format=forced, errors="coerce")
        stamps[:] = parsed.to_numpy(dtype="datetime64[ns]")
    else:
        iso = values.str.match(_ISO)
        if iso.any():
            parsed = pd.to_datetime(values[iso], format="ISO8601", utc=True, errors="coerce")
            stamps[iso] = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
        slash = values.str.match(_SLASH)
        if slash.any():
            order = _slash_order(list(values[slash]), file_label)
            stamps[slash], two_digit = _parse_numeric_dates(values[slash], _SLASH, order)
            reasons[two_digit[two_digit].index] = "ambiguous_two_digit_year"
        dot = values.str.match(_DOT)
        if dot.any():
            stamps[dot], two_digit = _parse_numeric_dates(values[dot], _DOT, "dmy")
            reasons[two_digit[two_digit].index] = "ambiguous_two_digit_year"
    bad = stamps.isna() & (reasons == "")
    reasons[bad] = "unparseable_date"
    return [None if pd.isna(t) else t for t in stamps], list(reasons)


def _parse_numeric_dates(
    values: pd.Series, pattern: re.Pattern[str], order: str
) -> tuple[np.ndarray, pd.Series]:
    parts = values.str.extract(pattern)
    first, second, year = parts[0].astype(int), parts[1].astype(int), parts[2]
    month, day = (first, second) if order == "mdy" else (second, first)
    clock = parts[3].fillna("00:00") if 3 in parts.columns else "00:00"
    two_digit = year.str.len() == 2
    text = (
        year
        + "-"
        + month.astype(str).str.zfill(2)
        + "-"
        + day.astype(str).str.zfill(2)
        + " "
        + clock
    )
    parsed = pd.to_datetime(text.where(~two_digit), format="mixed", errors="coerce")
    if 4 in parts.columns:
        pm = parts[4].fillna("").str.strip().str.upper()
        hours = parsed.dt.hour
        shift = np.where((pm == "PM") & (hours < 12), 12, 0) - np.where(
            (pm == "AM") & (hours == 12), 12, 0
        )
        parsed = parsed + pd.to_timedelta(shift, unit="h")
    return parsed.to_numpy(dtype="datetime64[ns]"), two_digit


# ---------------------------------------------------------------- reference ranges

_RANGE_BETWEEN = re.compile(
    rf"^\s*({_NUMBER})\s*(?:-|–|—|to|\.\.)\s*({_NUMBER})\s*(?:[^\d\s].*)?$", re.I
)
_RANGE_ONE_SIDED = re.compile(rf"^\s*(<=|>=|=<|=>|≤|≥|<|>)\s*({_NUMBER})\s*(?:[^\d\s].*)?$")


def parse_range(text: str, low_text: str, high_text: str, decimal: str) -> tuple[float, float]:
    """(low, high) in the row's unit; NaN where the range gives no limit."""
    low = high = np.nan
    if low_text or high_text:
        _, lo = parse_value(low_text, decimal) if low_text else ("", None)
        _, hi = parse_value(high_text, decimal) if high_text else ("", None)
        low = lo if lo is not None else np.nan
        high = hi if hi is not None else np.nan
        if low == 0 and high == 0:  # "0/0" placeholders seen in re-saved exports
            return (np.nan, np.nan)
        return (low, high)
    s = text.strip()
    if not s:
        return (low, high)
    if decimal == ",":
        s = re.sub(r"(\d),(\d)", r"\1.\2", s)
    m = _RANGE_BETWEEN.match(s)
    if m:
        return (float(m.group(1)), float(m.group(2)))
    m = _RANGE_ONE_SIDED.match(s)
    if m:
        cmp_ = _COMPARATORS[m.group(1)]
        bound = float(m.group(2))
        return (np.nan, bound) if cmp_.startswith("<") else (bound, np.nan)
    return (low, high)


# ---------------------------------------------------------------- quality flags

_QUALITY_PATTERNS = (
    ("not_hemolyzed", re.compile(r"\b(not|no|non)[\s-]*h[eé]moly", re.I)),
    ("hemolyzed", re.compile(r"h[eé]moly[sz]|haemoly[sz]|h[eé]molis", re.I)),
    ("contamination_comment", re.compile(r"contaminat|edta", re.I)),
    ("clotted", re.compile(r"\bclot", re.I)),
    ("lipemic", re.compile(r"lip(a)?emi", re.I)),
    ("icteric", re.compile(r"icter", re.I)),
)


def quality_flags(*texts: object) -> str:
    joined = " ".join(_text(t) for t in texts)
    if not joined:
        return ""
    flags = [name for name, pattern in _QUALITY_PATTERNS if pattern.search(joined)]
    if "not_hemolyzed" in flags:
        # "VERIFIED. NOT HEMOLYZED." must not mark the sample as hemolyzed
        flags = [f for f in flags if f != "hemolyzed"]
    return ";".join(flags)


# ---------------------------------------------------------------- demographics

_SEX = {
    "f": "female",
    "female": "female",
    "w": "female",
    "woman": "female",
    "m": "male",
    "male": "male",
    "man": "male",
}


def _sex(text: object) -> str:
    return _SEX.get(_text(text).lower(), "")


# ---------------------------------------------------------------- the stage


def _reject(
    frame: pd.DataFrame, mask: np.ndarray, reason: str | np.ndarray, detail
) -> pd.DataFrame:
    sub = frame.loc[mask]
    test = sub["test_name"].fillna("")
    test = test.where(test != "", sub["test_code"].fillna(""))
    test = test.where(test != "", sub["loinc"].fillna(""))
    out = pd.DataFrame(
        {
            "source_file": sub["source_file"],
            "source_row": sub["source_row"],
            "reason": reason if isinstance(reason, str) else np.asarray(reason)[mask],
            "detail": detail if isinstance(detail, str) else np.asarray(detail)[mask],
            "test": test,
            "value_raw": sub["value_raw"],
            "unit_raw": sub["unit_raw"],
        }
    )
    return out


_DETAIL = {
    "out_of_scope": "test not interpreted by labinterp (not in the analyte catalog)",
    "missing_test": "the row names no test (no code, name or LOINC); add the test column",
    "missing_patient_id": "the row has no patient identifier; fill it in the export",
    "missing_date": "the row has no collection time; fill it in or check the date column",
    "unparseable_date": "the collection time is not a date labinterp can read; pass --date-format",
    "ambiguous_two_digit_year": (
        "two-digit year (a spreadsheet re-save?); re-export with 4-digit years"
    ),
    "missing_value": "the row has neither a result nor a result text",
}


def normalize(
    raw: pd.DataFrame, file_label: str, options: Options | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn one file's RAW table into (RESULTS, REJECTED)."""
    opts = options or Options()
    n = len(raw)
    if n == 0:
        return conform(pd.DataFrame(), RESULTS), conform(pd.DataFrame(), REJECTED)
    frame = raw.reset_index(drop=True)
    col = {name: frame[name] for name in frame.columns}
    reason = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)

    def mark(mask: np.ndarray, why: str | np.ndarray, text: str | np.ndarray) -> None:
        fresh = mask & (reason == "")
        reason[fresh] = why if isinstance(why, str) else np.asarray(why)[fresh]
        detail[fresh] = text if isinstance(text, str) else np.asarray(text)[fresh]

    # patient ids; pandas re-saves turn 93705 into "93705.0"
    pid = col["patient_id"].fillna("").str.strip().str.replace(r"^(\d+)\.0$", r"\1", regex=True)
    mark((pid == "").to_numpy(), "missing_patient_id", _DETAIL["missing_patient_id"])

    # analyte
    tests = dict(opts.tests)
    analyte, a_reason = _by_distinct(
        [col["analyte_hint"], col["loinc"], col["test_code"], col["test_name"]],
        lambda h, lc, c, nm: _analyte_of(h, lc, c, nm, tests),
        2,
    )
    for why in ("missing_test", "out_of_scope"):
        mark(a_reason == why, why, _DETAIL[why])

    # value
    decimal = opts.decimal or _detect_decimal(col["value_raw"])
    cmp_, number, text_result, v_reason = _by_distinct(
        [col["value_raw"], col["valuenum_raw"], col["comparator_raw"]],
        lambda v, vn, c: _value_of(v, vn, c, decimal),
        4,
    )
    mark(v_reason == "missing_value", "missing_value", _DETAIL["missing_value"])
    number = number.astype(float)  # None -> nan
    has_number = ~np.isnan(number)

    # unit (only numeric results need one)
    factor, unit_rep, system, u_reason, u_detail = _by_distinct(
        [pd.Series(analyte), col["unit_raw"]], _unit_of, 5
    )
    factor = factor.astype(float)
    mark(has_number & (u_reason != ""), u_reason, u_detail)

    # collection time
    if opts.undated:
        when = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    else:
        when = _dates(col["collected_at"], file_label, opts, mark)

    # canonical value and plausibility (suspected unit errors)
    value = number * factor
    lo_p, hi_p, canon_unit = _per_analyte(analyte)
    # A censored value only proves what its comparator allows: "<0.5" is impossible only
    # when 0.5 is already at or below the plausible floor, and ">10" only above the ceiling.
    upper_censored = np.isin(cmp_, ["<", "<="])
    lower_censored = np.isin(cmp_, [">", ">="])
    with np.errstate(invalid="ignore"):
        too_low = np.where(upper_censored, value <= lo_p, value < lo_p)
        too_high = np.where(lower_censored, value >= hi_p, value > hi_p)
    implausible = has_number & ~np.isnan(value) & (too_low | too_high)
    if implausible.any():
        why = np.array(
            [
                _implausible_detail(a, v, u)
                for a, v, u in zip(
                    analyte[implausible], number[implausible], unit_rep[implausible], strict=True
                )
            ],
            dtype=object,
        )
        full = np.full(n, "", dtype=object)
        full[implausible] = why
        mark(implausible, "implausible_value", full)

    keep = reason == ""
    rejected = _reject(frame, ~keep, reason, detail)

    # reference ranges: the row's own, else bundled by age/sex, else unknown
    r_low, r_high = _by_distinct(
        [col["range_raw"], col["range_low_raw"], col["range_high_raw"]],
        lambda t, lo, hi: parse_range(_text(t), _text(lo), _text(hi), decimal),
        2,
    )
    r_low = r_low.astype(float)
    r_high = r_high.astype(float)
    sex = _by_distinct([col["sex"]], lambda s: (_sex(s),), 1)[0]
    age = _ages(col, when)

    quality = _by_distinct(
        [col["comment"], col["flag"], col["value_raw"]],
        lambda c, f, v: (quality_flags(c, f, v),),
        1,
    )[0]
    quality = _add_loinc_mismatch(quality, col["loinc"], unit_rep, analyte)
    if opts.undated:
        quality = np.array([q + (";" if q else "") + "undated" for q in quality], dtype=object)

    out = pd.DataFrame(
        {
            "source_file": frame["source_file"],
            "source_row": frame["source_row"],
            "patient_id": pid,
            "collected_at": when,
            "specimen_id": frame["specimen_id"].fillna("").str.strip(),
            "analyte": analyte,
            "test_label": _test_label(frame),
            "loinc": frame["loinc"],
            "value_raw": frame["value_raw"].fillna(""),
            "unit_raw": frame["unit_raw"].fillna(""),
            "comparator": cmp_,
            "value_reported": number,
            "unit_reported": unit_rep,
            "unit_system": system,
            "value": value,
            "unit": canon_unit,
            "text_result": text_result,
            "range_low_reported": r_low,
            "range_high_reported": r_high,
            "flag": frame["flag"],
            "comment": frame["comment"],
            "quality": quality,
            "sex": sex,
            "age_years": age,
        }
    )[keep].reset_index(drop=True)
    out = _apply_ranges(out, factor[keep])
    out["specimen_id"] = out["specimen_id"].replace("", pd.NA)
    out["sex"] = out["sex"].replace("", pd.NA)
    return conform(out, RESULTS), conform(rejected, REJECTED)


def _detect_decimal(values: pd.Series) -> str:
    sample = values.dropna().head(5000).astype(str)
    commas = sample.str.fullmatch(r"[<>]?\s*-?\d+,\d+").sum()
    points = sample.str.fullmatch(r"[<>]?\s*-?\d+\.\d+").sum()
    return "," if commas > points else "."


def _dates(series: pd.Series, file_label: str, opts: Options, mark) -> np.ndarray:
    codes, uniques = pd.factorize(series.fillna("").str.strip(), use_na_sentinel=False)
    distinct = [str(u) for u in uniques]
    stamps, reasons = parse_dates(distinct, file_label, opts.date_format)
    lookup = (
        pd.array([pd.NaT if s is None else s for s in stamps], dtype="datetime64[ns]").to_numpy()
        if distinct
        else np.empty(0, dtype="datetime64[ns]")
    )
    why = np.asarray(reasons, dtype=object)[codes] if distinct else np.empty(0, dtype=object)
    for r in ("missing_date", "unparseable_date", "ambiguous_two_digit_year"):
        mark(why == r, r, _DETAIL[r])
    return lookup[codes] if distinct else np.empty(0, dtype="datetime64[ns]")


def _per_analyte(analyte: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cat = analytes()
    ids = pd.Series(analyte)
    lo = ids.map({k: a.plausible_low for k, a in cat.items()}).astype(float).to_numpy()
    hi = ids.map({k: a.plausible_high for k, a in cat.items()}).astype(float).to_numpy()
    unit = ids.map({k: a.canonical_unit for k, a in cat.items()}).fillna("").to_numpy(dtype=object)
    return lo, hi, unit


# Units to try when a value is impossible in its stated unit, per canonical unit family.
_ALTERNATIVES = (
    "mg/dL",
    "mmol/L",
    "mEq/L",
    "mg/L",
    "g/dL",
    "g/L",
    "umol/L",
    "ng/mL",
    "nmol/L",
    "pg/mL",
    "pmol/L",
)


def _implausible_detail(analyte: str, number: float, unit: str) -> str:
    a = analytes()[analyte]
    text = (
        f"{a.display_name} {number:g} {unit} is outside what is humanly possible "
        f"({a.plausible_low:g}-{a.plausible_high:g} {a.canonical_unit}); suspected unit error"
    )
    for alt in _ALTERNATIVES:
        if alt == unit:
            continue
        try:
            v = number * units.factor(analyte, alt)
        except UnitError:
            continue
        if a.plausible_low <= v <= a.plausible_high:
            return text + f": the number fits {alt}. Check the unit in the export."
    return text + ". Check the value and unit in the export."


def _ages(col: dict[str, pd.Series], when: np.ndarray) -> np.ndarray:
    age = pd.to_numeric(col["age_raw"].fillna("").str.strip(), errors="coerce").to_numpy(
        dtype=float
    )
    births = col["birth_date"].fillna("").str.strip()
    if (births != "").any():
        b = pd.to_datetime(births.str.slice(0, 10), format="%Y-%m-%d", errors="coerce").to_numpy()
        from_birth = (when - b).astype("timedelta64[D]").astype(float) / 365.25
        age = np.where(np.isnan(age), from_birth, age)
    # MIMIC shifts the birth dates of patients over 89 by ~300 years: not a real age
    age[(age < 0) | (age > 130)] = np.nan
    return age


def _add_loinc_mismatch(
    quality: np.ndarray, loinc: pd.Series, unit_rep: np.ndarray, analyte: np.ndarray
) -> np.ndarray:
    props = _loinc_properties()

    def one(code: object, unit: object) -> tuple[str]:
        prop = props.get(_text(code))
        kind = _unit_kind(_text(unit)) if prop else ""
        return ("loinc_unit_mismatch" if prop and kind and kind != prop else "",)

    flag = _by_distinct([loinc, pd.Series(unit_rep)], one, 1)[0]
    out = quality.copy()
    has = flag != ""
    out[has] = [q + (";" if q else "") + f for q, f in zip(quality[has], flag[has], strict=True)]
    return out


def _test_label(frame: pd.DataFrame) -> pd.Series:
    name = frame["test_name"].fillna("").str.strip()
    code = frame["test_code"].fillna("").str.strip()
    loinc = frame["loinc"].fillna("").str.strip()
    label = name.where(name != "", code)
    label = label.where(label != "", loinc)
    return label


def _apply_ranges(out: pd.DataFrame, factor: np.ndarray) -> pd.DataFrame:
    has_row_range = ~(
        np.isnan(out["range_low_reported"].to_numpy())
        & np.isnan(out["range_high_reported"].to_numpy())
    )
    low = out["range_low_reported"].to_numpy() * factor
    high = out["range_high_reported"].to_numpy() * factor
    origin = np.where(has_row_range, "row", "unknown").astype(object)
    source = np.where(has_row_range, "row", "").astype(object)
    analyte = out["analyte"].to_numpy(dtype=object)
    sex = out["sex"].to_numpy(dtype=object)
    age = out["age_years"].to_numpy(dtype=float)
    for fb in fallback_ranges():
        m = (~has_row_range) & (analyte == fb.analyte) & (origin == "unknown")
        if fb.sex != "any":
            # a sex-specific range never applies to an unknown sex (no male default)
            m &= sex == fb.sex
        if fb.age_min is not None:
            # patients known to be younger get no adult range; unknown age is taken as adult
            m &= ~(age < fb.age_min)
        if fb.age_max is not None:
            m &= ~(age > fb.age_max)
        if not m.any():
            continue
        low[m] = np.nan if fb.low is None else fb.low
        high[m] = np.nan if fb.high is None else fb.high
        origin[m] = "bundled"
        source[m] = fb.source
    with np.errstate(invalid="ignore", divide="ignore"):
        bundled = origin == "bundled"
        low_rep = np.where(bundled, low / factor, out["range_low_reported"].to_numpy())
        high_rep = np.where(bundled, high / factor, out["range_high_reported"].to_numpy())
    out["range_low"] = low
    out["range_high"] = high
    out["range_low_reported"] = _round_bundled(low_rep, bundled)
    out["range_high_reported"] = _round_bundled(high_rep, bundled)
    out["range_origin"] = origin
    out["range_source"] = source
    return out


def _round_bundled(values: np.ndarray, bundled: np.ndarray) -> np.ndarray:
    """Bundled limits converted into the lab's unit, shown to 3 significant digits."""
    out = values.astype(float).copy()
    idx = np.flatnonzero(bundled & np.isfinite(out))
    for i in idx:
        out[i] = float(f"{out[i]:.3g}")
    return out
