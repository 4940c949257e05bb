"""The batch audit: row accounting, planted patterns, determinism, safety of the outputs."""

from __future__ import annotations

import io
import json
import multiprocessing
import re
import sys
import threading
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import labinterp
from benchmarks.make_export import HEADER, Manifest, generate
from labinterp.audit.collapse import STATUS_RANK, collapse
from labinterp.audit.progress import Progress
from labinterp.errors import InputNotFoundError, LabinterpError, OutputError

OUTPUTS = (
    "findings.csv",
    "findings.parquet",
    "patients.csv",
    "rejected_rows.csv",
    "summary.json",
    "report.html",
)
PATTERNS = ("hypomagnesemia_hypocalcemia", "hypomagnesemia_hypokalemia", "vitamin_d_resistance")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path, dict]:
    base = tmp_path_factory.mktemp("planted")
    manifest = generate(base / "export.csv", 20_000, seed=7)
    summary = labinterp.audit(base / "export.csv", base / "out", n_buckets=3)
    return manifest, base, summary


def _fired(summary: dict, rule: str) -> dict[str, int]:
    return summary["counts"].get(rule, {}).get("fired", {})


def _total(summary: dict, rule: str, status: str) -> int:
    return sum(summary["counts"].get(rule, {}).get(status, {}).values())


def test_public_api_name(tmp_path: Path) -> None:
    # `labinterp.audit` may be the function or (once the package was imported) the package;
    # either way it is called the same.
    from labinterp.audit import audit

    assert callable(audit) and callable(labinterp.audit)
    generate(tmp_path / "e.csv", 3000)
    assert labinterp.audit(tmp_path / "e.csv", tmp_path / "out")["rows_in"] == 3000


def test_planted_patterns_fire_exactly(planted: tuple[Manifest, Path, dict]) -> None:
    manifest, _, summary = planted
    for rule in PATTERNS:
        assert _fired(summary, rule) == manifest.fired[rule], rule
    for guard, n in manifest.guards.items():
        assert _total(summary, guard, "fired") == n
    for rule, n in manifest.suppressed.items():
        assert _total(summary, rule, "suppressed") == n


def test_planted_rows_accounted(planted: tuple[Manifest, Path, dict]) -> None:
    manifest, base, summary = planted
    assert summary["rows_in"] == manifest.rows
    assert summary["rows_in"] == summary["rows_used"] + summary["rows_rejected"]
    assert summary["rows_balanced"] is True
    assert summary["rows_rejected_by_reason"] == manifest.rejected
    assert summary["patients"] == manifest.patients
    rejected = pd.read_csv(base / "out" / "rejected_rows.csv")
    assert len(rejected) == summary["rows_rejected"]
    assert rejected["reason"].value_counts().to_dict() == manifest.rejected


def test_planted_hemolyzed_samples_are_counted(planted: tuple[Manifest, Path, dict]) -> None:
    """Every planted hemolysis comment sits on the K of its own sample, so the report's
    sample-quality table counts exactly that many hemolyzed samples."""
    manifest, base, summary = planted
    quality = summary["sample_quality"]
    assert quality["flagged"] == {"hemolyzed": manifest.hemolysis_rows}
    assert manifest.hemolysis_rows < quality["samples"] < summary["rows_used"]
    report = (base / "out" / "report.html").read_text("utf-8")
    assert f'id="quality-hemolyzed">{manifest.hemolysis_rows:,}<' in report


def test_output_tables(planted: tuple[Manifest, Path, dict]) -> None:
    manifest, base, summary = planted
    out = base / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    findings = pd.read_csv(out / "findings.csv", keep_default_na=False, na_values=[""])
    assert not findings.duplicated(["patient_id", "rule_id"]).any()
    assert findings["status"].isin(list(STATUS_RANK)).all()
    assert findings[["patient_id", "rule_id"]].equals(
        findings[["patient_id", "rule_id"]]
        .sort_values(["patient_id", "rule_id"])
        .reset_index(drop=True)
    )
    parquet = pq.read_table(out / "findings.parquet").to_pandas()
    assert len(parquet) == len(findings) == summary["findings_rows"]
    assert pd.api.types.is_integer_dtype(findings["episodes"])
    patients = pd.read_csv(out / "patients.csv")
    assert patients["patient_id"].is_unique
    assert len(patients) == manifest.patients
    assert pd.api.types.is_float_dtype(patients["magnesium_latest"])
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["rows_in"] == manifest.rows
    assert len(on_disk["inputs"][0]["sha256"]) == 64
    assert "parameters" in on_disk["ruleset"]
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained


def test_fired_caveats_are_counted_per_rule(tmp_path: Path) -> None:
    sample = Path(labinterp.__file__).parent / "sample_data" / "clinic_export.csv"
    summary = labinterp.audit(sample, tmp_path / "out")
    findings = pd.read_csv(tmp_path / "out" / "findings.csv", keep_default_na=False, dtype=str)
    fired = findings[findings["status"] == "fired"]
    expected: dict[str, dict[str, int]] = {}
    for rule, caveats in zip(fired["rule_id"], fired["caveats"], strict=True):
        for caveat in filter(None, caveats.split(";")):
            expected.setdefault(rule, {})[caveat] = expected.get(rule, {}).get(caveat, 0) + 1
    # the sample has caveats of every kind to count, the medicines' among them
    assert expected["hypomagnesemia_hypokalemia"]["mg_lowering_medication"] == 1
    assert expected["vitamin_d_resistance"]["vitamin_d_supplement"] == 1
    assert summary["fired_caveats"] == expected
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert 'id="fired-caveats"' in html and "<td>mg_lowering_medication</td>" in html
    # the patients list says who was read with a medicine that lowers Mg
    patients = pd.read_csv(tmp_path / "out" / "patients.csv", keep_default_na=False, dtype=str)
    on_one = patients.loc[patients["mg_lowering_medicines"] != "", "patient_id"].tolist()
    assert on_one == ["DEMO-005"]
    columns = patients.columns.tolist()
    assert columns.index("mg_lowering_medicines") == columns.index("last_at") + 1


def test_same_input_same_findings_bytes(planted: tuple[Manifest, Path, dict]) -> None:
    _, base, _ = planted
    labinterp.audit(base / "export.csv", base / "again", n_buckets=1)
    for name in ("findings.csv", "patients.csv", "rejected_rows.csv"):
        assert (base / "out" / name).read_bytes() == (base / "again" / name).read_bytes(), name


