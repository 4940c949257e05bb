"""Result statuses: a cancelled or withdrawn result is not read, and a result the lab
replaced (preliminary by final, any by a correction) gives way to its replacement, in
CSV, HL7 v2 and FHIR alike, whether read at once, from several files or by the audit."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import labinterp
from labinterp.catalog import result_status
from labinterp.readers import duplicates
from labinterp.reading import deduplicate, iter_batches, read

HEADER = "patient_id,collected_at,specimen_id,test,result,unit,reference_range,result_status\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_status_spellings_of_csv_hl7_and_fhir() -> None:
    assert result_status("F").usable == "final"
    assert result_status("Final result").usable == "final"
    assert result_status("Prelim").usable == "preliminary"
    assert result_status("amended").usable == "corrected"
    assert result_status("Edited Result - FINAL").usable == "corrected"
    assert "error" in result_status("Entered-in-error").no_result
    assert "cancelled" in result_status("CANCELED").no_result
    assert result_status("").usable == result_status("whatever").usable == ""
    assert result_status("whatever").no_result == ""


def test_csv_status_column_rejects_no_result_and_keeps_the_latest_version(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "lab.csv",
        HEADER
        # a preliminary K replaced by the final one
        + "P1,2024-03-01 08:30,S1,Potassium,3.0,mmol/L,3.5-5.0,Preliminary\n"
        + "P1,2024-03-01 08:30,S1,Potassium,4.1,mmol/L,3.5-5.0,Final\n"
        # a final Mg replaced by a correction, which a later correction replaces
        + "P1,2024-03-01 08:30,S1,Magnesium,1.1,mg/dL,1.6-2.6,F\n"
        + "P1,2024-03-01 08:30,S1,Magnesium,1.2,mg/dL,1.6-2.6,Corrected\n"
        + "P1,2024-03-01 08:30,S1,Magnesium,2.0,mg/dL,1.6-2.6,Corrected\n"
        # two finals that differ: which one the lab meant is unknown, both stay
        + "P1,2024-03-01 08:30,S1,Calcium,9.0,mg/dL,8.5-10.5,Final\n"
        + "P1,2024-03-01 08:30,S1,Calcium,9.6,mg/dL,8.5-10.5,Final\n"
        # another tube at the same minute is another result
        + "P1,2024-03-01 08:30,S1,Phosphate,3.0,mg/dL,2.5-4.5,Preliminary\n"
        + "P1,2024-03-01 08:30,S2,Phosphate,3.9,mg/dL,2.5-4.5,Final\n"
        # a cancelled test and a pending one hold no result
        + "P1,2024-03-01 08:30,S1,Albumin,,g/dL,3.5-5.0,Cancelled\n"
        + "P1,2024-03-01 08:30,S1,CRP,,mg/L,<5,Pending\n"
        # a status nobody knows (read, and counted as unrecognised), and none: read as usual
        + "P2,2024-03-02 08:30,,Potassium,3.9,mmol/L,3.5-5.0,Reviewed\n"
        + "P2,2024-03-03 08:30,,Potassium,4.0,mmol/L,3.5-5.0,\n",
    )
    res = read(path)
    assert res.rows_in == 13 == res.rows_used + res.rows_rejected
    reasons = res.rejected.set_index("source_row")["reason"].to_dict()
    assert reasons == {
        2: "superseded",
        4: "superseded",
        5: "superseded",
        11: "result_status",
        12: "result_status",
    }
    detail = res.rejected.set_index("source_row")["detail"]
    assert (
        detail[2] == "the lab replaced this result with the final one in lab.csv row 3"
        "; nothing to fix: that one is read"
    )
    assert (
        detail[4]
        == detail[5]
        == (
            "the lab replaced this result with the corrected one in lab.csv row 6"
            "; nothing to fix: that one is read"
        )
    )
    assert "cancelled" in detail[11] and "no result yet" in detail[12]
    used = res.results
    p1 = used[used["patient_id"] == "P1"].set_index("source_row")
    assert p1.loc[3, "value_reported"] == 4.1 and p1.loc[6, "value_reported"] == 2.0
    assert sorted(p1.loc[[7, 8], "value_reported"]) == [9.0, 9.6]
    assert set(p1.loc[[9, 10], "result_status"]) == {"preliminary", "final"}
    p2 = used.loc[used["patient_id"] == "P2", "result_status"]
    assert p2.iloc[0] == "unrecognised" and p2.iloc[1] is pd.NA


@pytest.mark.parametrize(
    ("status", "reason", "kept_as"),
    [
        ("Rejected", "result_status", None),
        ("Specimen Rejected", "result_status", None),
        ("Credited", "result_status", None),
        ("Pending Review", None, "preliminary"),
        ("Needs Review", None, "preliminary"),
        ("Final Edited", None, "final"),
        ("Blorp", None, "unrecognised"),
    ],
)
def test_status_words_of_lis_exports(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, status: str, reason, kept_as
) -> None:
    """Rejected or credited specimens hold no result (the reason of a cancelled one);
    results awaiting review are preliminary; a status word nobody listed is read but
    counted as unrecognised, with a warning naming the file, row and fix."""
    path = write(
        tmp_path,
        "lab.csv",
        HEADER + f"P1,2024-03-01 08:30,S1,Magnesium,1.2,mg/dL,1.6-2.6,{status}\n",
    )
    res = read(path)
    assert res.rows_in == 1 == res.rows_used + res.rows_rejected
    if reason:
        assert list(res.rejected["reason"]) == [reason]
        assert "cancelled" in res.rejected["detail"].iloc[0]
    else:
        assert list(res.results["result_status"]) == [kept_as]
    warned = [r.getMessage() for r in caplog.records if "result status" in r.getMessage()]
    if kept_as == "unrecognised":
        assert len(warned) == 1
        assert "lab.csv" in warned[0] and "row(s) 2" in warned[0]
        assert "result_statuses.toml" in warned[0] and "1.2" not in warned[0]
    else:
        assert warned == []


def test_unrecognised_status_is_not_quoted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A status column can hold free text: the warning names the rows, never the words
    (they may carry a patient id or a value)."""
    path = write(
        tmp_path,
        "lab.csv",
        HEADER
        + "ZZSECRET123,2024-03-01 08:30,S1,Magnesium,1.9,mg/dL,1.6-2.6,Prev result 1.234567\n"
        + "ZZSECRET123,2024-03-03 08:30,S2,Magnesium,1.8,mg/dL,1.6-2.6,Pt ZZSECRET123 recollect\n",
    )
    res = read(path)
    assert list(res.results["result_status"]) == ["unrecognised", "unrecognised"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "row(s) 2, 3" in logged
    assert "ZZSECRET123" not in logged and "1.234567" not in logged


def test_replacements_across_files_match_one_file(tmp_path: Path) -> None:
    """Split over two exports, the same rows go: `deduplicate` (several files, the audit)
    and the single-file reader share the rule."""
    rows = [
        "P1,2024-03-01 08:30,S1,Potassium,3.0,mmol/L,3.5-5.0,P\n",
        "P1,2024-03-01 08:30,S1,Magnesium,1.1,mg/dL,1.6-2.6,F\n",
        "P1,2024-03-01 08:30,S1,Potassium,3.2,mmol/L,3.5-5.0,F\n",
        "P1,2024-03-01 08:30,S1,Magnesium,1.4,mg/dL,1.6-2.6,C\n",
        "P1,2024-03-01 08:30,S1,Calcium,7.9,mg/dL,8.5-10.5,F\n",
    ]
    one = read(write(tmp_path, "a_all.csv", HEADER + "".join(rows)))
    two = read(
        [
            write(tmp_path, "b_first.csv", HEADER + "".join(rows[:2])),
            write(tmp_path, "c_later.csv", HEADER + "".join(rows[2:])),
        ]
    )
    for res in (one, two):
        assert sorted(res.rejected["reason"]) == ["superseded", "superseded"]
        kept = res.results.set_index("analyte")["value_reported"].to_dict()
        assert kept == {"potassium": 3.2, "magnesium": 1.4, "calcium": 7.9}
    assert set(two.rejected["source_file"]) == {"b_first.csv"}
    assert "corrected one in c_later.csv row 3" in " ".join(two.rejected["detail"])


def test_fhir_amended_observation_replaces_the_preliminary_one(tmp_path: Path) -> None:
    def observation(status: str, value: float) -> dict:
        return {
            "resourceType": "Observation",
            "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
            "subject": {"reference": "Patient/P1"},
            "effectiveDateTime": "2024-03-01T08:30:00Z",
            "valueQuantity": {"value": value, "unit": "mmol/L"},
        }

    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": observation("preliminary", 2.9)},
            {"resource": observation("amended", 3.9)},
        ],
    }
    res = read(write(tmp_path, "obs.json", json.dumps(bundle)))
    assert list(res.rejected["reason"]) == ["superseded"]
    assert list(res.results["value_reported"]) == [3.9]
    assert list(res.results["result_status"]) == ["corrected"]


