"""The engine end to end over every lab source beside the project (../shared/data).

Findings must be consistent with the raw values they cite: a fired pattern's evidence
shows the low values that define it, a suppressed one names a guard that fired on that
patient, and the known EDTA-contaminated MIMIC-III draw is caught and never reported as a
pattern.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from labinterp import schema
from labinterp.interpret import interpret_results
from labinterp.reading import read
from labinterp.rules import PATTERN_IDS

pytestmark = pytest.mark.shared_data

SOURCES = [
    "fhir_spec_examples/Bundle-72ac8493-52ac-41bd-8d5d-7258c289b5ea.json",
    "fhir_spec_examples/Bundle-ghp.json",
    "mimic_iii_demo/LABEVENTS_analytes.csv",
    "mimic_iii_demo/LABEVENTS_full_reconstructed.csv.gz",
    "mimic_iv_demo_meds/meds_events_analytes.parquet",
    "mimic_iv_demo_v1_json/analyte_rows.jsonl.gz",
    "mimic_iv_demo_v1_json/example_raw_10000032.json",
    "mimic_iv_demo_v22_excerpts/excerpt_mr10825060_excel_resaved.csv",
    "mimic_iv_demo_v22_excerpts/excerpt_santosry_nursing-pool_pandas_resaved.csv",
    "nhanes_2017_2018_biopro/BIOPRO_J_selected_analytes.csv",
    "synthea_andrew_nguyen_50pt/observations_analytes.csv",
    "synthea_andrew_nguyen_50pt/fhir_observations_analytes.ndjson",
]


def _below(value: float | None, low: float | None, comp: str) -> bool:
    if value is None or low is None:
        return False
    if comp in ("<", "<="):
        return value <= low
    return comp == "" and value < low


def _surely_low(item: dict) -> bool:
    """Below its range both in the canonical unit and as the lab printed value and range
    (a Mg of 1.7 mg/dL on a printed 1.7-2.55 range is not low, whatever 0.6994 mmol/L is
    against 0.70)."""
    comp = item["comparator"] or ""
    return _below(item["value"], item["range_low"], comp) and _below(
        item["value_reported"], item["range_low_reported"], comp
    )


def _vitamin_d_low(item: dict) -> bool:
    """Below the default (IOM) cut-off as printed in the result's unit: 20 ng/mL, else 50
    nmol/L."""
    if item["unit_reported"] == "ng/mL":
        return item["value_reported"] < 20
    return item["value"] < 50


def _evidence(row: pd.Series) -> dict[str, dict]:
    return {item["role"]: item for item in row["evidence_json"]}


@pytest.fixture(scope="module")
def findings(shared_data: Path) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    out = {}
    for name in SOURCES:
        path = shared_data / name
        if path.exists():
            res = read([path]).results
            out[name] = (res, interpret_results(res))
    return out


def test_every_source_interprets_with_the_schema(findings) -> None:
    assert len(findings) == len(SOURCES)
    for name, (res, f) in findings.items():
        schema.check(f, schema.FINDINGS, name)
        assert set(f["status"]) <= set(schema.STATUSES)
        patients = set(res["patient_id"].dropna())
        for rule in PATTERN_IDS:
            assert set(f.loc[f["rule_id"] == rule, "patient_id"]) == patients, (name, rule)


def test_fired_patterns_cite_low_values(findings) -> None:
    checked = 0
    for name, (_, f) in findings.items():
        for _, row in f[f["status"] == "fired"].iterrows():
            ev = _evidence(row)
            if row["rule_id"] == "hypomagnesemia_hypocalcemia":
                assert _surely_low(ev["magnesium"]) and _surely_low(ev["calcium"]), (name, row)
            elif row["rule_id"] == "hypomagnesemia_hypokalemia":
                assert _surely_low(ev["magnesium"]) and _surely_low(ev["potassium"]), (name, row)
            elif row["rule_id"] == "vitamin_d_resistance":
                assert _surely_low(ev["magnesium"]) and _vitamin_d_low(ev["vitamin_d"]), (name, row)
            else:
                continue
            if row["rule_id"] != "vitamin_d_resistance":
                # the CTCAE grade of a Mg below its lower limit is 1 or more
                assert pd.isna(row["grade"]) or row["grade"] >= 1, (name, row)
            checked += 1
    assert checked > 50  # MIMIC has many


def _surely_high(item: dict) -> bool:
    """Above its range both in the canonical unit and as the lab printed it."""
    comp = item["comparator"] or ""
    if comp not in ("", ">", ">="):
        return False
    return all(
        v is not None and hi is not None and v > hi
        for v, hi in (
            (item["value"], item["range_high"]),
            (item["value_reported"], item["range_high_reported"]),
        )
    )


def test_high_calcium_with_low_mg_judges_the_calcium_p1_would(findings) -> None:
    """The cited calcium is high, and it is an ionized one whenever the patient has an
    ionized Ca within 48 h of the cited Mg (CLINICAL.md sec. 3 prefers it)."""
    checked = 0
    for name, (res, f) in findings.items():
        ionized = res[res["analyte"] == "calcium_ionized"]
        for _, row in f[f["rule_id"] == "hypercalcemia_hypomagnesemia"].iterrows():
            ev = _evidence(row)
            assert _surely_low(ev["magnesium"]) and _surely_high(ev["calcium"]), (name, row)
            mg_at = pd.Timestamp(ev["magnesium"]["collected_at"])
            mine = ionized[ionized["patient_id"] == row["patient_id"]]
            near = (mine["collected_at"] - mg_at).abs() <= pd.Timedelta(hours=48)
            if near.any():
                assert ev["calcium"]["analyte"] == "calcium_ionized", (name, row)
            checked += 1
    assert checked >= 3


def test_contamination_next_to_low_kidney_function_says_so(findings) -> None:
    """Kidney failure makes the EDTA picture for real: the guard fires (CLINICAL.md keeps
    CKD as context) and says so where an eGFR or creatinine nearby shows it."""
    said = 0
    for name, (_, f) in findings.items():
        edta = f[f["rule_id"] == "edta_contamination"]
        assert (edta["status"] == "fired").all(), name
        kidney = edta["caveats"].str.contains("kidney_function_low")
        assert edta.loc[kidney, "note"].str.contains("Kidney function is low").all(), name
        said += int(kidney.sum())
    assert said > 0  # MIMIC-IV has such draws


def test_suppressed_patterns_name_a_fired_guard(findings) -> None:
    for name, (_, f) in findings.items():
        sup = f[f["status"] == "suppressed"]
        assert (sup["suppressed_by"] == "edta_contamination").all()
        guarded = set(f.loc[f["rule_id"] == "edta_contamination", "patient_id"])
        assert set(sup["patient_id"]) <= guarded, name


def test_mimic_iii_contaminated_draw_is_caught_not_reported(findings) -> None:
    _, f = findings["mimic_iii_demo/LABEVENTS_analytes.csv"]
    mine = f[f["patient_id"] == "10027"]
    when = pd.Timestamp("2190-07-22 15:04")
    guard = mine[(mine["rule_id"] == "edta_contamination") & (mine["episode_start"] == when)]
    assert len(guard) == 1 and guard.iloc[0]["status"] == "fired"
    for _, row in mine[mine["rule_id"].isin(PATTERN_IDS)].iterrows():
        if row["status"] == "fired":
            times = {item["collected_at"] for item in row["evidence_json"]}
            assert "2190-07-22T15:04:00" not in times
