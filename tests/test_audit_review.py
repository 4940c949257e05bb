"""Problems a review of the audit reproduced (/tmp/rev_audit/REPORT.md), one test each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
