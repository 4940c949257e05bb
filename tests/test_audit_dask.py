"""The Dask engine gives the same findings as the default engine, row for row."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

import labinterp
from benchmarks.make_export import generate

distributed = pytest.importorskip("distributed")
FEED = Path(__file__).parent / "fixtures" / "hl7_feed_with_corrections.hl7"


@pytest.mark.slow
def test_dask_matches_local(tmp_path: Path) -> None:
    manifest = generate(tmp_path / "export.csv", 6000, seed=11)
    # with an HL7 feed whose corrections replace earlier results: found per partition
    inputs = [tmp_path / "export.csv", FEED]
    local = labinterp.audit(inputs, tmp_path / "local", n_buckets=2)
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as cluster:
        remote = labinterp.audit(
            inputs,
            tmp_path / "dask",
            engine="dask",
            scheduler=cluster.scheduler_address,
        )
    assert remote["engine"] == "dask"
    assert pq.read_table(tmp_path / "dask" / "findings.parquet").equals(
        pq.read_table(tmp_path / "local" / "findings.parquet")
    )
    for name in ("findings.csv", "patients.csv", "rejected_rows.csv"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    keys = ("rows_in", "rows_used", "rows_rejected", "patients", "counts", "sample_quality")
    for key in (*keys, "rows_rejected_by_reason", "result_status"):
        assert remote[key] == local[key], key
    assert remote["rows_in"] == manifest.rows + 70
    assert remote["rows_rejected_by_reason"]["superseded"] == 10


@pytest.mark.slow
def test_quiet_dask_audit_prints_nothing(tmp_path: Path) -> None:
    """-q means no progress or summary on stderr: Dask's own notes (shuffle start and end)
    are kept out too. Run as a user runs it: pytest's log capture would hide them."""
    import subprocess
    import sys

    sample = Path(labinterp.__file__).parent / "sample_data" / "clinic_export.csv"
    command = ["audit", str(sample), "-o", str(tmp_path / "out"), "--engine", "dask", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "labinterp", *command], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0
    assert done.stderr == ""
