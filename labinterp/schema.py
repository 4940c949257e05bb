"""The tables that flow between stages, written down once and checked at each hand-over.

Flow: reader -> RAW -> normalize -> RESULTS (+ REJECTED) -> episodes -> FINDINGS.
Every stage returns a pandas DataFrame whose columns and dtypes are listed here, so the
same code runs on one machine and per patient partition on Dask.

dtype vocabulary:
    "string"   pandas StringDtype backed by pyarrow (missing = <NA>)
    "float64"  numpy float (missing = NaN)
    "Int64"    nullable integer ("Int16" where the values are small)
    "datetime64[ns]"  naive timestamps (UTC when the source had an offset)
    EVIDENCE   a list of records per row (Arrow-backed), see EVIDENCE_RECORD
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa

from labinterp.errors import SchemaError

STR = "string[pyarrow]"

# What a reader hands to the normalizer: one row per input result row, every field still
# the text the file held (except source_row). Readers fill what their format has and leave
# the rest missing; `analyte_hint` lets a preset (MIMIC item ids, LOINC in a code column)
# say which analyte a row is without the normalizer guessing.
RAW: dict[str, str] = {
    "source_file": STR,  # file name as given by the user (never an absolute machine path)
    "source_row": "Int64",  # 1-based physical line (CSV) or record number (JSON/FHIR)
    "patient_id": STR,
    "collected_at": STR,
    "specimen_id": STR,
    "specimen_type": STR,  # "Serum", "Urine", "UR": a blood test on another specimen is rejected
    "test_code": STR,  # local code / item id as printed
    "test_name": STR,
    "loinc": STR,
    "analyte_hint": STR,  # catalog id decided by a preset or mapping file
    "value_raw": STR,  # the result text as printed ("<0.5", "7.9", "UNABLE TO REPORT")
    "valuenum_raw": STR,  # a separate numeric column if the format has one (MIMIC VALUENUM)
    "comparator_raw": STR,  # FHIR valueQuantity.comparator
    "unit_raw": STR,
    "range_raw": STR,  # "3.5-5.0", "<10", ">= 60"
    "range_low_raw": STR,
    "range_high_raw": STR,
    "flag": STR,
    "comment": STR,
    "medication": STR,  # what the patient takes, as the export lists it (free text)
    "result_status": STR,  # "F", "Final", "corrected": see reference_ranges/result_statuses.toml
    "sex": STR,
    "birth_date": STR,
    "age_raw": STR,
}

# The canonical results table: one row per result that is in scope and usable.
RESULTS: dict[str, str] = {
    "source_file": STR,
    "source_row": "Int64",
    "patient_id": STR,
    "collected_at": "datetime64[ns]",
    # minutes east of UTC the time was printed with (collected_at is then in UTC); missing
    # when the file printed no offset. Handouts show the date the lab printed.
    "utc_offset_min": "Int16",
    "specimen_id": STR,
    "analyte": STR,  # catalog id, e.g. "magnesium"
    "test_label": STR,  # what the file called the test (code and/or name), for evidence text
    "loinc": STR,
    "value_raw": STR,
    "unit_raw": STR,
    "comparator": STR,  # "" | "<" | "<=" | ">" | ">=" (censored results keep it)
    "value_reported": "float64",  # number in the unit the lab reported (NaN for text)
    "unit_reported": STR,  # the alias-table spelling of the reported unit, e.g. "mg/dL"
    "unit_system": STR,  # "si" | "conventional": which CTCAE cut-offs apply
    "value": "float64",  # number in the canonical unit of the analyte
    "unit": STR,  # canonical unit, e.g. "mmol/L"
    "text_result": STR,  # non-numeric result kept as text ("See Comments", "___")
    "range_low": "float64",  # canonical unit
    "range_high": "float64",
    "range_low_reported": "float64",  # in the reported unit, for handouts
    "range_high_reported": "float64",
    "range_origin": STR,  # "row" | "bundled" | "unknown"
    "range_source": STR,  # "row" or the citation key of the bundled range (e.g. "S7")
    "flag": STR,
    "comment": STR,
    # ";"-joined row flags: hemolyzed, contamination_comment, ..., vitamin_d_supplement
    "quality": STR,
    # the medicines that often lower Mg the row's medication text names, as
    # reference_ranges/medications.toml words them ("omeprazole; furosemide"), else missing
    "mg_lowering_medicines": STR,
    # "preliminary" | "final" | "corrected" when the export said so, else missing
    "result_status": STR,
    "sex": STR,  # "female" | "male" | <NA>
    "age_years": "float64",
}

# Rows that could not be used, each with a machine-readable reason.
REJECTED: dict[str, str] = {
    "source_file": STR,
    "source_row": "Int64",
    # the row's patient id as RESULTS writes ids (missing where the row had none); a
    # damaged id ("1.23457E+11") as printed: what a search of the file finds
    "patient_id": STR,
    "reason": STR,
    "detail": STR,  # one sentence for a person: what was wrong and how to fix it
    "test": STR,
    "value_raw": STR,
    "unit_raw": STR,
}

REJECT_REASONS: tuple[str, ...] = (
    "out_of_scope",  # a test labinterp does not interpret (sodium, glucose, ...)
    "missing_test",  # no test code or name at all
    "missing_patient_id",
    "damaged_patient_id",  # an id a spreadsheet turned into "1.23457E+11": patients merge
    "missing_date",
    "unparseable_date",
    "ambiguous_two_digit_year",
    "missing_value",
    "unparseable_value",  # digits and symbols that are not one number: "(1.2)", "1.2.3"
    "unit_conflict",  # a unit printed with the value that differs from the unit column
    "unknown_unit",  # spelling not in the unit alias table
    "unit_not_valid_for_analyte",  # e.g. "U/L" on a magnesium row
    "implausible_value",  # magnitude impossible for the stated unit: suspected unit error
    "non_blood_specimen",  # urine / body-fluid rows of a blood test
    "duplicate",  # same patient, analyte, time and value as an earlier row
    "malformed_row",  # wrong number of fields and similar structural damage
    "fhir_status",  # FHIR Observation cancelled, entered in error, not resulted, or unknown code
    "hl7_status",  # HL7 v2 OBX deleted, in error, not obtained, pending or not asked (OBX-11)
    "result_status",  # the export's result status: cancelled, deleted, in error or pending
    "superseded",  # a result the lab replaced by a correction, or by the final result
    "sample_quality_index",  # a hemolysis/icterus/lipemia index: marks its sample, not a result
    "race_adjusted_egfr",  # the race-coefficient eGFR of a draw that also has one without race
    # a 25-OH D2 or D3 line of a draw whose total is read, or a D2 alone
    "vitamin_d_component",
    # D2 and D3 of a draw without a total that cannot be summed: one has no number, or the
    # sample holds more than one of a part, or the parts lie on different specimen ids
    "vitamin_d_not_summed",
)

# One item of a finding's evidence: an observation, with the role it played in the rule.
EVIDENCE_RECORD = pa.struct(
    [
        ("role", pa.string()),  # e.g. "magnesium", "calcium", "albumin"
        ("analyte", pa.string()),
        ("test", pa.string()),  # the test's name as the lab printed it
        ("value_raw", pa.string()),
        ("text_result", pa.string()),
        ("comparator", pa.string()),
        ("value_reported", pa.float64()),
        ("unit_reported", pa.string()),
        ("value", pa.float64()),  # canonical
        ("unit", pa.string()),  # canonical
        ("range_low", pa.float64()),
        ("range_high", pa.float64()),
        ("range_low_reported", pa.float64()),
        ("range_high_reported", pa.float64()),
        ("range_origin", pa.string()),
        # the result's own CTCAE v5.0 grade (0-4; null: not graded or unknown) and the term
        # that gives it ("" for grade 0), whatever the finding's `grade` is about
        ("grade", pa.int64()),
        ("grade_term", pa.string()),
        ("derived", pa.bool_()),  # computed here (e.g. corrected calcium), not reported
        ("preliminary", pa.bool_()),  # the lab may still change it (not replaced by a final)
        ("source_file", pa.string()),  # with source_row: the row it came from
        ("collected_at", pa.string()),  # ISO 8601, to the second (UTC where offset printed)
        ("source_row", pa.int64()),
    ]
)
# A finding's evidence as a list of records: nested in Python, JSON and Parquet; JSON text
# in CSV (labinterp.output).
EVIDENCE = pd.ArrowDtype(pa.list_(EVIDENCE_RECORD))

# The findings table: one row per patient x rule x episode, the same everywhere
# (Python API, `interpret --format csv|json`, audit).
FINDINGS: dict[str, Any] = {
    "patient_id": STR,
    "rule_id": STR,
    "kind": STR,  # "pattern" | "guard" | "context"
    "status": STR,  # "fired" | "not_fired" | "indeterminate" | "suppressed"
    "tier": STR,  # rule-specific tier, "" when not fired
    "grade": "Int64",  # CTCAE v5 grade of the rule's key abnormality, where relevant
    "episode_start": "datetime64[ns]",
    "episode_end": "datetime64[ns]",
    # collection time of the latest result the evidence cites: when the finding could be
    # made (an episode of daily results can span weeks); missing without dated evidence
    "evidence_at": "datetime64[ns]",
    "evidence": STR,  # human-readable: "Mg 1.2 mg/dL (0.49 mmol/L; range 1.6-2.6 mg/dL, row)"
    "evidence_json": EVIDENCE,  # the same evidence as records (see EVIDENCE_RECORD)
    "range_origin": STR,  # origins of the ranges used, ";"-joined
    "missing_inputs": STR,  # ";"-joined analytes that were needed and absent
    "suppressed_by": STR,  # guard id that vetoed the rule
    "caveats": STR,  # ";"-joined, e.g. inflammation_caveat, albumin_unknown
    "note": STR,  # one or two sentences for the clinician
    "citations": STR,  # ";"-joined source keys from CLINICAL.md
}

STATUSES: tuple[str, ...] = ("fired", "not_fired", "indeterminate", "suppressed")


def _dtype(name: Any) -> Any:
    return pd.api.types.pandas_dtype(name)


def _same_dtype(actual: object, expected: Any) -> bool:
    return bool(actual == _dtype(expected))


def empty(schema: Mapping[str, Any]) -> pd.DataFrame:
    """An empty frame with the schema's columns and dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in schema.items()})


