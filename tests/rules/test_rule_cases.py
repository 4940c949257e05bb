"""Per-rule YAML cases run through the real reader and the engine, plus the meta-test.

Each case becomes a small CSV in the bundled sample's layout (units as labs print them),
is read with `labinterp.read` and interpreted; the finding of the case's rule is compared
with the expectation. A case's rows are all read, unless it lists the reasons of the rows
the reader rejects (`rejected`). Guard and context rules report fired rows only, so "not_fired" for
them means "no fired row".
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from labinterp.interpret import interpret_results
from labinterp.reading import read
from labinterp.rules import REGISTRY

HERE = Path(__file__).resolve().parent
HEADER = [
    "patient_id",
    "sex",
    "birth_date",
    "collected_at",
    "specimen_id",
    "test",
    "loinc",
    "result",
    "unit",
    "reference_range",
    "flag",
    "comment",
    "medication",
]
SECTIONS = ("What it flags:", "Why it matters:", "Limitations:", "References:")


def _load() -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in HERE.glob("*.yaml")}


SPECS = _load()
CASES = [
    pytest.param(rule_id, case, id=f"{rule_id}::{case['name']}")
    for rule_id, spec in sorted(SPECS.items())
    for case in spec["cases"]
]


def _case_rows(case: dict[str, Any], patient_id: str) -> list[list[str]]:
    patient = {"sex": "F", "birth_date": "1970-01-01", **case.get("patient", {})}
    rows = []
    for line in case["rows"]:
        parts = [p.strip() for p in str(line).split("|")]
        parts += [""] * (8 - len(parts))
        when, test, result, unit, rng, comment, specimen, medication = parts[:8]
        rows.append(
            [
                patient_id,
                patient["sex"],
                str(patient["birth_date"]),
                when,
                specimen,
                test,
                "",
                result,
                unit,
                rng,
                "",
                comment,
                medication,
            ]
        )
    return rows


@pytest.fixture(scope="module")
def case_findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """Every case is one patient of one CSV per option set: read once, interpret once.

    The engine's result for a patient does not depend on the other patients in the table
    (tested in test_engine.py), so this equals running each case alone, much faster.
    """
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for rule_id, case in (p.values for p in CASES):
        key = yaml.safe_dump(case.get("options", {}), sort_keys=True)
        groups.setdefault(key, []).append((f"{rule_id}::{case['name']}", case))
    out: dict[str, pd.DataFrame] = {}
    for i, (key, cases) in enumerate(groups.items()):
        path = tmp_path_factory.mktemp("cases") / f"cases_{i}.csv"
        case_of_line: list[int] = []  # per data line of the file, its case
        with path.open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(HEADER)
            for j, (_, case) in enumerate(cases):
                rows = _case_rows(case, f"CASE-{i:02d}-{j:03d}")
                w.writerows(rows)
                case_of_line += [j] * len(rows)
        result = read([path])
        rejected = result.rejected
        of_case = [case_of_line[int(r) - 2] for r in rejected["source_row"]]  # line 1: header
        for j, (name, case) in enumerate(cases):
            reasons = sorted(rejected["reason"][[c == j for c in of_case]])
            assert reasons == sorted(case.get("rejected", [])), (name, rejected.to_string())
        findings = interpret_results(result.results, **yaml.safe_load(key))
        for j, (name, _) in enumerate(cases):
            out[name] = findings[findings["patient_id"] == f"CASE-{i:02d}-{j:03d}"]
    return out


@pytest.mark.parametrize(("rule_id", "case"), CASES)
def test_case(rule_id: str, case: dict[str, Any], case_findings: dict[str, pd.DataFrame]) -> None:
    findings = case_findings[f"{rule_id}::{case['name']}"]
    rows = findings[findings["rule_id"] == rule_id]
    if "episode" in case:
        rows = rows[rows["episode_start"] == pd.Timestamp(str(case["episode"]))]
    expect = case["expect"]
    kind = next(r.kind for r in REGISTRY if r.id == rule_id)
    if kind != "pattern":
        fired = rows[rows["status"] == "fired"]
        if expect["status"] == "not_fired":
            assert fired.empty, fired.to_string()
            return
        rows = fired
    assert len(rows) == 1, rows.to_string()
    row = rows.iloc[0]
    assert row["status"] == expect["status"], row.to_dict()
    if "tier" in expect:
        assert row["tier"] == expect["tier"], row.to_dict()
    elif row["status"] != "fired":
        assert row["tier"] == ""
    if "grade" in expect:
        assert row["grade"] == expect["grade"], row.to_dict()
    for key, column in (("caveats", "caveats"), ("missing", "missing_inputs")):
        have = set(filter(None, str(row[column]).split(";")))
        assert set(expect.get(key, [])) <= have, row.to_dict()
    # caveats that must not be there
    assert not set(expect.get("no_caveats", [])) & set(str(row["caveats"]).split(";"))
    if "suppressed_by" in expect:
        assert row["suppressed_by"] == expect["suppressed_by"]
    if "note_contains" in expect:
        assert expect["note_contains"] in row["note"], row["note"]
    for text in expect.get("evidence_contains", []):
        assert text in row["evidence"], row["evidence"]
    if row["status"] == "fired":
        assert row["evidence"], "a fired finding must carry evidence"


@pytest.mark.parametrize("rule", REGISTRY, ids=lambda r: r.id)
def test_every_rule_has_cases_and_docstring(rule: Any) -> None:
    spec = SPECS.get(rule.id)
    assert spec is not None, f"tests/rules/{rule.id}.yaml is missing"
    assert spec["rule"] == rule.id
    statuses = {c["expect"]["status"] for c in spec["cases"]}
    needed = (
        {"fired", "not_fired", "indeterminate"}
        if rule.kind == "pattern"
        else {"fired", "not_fired"}
    )
    assert needed <= statuses, f"{rule.id} lacks cases for {needed - statuses}"
    if rule.kind == "pattern":
        tiers_needed = {
            "hypomagnesemia_hypocalcemia": {"supported", "possible"},
            "vitamin_d_resistance": {"serial", "single"},
            "hypomagnesemia_hypokalemia": {"refractory", "concurrent"},
        }[rule.id]
        tiers = {c["expect"].get("tier") for c in spec["cases"]}
        assert tiers_needed <= tiers
        assert any("boundary" in c["name"] for c in spec["cases"])
    positions = [rule.doc.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions), f"{rule.id} docstring lacks a section"
    assert positions == sorted(positions)
    assert rule.citations and all(c.startswith("S") for c in rule.citations)


def test_every_yaml_names_a_registered_rule() -> None:
    assert set(SPECS) <= {r.id for r in REGISTRY}
