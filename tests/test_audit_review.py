"""Problems a review of the audit reproduced (/tmp/rev_audit/REPORT.md), one test each."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

import labinterp
from labinterp.errors import LabinterpError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "labinterp" / "sample_data" / "clinic_export.csv"
HEADER = "patient_id,collected_at,test,result,unit\n"


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labinterp", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


# --- #4, #9: --scheduler ----------------------------------------------------------------


@pytest.mark.slow
def test_scheduler_with_a_relative_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers of a cluster run in folders of their own: the scratch paths they are
    sent must not be relative to the audit's working folder."""
    distributed = pytest.importorskip("distributed")
    (tmp_path / "elsewhere").mkdir()
    with distributed.LocalCluster(
        n_workers=1, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as cluster:  # its worker keeps the working folder it started in
        monkeypatch.chdir(tmp_path / "elsewhere")
        summary = labinterp.audit(SAMPLE, "out", engine="dask", scheduler=cluster.scheduler_address)
    assert summary["rows_in"] > 0
    assert (tmp_path / "elsewhere" / "out" / "findings.csv").exists()


@pytest.mark.parametrize("address", ["bogus", "http://127.0.0.1:8786", "tcp://host"])
def test_a_malformed_scheduler_address_is_a_usage_error(tmp_path: Path, address: str) -> None:
    pytest.importorskip("distributed")
    with pytest.raises(LabinterpError, match="scheduler address") as caught:
        labinterp.audit(SAMPLE, tmp_path / "out", engine="dask", scheduler=address)
    assert "tcp://" in str(caught.value)  # names the fix
    assert not (tmp_path / "out").exists()  # found before anything was read or made
    done = _cli("audit", str(SAMPLE), "-o", str(tmp_path / "out"), "--scheduler", address)
    assert done.returncode == 2, done.stderr
    assert "bug" not in done.stderr


# --- #5: follow-up ------------------------------------------------------------------------


def test_a_later_result_without_a_value_is_not_a_follow_up(tmp_path: Path) -> None:
    """A repeat Mg the lab could not report (hemolysed) is the case that still needs one."""
    export = tmp_path / "fu.csv"
    export.write_text(
        HEADER + "P1,2024-03-04 08:00,Magnesium,0.5,mmol/L\n"
        "P1,2024-03-04 08:00,Calcium ionized,0.9,mmol/L\n"
        "P1,2024-03-06 08:00,Magnesium,UNABLE TO REPORT DUE TO HEMOLYSIS,mmol/L\n"
        "P2,2024-03-04 08:00,Magnesium,0.5,mmol/L\n"
        "P2,2024-03-04 08:00,Calcium ionized,0.9,mmol/L\n"
        "P2,2024-03-05 08:00,Magnesium,UNABLE TO REPORT,mmol/L\n"
        "P2,2024-03-07 08:00,Magnesium,<0.4,mmol/L\n",
        encoding="utf-8",
    )
    summary = labinterp.audit(export, tmp_path / "out")
    findings = pd.read_csv(tmp_path / "out" / "findings.csv")
    row = findings.set_index(["patient_id", "rule_id"]).loc[
        lambda f: f.index.get_level_values(1) == "hypomagnesemia_hypocalcemia"
    ]
    assert row.loc[("P1", "hypomagnesemia_hypocalcemia"), "status"] == "fired"
    assert not row.loc[("P1", "hypomagnesemia_hypocalcemia"), "followed_up"]
    assert pd.isna(row.loc[("P1", "hypomagnesemia_hypocalcemia"), "follow_up_at"])
    # a censored result ("<0.4") is a value: the first later one with a value counts
    assert row.loc[("P2", "hypomagnesemia_hypocalcemia"), "followed_up"]
    assert row.loc[("P2", "hypomagnesemia_hypocalcemia"), "follow_up_at"] == "2024-03-07T08:00:00"
    counts = summary["follow_up"]["hypomagnesemia_hypocalcemia"]
    assert (counts["followed_up"], counts["not_followed_up"]) == (1, 1)


# --- findings columns shared with the API and `interpret --format csv` -----------------------


def test_audit_findings_have_the_shared_columns_first(tmp_path: Path) -> None:
    """DESIGN.md: the findings table has the same columns everywhere. The audit's file has
    them in the same order, but the evidence records (evidence_json: a 10M-row audit could
    not hold them for every finding within 4 GiB; `evidence` has the same values as text),
    with its own columns after them; each row's note is that of the episode it shows."""
    from labinterp import schema

    labinterp.audit(SAMPLE, tmp_path / "out")
    shared = [c for c in schema.FINDINGS if c != "evidence_json"]
    extra = ["episodes", "episodes_fired", "followed_up", "follow_up_at"]
    csv = pd.read_csv(tmp_path / "out" / "findings.csv", dtype=str, keep_default_na=False)
    parquet = pq.read_table(tmp_path / "out" / "findings.parquet")
    assert list(csv.columns) == shared + extra
    assert parquet.column_names == shared + extra

    # the episode each row shows, found in the API's findings by its identifying columns
    keys = ["patient_id", "rule_id", "status", "tier", "evidence"]
    api_csv = pd.read_csv(
        io.StringIO(_cli("interpret", str(SAMPLE), "--format", "csv").stdout),
        dtype=str,
        keep_default_na=False,
    )
    want = api_csv.drop_duplicates(keys).set_index(keys)
    got = csv.set_index(keys)
    assert got.index.isin(want.index).all()
    assert (got["note"] == want.loc[got.index, "note"]).all()
    fired = csv[csv["status"] == "fired"]
    assert len(fired) and (fired["note"] != "").all()
    assert len(pd.read_parquet(tmp_path / "out" / "findings.parquet")) == len(csv)


# --- #7: provenance in summary.json -----------------------------------------------------


def test_summary_records_the_options_and_every_reference_file(tmp_path: Path) -> None:
    """Two audits whose findings differ by --date-format or --mapping, or by a reference
    table (analytes.csv molar masses, unit aliases), must not have the same provenance."""
    import hashlib

    from labinterp.resources import data_dir

    export = tmp_path / "df.csv"
    export.write_text(
        "pid,collected_at,test,result,unit\n"
        "P1,03/04/2024 08:00,Magnesium,0.5,mmol/L\n"
        "P1,03/05/2024 08:00,Calcium ionized,0.9,mmol/L\n",
        encoding="utf-8",
    )
    mapping = tmp_path / "site.toml"
    mapping.write_text('[columns]\npatient_id = "pid"\n', encoding="utf-8")
    us = labinterp.audit(export, tmp_path / "us", date_format="%m/%d/%Y %H:%M", mapping=mapping)
    eu = labinterp.audit(export, tmp_path / "eu", date_format="%d/%m/%Y %H:%M", mapping=mapping)
    assert us["options"]["date_format"] == "%m/%d/%Y %H:%M"
    assert eu["options"]["date_format"] == "%d/%m/%Y %H:%M"
    assert us["options"]["mapping"] == {
        "file": "site.toml",  # the name only: no path of this machine
        "sha256": hashlib.sha256(mapping.read_bytes()).hexdigest(),
    }
    assert us["options"]["vitamin_d_guideline"] == "iom2011"
    header = (tmp_path / "us" / "report.html").read_text(encoding="utf-8").split("</header>")[0]
    assert "site.toml" in header and "%m/%d/%Y %H:%M" in header

    reference = data_dir("reference_ranges")
    files = us["ruleset"]["reference_files"]
    on_disk = sorted(
        p.relative_to(reference).as_posix()
        for p in reference.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(reference).parts)
        and "__pycache__" not in p.parts
    )
    assert sorted(files) == on_disk
    for name in ("analytes.csv", "unit_aliases.csv", "fallback_ranges.csv", "follow_up.toml"):
        assert files[name] == hashlib.sha256((reference / name).read_bytes()).hexdigest()
    assert len(us["ruleset"]["reference_sha256"]) == 64
    assert us["ruleset"]["reference_sha256"] == eu["ruleset"]["reference_sha256"]

    plain = labinterp.audit(SAMPLE, tmp_path / "plain")
    assert plain["options"] == {
        "date_format": None,
        "mapping": None,
        "vitamin_d_guideline": "iom2011",
    }


