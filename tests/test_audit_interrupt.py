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
    assert proc.returncode == 143, err  # 128 + SIGTERM, as shells report it
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


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Ctrl-C at `where`: once write_outputs has returned ("written"), or while it
    replaces the outputs, between the third and the fourth ("replacing")."""
    outputs = sys.modules["labinterp.audit.outputs"]
    if where == "written":
        real = outputs.write_outputs

        def then_interrupted(*args: object, **kwargs: object) -> object:
            real(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(outputs, "write_outputs", then_interrupted)
        return
    real_replace = os.replace
    moved: list[str] = []

    def replace(src: object, dst: object) -> None:
        real_replace(src, dst)  # type: ignore[arg-type]
        if Path(str(src)).parent.name == "staged" and Path(str(dst)).parent.name != "staged":
            moved.append(str(dst))  # one of the outputs put in place
            if len(moved) == 3:
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(outputs.os, "replace", replace)


@pytest.mark.parametrize("where", ["written", "replacing"])
def test_an_interrupt_once_the_outputs_are_in_place_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Ctrl-C (or SIGTERM) after the outputs were replaced must not remove a folder this
    audit created, nor leave a mixture of old and new outputs: it says the outputs are
    complete, as a KeyboardInterrupt (the Python API) and as exit 0 with a note (the CLI)."""
    import labinterp.audit.outputs  # noqa: F401  (the module, not the function audit)
    from labinterp.audit.outputs import OutputsWritten

    audit([SAMPLE], tmp_path / "whole")
    want = _contents(tmp_path / "whole")
    _interrupt_after(monkeypatch, where)
    out = tmp_path / "audit"  # created by this audit
    with pytest.raises(OutputsWritten):
        audit([SAMPLE], out)
    got = _contents(out)
    assert set(got) == set(OUTPUT_FILES)  # all six, no scratch folder
    for name in ("findings.csv", "patients.csv", "rejected_rows.csv"):
        assert got[name] == want[name]


def test_the_cli_says_the_outputs_are_complete_after_a_late_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import labinterp.audit.outputs  # noqa: F401
    from labinterp.cli import main

    _interrupt_after(monkeypatch, "written")
    out = tmp_path / "audit"
    assert main(["audit", str(SAMPLE), "-o", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert "interrupted" in err and "complete" in err
    assert set(_contents(out)) == set(OUTPUT_FILES)
