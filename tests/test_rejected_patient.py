"""Every rejected row names its patient (as the used rows write ids), whatever rejected it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from labinterp.reading import read

HEADER = "patient_id,collected_at,test,result,unit,reference_range,comment\n"


def ids_by_row(rejected: pd.DataFrame) -> dict[tuple[int, str], Any]:
    """(source_row, reason) -> patient id (None where missing)."""
    return {
        (int(r.source_row), r.reason): (None if pd.isna(r.patient_id) else r.patient_id)
        for r in rejected.itertuples()
    }


def test_table_rows_rejected_by_the_normalizer_carry_the_id_as_results_do(
    tmp_path: Path,
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        HEADER
        + " P1 ,2024-03-01 08:30,Magnesium,1.2,mg/dL,1.6-2.6,\n"  # used, id trimmed
        + "P1,2024-03-01 09:00,Magnesium,1.2,mmol/kg/h,,\n"  # unknown unit
        + "93705.0,2024-03-01 08:30,Magnesium,,mg/dL,,\n"  # no value; id re-saved by pandas
        + ",2024-03-01 08:30,Magnesium,1.9,mg/dL,,\n"  # no id
        + "1.23457E+11,2024-03-01 08:30,Magnesium,1.9,mg/dL,,\n"  # damaged by a spreadsheet
        + "P2,2024-03-01 08:30,Sodium,140,mmol/L,,\n"  # not read
        + "P1,2024-03-01 08:30,Magnesium,1.2,mg/dL,1.6-2.6,\n",  # repeat of row 2
        encoding="utf-8",
    )
    res = read(path)
    assert set(res.results["patient_id"]) == {"P1"}
    assert ids_by_row(res.rejected) == {
        (3, "unknown_unit"): "P1",
        (4, "missing_value"): "93705",
        (5, "missing_patient_id"): None,
        (6, "damaged_patient_id"): "1.23457E+11",  # as printed: what a search finds
        (7, "out_of_scope"): "P2",
        (8, "duplicate"): "P1",
    }


def test_repeats_across_files_carry_the_id(tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text(
            HEADER + "P7,2024-03-01 08:30,Magnesium,1.2,mg/dL,1.6-2.6,\n", encoding="utf-8"
        )
    res = read([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert res.rejected["reason"].tolist() == ["duplicate"]
    assert res.rejected["patient_id"].tolist() == ["P7"]


def test_malformed_table_rows_name_no_patient(tmp_path: Path) -> None:
    # a row split by an unquoted comma has its fields shifted: its id cell is not trusted
    path = tmp_path / "export.csv"
    path.write_text(
        HEADER
        + "P1,2024-03-01 08:30,Magnesium,1.2,mg/dL,1.6-2.6,\n"
        + "P1,2024-03-01 08:30,Magnesium,1,2,mg/dL,1.6-2.6,a note\n",
        encoding="utf-8",
    )
    res = read(path)
    assert res.rejected["reason"].tolist() == ["malformed_row"]
    assert res.rejected["patient_id"].isna().all()


def observation(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01T08:30:00Z",
        "valueQuantity": {"value": 1.1, "unit": "mg/dL"},
        **extra,
    }


def test_fhir_observations_not_used_carry_their_subject(tmp_path: Path) -> None:
    lines: list[Any] = [
        observation(1),
        observation(2, status="cancelled"),
        observation(3, valueQuantity={"value": "not a number"}),  # fails validation
        observation(4, subject={"reference": "Patient/ 93705.0 "}, status="entered-in-error"),
        42,  # not a resource: no subject to read
    ]
    path = tmp_path / "Observation.ndjson"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    res = read(path)
    assert res.rows_used == 1
    assert ids_by_row(res.rejected) == {
        (2, "fhir_status"): "p1",
        (3, "malformed_row"): "p1",
        (4, "fhir_status"): "93705",  # cleaned as a used row's id is
        (5, "malformed_row"): None,
    }


def test_hl7_results_not_given_carry_the_pid_id(tmp_path: Path) -> None:
    message = "\r".join(
        [
            "MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240301120000||ORU^R01^ORU_R01|MSG1|P|2.5.1",
            "PID|1||MRN-77^^^LAB^MR||Doe^Jane||19600214|F",
            "OBR|1||ORD1|BMP^Basic panel^L|||20240301083000",
            "OBX|1|NM|19123-9^Magnesium^LN||1.1|mg/dL|1.6-2.6|L|||F",
            "OBX|2|NM|1751-7^Albumin^LN||4.0|g/dL|3.5-5.0||||W",
            "",
        ]
    )
    path = tmp_path / "results.hl7"
    path.write_text(message, encoding="utf-8")
    res = read(path)
    assert ids_by_row(res.rejected) == {(5, "hl7_status"): "MRN-77"}


# -- handouts ------------------------------------------------------------------------------


def _clinic(tmp_path: Path) -> Path:
    from handout_exports import write_export

    return write_export(
        tmp_path,
        [
            ("SOME-1", "2024-03-01 08:00", "Mg", "1.9"),
            ("SOME-1", "2024-03-01 08:00", "K", "4.1"),
            ("SOME-1", "2024-03-01 08:00", "Ca", "9.1"),
            ("SOME-1", "2024-03-02 08:00", "Mg", "0.1.2"),  # not one number
            ("SOME-1", "2024-03-03 08:00", "Mg", ""),  # no value
            ("SOME-1", "2024-03-01 08:00", "Na", "140"),  # a test not read: not said
            ("ONE-1", "2024-03-01 08:00", "Mg", "1.9"),
            ("ONE-1", "2024-03-01 08:00", "Mg", "1.9"),  # a repeat: shown once, not said
            ("NA-1", "2024-03-01 08:00", "Na", "140"),
        ],
    )


def test_a_handout_says_how_many_of_the_patients_results_could_not_be_read(
    tmp_path: Path,
) -> None:
    from handout_exports import handout_context, handout_html

    path = _clinic(tmp_path)
    ctx = handout_context(path, "SOME-1")
    assert ctx["unread"] == {"count": 2, "reasons": ["missing_value", "unparseable_value"]}
    html = handout_html(ctx)
    assert (
        "2 of your test results could not be used on this sheet: it had no result; the result"
        " could not be read as a number. So this sheet does not show them"
    ) in html
    assert "Your clinician can ask the lab about them." in html
    # a result not read may be far out of range: nothing that sounds like good news
    assert "That is good to know" not in html
    assert "does not mean anything is wrong" not in html
    es = handout_html(handout_context(path, "SOME-1", lang="es"))
    assert "2 de sus resultados no se pudieron usar en esta hoja: no tenía resultado;" in es
    assert "Su médico puede preguntar al laboratorio por ellos." in es
    assert "Es bueno saberlo" not in es and "no quiere decir que algo esté mal" not in es


def test_a_handout_without_unread_results_says_nothing_of_them(tmp_path: Path) -> None:
    from handout_exports import handout_context, handout_html

    path = _clinic(tmp_path)
    ctx = handout_context(path, "ONE-1")
    assert ctx["unread"] is None  # its rejected row repeats another: nothing is missing
    assert 'class="note unread"' not in handout_html(ctx)


def test_a_handout_of_an_id_not_in_the_files_says_so(tmp_path: Path) -> None:
    import pytest

    from labinterp.errors import LabinterpError
    from labinterp.handout import render_handout

    path = _clinic(tmp_path)
    with pytest.raises(LabinterpError) as err:
        render_handout(path, None, "NOBODY")
    assert "no row of the files read has this patient id" in str(err.value)
    with pytest.raises(LabinterpError) as err:
        render_handout(path, None, "NA-1")
    assert "every row of this patient was rejected (1 row: 1 of a test" in str(err.value)


def test_a_batch_counts_the_patients_without_a_handout(tmp_path: Path, caplog: Any) -> None:
    from labinterp.handout import render_batch

    path = _clinic(tmp_path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(",F,1960-01-01,2024-03-01 08:00,,Magnesium,19123-9,1.9,mg/dL,1.6-2.6,,\n")
    out = tmp_path / "out"
    out.mkdir()
    # the logger's own level: a CLI test run before on this worker may have set it (-q)
    with caplog.at_level("INFO", logger="labinterp"):
        index = render_batch(path, None, out, workers=1)
    assert list(index["patient_id"]) == ["ONE-1", "SOME-1"]
    assert index.attrs["patients_without_handout"] == 1
    assert index.attrs["patients_without_handout_by_reason"] == {"out_of_scope": 1}
    said = {r.getMessage(): r.levelname for r in caplog.records}
    (patients,) = [m for m in said if m.startswith("1 patient of the files read has no handout")]
    assert said[patients] == "INFO"  # only a test not read: said without a warning
    assert "rows of a test labinterp does not interpret: 1" in patients
    (rows,) = [m for m in said if m.startswith("1 row of the files read has no")]
    assert said[rows] == "WARNING"
    assert not any(pid in caplog.text for pid in ("NA-1", "SOME-1", "ONE-1"))


# -- interpret --patient -------------------------------------------------------------------


def test_interpret_for_a_patient_counts_its_rejected_rows(tmp_path: Path, capsys: Any) -> None:
    from labinterp.cli import main

    path = str(_clinic(tmp_path))
    assert main(["interpret", path, "--patient", "SOME-1"]) == 0
    captured = capsys.readouterr()
    assert "SOME-1  rejected rows: 3 (1 missing_value, 1 out_of_scope, 1 unparseable_value)" in (
        captured.out
    )
    assert "ONE-1" not in captured.out  # another patient's repeat is not counted
    assert "(3 rejected of the requested patients:" in captured.err
    assert "SOME-1" not in captured.err  # counts only on stderr
    # machine formats keep the findings table as it is everywhere
    assert main(["interpret", path, "--patient", "SOME-1", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith('"patient_id","rule_id",') and "rejected rows" not in out


def test_interpret_says_when_a_requested_patient_has_only_rejected_rows(
    tmp_path: Path, capsys: Any
) -> None:
    from labinterp.cli import main

    path = str(_clinic(tmp_path))
    # an id in no row of the files stops the command, naming no id
    assert main(["interpret", path, "--patient", "NA-1", "--patient", "NOBODY"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "1 of the 2 requested patient ids is in no row of the files read" in err
    assert "NA-1" not in err and "NOBODY" not in err
    # an id whose every row was rejected is shown with its rejected rows, beside another
    assert main(["interpret", path, "--patient", "NA-1", "--patient", "SOME-1"]) == 0
    out = capsys.readouterr().out
    assert "NA-1  rejected rows:" in out and "SOME-1  rejected rows: 3" in out