def hl7_messages(count: int) -> str:
    """`count` ORU messages for 5 patients: each a preliminary Mg and K, and every third
    one a corrected Mg of the same draw in a later message."""
    lines = []
    for i in range(count):
        patient = f"MRN-{i % 5}"
        when = f"202403{1 + i // 5:02d}0830"
        lines += [
            f"MSH|^~\\&|LIS|LAB|||{when}||ORU^R01|M{i}|P|2.5.1",
            f"PID|1||{patient}^^^LAB^MR",
            f"OBR|1||ORD{i}|BMP^Panel^L|||{when}",
            "OBX|1|NM|19123-9^Magnesium^LN||1.1|mg/dL|1.6-2.6|L|||P",
            "OBX|2|NM|2823-3^Potassium^LN||3.1|mmol/L|3.5-5.0|L|||F",
        ]
        if i % 3 == 0:
            lines += [
                f"MSH|^~\\&|LIS|LAB|||{when}||ORU^R01|C{i}|P|2.5.1",
                f"PID|1||{patient}^^^LAB^MR",
                f"OBR|1||ORD{i}|BMP^Panel^L|||{when}",
                "OBX|1|NM|19123-9^Magnesium^LN||1.9|mg/dL|1.6-2.6||||C",
            ]
    return "\r\n".join(lines) + "\r\n"


