"""Medication records of their own (FHIR MedicationRequest, MedicationStatement and
MedicationAdministration) written into the medication text of the results they cover
(labinterp/readers/medications.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

import labinterp
from labinterp.interpret import interpret_results
from labinterp.reading import iter_batches, read

DRAW = "2024-03-05T08:00:00-05:00"


def observation(i: int, name: str, loinc: str, value: float, unit: str, when: str = DRAW) -> dict:
    low, high = {"Magnesium": (1.7, 2.4), "Potassium": (3.5, 5.1)}[name]
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}], "text": name},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit},
        "referenceRange": [{"low": {"value": low}, "high": {"value": high}}],
    }


def low_mg_and_k(when: str = DRAW) -> list[dict]:
    return [
        observation(1, "Magnesium", "19123-9", 1.2, "mg/dL", when),
        observation(2, "Potassium", "2823-3", 3.0, "mmol/L", when),
    ]


OMEPRAZOLE = {"coding": [{"display": "omeprazole 20 MG Delayed Release Oral Capsule"}]}


def request(status: str = "active", **extra: Any) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": OMEPRAZOLE,
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2023-11-01",
        **extra,
    }


def dispense(
    handed_over: str, days: int | None, unit: str = "d", status: str = "completed"
) -> dict:
    res = {
        "resourceType": "MedicationDispense",
        "status": status,
        "medicationCodeableConcept": {"text": "Esomeprazole 40 MG"},
        "subject": {"reference": "Patient/p1"},
        "whenHandedOver": handed_over,
    }
    if days is not None:
        res["daysSupply"] = {"value": days, "unit": unit, "code": unit}
    return res


def bundle(tmp_path: Path, *resources: dict) -> Path:
    path = tmp_path / "bundle.json"
    doc = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def p3_caveats(path: Path) -> str:
    findings = interpret_results(read(path).results)
    p3 = findings[findings["rule_id"] == "hypomagnesemia_hypokalemia"]
    assert p3["status"].tolist() == ["fired"]
    return str(p3["caveats"].iloc[0])


@pytest.mark.parametrize(
    ("record", "covers"),
    [
        (request(), True),  # an active order, written months before: still taken
        (request("stopped"), False),  # stopped, no end: its own day only
        (request("stopped", authoredOn="2024-03-05"), True),  # ... which is the draw's day
        (request("completed", dispenseRequest={"validityPeriod": {"end": "2024-04-01"}}), True),
        (request("completed", dispenseRequest={"validityPeriod": {"end": "2024-03-04"}}), False),
        (request("cancelled"), False),
        (request("entered-in-error"), False),
        (request(intent="proposal"), False),  # suggested, not ordered
        (request(doNotPerform=True), False),
        (request(authoredOn="2024-03-06"), False),  # ordered after the draw
        (request(authoredOn=""), False),  # no day: covers nothing
        (request(subject={"reference": "Patient/p2"}), False),  # someone else's
        (
            {
                "resourceType": "MedicationStatement",
                "status": "completed",
                "medicationCodeableConcept": {"text": "Pantoprazol 40 mg"},
                "subject": {"reference": "Patient/p1"},
                "effectivePeriod": {"start": "2024-02-01", "end": "2024-03-05"},
            },
            True,
        ),
        (
            {
                "resourceType": "MedicationStatement",
                "status": "not-taken",
                "medicationCodeableConcept": {"text": "furosemide"},
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": "2024-01-01",
            },
            False,
        ),
        (
            {  # R5: recorded, but the patient says they do not take it
                "resourceType": "MedicationStatement",
                "status": "recorded",
                "medication": {"concept": {"text": "furosemide 40 mg"}},
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": "2024-03-05",
                "adherence": {"code": {"coding": [{"code": "not-taking"}]}},
            },
            False,
        ),
        (
            {  # R5: recorded and taken
                "resourceType": "MedicationStatement",
                "status": "recorded",
                "medication": {"concept": {"text": "furosemide 40 mg"}},
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": "2024-03-05",
                "adherence": {"code": {"coding": [{"code": "taking-as-directed"}]}},
            },
            True,
        ),
        (
            {  # R5: the medicine is a CodeableReference to a Medication in the bundle
                "resourceType": "MedicationAdministration",
                "status": "completed",
                "medication": {"reference": {"reference": "Medication/lasix"}},
                "subject": {"reference": "Patient/p1"},
                "occurenceDateTime": "2024-03-05T06:00:00-05:00",
            },
            True,
        ),
        (
            {  # R4: a contained Medication
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "contained": [
                    {"resourceType": "Medication", "id": "m", "code": {"text": "Bumetanide 1 mg"}}
                ],
                "medicationReference": {"reference": "#m"},
                "subject": {"reference": "Patient/p1"},
                "authoredOn": "2024-01-10",
            },
            True,
        ),
        (request(medicationCodeableConcept={"text": "Simvastatin 10 MG Oral Tablet"}), False),
        (dispense("2024-02-05", 30), True),  # Feb 5 + 30 days supply: through March 5
        (dispense("2024-02-05", 29), False),  # through March 4
        (dispense("2024-02-05", 30, unit="mo"), False),  # a supply not in days: its day only
        (dispense("2024-03-05", None), True),  # no supply: its own day
        (dispense("2024-03-05", 30, status="declined"), False),
    ],
)
def test_a_record_covering_the_draw_says_so_in_the_finding(
    tmp_path: Path, record: dict, covers: bool
) -> None:
    lasix = {"resourceType": "Medication", "id": "lasix", "code": {"text": "Furosemide 40 mg"}}
    path = bundle(tmp_path, *low_mg_and_k(), record, lasix)
    assert ("mg_lowering_medication" in p3_caveats(path)) is covers


def test_a_vitamin_d_statement_strengthens_the_vitamin_d_pattern(tmp_path: Path) -> None:
    """A supplement recorded while 25-OH D stays low over months (tier serial)."""

    def vitamin_d(i: str, when: str, value: float) -> dict:
        return {
            "resourceType": "Observation",
            "id": i,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "62292-8"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "ng/mL"},
        }

    statement = {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": {"text": "Cholecalciferol 2000 IU daily"},
        "subject": {"reference": "Patient/p1"},
        "dateAsserted": "2024-01-15",
    }
    findings = interpret_results(
        read(
            bundle(
                tmp_path,
                *low_mg_and_k(),
                vitamin_d("d0", "2023-11-20T08:00:00-05:00", 11),
                vitamin_d("d1", DRAW, 12),
                statement,
            )
        ).results
    )
    p2 = findings[findings["rule_id"] == "vitamin_d_resistance"].iloc[0]
    assert (p2["status"], p2["tier"]) == ("fired", "serial")
    assert "vitamin_d_supplement" in p2["caveats"]


def test_check_counts_the_records_and_the_results_they_cover(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labinterp.cli import main

    path = bundle(tmp_path, *low_mg_and_k(), request(), request("cancelled"))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Medicines: 1 medication record(s) name" in out
    assert "while on a PPI or diuretic       2" in out


def test_a_bulk_export_covers_results_in_every_batch(tmp_path: Path) -> None:
    # the medication record sits after the results it covers, on its own line
    path = tmp_path / "export.ndjson"
    lines = [*low_mg_and_k(), *low_mg_and_k("2024-03-06T08:00:00-05:00"), request()]
    for i, res in enumerate(lines):
        res["id"] = f"r{i}"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
    batches = list(iter_batches(path, batch_rows=2))
    assert len(batches) == 2
    flags = [q for b in batches for q in b.results["quality"].fillna("").tolist()]
    assert flags == ["mg_lowering_medication"] * 4
    assert read(path).results["quality"].fillna("").tolist() == flags


def test_records_add_to_a_medication_the_row_names_itself(tmp_path: Path) -> None:
    from labinterp.readers.medications import MedicationRecord, mark_results
    from labinterp.schema import raw_from_records

    raw = raw_from_records(
        [
            {"patient_id": "p1", "collected_at": "2024-03-05 08:00", "medication": "Metformin"},
            {"patient_id": "p1", "collected_at": "2024-03-09 08:00"},
            {"patient_id": "p1", "collected_at": "not a date"},
            {"patient_id": "p2", "collected_at": "2024-03-05"},
        ],
        "x.csv",
    )
    mark_results(
        raw,
        [
            MedicationRecord("p1", "Furosemide", "2024-03-01", "2024-03-05"),
            MedicationRecord("p1", "Omeprazole", "2024-03-05T23:30:00+09:00"),  # its own day
            MedicationRecord("p1", "Furosemide", "2024-03-05"),  # the same medicine twice
        ],
    )
    # the medicines by their generic names, each once
    assert raw["medication"].tolist() == ["Metformin; furosemide; omeprazole", "", "", ""]


def test_coverage_matches_checking_every_record_against_every_result() -> None:
    """The one-search-per-row coverage gives what pairing each record with each result
    would, on random records (some open, some of a day, some spans) and results."""
    import random

    from labinterp.readers.medications import MedicationRecord, mark_results
    from labinterp.schema import raw_from_records

    rng = random.Random(7)
    day0 = dt.date(2024, 1, 1)

    def day(n: int) -> str:
        return (day0 + dt.timedelta(days=n)).isoformat()

    records = []
    for _ in range(400):
        start = rng.randrange(0, 200)
        kind = rng.choice(["span", "day", "open"])
        end = day(start + rng.randrange(0, 30)) if kind == "span" else ""
        records.append(
            MedicationRecord(
                rng.choice("abc"),
                rng.choice(["Furosemide 40 mg IV", "furosemide", "Omeprazole 20 MG"]),
                day(start),
                end,
                ongoing=kind == "open",
            )
        )
    rows = [
        {"patient_id": rng.choice("abcd"), "collected_at": f"{day(rng.randrange(-5, 240))} 08:00"}
        for _ in range(1500)
    ]
    raw = raw_from_records(rows, "x.csv")
    mark_results(raw, records)

    def covers(r: MedicationRecord, row: dict) -> bool:
        when = row["collected_at"][:10]
        last = r.end or ("9999-12-31" if r.ongoing else r.start)
        return r.patient_id == row["patient_id"] and r.start <= when <= last

    expected = [
        "; ".join(
            name
            for name in ("furosemide", "omeprazole")
            if any(covers(r, row) and name in r.text.lower() for r in records)
        )
        for row in rows
    ]
    assert raw["medication"].fillna("").tolist() == expected


def test_a_synthea_medication_list_beside_the_observations(tmp_path: Path) -> None:
    (tmp_path / "observations.csv").write_text(
        "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE\n"
        "2021-05-02T08:00:00Z,pa,e1,laboratory,19123-9,Magnesium,1.2,mg/dL,numeric\n"
        "2021-05-02T08:00:00Z,pa,e1,laboratory,6298-4,Potassium,3.0,mmol/L,numeric\n"
        "2021-05-02T08:00:00Z,pb,e2,laboratory,19123-9,Magnesium,1.2,mg/dL,numeric\n",
        encoding="utf-8",
    )
    (tmp_path / "medications.csv").write_text(
        "START,STOP,PATIENT,PAYER,ENCOUNTER,CODE,DESCRIPTION,BASE_COST,PAYER_COVERAGE,"
        "DISPENSES,TOTALCOST,REASONCODE,REASONDESCRIPTION\n"
        # no STOP: still taken
        "2019-01-01T09:00:00Z,,pa,p,e,310798,Hydrochlorothiazide 25 MG Oral Tablet,1,0,1,1,,\n"
        # stopped before the draw
        "2018-01-01T09:00:00Z,2019-01-01T09:00:00Z,pb,p,e,40790,Omeprazole 20 MG,1,0,1,1,,\n"
        "2018-01-01T09:00:00Z,,pb,p,e,314231,Simvastatin 10 MG Oral Tablet,1,0,1,1,,\n",
        encoding="utf-8",
    )
    res = read(tmp_path)
    flagged = res.results["quality"].fillna("").str.contains("mg_lowering_medication")
    assert flagged.tolist() == [True, True, False]
    assert [f.medication_records for f in res.files] == [2]
    summary = labinterp.audit(tmp_path, tmp_path / "audit")
    assert [f["medication_records"] for f in summary["inputs"]] == [2]
    assert summary["fired_caveats"] == {"hypomagnesemia_hypokalemia": {"mg_lowering_medication": 1}}
    assert res.skipped == [
        {
            "file": "medications.csv",
            "reason": "not an export: the medication list read beside an export of "
            "Synthea observations.csv.",
        }
    ]


def test_mimic_prescriptions_gzipped_beside_labevents(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "LABEVENTS.csv").write_text(
        "ROW_ID,SUBJECT_ID,HADM_ID,ITEMID,CHARTTIME,VALUE,VALUENUM,VALUEUOM,FLAG\n"
        "1,7,100,50960,2150-01-03 06:00:00,1.2,1.2,mg/dL,abnormal\n"
        "2,7,100,50971,2150-01-03 06:00:00,3.0,3.0,mEq/L,abnormal\n"
        "3,7,100,50960,2150-01-09 06:00:00,1.2,1.2,mg/dL,abnormal\n",
        encoding="utf-8",
    )
    with gzip.open(tmp_path / "PRESCRIPTIONS.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write(
            "ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,STARTDATE,ENDDATE,DRUG_TYPE,DRUG\n"
            "1,7,100,,2150-01-02 00:00:00,2150-01-04 00:00:00,MAIN,Furosemide\n"
            "2,7,100,,2150-01-02 00:00:00,2150-01-04 00:00:00,MAIN,Heparin\n"
        )
    res = read(tmp_path / "LABEVENTS.csv")
    flagged = res.results["quality"].fillna("").str.contains("mg_lowering_medication")
    assert flagged.tolist() == [True, True, False]  # the order ended before the third draw


@pytest.mark.parametrize(
    "broken",
    [
        request(status={"coding": "active"}),
        request(intent=["order"]),
        request(medicationCodeableConcept="omeprazole"),
        request(subject="Patient/p1"),
        request(authoredOn=20240101),
        request(dispenseRequest={"validityPeriod": ["2024-01-01"]}),
        {**request(), "resourceType": ["MedicationRequest"]},
        request(contained=[{"resourceType": "Medication", "id": ["m"]}]),
        request(medicationReference={"reference": 5}),
        {**request(), "resourceType": "MedicationStatement", "adherence": ["not-taking"]},
    ],
)
def test_a_malformed_medication_record_is_passed_over(tmp_path: Path, broken: dict) -> None:
    # a medication record is never validated: what is not where FHIR puts it is not read,
    # and the results of the file are read as before
    res = read(bundle(tmp_path, *low_mg_and_k(), broken))
    assert res.rows_used == 2


def test_a_bulk_export_resolves_a_medication_listed_after_its_order(tmp_path: Path) -> None:
    # the index keeps records, not resources: an order naming its medicine by a Medication
    # on a later line waits for it
    order = request(medicationReference={"reference": "Medication/ppi"})
    del order["medicationCodeableConcept"]
    statin = request(medicationCodeableConcept={"text": "Simvastatin 10 MG"})
    ppi = {"resourceType": "Medication", "id": "ppi", "code": {"text": "Pantoprazole 40 MG"}}
    path = tmp_path / "export.ndjson"
    lines = [*low_mg_and_k(), order, statin, ppi]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
    flags = read(path).results["quality"].fillna("").tolist()
    assert flags == ["mg_lowering_medication"] * 2
    assert read(path).files[0].medication_records == 1


def test_a_bulk_export_reads_medication_records_from_their_own_files(tmp_path: Path) -> None:
    """A FHIR bulk export writes each resource type to a file of its own: the orders in
    MedicationRequest.ndjson, naming a Medication of Medication.ndjson, cover the results
    of Observation.ndjson, in `read` and in the audit (which reads in batches)."""
    import gzip

    def ndjson(name: str, *resources: dict) -> None:
        text = "".join(json.dumps(r) + "\n" for r in resources)
        if name.endswith(".gz"):
            with gzip.open(tmp_path / name, "wt", encoding="utf-8") as fh:
                fh.write(text)
        else:
            (tmp_path / name).write_text(text, encoding="utf-8")

    order = request(medicationReference={"reference": "Medication/ppi"})
    del order["medicationCodeableConcept"]
    ndjson("Observation.ndjson", *low_mg_and_k())
    ndjson("MedicationRequest.ndjson.gz", order, request("cancelled"))
    ndjson(
        "Medication.ndjson",
        {"resourceType": "Medication", "id": "ppi", "code": {"text": "Esomeprazole 40 MG"}},
    )
    res = read(tmp_path)
    assert res.results["quality"].fillna("").tolist() == ["mg_lowering_medication"] * 2
    assert res.results["mg_lowering_medicines"].tolist() == ["esomeprazole"] * 2
    skipped = {s["file"]: s for s in res.skipped}
    assert skipped["MedicationRequest.ndjson.gz"]["medication_records"] == 1
    assert "Medication resources name the medicines" in skipped["Medication.ndjson"]["reason"]
    summary = labinterp.audit(tmp_path, tmp_path / "audit")
    assert summary["fired_caveats"] == {"hypomagnesemia_hypokalemia": {"mg_lowering_medication": 1}}
    # a file read alone has only its own records
    alone = read(tmp_path / "Observation.ndjson")
    assert alone.results["quality"].fillna("").tolist() == ["", ""]


def synthea_magnesium(folder: Path) -> None:
    """A Synthea observations.csv of one low Mg, for a medication list beside it."""
    (folder / "observations.csv").write_text(
        "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,VALUE,UNITS,TYPE\n"
        "2021-05-02T08:00:00Z,pa,e1,19123-9,Magnesium,1.2,mg/dL,numeric\n",
        encoding="utf-8",
    )


def test_an_unreadable_medication_list_is_an_error_naming_it(tmp_path: Path) -> None:
    from labinterp.errors import DamagedFileError

    synthea_magnesium(tmp_path)
    (tmp_path / "medications.csv").write_bytes(
        b'START,STOP,PATIENT,DESCRIPTION\n2019-01-01,,pa,"Omeprazole 20 MG\n'  # quote never closed
    )
    with pytest.raises(DamagedFileError, match="medication list") as err:
        read(tmp_path)
    assert err.value.file == "medications.csv"


def test_a_latin1_medication_list_is_read(tmp_path: Path) -> None:
    synthea_magnesium(tmp_path)
    (tmp_path / "medications.csv").write_bytes(
        "START,STOP,PATIENT,DESCRIPTION\n2019-01-01,,pa,Furosemida 40 mg (diurético)\n".encode(
            "latin-1"
        )
    )
    quality = read(tmp_path).results["quality"].fillna("").tolist()
    assert quality == ["mg_lowering_medication"]