# --- #8: rows per file ------------------------------------------------------------------


def test_rows_per_file_when_a_name_is_another_plus_a_bracket(tmp_path: Path) -> None:
    """A workbook's sheets are labelled "book.xlsx[Sheet]"; a file really named
    "lab.csv[2].csv" is not a sheet of "lab.csv". Rows used are counted per file."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "lab.csv").write_text(
        HEADER + "P1,2024-03-01 08:30,Magnesium,1.0,mg/dL\nP1,2024-03-01 08:30,Calcium,7.6,mg/dL\n",
        encoding="utf-8",
    )
    (folder / "lab.csv[2].csv").write_text(
        HEADER + "P2,2024-03-01 08:30,Sodium,140,mmol/L\n"
        "P2,2024-03-01 08:30,Chloride,100,mmol/L\n"
        "P2,2024-03-01 08:30,Magnesium,1.0,mg/dL\n"
        "P2,2024-03-01 08:30,Magnesium,1.0,mg/dL\n",  # a repeat: rejected after reading
        encoding="utf-8",
    )
    summary = labinterp.audit(folder, tmp_path / "out")
    counts = {
        f["file"]: (f["rows_in"], f["rows_used"], f["rows_rejected"]) for f in summary["inputs"]
    }
    assert counts == {"lab.csv": (2, 2, 0), "lab.csv[2].csv": (4, 1, 3)}
    assert sum(f["rows_used"] for f in summary["inputs"]) == summary["rows_used"]
    assert sum(f["rows_rejected"] for f in summary["inputs"]) == summary["rows_rejected"]


def test_rows_per_workbook_count_its_sheets(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    first = book.active
    first.title = "Ward A"
    second = book.create_sheet("Ward B")
    for sheet, rows in (
        (first, [("P1", "2024-03-01 08:30", "Magnesium", "0.5", "mmol/L")] * 2),
        (
            second,
            [
                ("P2", "2024-03-01 08:30", "Magnesium", "0.5", "mmol/L"),
                ("P2", "2024-03-01 08:30", "Sodium", "140", "mmol/L"),
            ],
        ),
    ):
        sheet.append(HEADER.strip().split(","))
        for row in rows:
            sheet.append(row)
    book.save(tmp_path / "book.xlsx")
    summary = labinterp.audit(tmp_path / "book.xlsx", tmp_path / "out")
    (entry,) = summary["inputs"]
    assert (entry["rows_in"], entry["rows_used"], entry["rows_rejected"]) == (4, 2, 2)


# --- #6: inputs with and without UTC offsets --------------------------------------------


def _audit_beside_an_offset_file(
    tmp_path: Path, name: str, row: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The audit of a folder of two exports: one printing a "-05:00" offset, and `name`
    holding `row`; its run and its summary.json."""
    folder = tmp_path / "tz"
    folder.mkdir()
    (folder / "a_offset.csv").write_text(
        HEADER + "P1,2024-03-05T20:00:00-05:00,Magnesium,0.5,mmol/L\n", encoding="utf-8"
    )
    (folder / name).write_text(HEADER + row, encoding="utf-8")
    done = _cli("audit", str(folder), "-o", str(tmp_path / "out"), "-q")
    assert done.returncode == 0, done.stderr
    return done, json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))


