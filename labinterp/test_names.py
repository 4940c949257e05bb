"""Test names beyond the catalog's spellings, read by the fixed steps of
reference_ranges/test_names.toml and never by likeness: words that never change the test
are dropped ("CALCIUM, TOTAL, SERUM" -> "calcium total"), a unit in brackets is set aside
("Magnesium (mg/dL)"), a LOINC display name is read by its parts; what is left must be an
exact catalog spelling (catalog.name_index), so "Calcium, Urine" stays unread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from labinterp.catalog import fold_accents, name_index, normalise_name
from labinterp.resources import read_reference_toml


@dataclass(frozen=True)
class NotRead:
    """A test printed like a catalog test that is another one (test_names.toml `not_read`)."""

    analyte: str  # the catalog test it reads as
    loinc: frozenset[str]
    methods: frozenset[str]  # of a LOINC display name, normalised
    words: frozenset[str]  # in another name, normalised
    detail: str  # why it is not read, for the rejected row


@dataclass(frozen=True)
class _NameWords:
    """reference_ranges/test_names.toml, normalised."""

    fillers: tuple[tuple[str, ...], ...]  # phrases as token tuples, longest first
    notes: frozenset[str]
    loinc_properties: frozenset[str]
    loinc_systems: frozenset[str]
    not_read: tuple[NotRead, ...]


@cache
def _test_name_words() -> _NameWords:
    def build(data: dict[str, Any]) -> _NameWords:
        fillers = {tuple(normalise_name(str(f)).split()) for f in data["fillers"]}
        return _NameWords(
            fillers=tuple(sorted(fillers, key=len, reverse=True)),
            notes=frozenset(t for n in data["notes"] for t in normalise_name(str(n)).split()),
            loinc_properties=frozenset(normalise_name(str(p)) for p in data["loinc_properties"]),
            loinc_systems=frozenset(normalise_name(str(p)) for p in data["loinc_systems"]),
            not_read=tuple(
                NotRead(
                    analyte=str(spec["analyte"]),
                    loinc=frozenset(str(c).strip() for c in spec["loinc"]),
                    methods=frozenset(normalise_name(str(m)) for m in spec["methods"]),
                    words=frozenset(normalise_name(str(w)) for w in spec["words"]),
                    detail=str(spec["detail"]),
                )
                for spec in data["not_read"].values()
            ),
        )

    return read_reference_toml("test_names.toml", build)


# "Component [Property] in System" or "... in System by Method": a LOINC display name
_LOINC_NAME = re.compile(
    r"^(?P<component>[^\[\]]+?)\s*\[(?P<property>[^\[\]]+)\]\s+in\s+(?P<system>.+?)"
    r"(?:\s+by\s+(?P<method>.+))?$",
    re.I,
)


def not_read_by_code(code: str) -> NotRead | None:
    """The `not_read` test a LOINC code (or a code column holding one) names, if any."""
    from labinterp.catalog import LOINC_PREFIX  # the catalog reads this module

    key = LOINC_PREFIX.sub("", code.strip())
    return next((t for t in _test_name_words().not_read if key in t.loinc), None)


@cache
def not_read_detail(test: str) -> str:
    """Why a test, as a rejected row shows it (its name, else its code), is not read when
    it is a `not_read` test; "" for any other. Rejected rows only: a name that reads as
    the catalog test was rejected for the code the row also printed."""
    from labinterp.catalog import analyte_for  # the catalog reads this module

    text = fold_accents(test or "")
    by_code = not_read_by_code(text)
    if by_code:
        return by_code.detail
    loinc = _LOINC_NAME.match(text)
    for t in _test_name_words().not_read:
        if loinc:
            found = _not_read_method(loinc) is t
        else:  # the name without the words that make it another test
            words = normalise_name(_BRACKETS.sub(" ", text)).split()
            rest = " ".join(w for w in words if w not in t.words)
            found = bool(rest) and analyte_for(None, None, rest) == t.analyte
        if found:
            return t.detail
    return ""


def _not_read_method(loinc: re.Match[str]) -> NotRead | None:
    """The `not_read` test a LOINC display name is by its method, if any."""
    method = normalise_name(loinc["method"] or "")
    component = name_index().get(normalise_name(loinc["component"]))
    return next(
        (t for t in _test_name_words().not_read if t.analyte == component and method in t.methods),
        None,
    )


_BRACKETED = re.compile(r"[(\[]([^()\[\]]*)[)\]]")
_BRACKETS = re.compile(r"[()]")


def _is_unit(text: str) -> bool:
    from labinterp import units  # units reads the catalog: imported here, not at the top

    return units.lookup(text.strip()) is not None


def unit_in_test_name(name: str) -> str:
    """The unit a test name prints in brackets ("Magnesium (mg/dL)" -> "mg/dL"; the last
    such part), if it is a unit of the unit table; else ""."""
    units = [p.strip() for p in _BRACKETED.findall(name or "") if _is_unit(p)]
    return units[-1] if units else ""


@cache
def read_test_name(name: str) -> str | None:
    """The catalog id of a test name that is not a catalog spelling as it stands, by the
    steps of reference_ranges/test_names.toml ("CALCIUM, TOTAL, SERUM" -> calcium,
    "Potassium (K)" -> potassium, "Magnesium (mg/dL)" -> magnesium; its unit:
    unit_in_test_name), or None ("Calcium, Urine")."""
    words = _test_name_words()
    fillers, notes = words.fillers, words.notes
    text = fold_accents(name)
    loinc = _LOINC_NAME.match(text)
    if loinc:  # read by its parts, or not at all
        if (
            normalise_name(loinc["property"]) in words.loinc_properties
            and normalise_name(loinc["system"]) in words.loinc_systems
            and _not_read_method(loinc) is None
        ):
            return name_index().get(normalise_name(loinc["component"]))
        return None
    kept, same_test = [], []
    for part in _BRACKETED.findall(text):
        said = normalise_name(part)
        if _is_unit(part) or not said or all(t in notes for t in _without(said.split(), fillers)):
            continue  # a method, a note or a specimen: "(CKD-EPI 2021)", "(Serum)"
        if said in name_index():
            same_test.append(name_index()[said])  # "(K)", "(CRP)": dropped if it agrees
        else:
            kept.append(part)  # "(Corrected)", "(Urine)": part of what the test is
    tokens = normalise_name(" ".join([_BRACKETED.sub(" ", text), *kept])).split()
    for candidate in (tokens, _without(tokens, fillers), _without(tokens, (*fillers, ("total",)))):
        hit = name_index().get(" ".join(candidate))
        if hit:
            return hit if all(t == hit for t in same_test) else None
    return None


def _without(tokens: list[str], phrases: tuple[tuple[str, ...], ...]) -> list[str]:
    """`tokens` with every occurrence of the `phrases` (token tuples, longest first) taken out."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for phrase in phrases:
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                i += len(phrase)
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


