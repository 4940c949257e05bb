"""Problems a review of the audit reproduced (/tmp/rev_audit/REPORT.md), one test each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
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