def test_the_feed_fixture_is_the_generated_feed() -> None:
    """tests/fixtures/hl7_feed_with_corrections.hl7 (read by the Dask test) is
    hl7_messages(30), written with CRLF."""
    fixture = Path(__file__).parent / "fixtures" / "hl7_feed_with_corrections.hl7"
    assert fixture.read_bytes() == hl7_messages(30).encode()


@pytest.mark.parametrize("batch_rows", [1, 7, 1000])
def test_hl7_in_batches_of_messages_reads_like_the_whole_file(
    tmp_path: Path, batch_rows: int
) -> None:
    path = write(tmp_path, "feed.hl7", hl7_messages(30))
    whole = read(path)
    assert (whole.rejected["reason"] == "superseded").sum() == 10
    batches = list(iter_batches(path, batch_rows=batch_rows))
    if batch_rows == 1:
        assert len(batches) == 40  # one message each
    results = pd.concat([b.results for b in batches], ignore_index=True)
    rejected = pd.concat([b.rejected for b in batches], ignore_index=True)
    results, dropped = deduplicate(results)
    rejected = pd.concat([rejected, dropped], ignore_index=True)
    key = ["source_row", "analyte", "value_reported", "result_status"]
    pd.testing.assert_frame_equal(
        results[key].sort_values("source_row").reset_index(drop=True),
        whole.results[key].sort_values("source_row").reset_index(drop=True),
    )
    assert sorted(rejected["source_row"]) == sorted(whole.rejected["source_row"])


