"""Tables of the research data models, read by their own column names: OMOP CDM MEASUREMENT,
PCORnet CDM LAB_RESULT_CM, CDISC SDTM LB and i2b2 OBSERVATION_FACT. Each keeps the value with
the unit it is stored in, its comparator column, its ranges, and the model's own ways of
saying a specimen is not blood or a test was not done."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from labinterp.interpret import interpret
from labinterp.reading import ReadResult, read

OMOP = """\
measurement_id,person_id,measurement_concept_id,measurement_date,measurement_datetime,\
operator_concept_id,value_as_number,unit_concept_id,range_low,range_high,\
measurement_source_value,unit_source_value,value_source_value
1,42,3001420,2024-03-01,2024-03-01 08:15:00,4172703,1.1,8840,1.6,2.6,2601-3,mg/dL,1.1
2,42,3006906,2024-03-01,2024-03-01 08:15:00,,7.6,8840,8.5,10.5,17861-6,mg/dL,7.6
3,42,3024128,2024-03-01,2024-03-01 08:15:00,,4.1,8713,3.5,5.0,1751-7,g/dL,
4,42,3020564,2024-03-01,2024-03-01 08:15:00,4171756,5,8751,,10,1988-5,mg/L,<5
5,42,3023103,2024-03-01,2024-03-01 08:15:00,0,3.0,8753,3.5,5.1,2823-3,mmol/L,3.0
6,42,3023103,2024-03-02,2024-03-02 08:15:00,4172704,4.0,8753,3.5,5.1,2823-3,mmol/L,4.0
"""

PCORNET = """\
LAB_RESULT_CM_ID,PATID,SPECIMEN_SOURCE,LAB_LOINC,SPECIMEN_DATE,SPECIMEN_TIME,RESULT_DATE,\
RESULT_NUM,RESULT_MODIFIER,RESULT_UNIT,NORM_RANGE_LOW,NORM_MODIFIER_LOW,NORM_RANGE_HIGH,\
NORM_MODIFIER_HIGH,ABN_IND,RAW_LAB_NAME,RAW_RESULT,RAW_UNIT
1,P7,SER_PLAS,19123-9,2024-03-01,08:15,2024-03-02,0.45,EQ,mmol/L,0.7,EQ,1.05,EQ,AL,MAGNESIUM,1.1,mg/dL
2,P7,SER_PLAS,2823-3,2024-03-01,08:15,2024-03-02,2.9,EQ,mmol/L,3.5,EQ,5.1,EQ,AL,POTASSIUM,2.9,mmol/L
3,P7,SER_PLAS,1988-5,2024-03-01,08:15,2024-03-02,3,LT,mg/L,,NO,10,LE,NL,CRP,<3,mg/L
4,P7,URINE,19123-9,2024-03-01,08:15,2024-03-02,2.1,EQ,mmol/L,,NI,,NI,NI,MAGNESIUM UR,2.1,mmol/L
5,P7,SER_PLAS,2823-3,2024-03-04,09:00,2024-03-05,3.1,NE,mmol/L,3.5,EQ,5.1,EQ,AL,POTASSIUM,3.1,mmol/L
"""

SDTM = """\
STUDYID,DOMAIN,USUBJID,LBSEQ,LBTESTCD,LBTEST,LBORRES,LBORRESU,LBORNRLO,LBORNRHI,LBSTRESC,\
LBSTRESN,LBSTRESU,LBNRIND,LBSTAT,LBSPEC,LBLOINC,VISIT,LBDTC
S1,LB,S1-001,1,MG,Magnesium,1.0,mg/dL,1.6,2.6,0.41,0.41,mmol/L,LOW,,SERUM,,WEEK 1,2024-03-01T08:15
S1,LB,S1-001,2,CA,Calcium,7.4,mg/dL,8.4,10.2,1.85,1.85,mmol/L,LOW,,SERUM,,WEEK 1,2024-03-01T08:15
S1,LB,S1-001,3,ALB,Albumin,4.0,g/dL,3.5,5.5,40,40,g/L,NORMAL,,SERUM,,WEEK 1,2024-03-01T08:15
S1,LB,S1-001,4,PTH,Parathyroid Hormone,,pg/mL,15,65,,,,,NOT DONE,SERUM,,WEEK 1,2024-03-01T08:15
S1,LB,S1-001,5,K,Potassium,3.2,mEq/L,3.5,5.1,3.2,3.2,mmol/L,LOW,,URINE,,WEEK 1,2024-03-01T08:15
"""

I2B2 = """\
encounter_num,patient_num,concept_cd,provider_id,start_date,modifier_cd,instance_num,\
valtype_cd,tval_char,nval_num,valueflag_cd,units_cd
1,9,LOINC:2601-3,@,2024-03-01 08:15:00,@,1,N,E,0.5,L,mmol/L
1,9,LOINC:17861-6,@,2024-03-01 08:15:00,@,1,N,E,1.9,L,mmol/L
1,9,LOINC:1988-5,@,2024-03-01 08:15:00,@,1,N,L,0.5,,mg/L
"""


def read_text(tmp_path: Path, text: str, name: str = "table.csv") -> ReadResult:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    res = read(path)
    assert res.rows_in == res.rows_used + res.rows_rejected
    return res


def by_row(res: ReadResult) -> dict[int, pd.Series]:
    return {int(r["source_row"]): r for _, r in res.results.iterrows()}


def test_omop_measurement(tmp_path: Path) -> None:
    res = read_text(tmp_path, OMOP)
    assert res.rows_used == 6
    rows = by_row(res)  # by line of the file: the header is line 1
    mg = rows[2]
    assert (mg["analyte"], mg["value_reported"], mg["unit_reported"]) == ("magnesium", 1.1, "mg/dL")
    assert (mg["range_low_reported"], mg["range_high_reported"]) == (1.6, 2.6)
    assert mg["collected_at"] == pd.Timestamp("2024-03-01 08:15")
    # value_source_value empty: value_as_number; "<5" with operator 4171756 (<)
    assert rows[4]["value_reported"] == 4.1
    assert (rows[5]["comparator"], rows[5]["value_reported"]) == ("<", 5)
    assert rows[6]["comparator"] == ""  # operator 0: no matching concept
    assert (rows[7]["comparator"], rows[7]["value_reported"]) == (">", 4.0)  # 4172704


def test_pcornet_lab_result_cm(tmp_path: Path) -> None:
    res = read_text(tmp_path, PCORNET)
    rows = by_row(res)
    # RESULT_NUM in RESULT_UNIT; RAW_RESULT / RAW_UNIT (1.1 mg/dL) is not mixed in
    mg = rows[2]
    assert (mg["analyte"], mg["value_reported"], mg["unit_reported"]) == (
        "magnesium",
        0.45,
        "mmol/L",
    )
    assert mg["collected_at"] == pd.Timestamp("2024-03-01 08:15")  # SPECIMEN_DATE + TIME
    assert mg["flag"] == "AL"
    assert (rows[4]["comparator"], rows[4]["value_reported"], rows[4]["range_high"]) == ("<", 3, 10)
    reasons = dict(zip(res.rejected["source_row"], res.rejected["reason"], strict=True))
    assert reasons == {5: "non_blood_specimen", 6: "unparseable_value"}  # URINE; NE
    assert "'NE'" in res.rejected.set_index("source_row").loc[6, "detail"]


def test_sdtm_lb(tmp_path: Path) -> None:
    res = read_text(tmp_path, SDTM)
    rows = by_row(res)
    assert set(res.results["patient_id"]) == {"S1-001"}
    # the original result and unit, not the standardised LBSTRESN (in LBSTRESU)
    assert (rows[2]["value_reported"], rows[2]["unit_reported"]) == (1.0, "mg/dL")
    assert rows[3]["analyte"] == "calcium" and rows[3]["range_low_reported"] == 8.4
    assert rows[2]["collected_at"] == pd.Timestamp("2024-03-01 08:15")
    reasons = dict(zip(res.rejected["source_row"], res.rejected["reason"], strict=True))
    assert reasons == {5: "result_status", 6: "non_blood_specimen"}  # NOT DONE; URINE


def test_i2b2_observation_fact(tmp_path: Path) -> None:
    res = read_text(tmp_path, I2B2)
    rows = by_row(res)
    assert [rows[i]["analyte"] for i in (2, 3, 4)] == ["magnesium", "calcium", "crp"]
    assert (rows[4]["comparator"], rows[4]["value_reported"]) == ("<", 0.5)  # tval_char L


@pytest.mark.parametrize(
    ("table", "rule"),
    [
        (OMOP, "hypomagnesemia_hypocalcemia"),
        (PCORNET, "hypomagnesemia_hypokalemia"),
        (SDTM, "hypomagnesemia_hypocalcemia"),
        (I2B2, "hypomagnesemia_hypocalcemia"),
    ],
)
def test_the_patterns_fire_on_each_model(tmp_path: Path, table: str, rule: str) -> None:
    path = tmp_path / "table.csv"
    path.write_text(table, encoding="utf-8")
    f = interpret(path)
    assert rule in set(f.loc[f["status"] == "fired", "rule_id"])


# ---------------------------------------------------------------- SAS transport files


def _sdtm_frame() -> pd.DataFrame:
    import io

    return pd.read_csv(io.StringIO(SDTM), dtype=str, keep_default_na=False)


@pytest.mark.parametrize("version", [5, 8])
def test_sdtm_lb_as_a_sas_transport_file(tmp_path: Path, version: int) -> None:
    import pyreadstat

    path = tmp_path / "lb.xpt"
    pyreadstat.write_xport(_sdtm_frame(), str(path), table_name="LB", file_format_version=version)
    res = read(path)
    csv = read_text(tmp_path, SDTM)
    assert (res.rows_in, res.rows_used) == (csv.rows_in, csv.rows_used) == (5, 3)
    # rows are numbered by observation (the CSV's by line, one more for its header)
    assert list(res.results["source_row"]) == [r - 1 for r in csv.results["source_row"]]
    for column in ("analyte", "value", "unit", "range_low", "range_high", "collected_at"):
        assert list(res.results[column]) == list(csv.results[column]), column


def test_sas_dates_and_times_are_read_as_dates(tmp_path: Path) -> None:
    # a SAS date and a SAS time (numbers of days and seconds since 1960), as pyreadstat
    # writes them from Python dates and times
    import datetime as dt

    import pyreadstat

    frame = pd.DataFrame(
        {
            "PATID": ["P1", "P1"],
            "SPECIMEN_DATE": [dt.date(2024, 3, 1), dt.date(2024, 3, 2)],
            "SPECIMEN_TIME": [dt.time(8, 15), dt.time(23, 5)],
            "LAB_LOINC": ["19123-9", "2823-3"],
            "RESULT_NUM": [0.45, 2.9],
            "RESULT_UNIT": ["mmol/L", "mmol/L"],
        }
    )
    path = tmp_path / "lab.xpt"
    pyreadstat.write_xport(frame, str(path), table_name="LAB")
    res = read(path)
    assert list(res.results["collected_at"]) == [
        pd.Timestamp("2024-03-01 08:15"),
        pd.Timestamp("2024-03-02 23:05"),
    ]
    assert list(res.results["value_reported"]) == [0.45, 2.9]


def test_a_transport_file_in_batches_and_compressed(tmp_path: Path) -> None:
    import gzip
    import shutil

    import pyreadstat

    from labinterp.reading import iter_batches

    path = tmp_path / "lb.xpt"
    pyreadstat.write_xport(_sdtm_frame(), str(path), table_name="LB")
    # read in batches of 2 observations; a draw is never split, and this one is the whole
    # file (one subject, one time)
    batches = list(iter_batches(path, batch_rows=2))
    assert [b.rows_in for b in batches] == [5]
    assert sorted(r for b in batches for r in b.results["source_row"]) == [1, 2, 3]
    packed = tmp_path / "lb.xpt.gz"
    with path.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert read(packed).rows_used == 3
    several = pd.concat([_sdtm_frame()] * 2, ignore_index=True)
    several.loc[5:, "LBDTC"] = "2024-03-08T08:15"  # a second visit: a second draw
    pyreadstat.write_xport(several, str(path), table_name="LB")
    assert [b.rows_in for b in iter_batches(path, batch_rows=2)] == [5, 5]


def test_damaged_transport_file_and_sas_datasets_say_what_to_do(tmp_path: Path) -> None:
    from labinterp.errors import InputFileError

    damaged = tmp_path / "lb.xpt"
    damaged.write_bytes(b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!" + bytes(range(256)) * 8)
    with pytest.raises(InputFileError, match=r"lb\.xpt.*cannot be read.*Fix:"):
        read(damaged)
    dataset = tmp_path / "lab_result_cm.sas7bdat"
    dataset.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(InputFileError, match=r"SAS dataset.*\.xpt"):
        read(dataset)
