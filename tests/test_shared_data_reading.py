"""Every real-world export beside the project reads, with exact row accounting.

Expected counts come from each folder's SOURCE.md (rows per item id / LOINC and unit),
adjusted only where labinterp deliberately rejects a row; each adjustment says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labinterp import schema
from labinterp.reading import ReadResult, read

pytestmark = pytest.mark.shared_data


def counts(result) -> dict[tuple[str, str], int]:
    g = result.results.groupby(["analyte", "unit_reported"], dropna=False).size()
    return {(a, u if isinstance(u, str) else ""): int(n) for (a, u), n in g.items()}


def accounted(result) -> None:
    assert result.rows_in == result.rows_used + result.rows_rejected
    assert set(result.rejected["reason"]) <= set(schema.REJECT_REASONS)
    assert not result.results.duplicated(["source_file", "source_row", "analyte"]).any()


def test_mimic_iii_folder_reads_its_exports_and_skips_its_side_tables(shared_data: Path) -> None:
    """The whole folder, as a user would name it: both LABEVENTS files (the second repeats
    the first, whose rows come back as duplicates), every other table skipped by name."""
    folder = shared_data / "mimic_iii_demo"
    res = read(folder)
    accounted(res)
    assert [f.name for f in res.files] == [
        "LABEVENTS_analytes.csv",
        "LABEVENTS_full_reconstructed.csv.gz",
    ]
    assert sorted(s["file"] for s in res.skipped) == [
        "D_LABITEMS.csv",
        "PATIENTS.csv",
        "tianxu08_ADMISSIONS_excel_mangled.csv",
        "tianxu08_D_LABITEMS.csv",
        "tianxu08_PATIENTS_excel_mangled.csv",
    ]
    alone = [read(folder / f.name) for f in res.files]
    assert res.rows_in == sum(r.rows_in for r in alone)
    first = alone[0].results
    assert counts(res)[("magnesium", "mg/dL")] >= counts(alone[0])[("magnesium", "mg/dL")]
    assert set(first["source_row"]) <= set(
        res.results.loc[res.results["source_file"] == "LABEVENTS_analytes.csv", "source_row"]
    )


def test_mimic_iii_labevents(shared_data: Path) -> None:
    res = read(shared_data / "mimic_iii_demo" / "LABEVENTS_analytes.csv")
    accounted(res)
    assert res.rows_in == 11_121
    assert counts(res) == {
        ("magnesium", "mg/dL"): 1918,
        ("calcium", "mg/dL"): 1757,
        ("calcium_ionized", "mmol/L"): 558,
        ("phosphate", "mg/dL"): 1748,
        ("pth", "pg/mL"): 12,
        ("vitamin_d_25oh", "ng/mL"): 1,
        ("crp", "mg/L"): 2,
        ("crp", "mg/dL"): 1,  # the 10x trap: both units under one item id
        ("potassium", "mEq/L"): 2279 + 256,  # a serum/whole-blood pair of 3.8: two tests
        ("albumin", "g/dL"): 414,
        ("creatinine", "mg/dL"): 2175 - 2,  # 138 mg/dL and 0.0 mg/dL: implausible
    }
    assert dict(res.rejected["reason"].value_counts()) == {"implausible_value": 2}
    # the contaminated draw keeps its text result; nothing became a number
    draw = res.results[
        (res.results["patient_id"] == "10027") & (res.results["collected_at"] == "2190-07-22 15:04")
    ]
    ca = draw[draw["analyte"] == "calcium"].iloc[0]
    assert ca["text_result"] == "UNABLE TO REPORT DUE TO CONTAMINATION"
    assert "contamination_comment" in ca["quality"]
    k = draw[draw["analyte"] == "potassium"].iloc[0]
    assert (k["comparator"], k["value"]) == (">", 10.0)
    mg = draw[draw["analyte"] == "magnesium"].iloc[0]
    assert "loinc_unit_mismatch" in mg["quality"]  # 2601-3 is molar, values are mg/dL


def test_mimic_iii_full_table_out_of_scope_rows(shared_data: Path) -> None:
    res = read(shared_data / "mimic_iii_demo" / "LABEVENTS_full_reconstructed.csv.gz")
    accounted(res)
    assert res.rows_in == 76_074
    assert res.rejected["reason"].value_counts()["out_of_scope"] == 64_154


def spurious_calcium(res: ReadResult) -> None:
    """SPURIOUS_CALCIUM: patient 10037861's total Ca of 2.7 mg/dL (0.67 mmol/L, grade 4) at
    2117-03-20 02:15, drawn with a Mg of 0.9 mg/dL, while an ionized Ca 26 minutes later is
    1.13 mmol/L and the total 2 hours later 7.8 mg/dL: a spurious number (a sample problem
    far likelier than a unit slip in MIMIC). Read as mmol/L it is an ordinary result (grade
    1 above 2.62), so it is rejected as a suspected unit error, the one implausible row."""
    (row,) = res.rejected[res.rejected["reason"] == "implausible_value"].itertuples()
    assert (round(float(row.value_raw), 6), row.unit_raw) == (2.7, "mg/dL")  # parquet: float32
    assert "fits mmol/L" in row.detail


@pytest.mark.parametrize("name", ["meds_events_analytes.csv", "meds_events_analytes.parquet"])
def test_mimic_iv_meds(shared_data: Path, name: str) -> None:
    res = read(shared_data / "mimic_iv_demo_meds" / name)
    accounted(res)
    assert res.rows_in == 14_729
    assert counts(res) == {
        ("magnesium", "mg/dL"): 2469,
        ("calcium", "mg/dL"): 2377 - 1,  # SPURIOUS_CALCIUM
        ("calcium_ionized", "mmol/L"): 509,
        ("phosphate", "mg/dL"): 2336,
        ("pth", "pg/mL"): 13,
        ("vitamin_d_25oh", "ng/mL"): 33,
        ("crp", "mg/L"): 44 - 2,  # two NaN (text) results carry no value in MEDS
        ("potassium", "mEq/L"): 3022 + 302 - 3,  # three NaN results
        ("albumin", "g/dL"): 625,
        ("creatinine", "mg/dL"): 2999,
    }
    assert dict(res.rejected["reason"].value_counts()) == {
        "missing_value": 5,
        "implausible_value": 1,
    }
    spurious_calcium(res)
    # float32 noise is gone: 1.7999999523 is read as 1.8
    mg = res.results.loc[res.results["analyte"] == "magnesium", "value_reported"]
    assert ((mg * 10).round(6) % 1 == 0).all()  # one decimal, as the lab printed it
    assert 1.8 in set(res.results.loc[res.results["analyte"] == "magnesium", "value_reported"])
    assert res.results["age_years"].notna().all()  # birth dates from meds_birth.csv


@pytest.mark.parametrize("name", ["analyte_rows_flattened.csv", "analyte_rows.jsonl.gz"])
def test_mimic_iv_v1_denormalised(shared_data: Path, name: str) -> None:
    res = read(shared_data / "mimic_iv_demo_v1_json" / name)
    accounted(res)
    assert res.rows_in == 10_120
    c = counts(res)
    assert c[("magnesium", "mg/dL")] == 1833  # Mg 2.0 twice at one time: two specimens
    assert c[("calcium_ionized", "mmol/L")] == 426
    assert c[("pth", "pg/mL")] == 6 and c[("vitamin_d_25oh", "ng/mL")] == 5
    reasons = dict(res.rejected["reason"].value_counts())
    # rows duplicated by the admission/ED-stay join (16 per SOURCE.md, more with K pairs)
    assert reasons["duplicate"] >= 16
    assert set(reasons) <= {"duplicate", "missing_value", "implausible_value"}
    assert reasons["implausible_value"] == 1
    spurious_calcium(res)
    assert (res.results["range_origin"] == "row").mean() > 0.95  # MIMIC-IV prints ranges
    hemolysis = res.results[res.results["comment"].str.contains("HEMOLYSIS FALSELY", na=False)]
    assert len(hemolysis) and hemolysis["quality"].str.contains("hemolyzed").all()


def test_mimic_iv_original_per_patient_json(shared_data: Path) -> None:
    res = read(shared_data / "mimic_iv_demo_v1_json" / "example_raw_10000032.json")
    accounted(res)
    assert set(res.results["patient_id"]) == {"10000032"}  # from the file name
    assert counts(res)[("magnesium", "mg/dL")] == 8


def test_mimic_iv_v22_resaved_excerpts(shared_data: Path) -> None:
    folder = shared_data / "mimic_iv_demo_v22_excerpts"
    excel = read(folder / "excerpt_mr10825060_excel_resaved.csv")
    pandas_saved = read(folder / "excerpt_santosry_nursing-pool_pandas_resaved.csv")
    for res in (excel, pandas_saved):
        accounted(res)
    # Excel's US dates are read as the same instants as the pandas copy's ISO dates
    t1 = set(excel.results["collected_at"])
    t2 = set(pandas_saved.results["collected_at"])
    assert t1 & t2
    mg = excel.results[excel.results["analyte"] == "magnesium"]
    assert (mg["range_low_reported"] == 1.6).all() and (mg["range_origin"] == "row").all()


def test_nhanes_wide_two_unit_systems(shared_data: Path) -> None:
    res = read(shared_data / "nhanes_2017_2018_biopro" / "BIOPRO_J_selected_analytes.csv")
    accounted(res)
    assert res.rows_in == 6401 * 9  # one result per participant and variable
    c = counts(res)
    assert c == {
        ("calcium", "mg/dL"): 5901,
        ("phosphate", "mg/dL"): 5901,
        ("potassium", "mmol/L"): 5899,
        ("creatinine", "mg/dL"): 5903,
        ("albumin", "g/dL"): 5905,
    }
    # the SI column repeats the conventional one: rejected as duplicates, never double-counted
    reasons = dict(res.rejected["reason"].value_counts())
    assert set(reasons) == {"duplicate", "missing_value"}
    assert reasons["duplicate"] == 5901 + 5901 + 5903 + 5905
    assert res.results["collected_at"].isna().all()  # no dates in the survey file


def test_synthea_csv_and_fhir(shared_data: Path) -> None:
    folder = shared_data / "synthea_andrew_nguyen_50pt"
    csv_res = read(folder / "observations_analytes.csv")
    accounted(csv_res)
    assert csv_res.rows_in == 666
    c = counts(csv_res)
    assert c[("magnesium", "mg/dL")] == 4 and c[("crp", "mg/L")] == 26
    assert c[("albumin", "g/dL")] == 90
    assert csv_res.results["sex"].notna().all()  # from patients.csv
    fhir = read(folder / "fhir_observations_analytes.ndjson")
    accounted(fhir)
    assert fhir.rows_in == 180
    bundle = read(folder / "fhir_bundle_Jamison785_Crona259_f1c3b051.json.gz")
    accounted(bundle)
    # eGFR here is printed "mL/min" under LOINC 33914-3, "Glomerular filtration rate/1.73
    # sq M.predicted": the code defines it per 1.73 m2, so it is read so, not rejected
    assert set(bundle.rejected["reason"]) == {"out_of_scope"}
    egfr = bundle.results[bundle.results["analyte"] == "egfr"]
    assert len(egfr) == 9 and set(egfr["unit_reported"]) == {"mL/min"}
    assert egfr["value"].tolist() == egfr["value_reported"].tolist()


def test_fhir_spec_examples(shared_data: Path) -> None:
    folder = shared_data / "fhir_spec_examples"
    ghp = read(folder / "Bundle-ghp.json")
    accounted(ghp)
    assert ghp.rows_in == 51
    c = counts(ghp)
    assert c[("albumin", "g/L")] == 1 and c[("creatinine", "mmol/L")] == 1
    # subject and time come from the report / panel the results belong to
    assert ghp.results["collected_at"].notna().all()
    big = read(folder / "Bundle-72ac8493-52ac-41bd-8d5d-7258c289b5ea.json")
    accounted(big)
    assert big.rows_in == 365
    assert counts(big)[("potassium", "mmol/L")] == 14
    # LOINC 13959-2 "Calcium.ionized [Moles/volume] in Serum or Plasma by calculation":
    # an estimate from the total, in each of the 15 reports (1 + 14)
    for res in (ghp, big):
        calculated = res.rejected[res.rejected["detail"].str.contains("calculated ionized")]
        assert set(calculated["reason"]) == {"out_of_scope"}
        assert len(calculated) == (1 if res is ghp else 14)
        assert "calcium_ionized" not in set(res.results["analyte"])
    for name in ("Observation-f204.json", "Observation-decimal.json"):
        res = read(folder / name)
        accounted(res)
        assert res.rows_in == 1


def test_copies_of_one_export_in_two_formats_are_read_once(shared_data: Path) -> None:
    """MEDS as CSV and Parquet, the MIMIC-IV v1 rows as CSV and JSON Lines: every row of
    the second copy repeats the first (not only where a draw has a single result of the
    test), and the rows the first copy keeps stay kept, two specimens of one time alike."""
    for folder, first, second in (
        ("mimic_iv_demo_meds", "meds_events_analytes.csv", "meds_events_analytes.parquet"),
        ("mimic_iv_demo_v1_json", "analyte_rows.jsonl.gz", "analyte_rows_flattened.csv"),
    ):
        both = read([shared_data / folder / first, shared_data / folder / second])
        accounted(both)
        assert set(both.results["source_file"]) == {first}
        rejected = both.rejected
        own = set(rejected.loc[rejected["source_file"] == first, "reason"])
        assert set(rejected.loc[rejected["source_file"] == second, "reason"]) <= {"duplicate", *own}
    # MIMIC-IV v1: Mg 2.0 of specimens 38472626 (line 5731) and 43982852 (5736) at one
    # time are two lab events (and so are two creatinine and phosphate pairs)
    assert {5731, 5736, 9709, 9714, 9711, 9716} <= set(both.results["source_row"])
    copy = rejected[(rejected["source_file"] == second) & (rejected["source_row"] == 5737)]
    assert copy["detail"].tolist() == [
        "same result as analyte_rows.jsonl.gz row 5736; nothing to fix: that one is read"
    ]


def test_mimic_iii_two_potassium_tests_of_a_draw_and_their_copies(shared_data: Path) -> None:
    """Patient 10130 at 2161-02-07 05:17: whole-blood K 4.0 (item 50822) and serum K 4.2
    (50971), both kept; the full table's copy of the serum K repeats it, not the first."""
    folder = shared_data / "mimic_iii_demo"
    res = read([folder / "LABEVENTS_analytes.csv", folder / "LABEVENTS_full_reconstructed.csv.gz"])
    used = res.results[res.results["source_file"] == "LABEVENTS_analytes.csv"]
    assert {4862, 4865} <= set(used["source_row"])
    rejected = res.rejected.set_index("source_row")
    full = rejected[rejected["source_file"] == "LABEVENTS_full_reconstructed.csv.gz"]
    assert (
        full.loc[35241, "detail"] == "same result as LABEVENTS_analytes.csv row 4865"
        "; nothing to fix: that one is read"
    )
    # whole-blood and serum K both 3.8 at one time: each copy repeats its own test
    assert (
        full.loc[46891, "detail"] == "same result as LABEVENTS_analytes.csv row 6564"
        "; nothing to fix: that one is read"
    )
    assert (
        full.loc[46879, "detail"] == "same result as LABEVENTS_analytes.csv row 6559"
        "; nothing to fix: that one is read"
    )