def test_segments_ending_in_cr_only_are_read_in_batches(tmp_path: Path) -> None:
    path = write(tmp_path, "cr.hl7", hl7_messages(6).replace("\r\n", "\r"))
    batches = list(iter_batches(path, batch_rows=2))
    assert len(batches) == 6  # whole messages of about 2 results
    rows = sorted(r for b in batches for r in b.results["source_row"])
    # numbered by segment, as when the file ends its segments in CRLF
    same = [
        r
        for b in iter_batches(write(tmp_path, "crlf.hl7", hl7_messages(6)))
        for r in b.results["source_row"]
    ]
    assert rows == sorted(same)


def test_audit_of_an_hl7_feed_in_small_batches(tmp_path: Path, monkeypatch) -> None:
    # labinterp.audit is the function: the module is looked up by name
    core = importlib.import_module("labinterp.audit.core")
    path = write(tmp_path, "feed.hl7", hl7_messages(30))
    whole = labinterp.audit(path, tmp_path / "whole")
    monkeypatch.setattr(core, "_BATCH_ROWS", 3)
    batched = labinterp.audit(path, tmp_path / "batched", n_buckets=2)
    for summary in (whole, batched):
        assert summary["rows_in"] == 70
        assert summary["rows_rejected_by_reason"] == {"superseded": 10}
        # Mg: 20 preliminary (every fired Mg/K finding rests on one), 10 corrected
        assert summary["result_status"] == {
            "results": {"preliminary": 20, "final": 30, "corrected": 10},
            "fired_on_preliminary": {"hypomagnesemia_hypokalemia": 5},
        }
    a = (tmp_path / "whole" / "findings.csv").read_bytes()
    assert a == (tmp_path / "batched" / "findings.csv").read_bytes()
    assert b"hypomagnesemia_hypokalemia" in a


def test_replaced_matches_a_plain_loop() -> None:
    """duplicates.replaced against the rule written out per run of rows."""
    rng = np.random.default_rng(7)
    n = 400
    group, time, specimen = (rng.integers(0, 4, n) for _ in range(3))
    rank = rng.integers(0, 4, n)
    file = rng.integers(0, 2, n)
    row = rng.permutation(n)
    gone, by = duplicates.replaced(group, time, lambda at: specimen[at], rank, file, row)
    expected = {}
    for key in {(g, t, s) for g, t, s in zip(group, time, specimen, strict=True)}:
        run = [i for i in range(n) if (group[i], time[i], specimen[i]) == key and rank[i] > 0]
        if len(run) < 2:
            continue
        winner = max(run, key=lambda i: (rank[i], file[i], row[i]))
        for i in run:
            if i != winner and (rank[i] < rank[winner] or rank[i] == 3):
                expected[i] = winner
    assert dict(zip(gone.tolist(), by.tolist(), strict=True)) == expected


def test_a_finding_on_a_preliminary_result_says_so(tmp_path: Path) -> None:
    draw = "P1,2024-03-01 08:30,S1,"
    rows = [
        draw + "Magnesium,1.1,mg/dL,1.6-2.6,Final\n",
        draw + "Potassium,3.0,mmol/L,3.5-5.0,Preliminary\n",
    ]
    findings = labinterp.interpret(write(tmp_path, "prelim.csv", HEADER + "".join(rows)))
    mg_k = findings.set_index("rule_id").loc["hypomagnesemia_hypokalemia"]
    assert mg_k["status"] == "fired"
    assert mg_k["caveats"].split(";") == ["preliminary_result"]
    # the evidence text says which result is not final yet
    assert "Potassium (preliminary) 3.0 mmol/L" in mg_k["evidence"]
    assert "Magnesium 1.1 mg/dL" in mg_k["evidence"]
    # and so do the evidence records
    records = {r["role"]: r["preliminary"] for r in mg_k["evidence_json"]}
    assert records == {"magnesium": False, "potassium": True}
    # once the final potassium is in the export, the finding rests on it
    final = [*rows, draw + "Potassium,3.1,mmol/L,3.5-5.0,Final\n"]
    findings = labinterp.interpret(write(tmp_path, "final.csv", HEADER + "".join(final)))
    mg_k = findings.set_index("rule_id").loc["hypomagnesemia_hypokalemia"]
    assert mg_k["status"] == "fired" and mg_k["caveats"] == ""
    assert "preliminary" not in mg_k["evidence"]
    assert '"value_reported": 3.1' in json.dumps(list(mg_k["evidence_json"]))