def test_times_printed_in_utc_and_with_an_offset_are_one_clock(tmp_path: Path) -> None:
    """ "Z" times are UTC, as "-05:00" ones are once moved: no mixed-clock warning (a
    Synthea CSV of "Z" times beside its FHIR bundle of offsets)."""
    done, summary = _audit_beside_an_offset_file(
        tmp_path, "b_zulu.csv", "P1,2024-03-06T01:00:00Z,Calcium ionized,0.9,mmol/L\n"
    )
    assert summary["collection_times"] == "utc"
    assert not [line for line in done.stderr.splitlines() if "UTC" in line], done.stderr


def test_inputs_with_and_without_offsets_are_told_apart(tmp_path: Path) -> None:
    """Only the input that printed offsets is held in UTC: summary.json must not say every
    time is, and the user is warned once (counts only, no ids, values or names)."""
    done, summary = _audit_beside_an_offset_file(
        tmp_path, "b_local.csv", "P1,2024-03-03 22:00,Calcium ionized,0.9,mmol/L\n"
    )
    assert summary["collection_times"] == "mixed"
    times = {f["file"]: f["collection_times"] for f in summary["inputs"]}
    assert times == {"a_offset.csv": "utc", "b_local.csv": "as_printed"}
    warnings = [line for line in done.stderr.splitlines() if "UTC" in line]
    assert len(warnings) == 1, done.stderr
    for private in ("P1", "0.5", "0.9", "a_offset", "b_local", "2024"):
        assert private not in done.stderr
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Times are in UTC for the inputs that printed them" in report

    # each input alone: no warning
    alone = _cli("audit", str(tmp_path / "tz" / "b_local.csv"), "-o", str(tmp_path / "alone"), "-q")
    assert alone.returncode == 0 and alone.stderr == ""


