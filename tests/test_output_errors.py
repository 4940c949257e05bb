"""Outputs that cannot be written (a full disk, a file where a folder should be) are the
user's to fix: exit 2 with the reason and the fix, no "bug" report, no partial output.
A file written again keeps the permissions it was given."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from labinterp import atomic
from labinterp.audit.outputs import OUTPUT_FILES
from labinterp.cli import main
from labinterp.errors import OutputError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "labinterp" / "sample_data" / "clinic_export.csv"


def _full_device() -> str:
    path = "/dev/full"
    try:
        if stat.S_ISCHR(os.stat(path).st_mode):
            return path
    except OSError:
        pass
    pytest.skip("no /dev/full device")


@pytest.mark.parametrize(
    "args",
    [
        ["interpret", str(SAMPLE)],
        ["interpret", str(SAMPLE), "--format", "json"],
        ["check", str(SAMPLE), "--format", "csv"],
        ["check", str(SAMPLE)],
    ],
)
def test_stdout_on_a_full_disk_is_exit_2(args: list[str]) -> None:
    with open(_full_device(), "w") as full:
        run = subprocess.run(
            [sys.executable, "-m", "labinterp", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
    assert run.returncode == 2, run.stderr
    assert "cannot write the output: No space left on device" in run.stderr
    assert "bug" not in run.stderr and "Traceback" not in run.stderr


def test_an_audit_filling_the_disk_is_exit_2_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import labinterp.audit.collapse  # noqa: F401  (the module, not the function audit)

    collapse = sys.modules["labinterp.audit.collapse"]

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(collapse, "_write", full)
    out = tmp_path / "audit"
    assert main(["audit", str(SAMPLE), "-o", str(out), "-q"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"no space left on the device holding '{out}'" in err and "bug" not in err
    assert not out.exists()  # the folder it created, with its scratch data


def test_an_audit_output_on_a_full_disk_leaves_the_previous_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "audit"
    assert main(["audit", str(SAMPLE), "-o", str(out), "-q"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == set(OUTPUT_FILES)
    real = os.replace

    def full(src: object, dst: object) -> None:  # the report's temporary file cannot be saved
        if Path(str(dst)).name == "report.html":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", full)
    assert main(["audit", str(SAMPLE), "-o", str(out), "-q"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"no space left on the device holding '{out}'" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_demo_into_a_file_or_a_folder_it_cannot_make_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    assert main(["demo", "-o", str(afile), "-q", "--no-handouts"]) == 2
    assert main(["demo", "-o", str(afile / "x"), "-q", "--no-handouts"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("is a file") == 2 and "bug" not in err

    def refused(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", refused)  # a read-only folder, even for root
    assert main(["demo", "-o", str(tmp_path / "new"), "-q", "--no-handouts"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot write in the folder" in err and "Permission denied" in err


def test_a_handout_into_a_file_named_as_its_folder_says_so(tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    args = ["handout", str(SAMPLE), "--patient", "DEMO-001", "-o", str(afile / "x.pdf")]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is not a folder" in err and "does not exist" not in err


def test_a_full_disk_while_writing_is_an_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.txt"
    target.write_text("previous", encoding="utf-8")
    with (
        pytest.raises(OutputError, match="no space left on the device holding"),
        atomic.atomic_open(target) as fh,
    ):
        fh.write("new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text(encoding="utf-8") == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_file_written_again_keeps_its_permissions(tmp_path: Path) -> None:
    kept = tmp_path / "kept.pdf"
    atomic.write_bytes(kept, b"first")
    kept.chmod(0o600)
    atomic.write_bytes(kept, b"second")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    new = tmp_path / "new.pdf"
    atomic.write_bytes(new, b"new")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask


def test_an_audit_run_again_keeps_the_permissions_of_its_outputs(tmp_path: Path) -> None:
    from labinterp.audit import audit

    out = tmp_path / "audit"
    audit([SAMPLE], out)
    for name in OUTPUT_FILES:
        (out / name).chmod(0o600)
    audit([SAMPLE], out)
    for name in OUTPUT_FILES:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