def test_forked_and_spawned_workers_agree(
    planted: tuple[Manifest, Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers are forked when no other Python thread runs, else spawned: same bytes."""
    core = sys.modules["labinterp.audit.core"]
    if sys.version_info < (3, 12) and sys.platform.startswith("linux"):
        assert core._start_method() == ("fork" if threading.active_count() == 1 else "spawn")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert core._start_method() == "spawn"  # another thread could hold a lock
    finally:
        stop.set()
        other.join()
    _, base, _ = planted
    for method in ("fork", "spawn"):
        if method not in multiprocessing.get_all_start_methods():
            continue
        monkeypatch.setattr(core, "_start_method", lambda m=method: m)
        labinterp.audit(base / "export.csv", base / method, n_buckets=3, workers=2)
        for name in ("findings.csv", "patients.csv", "rejected_rows.csv"):
            assert (base / "out" / name).read_bytes() == (base / method / name).read_bytes()


def test_compressed_and_plain_bucket_files_agree(
    planted: tuple[Manifest, Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small inputs get plain bucket files, large ones LZ4-compressed: the same bytes."""
    core = sys.modules["labinterp.audit.core"]
    seen: list[str | None] = []
    made = core._BucketWriters.__init__

    def spy(self: object, folder: Path, n: int, options: object) -> None:
        seen.append(getattr(options, "compression", None))
        made(self, folder, n, options)

    monkeypatch.setattr(core._BucketWriters, "__init__", spy)
    _, base, _ = planted
    for limit, name in ((0, "lz4"), (1 << 40, "plain")):
        monkeypatch.setattr(core, "_PLAIN_BUCKETS_UP_TO", limit)
        labinterp.audit(base / "export.csv", base / name, n_buckets=3)
        for table in ("findings.csv", "patients.csv", "rejected_rows.csv"):
            assert (base / "out" / table).read_bytes() == (base / name / table).read_bytes()
    assert seen == ["lz4", None]


def _write_rows(path: Path, rows: list[str]) -> None:
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")


def test_formula_injection_neutralized(tmp_path: Path) -> None:
    evil = '=HYPERLINK(""http://x"")'
    rows = [
        f'"{evil}",F,1970-01-01,2024-03-01 08:30,S1,Magnesium,19123-9,1.0,mg/dL,1.6-2.6,L,',
        f'"{evil}",F,1970-01-01,2024-03-01 08:30,S1,Calcium,17861-6,7.5,mg/dL,8.6-10.3,L,',
        f'"{evil}",F,1970-01-01,2024-03-01 08:30,S1,Sodium,2951-2,140,mmol/L,136-145,,',
        "+P2,M,1970-01-01,2024-03-01 08:30,S2,Potassium,2823-3,4.1,mmol/L,3.5-5.1,,",
    ]
    _write_rows(tmp_path / "evil.csv", rows)
    labinterp.audit(tmp_path / "evil.csv", tmp_path / "out")
    for name in ("findings.csv", "patients.csv"):
        df = pd.read_csv(tmp_path / "out" / name, dtype=str, keep_default_na=False)
        ids = set(df["patient_id"])
        assert ids == {"'" + evil.replace('""', '"'), "'+P2"}, name
    patients = pd.read_csv(tmp_path / "out" / "patients.csv")
    assert pd.api.types.is_float_dtype(patients["magnesium_latest"])
    rejected = pd.read_csv(tmp_path / "out" / "rejected_rows.csv", dtype=str)
    assert all(not str(v).startswith(("=", "+", "@")) for v in rejected.to_numpy().ravel())
    assert list(rejected["patient_id"]) == ["'" + evil.replace('""', '"')]  # the sodium row


def test_rejected_rows_name_their_patients_and_those_left_without_a_result(
    tmp_path: Path,
) -> None:
    body = "patient_id,collected_at,test,result,unit\n"
    (tmp_path / "a.csv").write_text(
        body
        + "P1,2024-03-01 08:30,Magnesium,1.1,mg/dL\n"  # P1: used
        + "P1,2024-03-01 08:30,Calcium,9.1,mmol/kg\n"  # P1: one row unusable
        + "P2,2024-03-01 08:30,Magnesium,1.1,mmol/kg\n"  # P2: every row rejected
        + "P2,2024-03-01 08:30,Sodium,140,mmol/L\n"
        + "P3,2024-03-01 08:30,Sodium,140,mmol/L\n"  # P3: only a test not read
        + "1.23457E+11,2024-03-01 08:30,Magnesium,1.1,mg/dL\n"  # damaged: not a patient
        + ",2024-03-01 08:30,Magnesium,1.1,mg/dL\n"
    )
    summary = labinterp.audit(tmp_path / "a.csv", tmp_path / "out")
    rejected = pd.read_csv(tmp_path / "out" / "rejected_rows.csv", dtype=str)
    assert list(rejected.columns[:4]) == ["source_file", "source_row", "patient_id", "reason"]
    assert rejected["patient_id"].fillna("").tolist() == ["P1", "P2", "P2", "P3", "1.23457E+11", ""]
    assert summary["patients_all_rows_rejected"] == {
        "patients": 2,
        "by_reason": {"out_of_scope": 2, "unknown_unit": 1},
    }
    report = (tmp_path / "out" / "report.html").read_text()
    assert "<td>P2</td>" in report
    assert "2 patients of the rejected rows had no row used" in report


def test_csv_times_are_iso_seconds() -> None:
    """The CSV time text is exactly strftime's ISO form, whatever the unit, era or fraction."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from labinterp.output import iso_seconds

    text = pd.Series(
        ["2022-10-14 06:20:00", "1899-12-31 23:59:59.999", None, "2187-03-01 00:00:07.5"]
    )
    times = pd.to_datetime(text, format="ISO8601")
    column = pa.chunked_array([pa.array(times, type=pa.timestamp("ns"))])
    expected = pc.strftime(column.cast(pa.timestamp("s"), safe=False), "%Y-%m-%dT%H:%M:%S")
    got = iso_seconds(column)
    assert got.to_pylist() == expected.to_pylist()
    assert got.to_pylist()[0] == "2022-10-14T06:20:00"
    assert got.to_pylist()[2] is None


def test_times_printed_with_an_offset_are_reported_as_utc(tmp_path: Path) -> None:
    body = "patient_id,collected_at,test,result,unit\n"
    plain = tmp_path / "plain.csv"
    plain.write_text(body + "P1,2018-05-26 23:21,Magnesium,1.1,mg/dL\n")
    offset = tmp_path / "offset.csv"
    offset.write_text(body + "P2,2018-05-26T23:21:00-07:00,Magnesium,1.1,mg/dL\n")
    alone = labinterp.audit(plain, tmp_path / "plain")
    assert alone["collection_times"] == "as_printed"
    assert "in UTC" not in (tmp_path / "plain" / "report.html").read_text()
    only = labinterp.audit(offset, tmp_path / "offset")
    assert only["collection_times"] == "utc"
    assert "Times are in UTC" in (tmp_path / "offset" / "report.html").read_text()
    findings = pd.read_csv(tmp_path / "offset" / "findings.csv", dtype=str)
    assert "2018-05-27T06:21:00" in set(findings["episode_start"])


def test_the_vitamin_d_guideline_is_a_setting_and_is_reported(tmp_path: Path) -> None:
    from labinterp.cli import main

    export = tmp_path / "vd.csv"  # 25 ng/mL: enough by IOM 2011, low by ES 2011
    export.write_text(
        "patient_id,collected_at,test,result,unit,reference_range\n"
        "P1,2024-03-01 08:00,Magnesium,1.2,mg/dL,1.6-2.6\n"
        "P1,2024-03-01 08:00,25-OH Vitamin D,25,ng/mL,30-100\n"
    )
    iom = labinterp.audit(export, tmp_path / "iom")
    assert iom["ruleset"]["vitamin_d_guideline"] == "iom2011"
    assert "fired" not in iom["counts"]["vitamin_d_resistance"]
    es_args = ["audit", str(export), "-o", str(tmp_path / "es"), "-q"]
    assert main([*es_args, "--vitamin-d-guideline", "es2011"]) == 0
    es = json.loads((tmp_path / "es" / "summary.json").read_text())
    assert es["ruleset"]["vitamin_d_guideline"] == "es2011"
    assert es["counts"]["vitamin_d_resistance"]["fired"] == {"single": 1}
    with pytest.raises(LabinterpError, match="guideline"):
        labinterp.audit(export, tmp_path / "bad", vitamin_d_guideline="who")
    assert not (tmp_path / "bad").exists()


def test_follow_up_is_a_later_test_of_what_the_finding_needs(tmp_path: Path) -> None:
    export = tmp_path / "follow.csv"
    export.write_text(
        "patient_id,collected_at,test,result,unit,reference_range\n"
        # low Mg with low Ca, magnesium tested again five days later: followed up
        "F1,2024-03-01 08:00,Magnesium,1.1,mg/dL,1.6-2.6\n"
        "F1,2024-03-01 08:00,Ionized calcium,0.95,mmol/L,1.15-1.32\n"
        "F1,2024-03-06 08:00,Magnesium,1.9,mg/dL,1.6-2.6\n"
        # the same pattern, only calcium tested again: not followed up
        "F2,2024-03-01 08:00,Magnesium,1.1,mg/dL,1.6-2.6\n"
        "F2,2024-03-01 08:00,Ionized calcium,0.95,mmol/L,1.15-1.32\n"
        "F2,2024-03-09 08:00,Ionized calcium,1.2,mmol/L,1.15-1.32\n"
        # daily results: the repeat magnesium is inside the episode, and still counts
        "F4,2024-03-01 08:00,Magnesium,1.1,mg/dL,1.6-2.6\n"
        "F4,2024-03-01 08:00,Ionized calcium,0.95,mmol/L,1.15-1.32\n"
        "F4,2024-03-02 08:00,Magnesium,1.8,mg/dL,1.6-2.6\n"
        "F4,2024-03-03 08:00,Magnesium,1.9,mg/dL,1.6-2.6\n"
        # suspected EDTA contamination, potassium recollected the next day
        "F3,2024-03-01 08:00,Potassium,7.9,mmol/L,3.5-5.0\n"
        "F3,2024-03-01 08:00,Calcium,5.0,mg/dL,8.5-10.5\n"
        "F3,2024-03-02 09:00,Potassium,4.2,mmol/L,3.5-5.0\n"
    )
    summary = labinterp.audit(export, tmp_path / "out")
    found = pd.read_csv(tmp_path / "out" / "findings.csv", dtype=str, keep_default_na=False)
    found = found.set_index(["patient_id", "rule_id"])
    p1 = "hypomagnesemia_hypocalcemia"
    assert found.loc[("F1", p1), "status"] == "fired"
    assert found.loc[("F1", p1), ["followed_up", "follow_up_at"]].tolist() == [
        "true",
        "2024-03-06T08:00:00",
    ]
    assert found.loc[("F2", p1), ["followed_up", "follow_up_at"]].tolist() == ["false", ""]
    edta = ("F3", "edta_contamination")
    assert found.loc[edta, ["followed_up", "follow_up_at"]].tolist() == [
        "true",
        "2024-03-02T09:00:00",
    ]
    assert found.loc[("F4", p1), ["episode_end", "evidence_at", "follow_up_at"]].tolist() == [
        "2024-03-03T08:00:00",
        "2024-03-01T08:00:00",
        "2024-03-02T08:00:00",
    ]
    # a finding that did not fire has nothing to follow up
    assert found.loc[("F3", p1), "followed_up"] == ""
    assert summary["follow_up"][p1] | {"analytes": None} == {
        "analytes": None,
        "followed_up": 2,
        "not_followed_up": 1,
        "undated": 0,
    }
    assert summary["follow_up"][p1]["analytes"] == ["magnesium"]
    report = (tmp_path / "out" / "report.html").read_text()
    assert 'id="follow-up"' in report and "Low Mg with low Ca" in report


def test_missing_input_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        labinterp.audit(tmp_path / "nope.csv", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_bucket_write_stops_the_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bucket files are written on a thread of their own: its failure must still stop the
    audit, with nothing left in the output folder."""
    import sys

    core = sys.modules["labinterp.audit.core"]

    def disk_full(self: object, results: pd.DataFrame) -> None:
        raise OSError(28, "No space left on device")

    generate(tmp_path / "export.csv", 3_000, seed=3)
    monkeypatch.setattr(core._BucketWriters, "write", disk_full)
    # an OutputError (exit 2 in the CLI): the user's to fix, not a bug
    with pytest.raises(OutputError, match="no space left on the device holding"):
        labinterp.audit(tmp_path / "export.csv", tmp_path / "out", n_buckets=2)
    assert not (tmp_path / "out").exists()


def test_bad_input_leaves_existing_outputs_untouched(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    generate(good, 4000, seed=1)
    out = tmp_path / "out"
    labinterp.audit(good, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01\x02 not an export \xff" * 100)
    with pytest.raises(LabinterpError):
        labinterp.audit([good, bad], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(LabinterpError):
        labinterp.audit(bad, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_folder_skips_side_tables_but_named_files_must_be_exports(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    generate(folder / "export.csv", 3000, seed=2)
    (folder / "items.csv").write_text("itemid,label\n1,Magnesium\n", encoding="utf-8")
    (folder / "NOTES.md").write_text("# notes\n", encoding="utf-8")
    summary = labinterp.audit(folder, tmp_path / "out")
    assert [f["file"] for f in summary["inputs"]] == ["export.csv"]
    assert [f["file"] for f in summary["skipped_files"]] == ["items.csv"]
    with pytest.raises(LabinterpError):
        labinterp.audit(folder / "items.csv", tmp_path / "out2")


def test_unknown_engine(tmp_path: Path) -> None:
    generate(tmp_path / "e.csv", 3000)
    with pytest.raises(LabinterpError, match="engine"):
        labinterp.audit(tmp_path / "e.csv", tmp_path / "out", engine="spark")


def test_cli_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from labinterp.cli import main

    generate(tmp_path / "e.csv", 3000, seed=3)
    code = main(["audit", str(tmp_path / "e.csv"), "-o", str(tmp_path / "out"), "-q"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err == "" and captured.out == ""
    assert (tmp_path / "out" / "findings.csv").exists()
    # without -q: a summary for a person on stderr, with the findings nobody followed up
    assert main(["audit", str(tmp_path / "e.csv"), "-o", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("labinterp: audited 3,000 rows")
    assert lines[0].endswith(f"wrote {tmp_path / 'out'}")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for rule, f in summary["follow_up"].items():
        if f["not_followed_up"]:
            line = next(x for x in lines if x.split()[:2] == ["fired:", rule])
            assert f"; {f['not_followed_up']:,} with no later test (" in line
    assert "{" not in "".join(lines)  # no raw JSON
    patient_ids = pd.read_csv(tmp_path / "out" / "patients.csv", dtype=str)["patient_id"]
    words = set("".join(lines).replace(",", " ").replace("(", " ").replace(")", " ").split())
    assert not words & set(patient_ids)


def test_cli_summary_reads_as_lines() -> None:
    from labinterp.cli_audit import summary_text

    summary = {
        "rows_in": 12345,
        "rows_used": 12000,
        "rows_rejected": 345,
        "patients": 150,
        "counts": {
            "vitamin_d_resistance": {"not_fired": {"": 150}},
            "hypomagnesemia_hypocalcemia": {
                "fired": {"possible": 7, "supported": 5},
                "not_fired": {"": 138},
            },
            "ckd_context": {"fired": {"G3a": 1}},
            "edta_contamination": {"fired": {"core_signature": 2}},
        },
        "follow_up": {
            "edta_contamination": {
                "analytes": ["potassium", "calcium"],
                "followed_up": 1,
                "not_followed_up": 1,
                "undated": 0,
            },
            "hypomagnesemia_hypocalcemia": {
                "analytes": ["magnesium"],
                "followed_up": 2,
                "not_followed_up": 9,
                "undated": 1,
            },
            "vitamin_d_resistance": {
                "analytes": ["vitamin_d_25oh", "magnesium"],
                "followed_up": 0,
                "not_followed_up": 0,
                "undated": 0,
            },
        },
    }
    assert summary_text(summary, "audit-out") == (
        "labinterp: audited 12,345 rows (12,000 used, 345 rejected), 150 patients;"
        " wrote audit-out\n"
        "  fired: edta_contamination            2 patients (core_signature 2);"
        " 1 with no later test (potassium or calcium)\n"
        "  fired: hypomagnesemia_hypocalcemia  12 patients (possible 7, supported 5);"
        " 9 with no later test (magnesium), 1 cannot tell (undated)\n"
        "  fired: ckd_context                   1 patient (G3a 1)\n"
        "  fired for no patient: vitamin_d_resistance\n"
    )


def test_cli_bad_input_exit_2(tmp_path: Path) -> None:
    from labinterp.cli import main

    assert main(["audit", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "o")]) == 2


def test_progress_shows_counts_not_identifiers(tmp_path: Path) -> None:
    stream = io.StringIO()
    p = Progress(enabled=True, total_rows=1000, stream=stream)
    p.rows_read(500)
    p.start_stage("interpret", 2)
    p.bucket_done(10)
    p.bucket_done(12)
    p.finish()
    text = stream.getvalue()
    assert "500 rows" in text and "22 patients" in text and "ETA" in text
    quiet = io.StringIO()
    Progress(enabled=False, stream=quiet).rows_read(5)
    assert quiet.getvalue() == ""


def test_collapse_picks_worst_status_then_latest_episode() -> None:
    from labinterp import schema

    t = pd.Timestamp
    times = [t("2024-01-01"), t("2024-02-01"), t("2024-03-01"), t("2024-01-01"), t("2024-05-01")]
    findings = schema.conform(
        pd.DataFrame(
            {
                "patient_id": ["a", "a", "a", "b", "b"],
                "rule_id": ["r"] * 5,
                "status": ["not_fired", "fired", "fired", "indeterminate", "not_fired"],
                "tier": ["", "possible", "possible", "", ""],
                "episode_start": times,
                "episode_end": times,
            }
        ),
        schema.FINDINGS,
    )
    out = collapse(findings.iloc[::-1].reset_index(drop=True))
    assert list(out["patient_id"]) == ["a", "b"]
    assert list(out["status"]) == ["fired", "indeterminate"]
    assert out.loc[0, "episode_start"] == t("2024-03-01")
    assert list(out["episodes"]) == [3, 2]
    assert list(out["episodes_fired"]) == [2, 0]


SHARED_SOURCES = (
    "fhir_spec_examples",
    "mimic_iii_demo",
    "mimic_iv_demo_meds",
    "mimic_iv_demo_v1_json",
    "mimic_iv_demo_v22_excerpts",
    "nhanes_2017_2018_biopro",
    "synthea_andrew_nguyen_50pt",
)


@pytest.mark.shared_data
@pytest.mark.parametrize("source", SHARED_SOURCES)
def test_shared_sources(shared_data: Path, tmp_path: Path, source: str) -> None:
    summary = labinterp.audit(shared_data / source, tmp_path / "out")
    assert summary["rows_in"] > 0
    assert summary["rows_in"] == summary["rows_used"] + summary["rows_rejected"]
    rejected = pd.read_csv(tmp_path / "out" / "rejected_rows.csv")
    assert len(rejected) == summary["rows_rejected"]
    findings = pd.read_csv(tmp_path / "out" / "findings.csv")
    assert not findings.duplicated(["patient_id", "rule_id"]).any()
    if summary["rows_used"]:
        assert summary["patients"] > 0 and len(findings) > 0
    assert (tmp_path / "out" / "report.html").stat().st_size > 0


@pytest.mark.shared_data
def test_shared_hl7_messages_are_audited_with_every_row_accounted(
    shared_data: Path, tmp_path: Path
) -> None:
    """The HL7 v2 samples hold no usable result (an analyzer's message names no patient, the
    others hold lead, hepatitis C and stool cultures): every OBX is a rejected row, and the
    message without any OBX is skipped."""
    summary = labinterp.audit(shared_data / "hl7v2_samples", tmp_path / "out")
    assert summary["rows_in"] == summary["rows_rejected"] == 34
    assert summary["rows_rejected_by_reason"] == {"missing_patient_id": 24, "out_of_scope": 10}
    assert [f["file"] for f in summary["skipped_files"]] == [
        "node-hl7-complete__athena-health_oru-example.hl7"
    ]
    rejected = pd.read_csv(tmp_path / "out" / "rejected_rows.csv")
    assert len(rejected) == 34


def test_files_sharing_a_name_are_told_apart_and_a_file_named_twice_is_read_once(
    tmp_path: Path,
) -> None:
    for folder, seed in (("a", 4), ("b", 5)):
        (tmp_path / "in" / folder).mkdir(parents=True)
        generate(tmp_path / "in" / folder / "export.csv", 500, seed=seed)
    summary = labinterp.audit(tmp_path / "in", tmp_path / "out")
    assert [f["file"] for f in summary["inputs"]] == ["a/export.csv", "b/export.csv"]
    findings = pd.read_csv(tmp_path / "out" / "findings.csv")
    assert len(findings)
    one = tmp_path / "in" / "a" / "export.csv"
    again = labinterp.audit([one, one], tmp_path / "out2")
    assert [f["file"] for f in again["inputs"]] == ["export.csv"]
    assert again["rows_in"] == summary["inputs"][0]["rows_in"]


def test_read_and_the_audit_keep_the_same_row_of_a_repeat_across_files(tmp_path: Path) -> None:
    """Files given as z.csv then a.csv: both keep a.csv's row (file names decide, so the
    audit's partitions and `read` agree); a row with its lab's range wins over both."""
    header = "patient_id,collected_at,test,result,unit,reference_range\n"
    z = tmp_path / "z.csv"
    a = tmp_path / "a.csv"
    z.write_text(header + "P1,2024-03-01 08:00,Magnesium,1.65,mg/dL,\n")
    a.write_text(header + "P1,2024-03-01 08:00,Magnesium,1.65,mg/dL,\n")
    kept = labinterp.read([z, a]).results
    assert list(kept["source_file"]) == ["a.csv"]
    labinterp.audit([z, a], tmp_path / "out")
    rejected = pd.read_csv(tmp_path / "out" / "rejected_rows.csv")
    assert list(rejected["source_file"]) == ["z.csv"]
    z.write_text(header + "P1,2024-03-01 08:00,Magnesium,1.65,mg/dL,1.6-2.6\n")
    assert list(labinterp.read([z, a]).results["source_file"]) == ["z.csv"]
    labinterp.audit([z, a], tmp_path / "out2")
    assert list(pd.read_csv(tmp_path / "out2" / "rejected_rows.csv")["source_file"]) == ["a.csv"]


SAMPLE_EXPORT = Path(labinterp.__file__).parent / "sample_data" / "clinic_export.csv"


def test_summary_balances_each_input_file(tmp_path: Path) -> None:
    """summary.json's inputs: rows_in = rows_used + rows_rejected for every file, and the
    files add up to the totals (a reviewer checks a file at a time)."""
    other = tmp_path / "other.csv"
    other.write_text(
        "patient_id,collected_at,test,result,unit\n"
        "P1,2024-03-01 08:00,Magnesium,0.5,mmol/L\n"
        "P1,2024-03-01 08:00,Sodium,140,mmol/L\n",  # out of scope: rejected
        encoding="utf-8",
    )
    out = tmp_path / "audit"
    labinterp.audit([SAMPLE_EXPORT, other], out)
    summary = json.loads((out / "summary.json").read_text())
    inputs = summary["inputs"]
    for f in inputs:
        assert f["rows_in"] == f["rows_used"] + f["rows_rejected"]
    assert sum(f["rows_used"] for f in inputs) == summary["rows_used"]
    assert sum(f["rows_rejected"] for f in inputs) == summary["rows_rejected"]
    assert [f["rows_rejected"] for f in inputs if f["file"] == "other.csv"] == [1]


def test_patients_csv_marks_hemolyzed_latest_values_and_prints_them_short(
    tmp_path: Path,
) -> None:
    """DEMO-009's K 5.9 is from a sample the lab noted as hemolyzed ("HEMOLYSIS FALSELY
    ELEVATES K"): patients.csv says so beside it. Latest values print as the findings do
    (1.4 mg/dL is 0.576 mmol/L, not 0.5760131660152232) and stay numbers."""
    sample = Path(labinterp.__file__).parent / "sample_data"
    labinterp.audit(sample, tmp_path / "out")
    text = (tmp_path / "out" / "patients.csv").read_text(encoding="utf-8")
    assert "0.5760131660152232" not in text
    patients = pd.read_csv(tmp_path / "out" / "patients.csv")
    demo9 = patients.set_index("patient_id").loc["DEMO-009"]
    assert demo9["potassium_latest"] == 5.9
    assert demo9["potassium_quality"] == "hemolyzed"
    assert demo9["magnesium_latest"] == 0.576
    assert pd.api.types.is_float_dtype(patients["magnesium_latest"])
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert re.search(r'<tr data-id="DEMO-009".*?5\.9 <span class="mark">hem\.</span>', report, re.S)
