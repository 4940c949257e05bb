"""An audit stopped part-way leaves the output folder as it was: the previous outputs whole
and together, no scratch data (patient results) and no temporary files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labinterp.audit import audit
from labinterp.audit.outputs import OUTPUT_FILES

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "labinterp" / "sample_data" / "clinic_export.csv"


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failure_while_writing_leaves_the_previous_outputs_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "audit"
    audit([SAMPLE], out)
    before = _contents(out)
    assert set(before) == set(OUTPUT_FILES)

    # a second audit of other data fails after the tables are written, before the report
    other = tmp_path / "other.csv"
    other.write_text(
        "patient_id,collected_at,test,result,unit\nP1,2024-03-01 08:00,Magnesium,0.5,mmol/L\n",
        encoding="utf-8",
    )

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("the report could not be made")

    import labinterp.audit.report  # noqa: F401  (the module, not the function audit)

    monkeypatch.setattr(sys.modules["labinterp.audit.report"], "render_report", broken)
    with pytest.raises(RuntimeError):
        audit([other], out)
    assert _contents(out) == before  # all six from the first run, nothing else


def test_scratch_left_by_a_killed_audit_is_removed_by_the_next(tmp_path: Path) -> None:
    out = tmp_path / "audit"
    out.mkdir()
    # a pid no process has (pids are below 2**22 on Linux), and one that runs: this one
    dead = out / ".labinterp-audit-4194999-abc"
    alive = out / f".labinterp-audit-{os.getpid()}-def"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "bucket.arrow").write_bytes(b"patient data")
    audit([SAMPLE], out)
    assert not dead.exists()
    assert alive.exists()  # another audit's, still running


def test_sigterm_stops_an_audit_cleanly(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.make_export import generate

    export = tmp_path / "big.csv"
    generate(export, 300_000, seed=3)
    out = tmp_path / "audit"
    proc = subprocess.Popen(
        [sys.executable, "-m", "labinterp", "audit", str(export), "-o", str(out), "-q"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(out.glob(".labinterp-audit-*")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the audit finished before it could be stopped")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    # the folder the audit created is removed with everything in it
    assert not out.exists() or not any(out.iterdir())


def test_workers_exit_when_the_audit_is_killed(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer) gives the audit no chance to clean up: its worker processes
    must notice on their own that it is gone, exit, and take the scratch data with them."""
    psutil = pytest.importorskip("psutil")
    sys.path.insert(0, str(ROOT))
    from benchmarks.make_export import generate

    export = tmp_path / "big.csv"
    generate(export, 200_000, seed=5)  # above 8 MB: interpreted by worker processes
    out = tmp_path / "audit"
    code = "import sys, labinterp; labinterp.audit(sys.argv[1], sys.argv[2], workers=2)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(export), str(out)], cwd=ROOT)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    workers: list = []
    while len(workers) < 2 or not list(out.glob(".labinterp-audit-*")):
        if proc.poll() is not None:
            pytest.skip("the audit finished before it could be killed")
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.02)
        workers = parent.children()
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [w for w in alive if _running(w, psutil)]
    for w in alive:  # never leave them behind, even when the test fails
        w.kill()
    assert not alive, "worker processes outlived the killed audit"
    assert not list(out.glob(".labinterp-audit-*")), "the scratch data outlived the audit"


def _running(process: object, psutil: object) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except psutil.NoSuchProcess:  # type: ignore[attr-defined]
        return False
