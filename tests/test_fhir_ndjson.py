"""FHIR NDJSON (bulk export) files are read line by line in batches, with the Patient and
Specimen resources of any line, and give what reading the whole file gives."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import labinterp
from labinterp.errors import InputFileError
from labinterp.readers import fhir
from labinterp.reading import deduplicate, iter_batches, read

LOINC = {"magnesium": "19123-9", "potassium": "2823-3", "calcium": "17861-6"}
UNITS = {"magnesium": "mg/dL", "potassium": "mmol/L", "calcium": "mg/dL"}


def observation(i: int, patient: str, analyte: str, value: float, **extra: Any) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": LOINC[analyte]}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": f"2024-03-{1 + i // 4:02d}T08:30:00Z",  # a draw per patient a day
        "valueQuantity": {"value": value, "unit": UNITS[analyte]},
        **extra,
    }


def bulk_export(tmp_path: Path) -> Path:
    """Observations first; the Patients and a urine Specimen they refer to come after
    them, as in a file that concatenates a bulk export's resource types."""
    lines: list[Any] = []
    for i in range(40):
        patient = f"p{i % 4}"
        lines.append(observation(i, patient, "magnesium", 1.1))
        lines.append(observation(i, patient, "calcium", 7.4))
        lines.append(observation(i, patient, "potassium", 3.1))
    lines.append(observation(99, "p1", "magnesium", 5.0, specimen={"reference": "Specimen/u1"}))
    later = {"effectiveDateTime": "2024-04-01T08:30:00Z"}  # one draw, three versions
    lines.append(observation(98, "p2", "potassium", 3.0, status="cancelled", **later))
    lines.append(observation(97, "p2", "potassium", 2.9, status="preliminary", **later))
    lines.append(observation(96, "p2", "potassium", 4.2, status="corrected", **later))
    lines.append(42)  # not a resource
    for k in range(4):
        lines.append(
            {"resourceType": "Patient", "id": f"p{k}", "gender": "female", "birthDate": "1950"}
        )
    lines.append(
        {"resourceType": "Specimen", "id": "u1", "type": {"text": "Urine"}}  # not blood
    )
    path = tmp_path / "Observation.ndjson"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("batch_rows", [1, 13, 10_000])
def test_batches_of_lines_read_like_the_whole_file(tmp_path: Path, batch_rows: int) -> None:
    path = bulk_export(tmp_path)
    whole = read(path)
    assert whole.rows_in == 125 == whole.rows_used + whole.rows_rejected
    reasons = whole.rejected["reason"].value_counts().to_dict()
    assert reasons == {
        "non_blood_specimen": 1,
        "fhir_status": 1,
        "superseded": 1,
        "malformed_row": 1,
    }
    assert set(whole.results["sex"]) == {"female"}  # from Patient lines after the results
    batches = list(iter_batches(path, batch_rows=batch_rows))
    if batch_rows == 1:
        assert len(batches) == 125
    results = pd.concat([b.results for b in batches], ignore_index=True)
    rejected = pd.concat([b.rejected for b in batches], ignore_index=True)
    results, dropped = deduplicate(results)
    rejected = pd.concat([rejected, dropped], ignore_index=True)
    columns = ["source_row", "patient_id", "analyte", "value", "sex", "result_status"]
    pd.testing.assert_frame_equal(
        results[columns].sort_values("source_row").reset_index(drop=True),
        whole.results[columns].sort_values("source_row").reset_index(drop=True),
    )
    key = ["source_row", "reason", "detail"]
    pd.testing.assert_frame_equal(
        rejected[key].sort_values("source_row").reset_index(drop=True),
        whole.rejected[key].sort_values("source_row").reset_index(drop=True),
    )


def test_audit_in_small_batches_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = bulk_export(tmp_path)
    whole = labinterp.audit(path, tmp_path / "whole")
    core = importlib.import_module("labinterp.audit.core")  # labinterp.audit is the function
    monkeypatch.setattr(core, "_BATCH_ROWS", 7)
    # two buckets start two worker processes, which validate the Observations, 5 a task
    monkeypatch.setattr(fhir, "VALIDATE_CHUNK", 5)
    batched = labinterp.audit(path, tmp_path / "batched", n_buckets=2)
    assert whole["rows_in"] == batched["rows_in"] == 125
    assert whole["rows_rejected_by_reason"] == batched["rows_rejected_by_reason"]
    findings = (tmp_path / "whole" / "findings.csv").read_bytes()
    assert findings == (tmp_path / "batched" / "findings.csv").read_bytes()
    assert b"hypomagnesemia_hypocalcemia" in findings


def test_ndjson_without_observations_is_refused_or_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    patients = folder / "Patient.ndjson"
    patients.write_text(json.dumps({"resourceType": "Patient", "id": "p1"}) + "\n")
    with pytest.raises(InputFileError, match="no Observation resources"):
        list(iter_batches(patients))
    (folder / "Observation.ndjson").write_text(
        json.dumps(observation(1, "p1", "magnesium", 1.1)) + "\n"
    )
    summary = labinterp.audit(folder, tmp_path / "out")
    assert summary["rows_in"] == 1
    assert [s["file"] for s in summary["skipped_files"]] == ["Patient.ndjson"]


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_validation_by_an_executor_gives_the_same_rows_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Observations validated in chunks by another executor (the audit's worker processes;
    threads here) come back as the same rows and rejections, in the file's order."""
    from concurrent.futures import ThreadPoolExecutor

    path = bulk_export(tmp_path)
    bad = observation(95, "p3", "magnesium", 1.0, valueQuantity={"value": "x"})  # invalid
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(bad) + "\n")
    monkeypatch.setattr(fhir, "VALIDATE_CHUNK", chunk)
    serial = list(iter_batches(path, batch_rows=13))
    with ThreadPoolExecutor(max_workers=2) as pool:
        pooled = list(iter_batches(path, batch_rows=13, executor=pool))
    for name in ("results", "rejected"):
        a = pd.concat([getattr(b, name) for b in serial], ignore_index=True)
        b = pd.concat([getattr(b, name) for b in pooled], ignore_index=True)
        key = ["source_row", "reason"] if name == "rejected" else ["source_row", "analyte"]
        pd.testing.assert_frame_equal(
            a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
        )
        assert list(b["source_row"]) == sorted(b["source_row"]) or name == "rejected"
    rejected = pd.concat([b.rejected for b in pooled], ignore_index=True)
    assert (
        "not a valid FHIR Observation" in rejected.set_index("source_row").loc[131, "detail"]
    )  # the line after the 130 of bulk_export