# ---------------------------------------------------------------- eGFR by race


@dataclass(frozen=True)
class _RaceForms:
    """reference_ranges/egfr_race.toml: per form, its LOINC codes and a pattern of its
    words (with a connector before them)."""

    loinc: dict[str, str]  # code -> "race_free" or "race_adjusted"
    words: tuple[tuple[str, re.Pattern[str]], ...]  # race-free first


@cache
def _race_forms() -> _RaceForms:
    def build(data: dict[str, Any]) -> _RaceForms:
        connectors = "|".join(re.escape(str(c)) for c in data["connectors"])
        loinc: dict[str, str] = {}
        words = []
        for form in ("race_free", "race_adjusted"):
            loinc.update({str(code): form for code in data[form]["loinc"]})
            phrases = sorted((str(w).split() for w in data[form]["words"]), key=len, reverse=True)
            # any punctuation or none between the words of a phrase: "Non-Afr. American"
            spelled = "|".join(r"[\W_]*".join(map(re.escape, p)) for p in phrases)
            pattern = rf"(?:(?<![^\W_])(?:{connectors})[\W_]+)?(?<![^\W_])(?:{spelled})(?![^\W_])"
            words.append((form, re.compile(pattern, re.I)))
        return _RaceForms(loinc, tuple(words))

    return read_reference_toml("egfr_race.toml", build)


def egfr_race_form(loinc: str, name: str) -> tuple[str, str]:
    """Which of the two race forms of eGFR a line is ("race_free", "race_adjusted" or "")
    by its LOINC code or the words of its name, and the name with those words taken out
    (reference_ranges/egfr_race.toml). The caller keeps the form only if the test is eGFR."""
    forms = _race_forms()
    by_code = forms.loinc.get(loinc.strip(), "")
    text = fold_accents(name)
    for form, pattern in forms.words:
        if pattern.search(text):
            rest = re.sub(r"[(\[]\s*[)\]]", " ", pattern.sub(" ", text))  # "eGFR ()" -> "eGFR"
            return by_code or form, re.sub(r"\s+", " ", rest).strip(" ,-")
    return by_code, name


@dataclass(frozen=True)
class _Components:
    """reference_ranges/vitamin_d_components.toml: component by LOINC code and by name."""

    loinc: dict[str, str]
    names: dict[str, str]


@cache
def _vitamin_d_components() -> _Components:
    def build(data: dict[str, Any]) -> _Components:
        loinc: dict[str, str] = {}
        names: dict[str, str] = {}
        for component, spec in data.items():
            loinc.update(dict.fromkeys(spec["loinc"], component))
            names.update(dict.fromkeys((normalise_name(n) for n in spec["names"]), component))
        return _Components(loinc, names)

    return read_reference_toml("vitamin_d_components.toml", build)


def vitamin_d_component(loinc: str, code: str, name: str) -> str:
    """Which component of 25-OH vitamin D a line is ("vitamin_d2", "vitamin_d3") by its
    LOINC code or its name (reference_ranges/vitamin_d_components.toml), else ""."""
    found = _vitamin_d_components()
    by_code = found.loinc.get(loinc.strip()) or found.loinc.get(code.strip())
    return (
        by_code
        or found.names.get(normalise_name(name))
        or found.names.get(normalise_name(code))
        or ""
    )