def test_the_handout_marks_a_preliminary_result(tmp_path: Path) -> None:
    """The bundled sample's DEMO-021 has a potassium the lab has not made final."""
    import io

    from pypdf import PdfReader

    from labinterp.handout import render_handout

    sample = Path(labinterp.__file__).parent / "sample_data" / "clinic_export.csv"
    results = read(sample).results
    findings = labinterp.interpret(results)
    note = {"en": "not made this result final yet", "es": "aún no ha dado este resultado"}
    for lang, words in note.items():
        pdf = render_handout(results, findings, "DEMO-021", lang=lang)
        text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
        assert " ".join(text.split()).count(words) == 1, lang  # the potassium only
        # and the finding that rests on it says so
        finding_note = {"en": "Some of this uses a result", "es": "Parte de esto usa un resultado"}
        assert finding_note[lang] in " ".join(text.split()), lang
    pdf = render_handout(results, findings, "DEMO-001")
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    assert note["en"] not in " ".join(text.split())


def test_the_audit_report_shows_result_statuses(tmp_path: Path) -> None:
    sample = Path(labinterp.__file__).parent / "sample_data" / "clinic_export.csv"
    summary = labinterp.audit(sample, tmp_path / "out")
    # DEMO-021: a final Mg, a preliminary K, a final Ca that replaced a preliminary one
    assert summary["result_status"]["results"] == {"preliminary": 1, "final": 2, "not_given": 78}
    assert summary["rows_rejected_by_reason"]["superseded"] == 1
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert 'id="status-preliminary">1<' in html and 'id="status-final">2<' in html
    assert 'Low Mg with low K</td><td class="num">1<' in html
    # an export without statuses says so instead of showing an empty table
    plain = tmp_path / "plain.csv"
    plain.write_text(HEADER + "P1,2024-03-01 08:30,,Magnesium,1.1,mg/dL,1.6-2.6,\n")
    labinterp.audit(plain, tmp_path / "plain")
    html = (tmp_path / "plain" / "report.html").read_text(encoding="utf-8")
    assert "gave no result status" in html and 'id="status-' not in html


def test_check_lists_the_result_statuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labinterp.cli import main

    path = write(
        tmp_path,
        "lab.csv",
        HEADER
        + "P1,2024-03-01 08:30,S1,Potassium,3.0,mmol/L,3.5-5.0,Preliminary\n"
        + "P1,2024-03-01 08:30,S1,Potassium,4.1,mmol/L,3.5-5.0,Final\n"
        + "P1,2024-03-01 08:30,S1,Magnesium,1.1,mg/dL,1.6-2.6,\n",
    )
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Result status: final 1; not given 1" in out
    assert 'result_status = "result_status"' in out  # the column it was read from
    assert main(["check", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["result_status"] == {"final": 1}


def test_an_urgent_preliminary_result_is_marked_in_the_urgent_list(tmp_path: Path) -> None:
    import io

    from pypdf import PdfReader

    from labinterp.handout import render_handout

    path = write(
        tmp_path,
        "urgent.csv",
        HEADER + "P1,2024-03-01 08:30,S1,Potassium,2.2,mmol/L,3.5-5.0,Preliminary\n",
    )
    results = read(path).results
    findings = labinterp.interpret(results)
    pdf = render_handout(results, findings, "P1")
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())
    assert "far outside the range (not final yet)" in text  # the urgent list
    assert "not made this result final yet" in text  # the result's own note