def raw_from_records(rows: list[dict[str, Any]], source_file: str) -> pd.DataFrame:
    """A RAW table from one dict per input row (message formats: FHIR, HL7 v2): every text
    field present, "" where a row had nothing."""
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["source_row"])
    frame["source_file"] = source_file
    for col in frame.columns:
        if col != "source_row":
            frame[col] = frame[col].fillna("")
    return conform(frame, RAW)


def conform(df: pd.DataFrame, schema: Mapping[str, Any]) -> pd.DataFrame:
    """Return `df` with exactly the schema's columns, in order, cast to the schema's dtypes.

    Missing columns are added as all-missing. Extra columns are dropped: a stage must not
    leak private working columns to the next one.
    """
    if list(df.columns) == list(schema) and all(
        _same_dtype(df[name].dtype, dtype) for name, dtype in schema.items()
    ):
        # already conforming: avoid rebuilding (and copying) a large frame
        return (
            df
            if isinstance(df.index, pd.RangeIndex) and df.index.start == 0
            else df.reset_index(drop=True)
        )
    out = {}
    for name, dtype in schema.items():
        if name in df.columns:
            col = df[name]
            out[name] = col if _same_dtype(col.dtype, dtype) else col.astype(_dtype(dtype))
        else:
            # all missing, made without a Python None per row ([None] * n cost ~0.1 s per
            # million rows and column: message formats leave several RAW fields absent)
            out[name] = pd.Series(index=df.index, dtype=dtype)
    return pd.DataFrame(out, index=df.index).reset_index(drop=True)


def check(df: pd.DataFrame, schema: Mapping[str, Any], table: str) -> pd.DataFrame:
    """Raise SchemaError unless `df` has exactly the schema's columns and dtypes."""
    expected = list(schema)
    if list(df.columns) != expected:
        missing = [c for c in expected if c not in df.columns]
        extra = [c for c in df.columns if c not in schema]
        raise SchemaError(f"{table} table columns differ: missing {missing}, extra {extra}")
    wrong = {c: str(df[c].dtype) for c in expected if not _same_dtype(df[c].dtype, schema[c])}
    if wrong:
        raise SchemaError(f"{table} table has wrong dtypes: {wrong} (expected {dict(schema)})")
    return df
