"""HL7 v2 result messages: every OBX is one input row, read like the same result in a CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import labinterp
from labinterp.errors import InputFileError, LabinterpError
from labinterp.readers.hl7v2 import timestamp_text
from labinterp.reading import deduplicate, iter_batches, read

# One ORU^R01 message: a Mg/Ca/K draw (K from a hemolyzed sample, said in an NTE), an albumin
# reported in error (OBX-11 W), then a second order on urine whose SPM comes after its OBX.
MESSAGE = "\r".join(
    [
        "MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240301120000||ORU^R01^ORU_R01|MSG1|P|2.5.1",
        "PID|1||SSN9^^^SS^SS~MRN-77^^^LAB^MR||Doe^Jane||19600214|F",
        "OBR|1||ORD1|BMP^Basic panel^L|||20240301083000-0500",
        "OBX|1|NM|19123-9^Magnesium^LN||1.1|mg/dL^mg/dL^UCUM|1.6-2.6|L|||F",
        "OBX|2|NM|17861-6^Calcium^LN||7.4|mg/dL|8.5-10.5|L|||F",
        "OBX|3|SN|2823-3^Potassium^LN||>^6.9|mmol/L|3.5-5.0|H|||F",
        "NTE|1|L|Specimen hemolyzed\\T\\repeat advised",
        "OBX|4|NM|1751-7^Albumin^LN||4.0|g/dL|3.5-5.0||||W",
        "OBR|2||ORD2|UMG^Urine magnesium^L|||20240301090000-0500",
        "OBX|1|NM|MG^Magnesium^L||5.0|mg/dL||||F",
        "SPM|1|SPEC-2||UR^Urine^HL70487",
        "",
    ]
)


def write(tmp_path: Path, text: str, name: str = "results.hl7") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_each_obx_is_a_row_read_like_a_csv_result(tmp_path: Path) -> None:
    res = read(write(tmp_path, MESSAGE))
    assert res.rows_in == 5 == res.rows_used + res.rows_rejected
    assert res.files[0].format == "hl7v2"
    used = res.results.set_index("analyte")
    assert sorted(used.index) == ["calcium", "magnesium", "potassium"]
    assert set(used["patient_id"]) == {"MRN-77"}  # the record number of PID-3, not the SSN
    # OBR-7 with its offset: kept in UTC, with the offset the lab printed
    assert set(used["collected_at"]) == {pd.Timestamp("2024-03-01 13:30")}
    assert set(used["utc_offset_min"]) == {-300}
    mg = used.loc["magnesium"]
    assert (mg["value_reported"], mg["unit_reported"]) == (1.1, "mg/dL")
    assert mg["value"] == pytest.approx(1.1 / 2.431, rel=1e-3)  # mg/dL -> mmol/L
    assert (mg["range_low_reported"], mg["range_high_reported"]) == (1.6, 2.6)
    assert mg["range_origin"] == "row" and mg["loinc"] == "19123-9"
    k = used.loc["potassium"]
    assert (k["comparator"], k["value_reported"]) == (">", 6.9)  # structured numeric ">^6.9"
    assert "hemolyzed" in k["quality"]  # from the NTE after it, its escape decoded
    assert list(used["source_row"].sort_values()) == [4, 5, 6]  # segment numbers
    rejected = res.rejected.set_index("source_row")
    assert rejected.loc[8, "reason"] == "hl7_status"  # albumin reported in error
    assert "lbumin" in rejected.loc[8, "test"]  # the user sees which test was dropped
    # the urine Mg is not read as a blood Mg, though its SPM follows it
    assert rejected.loc[10, "reason"] == "non_blood_specimen"
    assert "Urine" in rejected.loc[10, "detail"]


def test_the_same_results_as_a_csv_give_the_same_findings(tmp_path: Path) -> None:
    csv = write(
        tmp_path,
        "patient_id,collected_at,loinc,test,result,unit,reference_range,comment\n"
        "MRN-77,2024-03-01T08:30:00-05:00,19123-9,Magnesium,1.1,mg/dL,1.6-2.6,\n"
        "MRN-77,2024-03-01T08:30:00-05:00,17861-6,Calcium,7.4,mg/dL,8.5-10.5,\n"
        "MRN-77,2024-03-01T08:30:00-05:00,2823-3,Potassium,>6.9,mmol/L,3.5-5.0,"
        "Specimen hemolyzed&repeat advised\n",
        "same.csv",
    )
    columns = ["patient_id", "rule_id", "status", "tier", "grade", "evidence_at", "caveats"]
    from_hl7 = labinterp.interpret(write(tmp_path, MESSAGE))[columns]
    from_csv = labinterp.interpret(csv)[columns]
    pd.testing.assert_frame_equal(from_hl7, from_csv)
    fired = from_hl7[from_hl7["status"] == "fired"]
    assert "hypomagnesemia_hypocalcemia" in set(fired["rule_id"])


def test_a_correction_or_a_final_result_replaces_the_earlier_one(tmp_path: Path) -> None:
    header = "MSH|^~\\&|LIS|LAB|||20240301||ORU^R01|{id}|P|2.5.1"
    draw = "OBR|1||ORD1|BMP^Panel^L|||202403010830"
    text = "\r".join(
        [
            header.format(id=1),
            "PID|1||P1",
            draw,
            "OBX|1|NM|2823-3^Potassium^LN||3.0|mmol/L|3.5-5.0|L|||P",
            "OBX|2|NM|19123-9^Magnesium^LN||1.1|mg/dL|1.6-2.6|L|||F",
            "OBX|3|NM|17861-6^Calcium^LN||9.0|mg/dL|8.5-10.5||||F",
            header.format(id=2),
            "PID|1||P1",
            draw,
            "OBX|1|NM|2823-3^Potassium^LN||3.2|mmol/L|3.5-5.0|L|||F",
            "OBX|2|NM|19123-9^Magnesium^LN||2.1|mg/dL|1.6-2.6||||C",
            "OBX|3|NM|17861-6^Calcium^LN||9.4|mg/dL|8.5-10.5||||F",  # F after F: both kept
        ]
    )
    res = read(write(tmp_path, text))
    assert res.rows_in == 6 == res.rows_used + res.rows_rejected
    rejected = res.rejected.set_index("source_row")
    assert rejected.loc[4, "reason"] == "superseded"
    assert "final one in results.hl7 row 10" in rejected.loc[4, "detail"]
    assert rejected.loc[5, "reason"] == "superseded"
    assert "corrected one in results.hl7 row 11" in rejected.loc[5, "detail"]
    used = res.results.set_index("analyte")
    assert used.loc["potassium", "value_reported"] == 3.2
    assert used.loc["magnesium", "value_reported"] == 2.1
    assert sorted(used.loc["calcium", "value_reported"]) == [9.0, 9.4]


def test_a_specimen_after_its_results_still_describes_them(tmp_path: Path) -> None:
    """ORU^R01 puts SPM (and its notes) after the results of its order: its id, time,
    condition and the NTE that follows it still reach those results."""
    text = "\r".join(
        [
            "MSH|^~\\&|LIS|LAB|||20240301||ORU^R01|1|P|2.5.1",
            "PID|1||P1^^^LAB^MR",
            "OBR|1||ORD1|BMP^Panel^L",
            "OBX|1|NM|2823-3^Potassium^LN||4.4|mmol/L|3.5-5.0||||F",
            "OBX|2|NM|19123-9^Magnesium^LN||1.2|mg/dL|1.6-2.6|L|||F",
            "SPM|1|SPEC-9||SER^Serum|||||||||||||202403010830",
            "NTE|1||Slightly hemolysed",
        ]
    )
    res = read(write(tmp_path, text))
    used = res.results.set_index("analyte")
    assert set(used["specimen_id"]) == {"SPEC-9"}
    assert set(used["collected_at"]) == {pd.Timestamp("2024-03-01 08:30")}
    assert all("hemolyzed" in q for q in used["quality"])


@pytest.mark.parametrize("newline", ["\r", "\n", "\r\n"])
def test_segment_ends_and_several_messages(tmp_path: Path, newline: str) -> None:
    second = MESSAGE.replace("MRN-77", "MRN-88").replace("MSG1", "MSG2")
    text = (MESSAGE.rstrip("\r") + "\r" + second).replace("\r", newline)
    res = read(write(tmp_path, text))
    assert res.rows_in == 10
    assert sorted(set(res.results["patient_id"])) == ["MRN-77", "MRN-88"]
    # rows are numbered by segment, whatever ends the segments
    assert sorted(res.results["source_row"].unique().tolist()) == [4, 5, 6, 15, 16, 17]


def test_a_message_without_results_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "MSH|^~\\&|LIS|LAB|||20240301||ORU^R01|1|P|2.5.1\rPID|1||X1\r")
    with pytest.raises(InputFileError, match="no results") as info:
        read(path)
    assert "results.hl7" in str(info.value) and "Fix:" in str(info.value)


def test_timestamps() -> None:
    assert timestamp_text("20141023133254-0600") == "2014-10-23T13:32:54-06:00"
    assert timestamp_text("201011041640") == "2010-11-04T16:40:00"
    assert timestamp_text("20070526") == "2007-05-26"
    assert timestamp_text("20080818183002.1-0700") == "2008-08-18T18:30:02.1-07:00"
    assert timestamp_text("2008") == "2008"  # a year is not a collection time: rejected later


def test_a_time_without_offset_is_in_the_senders_zone(tmp_path: Path) -> None:
    """HL7: a time without an offset is in the sender's zone, which MSH-7 shows; without
    one there, the times stay local."""
    orders = [
        "PID|1||P1^^^LAB^MR",
        "OBR|1||O1|C^Chem^L|||202403010800",
        "OBX|1|NM|19123-9^Magnesium^LN||1.2|mg/dL|1.7-2.2|L|||F",
        "OBR|2||O2|C^Chem^L",
        "OBX|1|NM|17861-6^Calcium^LN||7.9|mg/dL|8.5-10.5|L|||F|||202403020800",
        "OBR|3||O3|C^Chem^L|||20240303080000+0100",  # its own offset wins
        "OBX|1|NM|2823-3^Potassium^LN||3.1|mmol/L|3.5-5.1|L|||F",
    ]
    zoned = "MSH|^~\\&|LIS|LAB|||20240301103000-0500||ORU^R01|1|P|2.5.1"
    res = read(write(tmp_path, "\r".join([zoned, *orders])))
    used = res.results.set_index("analyte")
    assert used.loc["magnesium", "collected_at"] == pd.Timestamp("2024-03-01 13:00")
    assert used.loc["calcium", "collected_at"] == pd.Timestamp("2024-03-02 13:00")
    assert used.loc["potassium", "collected_at"] == pd.Timestamp("2024-03-03 07:00")
    assert list(used["utc_offset_min"]) == [-300, -300, 60]
    local = "MSH|^~\\&|LIS|LAB|||202403011030||ORU^R01|1|P|2.5.1"
    res = read(write(tmp_path, "\r".join([local, *orders[:3]])))
    assert res.results["collected_at"].tolist() == [pd.Timestamp("2024-03-01 08:00")]
    assert res.results["utc_offset_min"].isna().all()


@pytest.mark.parametrize(
    ("charset", "escaped"),
    [("8859/1", "\\XB5\\"), ("UNICODE UTF-8", "\\XC2B5\\"), ("", "\\XB5\\"), ("", "\\XC2B5\\")],
)
def test_hex_escapes_in_the_messages_character_set(
    tmp_path: Path, charset: str, escaped: str
) -> None:
    """\\Xhh\\ are bytes in MSH-18's character set; without one, UTF-8, else Latin-1 (a
    lone B5 byte is the micro sign). A formatting command (\\.br\\) is not left in text."""
    text = "\r".join(
        [
            f"MSH|^~\\&|LIS|LAB|||20240301||ORU^R01|1|P|2.5.1||||||{charset}",
            "PID|1||P1^^^LAB^MR",
            "OBR|1||O1|C^Chem^L|||202403010800",
            f"OBX|1|NM|1988-5^CRP^LN||12|{escaped}g/mL|0-5|H|||F",
            "NTE|1|L|Specimen hemolyzed\\.br\\Results may be affected",
        ]
    )
    res = read(write(tmp_path, text))
    crp = res.results.iloc[0]
    assert crp["unit_raw"] == "\u00b5g/mL" and crp["unit"] == "mg/L"
    assert crp["comment"] == "Specimen hemolyzed Results may be affected"


def test_an_analyzers_test_codes_are_read(tmp_path: Path) -> None:
    """A Biosystems A400 names its tests by its own codes: "ALP-AMP" (alkaline phosphatase
    by the AMP-buffer method, which the EDTA guard reads) and "CALCIUM ARSENAZO"."""
    message = "\r".join(
        [
            "MSH|^~\\&|A400|LAB|LIS|LAB|20241213193520||OUL^R22^OUL_R22|M1|P|2.5.1",
            "PID|1||P1^^^LAB^MR",
            "SPM|1|S1||SER|||||||||||||20241213190000",
            "OBR|1||O1|ALP-AMP^ALP-AMP^A400",
            "OBX|1|NM|ALP-AMP^ALP-AMP^A400||35.8951797|U/L^U/L^A400||NONE|||F",
            "OBR|2||O2|CALCIUM ARSENAZO^CALCIUM ARSENAZO^A400",
            "OBX|1|NM|CALCIUM ARSENAZO^CALCIUM ARSENAZO^A400||9.38908291|mg/dL||NONE|||F",
            "",
        ]
    )
    res = read(write(tmp_path, message))
    assert res.results["analyte"].tolist() == ["alp", "calcium"]
    assert res.results["unit_reported"].tolist() == ["U/L", "mg/dL"]


@pytest.mark.shared_data
def test_shared_hl7_samples_are_read_and_accounted(shared_data: Path) -> None:
    folder = shared_data / "hl7v2_samples"
    res = read(folder)
    assert res.rows_in == res.rows_used + res.rows_rejected
    # the athena example holds orders but no OBX: skipped, with its reason
    assert [s["file"] for s in res.skipped] == ["node-hl7-complete__athena-health_oru-example.hl7"]
    analyzer = read(folder / "biosystems_A400_OUL_R22_from_go_test.hl7")
    # 24 results, but the analyzer names no patient (no PID): none can be used
    assert analyzer.rows_in == 24
    assert set(analyzer.rejected["reason"]) == {"missing_patient_id"}
    # the NIST and vendor messages hold lead, hepatitis C and stool cultures: out of scope
    others = read([p for p in sorted(folder.glob("node-*.hl7")) if "athena" not in p.name])
    assert others.rows_used == 0
    assert set(others.rejected["reason"]) == {"out_of_scope"}
    assert others.rows_in == 10


SEGMENTS = st.sampled_from(
    [
        "PID|1||P{n}^^^LAB^MR||X^Y||19700101|M",
        "OBR|1||O{n}|BMP^Panel^L|||2024030{n}0830",
        "OBX|{n}|NM|19123-9^Magnesium^LN||1.{n}|mg/dL|1.6-2.6|L|||F",
        "OBX|{n}|SN|2823-3^Potassium^LN||<^{n}|mmol/L||||F",
        "OBX|{n}|SN|2823-3^Potassium^LN||^1^:^{n}|mmol/L||||C",
        "OBX|{n}|CWE|17861-6^Calcium^LN||A^B^C|||||X",
        "OBX|{n}",
        "NTE|1||hemolyzed \\X4142\\ \\E\\ \\Z03BC\\",
        "SPM|1|S{n}||UR^Urine|||||||||||||2024030{n}",
        "SPM|1",
        "ZZZ|anything^at|all",
        "|||",
        "MSH|#~\\&|A",
    ]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(SEGMENTS, st.integers(1, 9), st.text(max_size=6)), max_size=25),
    st.sampled_from(["\r", "\n", "\r\n"]),
)
def test_any_sequence_of_segments_is_read_or_refused_cleanly(
    tmp_path: Path, segments: list[tuple[str, int, str]], newline: str
) -> None:
    lines = ["MSH|^~\\&|LIS|LAB|||20240301||ORU^R01|1|P|2.5.1"]
    lines += [template.format(n=n) + noise for template, n, noise in segments]
    path = write(tmp_path, newline.join(lines))
    try:
        res = read(path)
    except LabinterpError:
        return
    assert res.rows_in == res.rows_used + res.rows_rejected
    # read a message at a time (as the audit reads), the same rows end the same way
    batches = list(iter_batches(path, batch_rows=1))
    results, replaced = deduplicate(pd.concat([b.results for b in batches], ignore_index=True))
    rejected = pd.concat([*(b.rejected for b in batches), replaced], ignore_index=True)
    assert sorted(results["source_row"]) == sorted(res.results["source_row"])
    ended = sorted(zip(rejected["source_row"], rejected["reason"], strict=True))
    assert ended == sorted(zip(res.rejected["source_row"], res.rejected["reason"], strict=True))