def test_synthea_csv_rounds_what_its_fhir_prints_with_two_decimals(shared_data: Path) -> None:
    """The CSV's creatinine 1.2 is the FHIR's 1.15 (and 1.1 its 1.06, 0.8 its 0.84): the
    CSV's one-decimal copies are duplicates of the FHIR results, not second results."""
    folder = shared_data / "synthea_andrew_nguyen_50pt"
    res = read([folder / "observations_analytes.csv", folder / "fhir_observations_analytes.ndjson"])
    accounted(res)
    rejected = res.rejected.set_index(["source_file", "source_row"])["detail"]
    csv = "observations_analytes.csv"
    assert (
        rejected[(csv, 555)] == "same result as fhir_observations_analytes.ndjson row 100"
        "; nothing to fix: that one is read"
    )
    assert (
        rejected[(csv, 5)] == "same result as fhir_observations_analytes.ndjson row 4"
        "; nothing to fix: that one is read"
    )
    assert (
        rejected[(csv, 348)] == "same result as fhir_observations_analytes.ndjson row 67"
        "; nothing to fix: that one is read"
    )
    # every FHIR result has its CSV copy rejected, besides the rows the CSV rejects alone
    fhir = read(folder / "fhir_observations_analytes.ndjson")
    alone = read(folder / csv)
    assert (res.rejected["source_file"] == csv).sum() == fhir.rows_used + alone.rows_rejected