# --- #11, #13, #15: the report's inputs, the output folder ------------------------------


def test_report_lists_skipped_files_and_rows_per_file(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "export.csv").write_text(
        HEADER
        + "P1,2024-03-01 08:30,Magnesium,0.5,mmol/L\nP1,2024-03-01 08:30,Sodium,140,mmol/L\n",
        encoding="utf-8",
    )
    (folder / "D_ITEMS.csv").write_text("itemid,label\n1,Magnesium\n", encoding="utf-8")
    summary = labinterp.audit(folder, tmp_path / "out")
    assert [s["file"] for s in summary["skipped_files"]] == ["D_ITEMS.csv"]
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    inputs = html.split('<section id="inputs">')[1].split("</section>")[0]
    assert "D_ITEMS.csv" in inputs and summary["skipped_files"][0]["reason"][:30] in inputs
    assert '<th class="num">used</th>' in inputs and '<th class="num">rejected</th>' in inputs
    row = re.search(r"<tr><td>export.csv</td>(.*?)</tr>", inputs)
    assert row
    numbers = re.findall(r'<td class="num">([\d,]+)</td>', row.group(1))
    assert numbers[:3] == ["2", "1", "1"]  # rows, used, rejected


def test_an_output_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("hi\n", encoding="utf-8")
    with pytest.raises(LabinterpError, match="is not a folder"):
        labinterp.audit(SAMPLE, target)
    assert target.read_text(encoding="utf-8") == "hi\n"


def test_an_output_folder_inside_an_input_folder_is_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "single.csv").write_text(
        HEADER + "P1,2024-03-01 08:30,Magnesium,0.5,mmol/L\n", encoding="utf-8"
    )
    out = folder / "out"
    first = labinterp.audit(folder, out)
    (out / "notes.csv").write_text(HEADER + "P9,2024-03-01 08:30,Magnesium,0.5,mmol/L\n")
    second = labinterp.audit(folder, out)
    for summary in (first, second):
        assert [f["file"] for f in summary["inputs"]] == ["single.csv"]
        assert summary["skipped_files"] == []
        assert summary["rows_in"] == 1
    # the same folder named by another spelling of its path
    third = labinterp.audit(tmp_path / "in" / ".." / "in", out)
    assert third["rows_in"] == 1
    # a file in it named directly is read: it was asked for
    named = labinterp.audit([folder, out / "notes.csv"], out)
    assert [f["file"] for f in named["inputs"]] == ["notes.csv", "single.csv"]
    # an output folder that holds every input leaves nothing to read
    only = tmp_path / "only"
    only.mkdir()
    (only / "a.csv").write_text(HEADER + "P1,2024-03-01 08:30,Magnesium,0.5,mmol/L\n")
    with pytest.raises(LabinterpError, match="no export files"):
        labinterp.audit(only, only)
