"""Inputs found by fuzzing the command line: each must give results, rejected rows with a
reason, or labinterp's own error (exit code 2), never an unexpected error."""

from __future__ import annotations

import copy
import datetime
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labinterp import schema
from labinterp.cli import main
from labinterp.errors import DamagedFileError, InputFileError
from labinterp.readers import formats, sniff
from labinterp.reading import ReadResult, read

openpyxl = pytest.importorskip("openpyxl")  # the reader's own xlsx library


def accounted(res: ReadResult) -> ReadResult:
    assert res.rows_in == res.rows_used + res.rows_rejected
    assert set(res.rejected["reason"]) <= set(schema.REJECT_REASONS)
    return res


def write_json(tmp_path: Path, doc: Any, name: str = "fhir.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# --- 1. Excel cells holding a time only ---------------------------------------------------


def write_xlsx(tmp_path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(header)
    for row in rows:
        ws.append(row)
    path = tmp_path / "export.xlsx"
    wb.save(path)
    return path


def test_xlsx_date_time_and_datetime_cells_become_iso_text(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path,
        ["patient_id", "drawn", "date", "time", "test", "result", "unit"],
        [
            [
                "P1",
                datetime.datetime(2024, 3, 1, 8, 30),
                datetime.date(2024, 3, 1),
                datetime.time(8, 30),
                "Magnesium",
                1.2,
                "mg/dL",
            ]
        ],
    )
    row = formats.read_xlsx(path).frame.iloc[0]
    assert row["drawn"] == "2024-03-01 08:30:00"
    assert row["date"].startswith("2024-03-01")  # openpyxl reads a date back as midnight
    assert row["time"] == "08:30:00"


@pytest.mark.parametrize(
    "header",
    [
        ["patient_id", "date", "time", "test", "result", "unit"],
        ["patient_id", "collection_date", "collection_time", "test", "result", "unit"],
    ],
)
def test_xlsx_separate_date_and_time_columns_make_the_collection_time(
    tmp_path: Path, header: list[str]
) -> None:
    """A date column and a time-of-day column are joined, whether the date cell is a date
    or a date and time at midnight (as spreadsheets store dates)."""
    path = write_xlsx(
        tmp_path,
        header,
        [
            ["P1", datetime.date(2024, 3, 1), datetime.time(8, 30), "Magnesium", 1.2, "mg/dL"],
            ["P1", datetime.datetime(2024, 3, 1), datetime.time(14, 5), "Magnesium", 1.2, "mg/dL"],
        ],
    )
    res = accounted(read(path))
    assert res.rows_used == 2  # two draws of one day, not one result twice
    assert sorted(res.results["collected_at"]) == [
        datetime.datetime(2024, 3, 1, 8, 30),
        datetime.datetime(2024, 3, 1, 14, 5),
    ]
    for command in ("check", "interpret"):
        assert main([command, str(path)]) == 0
    assert main(["audit", str(path), "-o", str(tmp_path / "audit")]) == 0


# --- 2. FHIR values of the wrong JSON type ---------------------------------------------------

OBS: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "k1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}], "text": "Potassium"},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-03-01T08:30:00Z",
    "valueQuantity": {"value": 2.5, "unit": "mmol/L"},
}


def obs(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(OBS)
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def bundle(*resources: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def report(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "Lab"},
        **fields,
    }


def test_number_as_member_reference_rejects_the_panel_with_the_field(tmp_path: Path) -> None:
    res = accounted(read(write_json(tmp_path, obs(hasMember=[{"reference": 12}]))))
    assert res.rows_in == 1 and res.rows_used == 0
    assert "hasMember[0].reference" in res.rejected["detail"].iloc[0]


def test_number_as_report_subject_rejects_the_members_that_inherit_it(tmp_path: Path) -> None:
    member = obs(subject=None)
    doc = bundle(
        report(subject={"reference": 12}, result=[{"reference": "Observation/k1"}]), member
    )
    res = accounted(read(write_json(tmp_path, doc)))
    assert res.rows_in == 1 and res.rows_used == 0
    assert "subject.reference" in res.rejected["detail"].iloc[0]


# Documents with a number, text or null where FHIR has a reference, an array or an object.
# None of them may crash: each Observation found is used or rejected with a reason.
DAMAGED = {
    "report result ids are numbers": bundle(report(result=[{"reference": 7}, 8]), obs()),
    "report result is a number": bundle(report(result=7), obs()),
    "member list is text": bundle(obs(id="panel", hasMember="Observation/k1"), obs()),
    "Bundle entry is a number": {"resourceType": "Bundle", "entry": 5, "contained": [obs()]},
    "entry resource is a list": {
        "resourceType": "Bundle",
        "entry": [{"resource": [1]}, {"resource": "x"}, 3, {"resource": obs()}],
    },
    "Patient fullUrl is a number": {
        "resourceType": "Bundle",
        "entry": [
            {"fullUrl": 5, "resource": {"resourceType": "Patient", "id": "p1"}},
            {"resource": obs()},
        ],
    },
    "contained is a number": bundle(report(contained=5), obs()),
    "Patient fields of the wrong type": bundle(
        {"resourceType": "Patient", "id": "p1", "gender": {"x": 1}, "birthDate": [1970]}, obs()
    ),
    "coding lists are null": bundle(obs(valueQuantity=None, valueCodeableConcept={"coding": None})),
    "top-level array of numbers and one Observation": [1, "x", None, obs()],
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_fhir_values_of_the_wrong_type_never_crash(tmp_path: Path, name: str) -> None:
    res = accounted(read(write_json(tmp_path, DAMAGED[name])))
    assert res.rows_in >= 1


def test_fhir_patient_fields_that_are_not_text_are_left_empty(tmp_path: Path) -> None:
    res = accounted(read(write_json(tmp_path, DAMAGED["Patient fields of the wrong type"])))
    r = res.results.iloc[0]
    assert r["analyte"] == "potassium" and r["patient_id"] == "p1"
    assert "{" not in str(r["sex"])
    assert pd.isna(r["age_years"])


def test_cli_commands_survive_a_number_as_reference(tmp_path: Path) -> None:
    path = write_json(
        tmp_path, bundle(report(result=[{"reference": 12}]), obs(hasMember=[{"reference": 12}]))
    )
    for command in ("check", "interpret"):
        assert main([command, str(path)]) == 0
    assert main(["audit", str(path), "-o", str(tmp_path / "audit")]) == 0


# --- 3. JSON that cannot be read -------------------------------------------------------------


def test_json_nested_too_deeply_is_a_clean_input_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 50_000, encoding="utf-8")
    with pytest.raises(InputFileError, match=r"deep\.json: the JSON is nested too deeply"):
        read(path)
    assert main(["check", str(path)]) == 2


def test_fhir_json_nested_too_deeply_is_a_clean_input_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"resourceType": "Bundle", "entry": ' + "[" * 50_000, encoding="utf-8")
    with pytest.raises(InputFileError, match="nested too deeply"):
        read(path)


def test_ndjson_errors_name_the_line(tmp_path: Path) -> None:
    line = json.dumps(obs())
    path = tmp_path / "obs.ndjson"
    path.write_text(f"{line}\n{line}\n" + "[" * 50_000 + "\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"obs\.ndjson, row 3: the JSON is nested too deeply"):
        read(path)
    path.write_text(f"{line}\n{line}\n{{oops\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"obs\.ndjson, row 3: the JSON is malformed"):
        read(path)


def test_json_number_too_long_to_convert_is_a_clean_input_error(tmp_path: Path) -> None:
    path = tmp_path / "obs.json"
    path.write_text(json.dumps(obs())[:-1] + ', "id2": ' + "1" * 5000 + "}", encoding="utf-8")
    with pytest.raises(InputFileError, match="number with more than"):
        read(path)


def test_json_damaged_byte_past_the_sniffed_start_is_a_clean_input_error(tmp_path: Path) -> None:
    path = tmp_path / "obs.json"
    # valid UTF-8 for far longer than the sniffer reads, then two bytes that are not
    filler = b"a" * (sniff.PROBE_BYTES + 1000)
    path.write_bytes(b'{"resourceType": "Observation", "id": "' + filler + b'\xff\xfe"}')
    with pytest.raises(InputFileError, match="not valid utf-8 text"):
        read(path)


def test_gzipped_json_damaged_past_the_sniffed_start_is_a_clean_input_error(tmp_path: Path) -> None:
    lines = "\n".join(json.dumps(obs(id=f"k{i}")) for i in range(20_000))
    packed = gzip.compress(lines.encode())
    path = tmp_path / "obs.ndjson.gz"
    path.write_bytes(packed[: len(packed) - 1000])
    with pytest.raises(InputFileError, match="cannot be decompressed"):
        read(path)


def test_a_json_document_cut_short_anywhere_is_damaged_and_a_malformed_whole_one_is_not() -> None:
    """Wherever a copy stops, the document is a damaged export; a document that is whole
    but malformed may be a file that is not an export (skipped in a folder)."""
    from labinterp.errors import DamagedFileError

    records = [
        {"patient_id": f"P{i}", "value": -1.25e-3, "ok": True, "no": False, "n": None, "x": [1]}
        for i in range(3)
    ]
    for indent in (None, 1):
        text = json.dumps(records, indent=indent)
        for end in range(1, len(text)):
            with pytest.raises(DamagedFileError, match="ends in the middle"):
                formats._json_value(Path("c.json"), text[:end], None)
    for whole in ['{"a": 1,, "b": 2}', '{"a": tru}', "[1 2]", '{"a" 1}', '{"a": 1}}', "{a: 1}"]:
        with pytest.raises(InputFileError, match="malformed") as info:
            formats._json_value(Path("settings.json"), whole, None)
        assert not isinstance(info.value, DamagedFileError), whole
    # a FHIR document is an export, so a malformed one is damaged too
    with pytest.raises(DamagedFileError, match="malformed"):
        formats._json_value(Path("b.json"), '{"resourceType": "Bundle",, "entry": []}', None)


# --- 4. Observation.status -----------------------------------------------------------------


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "registered", "Cancelled"])
def test_observation_without_a_result_by_status_is_rejected(tmp_path: Path, status: str) -> None:
    doc = bundle(obs(id="a", status=status), obs(id="b"))
    res = accounted(read(write_json(tmp_path, doc)))
    assert res.rows_in == 2 and res.rows_used == 1
    rejected = res.rejected.iloc[0]
    assert rejected["source_row"] == 1
    assert rejected["reason"] == "fhir_status"
    assert rejected["detail"].startswith(f"status is {status.lower()}")


@pytest.mark.parametrize("status", ["preliminary", "final", "amended", "corrected", "unknown"])
def test_observation_with_a_result_by_status_is_used(tmp_path: Path, status: str) -> None:
    res = accounted(read(write_json(tmp_path, obs(status=status))))
    assert res.rows_used == 1 and res.rows_rejected == 0


def test_observation_without_status_is_rejected_by_validation_as_before(tmp_path: Path) -> None:
    res = accounted(read(write_json(tmp_path, obs(status=None))))
    assert res.rows_used == 0
    assert "not a valid FHIR Observation: status: " in res.rejected["detail"].iloc[0]


def test_entered_in_error_result_fires_no_pattern(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A very low potassium withdrawn as entered-in-error must not be interpreted."""
    low = obs(valueQuantity={"value": 1.9, "unit": "mmol/L"}, status="entered-in-error")
    path = write_json(tmp_path, low)
    assert main(["interpret", "--format", "json", str(path)]) == 0
    assert "potassium" not in capsys.readouterr().out.lower()


# --- 5. The reason given for an invalid Observation ---------------------------------------


def test_invalid_observation_reason_names_the_field_not_the_value(tmp_path: Path) -> None:
    res = accounted(read(write_json(tmp_path, obs(effectiveDateTime="P4711-not-a-date"))))
    detail = res.rejected["detail"].iloc[0]
    assert detail.startswith("not a valid FHIR Observation: effectiveDateTime: ")
    assert "validation error" not in detail
    assert "P4711" not in detail and "p1" not in detail  # no input values, no identifiers
    assert "\n" not in detail


def test_invalid_observation_reason_lists_a_few_fields_briefly(tmp_path: Path) -> None:
    bad = obs(
        valueQuantity={"value": "12,5 high", "unit": "mmol/L"},
        referenceRange=[{"low": {"value": "x"}}],
        subject={"reference": 12},
        issued="yesterday",
    )
    detail = accounted(read(write_json(tmp_path, bad))).rejected["detail"].iloc[0]
    assert "valueQuantity.value" in detail or "referenceRange[0].low.value" in detail
    assert "more" in detail and "\n" not in detail and len(detail) < 300
    assert "12,5" not in detail


def test_observation_with_a_status_outside_fhir_is_rejected(tmp_path: Path) -> None:
    res = accounted(read(write_json(tmp_path, bundle(obs(id="a", status="bogus"), obs(id="b")))))
    assert res.rows_used == 1
    rejected = res.rejected.iloc[0]
    assert rejected["reason"] == "fhir_status" and "bogus" not in rejected["detail"]


def test_ndjson_line_that_is_not_a_resource_is_counted_and_rejected(tmp_path: Path) -> None:
    path = tmp_path / "obs.ndjson"
    path.write_text(f"{json.dumps(obs())}\n42\n", encoding="utf-8")
    res = accounted(read(path))
    assert (res.rows_in, res.rows_used) == (2, 1)
    assert list(res.rejected["source_row"]) == [2]
    assert list(res.rejected["reason"]) == ["malformed_row"]


def test_versioned_and_absolute_references_point_at_their_resource(tmp_path: Path) -> None:
    """A report's result given as "Observation/k1/_history/2" still hands its patient
    and time to that Observation; a subject given as a full URL names the patient."""
    member = obs(id="k1", subject=None, effectiveDateTime=None)
    rep = report(
        subject={"reference": "https://example.org/fhir/Patient/p9/_history/3"},
        effectiveDateTime="2024-03-01T08:30:00Z",
        result=[{"reference": "Observation/k1/_history/2"}],
    )
    res = accounted(read(write_json(tmp_path, bundle(rep, member))))
    assert res.rows_used == 1
    assert res.results["patient_id"].iloc[0] == "p9"


def test_fhir_file_without_observations_is_refused_with_a_message(tmp_path: Path) -> None:
    patients_only = bundle({"resourceType": "Patient", "id": "p1", "gender": "female"})
    with pytest.raises(InputFileError, match="no Observation resources"):
        read(write_json(tmp_path, patients_only))


EXPORT = "patient_id,collected_at,test,result,unit\n" + "".join(
    f"P{i},2024-03-01 08:30,Magnesium,0.{i % 9 + 1},mmol/L\n" for i in range(4000)
)


def test_a_compressed_export_cut_short_in_a_folder_stops_the_read(tmp_path: Path) -> None:
    """Skipping it would drop its rows unseen: it is an error naming how far it reads."""
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "good.csv").write_text(EXPORT[:200])
    packed = gzip.compress(EXPORT.encode())
    (folder / "cut.csv.gz").write_bytes(packed[: len(packed) // 3])
    with pytest.raises(InputFileError, match=r"ends in the middle, after line \d+") as info:
        read(folder)
    assert int(info.value.args[0].split("after line ")[1].split()[0]) > 100


def test_a_workbook_cut_short_in_a_folder_stops_the_read(tmp_path: Path) -> None:
    """An .xlsx (a ZIP archive) whose end is missing is damaged, not "a ZIP archive that is
    not an export" to skip: its rows would vanish from a folder's read."""
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "good.csv").write_text(EXPORT[:200])
    whole = tmp_path / "book.xlsx"
    pd.read_csv(io.StringIO(EXPORT)).to_excel(whole, index=False)
    (folder / "labs_march.xlsx").write_bytes(whole.read_bytes()[:4000])
    with pytest.raises(DamagedFileError, match="cut short") as info:
        read(folder)
    assert "unpack" not in str(info.value)


def test_a_parquet_file_cut_short_in_a_folder_stops_the_read(tmp_path: Path) -> None:
    """A Parquet file copied in part starts as Parquet but has no footer: damaged, so a
    folder's read stops instead of skipping its rows. A file merely named .parquet that
    is not Parquet at all is still skipped there, as any other non-export."""
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "good.csv").write_text("".join(EXPORT.splitlines(keepends=True)[:4]))
    whole = tmp_path / "labs.parquet"
    pd.read_csv(io.StringIO(EXPORT)).to_parquet(whole, index=False)
    (folder / "labs_march.parquet").write_bytes(whole.read_bytes()[:1000])
    with pytest.raises(DamagedFileError, match="in full") as info:
        read(folder)
    assert info.value.file and info.value.file.endswith("labs_march.parquet")
    (folder / "labs_march.parquet").write_text("not parquet at all\n")
    assert accounted(read(folder)).rows_used == 3


@pytest.mark.parametrize(
    ("name", "encode"),
    [
        ("gzip without .gz", lambda text: gzip.compress(text.encode())),
        ("UTF-16 LE without BOM", lambda text: text.encode("utf-16-le")),
        ("UTF-16 BE without BOM", lambda text: text.encode("utf-16-be")),
    ],
)
def test_exports_saved_without_their_marks_are_read(tmp_path: Path, name: str, encode) -> None:
    text = "".join(EXPORT.splitlines(keepends=True)[:11])  # header and 10 results
    path = tmp_path / "export.csv"
    path.write_bytes(encode(text))
    res = accounted(read(path))
    assert res.rows_used == 10, name
    assert res.results["value"].iloc[0] == pytest.approx(0.1)


def test_paths_that_are_not_exports_say_what_they_are(tmp_path: Path) -> None:
    from labinterp.errors import InputNotFoundError, MappingFileError

    with pytest.raises(InputNotFoundError, match="does not exist") as info:
        read(tmp_path / "nope.csv")
    assert info.value.file and info.value.file.endswith("nope.csv")  # structured, not only text
    with pytest.raises(InputFileError, match="not a regular file"):
        read("/dev/null")
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[tests]\n"CA TOT" = "calcium"\n')
    export = tmp_path / "export.csv"
    export.write_text(EXPORT[:200])
    with pytest.raises(InputFileError, match="--mapping"):
        read([export, mapping])  # the mapping given as an input by mistake
    with pytest.raises(MappingFileError, match="does not exist"):
        read(export, mapping=tmp_path / "nomap.toml")
