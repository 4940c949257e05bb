"""HL7 v2 order groups: which specimen (SPM, or OBR-15 in v2.3) describes which result."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from labinterp.reading import read

HEADER = "MSH|^~\\&|LIS|LAB|||20240301103000-0500||ORU^R01^ORU_R01|1|P|2.5.1"
PATIENT = "PID|1||P1^^^LAB^MR||Doe^Jane||19600101|F"


def spm(specimen_id: str, kind: str, collected: str = "", condition: str = "") -> str:
    """An SPM segment: SPM-2 id, SPM-4 type, SPM-17 collection time, SPM-24 condition."""
    fields = ["SPM", "1", specimen_id, "", kind] + [""] * 20
    fields[17], fields[24] = collected, condition
    return "|".join(fields).rstrip("|")


def read_message(tmp_path: Path, segments: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = tmp_path / "results.hl7"
    path.write_bytes("\r".join(segments).encode("utf-8"))
    res = read(path)
    obx = sum(s.startswith("OBX") for s in segments)
    assert res.rows_in == obx == res.rows_used + res.rows_rejected  # every OBX accounted for
    return res.results.set_index("source_row"), res.rejected.set_index("source_row")


def test_each_order_takes_its_own_specimen_not_the_previous_ones(tmp_path: Path) -> None:
    """ORU^R01 puts each order's SPM after its results: a urine order first must not make
    the serum order that follows read as urine, nor lend it its specimen id."""
    results, rejected = read_message(
        tmp_path,
        [
            HEADER,
            PATIENT,
            "OBR|1|ORD1||UMG^Urine magnesium^L|||20240229070000-0500",
            "OBX|1|NM|MG^Magnesium^L||4.5|mg/dL|||||F",  # 4
            spm("SP1", "UR^Urine^HL70487"),
            "OBR|2|ORD2||BMP^Panel^L|||20240301080000-0500",
            "OBX|1|NM|19123-9^Magnesium^LN||1.1|mg/dL|1.7-2.2|L|||F",  # 7
            "OBX|2|NM|17861-6^Calcium^LN||7.6|mg/dL|8.5-10.5|L|||F",  # 8
            spm("SP2", "SER^Serum^HL70487"),
            "OBR|3|ORD3||UMG^Urine magnesium^L|||20240302070000-0500",
            "OBX|1|NM|MG^Magnesium^L||4.0|mg/dL|||||F",  # 11
            spm("SP3", "UR^Urine^HL70487"),
        ],
    )
    assert rejected.loc[4, "reason"] == rejected.loc[11, "reason"] == "non_blood_specimen"
    assert sorted(results.index) == [7, 8]
    assert set(results["specimen_id"]) == {"SP2"}


def test_a_specimen_condition_and_time_stay_with_their_order(tmp_path: Path) -> None:
    """Order 1's hemolyzed specimen must not mark order 2's results; SPM-17 is the
    collection time before OBR-7 and OBX-14, even when the SPM follows the results."""
    results, _ = read_message(
        tmp_path,
        [
            HEADER,
            PATIENT,
            "OBR|1|O1||C^Chem^L|||20240301080000-0500",
            "OBX|1|NM|2823-3^Potassium^LN||6.4|mmol/L|3.5-5.1|H|||F|||20240301080000-0500",
            spm("S1", "SER^Serum", "20240301075000-0500", "HEM^Hemolyzed^HL70493"),
            "OBR|2|O2||C^Chem^L",
            "OBX|1|NM|2823-3^Potassium^LN||3.0|mmol/L|3.5-5.1|L|||F|||20240302080000-0500",
            spm("S2", "SER^Serum", "20240302075000-0500"),
        ],
    )
    first, second = results.loc[4], results.loc[7]
    assert (first["specimen_id"], second["specimen_id"]) == ("S1", "S2")
    assert "hemolyzed" in first["quality"] and "hemolyzed" not in str(second["quality"])
    assert first["collected_at"] == pd.Timestamp("2024-03-01 12:50")  # 07:50 -05:00
    assert second["collected_at"] == pd.Timestamp("2024-03-02 12:50")


def test_several_specimens_of_one_order(tmp_path: Path) -> None:
    """The results before an order's first SPM take that SPM; an OBX that follows an SPM
    (in its SPECIMEN group) takes that one."""
    results, rejected = read_message(
        tmp_path,
        [
            HEADER,
            PATIENT,
            "OBR|1|O1||C^Chem^L|||20240301080000-0500",
            "OBX|1|NM|19123-9^Magnesium^LN||1.1|mg/dL|1.7-2.2|L|||F",  # 4
            spm("S1", "SER^Serum"),
            "OBX|2|NM|17861-6^Calcium^LN||7.6|mg/dL|8.5-10.5|L|||F",  # 6
            spm("S2", "UR^Urine"),
            "OBX|3|NM|MG^Magnesium^L||4.0|mg/dL|||||F",  # 8
        ],
    )
    assert results.loc[[4, 6], "specimen_id"].tolist() == ["S1", "S1"]
    assert rejected.loc[8, "reason"] == "non_blood_specimen"


def test_a_specimen_before_its_orders_describes_them_all(tmp_path: Path) -> None:
    """OUL^R22 names the specimen first, then its orders: every one of them is on it."""
    _, rejected = read_message(
        tmp_path,
        [
            HEADER.replace("ORU^R01^ORU_R01", "OUL^R22^OUL_R22"),
            PATIENT,
            spm("S1", "UR^Urine"),
            "OBR|1|O1||MG^Magnesium^L|||20240301080000-0500",
            "OBX|1|NM|MG^Magnesium^L||4.0|mg/dL|||||F",
            "OBR|2|O2||CA^Calcium^L|||20240301080000-0500",
            "OBX|1|NM|CA^Calcium^L||6.0|mg/dL|||||F",
        ],
    )
    assert set(rejected["reason"]) == {"non_blood_specimen"} and len(rejected) == 2


def test_a_v23_order_names_its_specimen_in_obr15(tmp_path: Path) -> None:
    """HL7 v2.3 has no SPM: OBR-15 ("UR&Urine") names the specimen; an SPM-4 comes first."""
    v23 = HEADER.replace("2.5.1", "2.3")
    obr15 = "OBR|{n}|O{n}||CHEM^Chem^L|||20240301080000-0500||||||||{source}"
    results, rejected = read_message(
        tmp_path,
        [
            v23,
            PATIENT,
            obr15.format(n=1, source="UR&Urine"),
            "OBX|1|NM|MG^Magnesium^L||1.1|mg/dL|||||F",  # 4
            "OBX|2|NM|CA^Calcium^L||6.0|mg/dL|||||F",  # 5
            obr15.format(n=2, source="SER"),
            "OBX|1|NM|MG^Magnesium^L||1.2|mg/dL|||||F",  # 7
            obr15.format(n=3, source="UR&Urine"),
            "OBX|1|NM|MG^Magnesium^L||1.3|mg/dL|||||F",  # 9
            spm("S3", "SER^Serum"),
        ],
    )
    assert sorted(rejected.index) == [4, 5]
    assert set(rejected["reason"]) == {"non_blood_specimen"}
    assert "Urine" in rejected.loc[4, "detail"]
    assert sorted(results.index) == [7, 9]
