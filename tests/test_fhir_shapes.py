"""FHIR shapes real exports use: contained resources, reports naming results by fullUrl,
referenceRanges for one sex or age, UCUM codes beside display units, valueInteger,
subjects given by identifier, and the status "unknown"."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labinterp.reading import read

MG, CA, PTH = "19123-9", "17861-6", "2731-8"
WHEN = "2024-03-01T08:00:00Z"


def obs(loinc: str, value: Any, unit: str = "mg/dL", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "valueQuantity": {"value": value, "unit": unit},
        **extra,
    }


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-01-01"}
OF_P1 = {"subject": {"reference": "Patient/p1"}, "effectiveDateTime": WHEN}


def bundle(tmp_path: Path, *resources: dict[str, Any]) -> Path:
    doc = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }
    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def reasons(result: Any) -> list[str]:
    return sorted(result.rejected["reason"])


def test_contained_specimen_is_resolved(tmp_path: Path) -> None:
    urine = {"resourceType": "Specimen", "id": "sp1", "type": {"text": "Urine"}}
    mg = obs(MG, 4.5, specimen={"reference": "#sp1"}, contained=[urine], **OF_P1)
    result = read(bundle(tmp_path, PATIENT, mg))
    assert reasons(result) == ["non_blood_specimen"]  # a urine Mg is not read as blood


def test_contained_patient_is_identified_by_its_identifier(tmp_path: Path) -> None:
    patient = {
        "resourceType": "Patient",
        "id": "pt",
        "identifier": [{"value": "MRN-5"}],
        "gender": "male",
    }
    mg = obs(MG, 1.1, subject={"reference": "#pt"}, effectiveDateTime=WHEN, contained=[patient])
    result = read(bundle(tmp_path, mg))
    assert result.results["patient_id"].tolist() == ["MRN-5"]


def test_report_results_contained_and_by_urn_uuid(tmp_path: Path) -> None:
    def report(pid: str, day: int, contained: list[Any], refs: list[str]) -> dict[str, Any]:
        return {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "code": {"text": "BMP"},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": f"2024-03-0{day}T08:00:00Z",
            "contained": contained,
            "result": [{"reference": r} for r in refs],
        }

    # two reports whose contained results share the id "obs1": each has its own
    first = report("pA", 1, [{**obs(MG, 1.1), "id": "obs1"}], ["#obs1"])
    second = report("pB", 5, [{**obs(MG, 2.0), "id": "obs1"}], ["#obs1"])
    # a transaction names its new resources by "urn:uuid:" fullUrls only
    uuid = "urn:uuid:22222222-2222-2222-2222-222222222222"
    third = report("pC", 7, [], [uuid])
    doc = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": first},
            {"resource": second},
            {"fullUrl": uuid, "resource": obs(CA, 7.5)},
            {"resource": third},
        ],
    }
    path = tmp_path / "reports.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = read(path)
    assert reasons(result) == []
    got = result.results.sort_values("patient_id")
    assert got["patient_id"].tolist() == ["pA", "pB", "pC"]
    assert got["value_raw"].tolist() == ["1.1", "2.0", "7.5"]
    assert got["collected_at"].dt.day.tolist() == [1, 5, 7]


def ranged(loinc: str, value: float, unit: str, *ranges: dict[str, Any]) -> dict[str, Any]:
    return obs(loinc, value, unit, referenceRange=list(ranges), **OF_P1)


def limits(low: float | None, high: float | None, unit: str = "mg/dL") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if low is not None:
        out["low"] = {"value": low, "unit": unit}
    if high is not None:
        out["high"] = {"value": high, "unit": unit}
    return out


def sex(code: str) -> dict[str, Any]:
    system = "http://hl7.org/fhir/administrative-gender"
    return {"appliesTo": [{"coding": [{"system": system, "code": code}]}]}


def years(low: int | None, high: int | None) -> dict[str, Any]:
    band = {k: {"value": v, "unit": "a"} for k, v in (("low", low), ("high", high)) if v}
    return {"age": band}


def test_reference_range_for_the_patients_sex_and_age(tmp_path: Path) -> None:
    mg = ranged(
        MG, 1.8, "mg/dL", {**limits(1.9, 2.5), **sex("male")}, {**limits(1.6, 2.3), **sex("female")}
    )
    pth = ranged(
        PTH,
        90,
        "pg/mL",
        {**limits(12, 88, "pg/mL"), **years(0, 17)},
        {**limits(15, 65, "pg/mL"), **years(18, None)},
    )
    result = read(bundle(tmp_path, PATIENT, mg, pth)).results.set_index("analyte")
    assert result.loc["magnesium", ["range_low_reported", "range_high_reported"]].tolist() == [
        1.6,
        2.3,
    ]
    assert result.loc["pth", ["range_low_reported", "range_high_reported"]].tolist() == [15, 65]


def test_no_range_when_none_applies_safely(tmp_path: Path) -> None:
    # a male-only range for a female, and a treatment target: neither is her normal range
    mg = ranged(MG, 1.8, "mg/dL", {**limits(1.9, 2.5), **sex("male")})
    ca = ranged(CA, 9.0, "mg/dL", {**limits(8.0, 9.0), "type": {"coding": [{"code": "treatment"}]}})
    result = read(bundle(tmp_path, PATIENT, mg, ca)).results
    assert set(result["range_origin"]) == {"bundled"}


def test_range_in_another_unit_is_converted(tmp_path: Path) -> None:
    ca = ranged(CA, 8.3, "mg/dL", limits(2.12, 2.62, "mmol/L"))
    result = read(bundle(tmp_path, PATIENT, ca))
    assert reasons(result) == []
    low, high = result.results[["range_low_reported", "range_high_reported"]].iloc[0]
    assert low == pytest.approx(8.5, abs=0.01) and high == pytest.approx(10.5, abs=0.01)


def test_ucum_code_preferred_to_display_unit(tmp_path: Path) -> None:
    mg = obs(MG, 1.1, **OF_P1)
    mg["valueQuantity"] = {
        "value": 1.1,
        "unit": "milligram per deciliter",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    }
    result = read(bundle(tmp_path, PATIENT, mg))
    assert reasons(result) == []
    assert result.results["unit_raw"].tolist() == ["mg/dL"]


def test_value_integer_and_subject_identifier(tmp_path: Path) -> None:
    count = {k: v for k, v in obs(MG, 0, **OF_P1).items() if k != "valueQuantity"}
    count["valueInteger"] = 2  # no unit: read, then rejected for its missing unit
    by_identifier = obs(
        MG,
        1.1,
        subject={"identifier": {"system": "urn:oid:1.2.3", "value": "MRN-7"}},
        effectiveDateTime=WHEN,
    )
    result = read(bundle(tmp_path, PATIENT, count, by_identifier))
    assert result.rejected[["reason", "value_raw"]].values.tolist() == [["unknown_unit", "2"]]
    assert result.results["patient_id"].tolist() == ["MRN-7"]


def test_subject_identifier_finds_the_files_patient(tmp_path: Path) -> None:
    """A subject given by the identifier of a Patient in the file is that Patient: one
    patient with the results referring to it by reference, with its sex and age."""
    patient = {**PATIENT, "identifier": [{"system": "urn:oid:1.2.3", "value": "MRN-7"}]}
    by_reference = obs(MG, 1.9, **OF_P1)
    by_identifier = obs(
        CA,
        8.1,
        subject={"identifier": {"system": "urn:oid:1.2.3", "value": "MRN-7"}},
        effectiveDateTime=WHEN,
    )
    other_system = obs(
        CA,
        8.2,
        subject={"identifier": {"system": "urn:oid:9.9", "value": "MRN-7"}},
        effectiveDateTime=WHEN,
    )
    results = read(bundle(tmp_path, patient, by_reference, by_identifier, other_system)).results
    got = results[["patient_id", "sex", "age_years"]].astype(object).values.tolist()
    assert got[:2] == [["p1", "female", 64], ["p1", "female", 64]]
    assert got[2][0] == "MRN-7" and pd.isna(got[2][1])  # another system's MRN-7: not p1


def test_status_unknown_is_kept_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pth = obs(PTH, 30, "pg/mL", status="unknown", **OF_P1)
    with caplog.at_level(logging.WARNING):
        result = read(bundle(tmp_path, PATIENT, pth))
    assert len(result.results) == 1 and pd.isna(result.results["result_status"].iloc[0])
    assert "result_statuses.toml" not in caplog.text


def test_a_value_keeps_its_printed_decimals(tmp_path: Path) -> None:
    """valueQuantity 4.20 is read as "4.20" (its last decimal says how precisely the lab
    reported it), as is a JSON Lines export's number; the range limits are read as
    numbers all the same."""
    k = obs("2823-3", "VALUE", "mmol/L", **OF_P1)
    k["referenceRange"] = [{"low": {"value": "LOW", "unit": "mmol/L"}, "high": {"value": "HIGH"}}]
    k["code"]["text"] = "Potassium"
    text = json.dumps(bundle_doc(PATIENT, k))
    for key, number in (("VALUE", "4.20"), ("LOW", "3.50"), ("HIGH", "5.10")):
        text = text.replace(f'"{key}"', number)
    path = tmp_path / "k.json"
    path.write_text(text, encoding="utf-8")
    (row,) = read(path).results.itertuples()
    assert (row.value_raw, row.value, row.range_low, row.range_high) == ("4.20", 4.2, 3.5, 5.1)
    lines = tmp_path / "export.jsonl"
    lines.write_text(
        '{"patient_id": "P1", "collected_at": "2024-03-01 08:00", "test": "Potassium",'
        ' "result": 4.20, "unit": "mmol/L"}\n',
        encoding="utf-8",
    )
    (row,) = read(lines).results.itertuples()
    assert (row.value_raw, row.value) == ("4.20", 4.2)


def bundle_doc(*resources: dict[str, Any]) -> dict[str, Any]:
    entries = [{"resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
