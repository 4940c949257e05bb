"""The analyte catalog: which tests labinterp interprets, read from reference_ranges/.

Everything clinical here comes from the data files (with their source column); this module
only parses them and answers look-ups on exact, normalised spellings. There is deliberately
no fuzzy matching of test names: "Calcium, urine" must never become serum calcium. A name
that is no spelling as it stands is read only by the fixed steps of
reference_ranges/test_names.toml (dropping "serum", "level", a unit in brackets...), and
what is left must again be an exact spelling.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from typing import Any

from labinterp.errors import ConfigError
from labinterp.resources import read_reference_toml, reference_file


@dataclass(frozen=True)
class Analyte:
    id: str
    display_name: str
    canonical_unit: str  # a key of unit_aliases.csv
    molar_mass: float | None  # g/mol, for mass <-> substance conversions
    valence: int | None  # for mEq/L; None means equivalents are not meaningful
    plausible_low: float  # canonical unit; outside = suspected unit error
    plausible_high: float
    loinc_codes: tuple[str, ...]
    synonyms: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class FallbackRange:
    """One bundled adult range. A range is listed in the canonical unit, and may be listed
    again in a conventional unit with the numbers the source prints for it (Mg 1.7-2.55
    mg/dL beside 0.70-1.05 mmol/L): a lab reporting in that unit is judged by those numbers,
    so a Mg of exactly 1.7 mg/dL is not low just because 1.7 mg/dL is 0.6994 mmol/L."""

    analyte: str
    sex: str  # "any" | "female" | "male"
    age_min: float | None
    age_max: float | None
    low: float | None  # canonical unit
    high: float | None
    source: str
    unit: str  # the unit the row is written in; the canonical one for the canonical row
    low_in_unit: float | None  # as written in `unit`
    high_in_unit: float | None

    @property
    def canonical(self) -> bool:
        return self.unit == analytes()[self.analyte].canonical_unit


def fold_accents(text: str) -> str:
    """`text` without accents and other combining marks ('Fósforo' -> 'Fosforo', 'März' ->
    'Marz', 'ß' -> 'ss'): exports spell Spanish, German and French test names, headers and
    words with or without them."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text.replace("ß", "ss"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalise_name(text: str) -> str:
    """Lower-case, drop accents, collapse punctuation and spaces: 'Calcium, Total' ->
    'calcium total', 'Fósforo' -> 'fosforo'."""
    text = fold_accents(text).strip().lower().replace("_", " ")
    text = re.sub(r"[,;:/\\.\-\[\]]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _float_or_none(text: str) -> float | None:
    text = text.strip()
    return float(text) if text else None


@cache
def analytes() -> dict[str, Analyte]:
    path = reference_file("analytes.csv")
    out: dict[str, Analyte] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                a = Analyte(
                    id=row["analyte"],
                    display_name=row["display_name"],
                    canonical_unit=row["canonical_unit"],
                    molar_mass=_float_or_none(row["molar_mass_g_per_mol"]),
                    valence=int(row["valence"]) if row["valence"].strip() else None,
                    plausible_low=float(row["plausible_low"]),
                    plausible_high=float(row["plausible_high"]),
                    loinc_codes=tuple(row["loinc_codes"].split()),
                    synonyms=tuple(s for s in row["synonyms"].split("|") if s),
                    source=row["source"],
                )
            except (KeyError, ValueError) as exc:
                raise ConfigError(f"bad row in {path.name}: {exc}") from exc
            out[a.id] = a
    return out


LOINC_PREFIX = re.compile(r"^loinc\s*:\s*", re.I)


@cache
def loinc_index() -> dict[str, str]:
    """LOINC code -> analyte id."""
    index: dict[str, str] = {}
    for a in analytes().values():
        for code in a.loinc_codes:
            if code in index:
                raise ConfigError(f"LOINC {code} is listed for both {index[code]} and {a.id}")
            index[code] = a.id
    return index


@cache
def name_index() -> dict[str, str]:
    """Normalised synonym or display name -> analyte id."""
    index: dict[str, str] = {}
    for a in analytes().values():
        for name in (a.id, a.display_name, *a.synonyms):
            key = normalise_name(name)
            if index.get(key, a.id) != a.id:
                raise ConfigError(f"name '{name}' is listed for both {index[key]} and {a.id}")
            index[key] = a.id
    return index


def analyte_for(loinc: str | None, code: str | None, name: str | None) -> str | None:
    """Catalog id for a test, by LOINC first, then exact normalised name, then the name
    read by the fixed steps of reference_ranges/test_names.toml (read_test_name); None if
    unknown, or when its LOINC code or code names another test (a calculated ionized calcium,
    test_names.not_read_by_code). A code may name its system first, as i2b2 concept codes
    do ("LOINC:2601-3")."""
    from labinterp.test_names import not_read_by_code, read_test_name  # they read this catalog

    keys = [LOINC_PREFIX.sub("", c.strip()) if c else "" for c in (loinc, code)]
    if any(not_read_by_code(key) for key in keys if key):
        return None  # another test than its name says (test_names.toml `not_read`)
    for key in keys:
        if key in loinc_index():
            return loinc_index()[key]
    for candidate in (name, code):
        if candidate:
            hit = name_index().get(normalise_name(candidate))
            if hit:
                return hit
    return read_test_name(name) if name else None


@cache
def fallback_ranges() -> tuple[FallbackRange, ...]:
    """The bundled ranges, canonical rows and rows in other units alike (see FallbackRange).
    Every row in another unit must repeat a canonical row (same analyte, sex and ages) to
    within 2 %: the two are one range printed twice, and a typo in either shows here."""
    from labinterp import units  # units reads the catalog: imported here, not at the top

    path = reference_file("fallback_ranges.csv")
    rows: list[FallbackRange] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            a = analytes().get(row["analyte"])
            if a is None:
                raise ConfigError(f"{path.name}: unknown analyte {row['analyte']}")
            unit = row["unit"]
            try:
                f = units.factor(a.id, unit)
            except ValueError as exc:
                raise ConfigError(f"{path.name} line {line}: {exc}") from exc
            low, high = _float_or_none(row["low"]), _float_or_none(row["high"])
            rows.append(
                FallbackRange(
                    analyte=a.id,
                    sex=row["sex"],
                    age_min=_float_or_none(row["age_min_years"]),
                    age_max=_float_or_none(row["age_max_years"]),
                    low=None if low is None else low * f,
                    high=None if high is None else high * f,
                    source=row["source"],
                    unit=unit,
                    low_in_unit=low,
                    high_in_unit=high,
                )
            )
    canonical = {(r.analyte, r.sex, r.age_min, r.age_max): r for r in rows if r.canonical}
    for r in rows:
        twin = canonical.get((r.analyte, r.sex, r.age_min, r.age_max))
        if twin is None:
            raise ConfigError(
                f"{path.name}: the {r.analyte} range in {r.unit} has no row in "
                f"{analytes()[r.analyte].canonical_unit} for the same sex and ages"
            )
        for mine, theirs in ((r.low, twin.low), (r.high, twin.high)):
            if (mine is None) != (theirs is None) or (
                mine is not None and theirs is not None and abs(mine - theirs) > 0.02 * theirs
            ):
                raise ConfigError(
                    f"{path.name}: the {r.analyte} range in {r.unit} is not the one in "
                    f"{twin.unit} ({mine} against {theirs} {twin.unit})"
                )
    return tuple(rows)


@cache
def _not_blood() -> tuple[frozenset[str], re.Pattern[str]]:
    """Specimen type codes and words that are not blood (reference_ranges/specimen_types.toml)."""

    def build(data: dict[str, Any]) -> tuple[frozenset[str], re.Pattern[str]]:
        codes = frozenset(str(c).upper() for c in data["codes"])
        words = "|".join(re.escape(fold_accents(str(w))) for w in data["words"])
        return codes, re.compile(rf"\b({words})\b", re.I)

    return read_reference_toml("specimen_types.toml", build)


def not_blood_specimen(text: str) -> bool:
    """Whether a specimen type ("Urine", "UR", "122575003 Urine specimen", "CSF") names a
    specimen that is not blood. Blood, serum, plasma and anything not listed are not."""
    codes, words = _not_blood()
    text = fold_accents(text)
    if words.search(text):
        return True
    return any(token.upper() in codes for token in re.findall(r"[A-Za-z]+", text))


@dataclass(frozen=True)
class ResultStatus:
    """What an export's result status says: `usable` is "preliminary", "final" or
    "corrected" for a result to read, "" otherwise; `no_result` is why a row holds nothing
    to interpret ("" when it holds a result, or when the status is not known)."""

    usable: str = ""
    no_result: str = ""


USABLE_STATUSES = ("preliminary", "final", "corrected")  # from replaced to replacing
# RESULTS.result_status of a status word result_statuses.toml does not list: the result is
# read, and counted apart rather than taken as having no status
UNRECOGNISED_STATUS = "unrecognised"


@cache
def _result_statuses() -> dict[str, ResultStatus]:
    """Status spellings -> meaning (reference_ranges/result_statuses.toml)."""

    def build(data: dict[str, Any]) -> dict[str, ResultStatus]:
        table: dict[str, ResultStatus] = {}
        for status in USABLE_STATUSES:
            for spelling in data["usable"][status]:
                table[_status_key(str(spelling))] = ResultStatus(usable=status)
        for kind, spellings in data["no_result"].items():
            for spelling in spellings:
                table[_status_key(str(spelling))] = ResultStatus(no_result=data["meaning"][kind])
        return table

    return read_reference_toml("result_statuses.toml", build)


def _status_key(text: str) -> str:
    return re.sub(r"[\s_\-()/]+", " ", fold_accents(text).strip().lower()).strip()


def result_status(text: str) -> ResultStatus:
    """The meaning of a result status as printed ("F", "Final", "entered-in-error");
    an unknown or empty status means nothing (ResultStatus())."""
    return _result_statuses().get(_status_key(text), ResultStatus())


@dataclass(frozen=True)
class SampleIndices:
    """reference_ranges/sample_indices.toml: per index kind ("hemolysis") its quality flag
    ("hemolyzed") and test names; the words and flags that say an index is raised."""

    flags: dict[str, str]  # kind -> quality flag
    names: dict[str, str]  # normalised test name -> kind
    raised: frozenset[str]  # text results, normalised
    not_raised: frozenset[str]
    raised_flags: frozenset[str]  # flag column values and markers, lower case


@cache
def sample_indices() -> SampleIndices:
    def build(data: dict[str, Any]) -> SampleIndices:
        kinds = {k: v for k, v in data.items() if isinstance(v, dict)}
        names = {normalise_name(str(n)): k for k, v in kinds.items() for n in v["names"]}
        clash = set(names) & set(name_index())
        if clash:
            raise ConfigError(f"sample_indices.toml: {sorted(clash)} also name analytes")
        return SampleIndices(
            flags={k: str(v["flag"]) for k, v in kinds.items()},
            names=names,
            raised=frozenset(_index_word(str(w)) for w in data["raised"]),
            not_raised=frozenset(_index_word(str(w)) for w in data["not_raised"]),
            raised_flags=frozenset(str(f).strip().lower() for f in data["raised_flags"]),
        )

    return read_reference_toml("sample_indices.toml", build)


def _index_word(text: str) -> str:
    """A text result of an index as the word lists hold it: lower case, no accents, single
    spaces ("+" and "1+" keep their signs)."""
    return " ".join(fold_accents(text).lower().split())


def sample_index_kind(name: str) -> str:
    """The kind of sample-quality index ("hemolysis", "icterus", "lipemia") a test name
    names ("Hemolysis Index", "Índice de hemólisis"), or ""."""
    return sample_indices().names.get(normalise_name(name), "") if name else ""


def index_text_raised(text: str) -> bool | None:
    """Whether an index's text result ("2+", "Moderate", "Negative") says it is raised;
    None when the text is neither listed word."""
    word = _index_word(text)
    if word in sample_indices().raised:
        return True
    if word in sample_indices().not_raised:
        return False
    return None


def index_flag_raised(flag: str) -> bool:
    """Whether the lab's flag on an index row (a flag column's "H", "A", a marker after the
    number; several joined by ";") calls it raised."""
    return any(f.strip().lower() in sample_indices().raised_flags for f in flag.split(";"))


@cache
def _comparator_codes() -> dict[str, str]:
    """Comparator codes -> comparator (reference_ranges/comparators.toml)."""

    def build(data: dict[str, Any]) -> dict[str, str]:
        return {
            str(code).strip().lower(): str(comparator)
            for comparator, codes in data.items()
            for code in codes
        }

    return read_reference_toml("comparators.toml", build)


def comparator_code(text: str) -> str | None:
    """The comparator a comparator column's code stands for ("LT" and "4171756" -> "<",
    "EQ" -> ""), or None for a code labinterp does not know. A whole number printed as a
    float ("4171756.0", from a numeric column) is read as that number."""
    code = text.strip().lower()
    if code.endswith(".0") and code[:-2].isdigit():
        code = code[:-2]
    return _comparator_codes().get(code)


@cache
def _medicine_words() -> dict[str, tuple[re.Pattern[str], re.Pattern[str]]]:
    """Per group of reference_ranges/medications.toml: (what not to count, its words), as
    patterns. A word is whole; what is not counted (a group's not_words, any of its words
    after a negation, or followed by a negation in the same entry) also takes the rest of
    its word ("stopped vitamin D3")."""

    Lists = tuple[list[str], list[str], dict[str, tuple[list[str], list[str]]]]

    def build(data: dict[str, Any]) -> Lists:
        negations = [str(n) for n in data["negations"]]
        after = [str(n) for n in data["negations_after"]]
        groups = {
            name: ([str(w) for w in entry["words"]], [str(w) for w in entry["not_words"]])
            for name, entry in data.items()
            if isinstance(entry, dict)
        }
        return negations, after, groups

    negations, after, groups = read_reference_toml("medications.toml", build)

    def alternatives(ws: list[str]) -> str:
        # longest first, so "vitamin d3" is one match, not "vitamin d" then a stray "3"
        folded = (fold_accents(w) for w in ws)  # the text is folded too
        return "|".join(re.escape(w) for w in sorted(folded, key=len, reverse=True))

    # the rest of an entry: anything but its end (";", "|", a line break, a comma and a
    # space: "50,000 IU" is one entry), then maybe ", " before the negation itself
    entry_rest = r"(?:[^;|\n,]|,(?!\s))*?(?:,\s*)?"
    out = {}
    for name, (words, not_words) in groups.items():
        negated = rf"(?:{alternatives(negations)})\s+(?:{alternatives(words)})"
        negated_after = (
            rf"(?:{alternatives(words)})\w*{entry_rest}(?<!\w)(?:{alternatives(after)})(?!\w)"
        )
        skip = "|".join(p for p in (alternatives(not_words), negated, negated_after) if p)
        out[name] = (
            re.compile(rf"(?<!\w)(?:{skip})\w*", re.I),
            re.compile(rf"(?<!\w)(?:{alternatives(words)})(?!\w)", re.I),
        )
    return out


def medicines_named(group: str, text: str) -> list[str]:
    """The medicines of `group` a medication text names, as the words of
    reference_ranges/medications.toml it names them by (lower case, accents dropped), each
    once, in the order written: "Omeprazole 20 mg; Furosemide" -> ["omeprazole",
    "furosemide"]; what `names_medicine` does not count is not among them."""
    if not text:
        return []
    skip, words = _medicine_words()[group]
    found = (m.group(0).lower() for m in words.finditer(skip.sub(" ", fold_accents(text))))
    return list(dict.fromkeys(found))


def names_medicine(group: str, text: str) -> bool:
    """Whether a medication text names a medicine of `group` of
    reference_ranges/medications.toml: "vitamin_d" (a form of vitamin D that raises 25-OH
    vitamin D: "Cholecalciferol 1000 IU daily", "Calcium + D3", not calcitriol) or
    "mg_lowering" (a proton pump inhibitor or a diuretic)."""
    if not text:
        return False
    skip, words = _medicine_words()[group]
    return bool(words.search(skip.sub(" ", fold_accents(text))))
