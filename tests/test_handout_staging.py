"""A handout batch into a folder used before: a run that fails, is stopped or is killed
part-way leaves the previous handouts and their index.csv as they were (index.csv never
names a patient for another patient's handout), and no staging folder (patient data)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from handout_exports import write_export

from labinterp.cli import main
from labinterp.handout import render_batch
from labinterp.handout.render import Renderer

ROOT = Path(__file__).resolve().parents[1]


def _export(tmp_path: Path, patients: list[str], name: str) -> Path:
    rows = [(pid, "2024-04-10 08:00", "Mg", "1.2") for pid in patients]
    return write_export(tmp_path, rows, name)


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    """A folder holding an earlier batch: three patients' handouts and their index."""
    out = tmp_path / "out"
    out.mkdir()
    render_batch(_export(tmp_path, ["A-1", "A-2", "A-3"], "first.csv"), None, out, workers=1)
    return out


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_batch_stopped_part_way_leaves_the_previous_set(
    tmp_path: Path, previous: Path, monkeypatch: pytest.MonkeyPatch, stop: type
) -> None:
    before = _contents(previous)
    calls = {"n": 0}
    real = Renderer.pdf

    def stopped_on_the_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise stop()  # SIGTERM through the CLI's handler is a KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Renderer, "pdf", stopped_on_the_second)
    with pytest.raises(stop):
        render_batch(_export(tmp_path, ["B-1", "B-2"], "second.csv"), None, previous, workers=1)
    assert _contents(previous) == before  # handout-0001.pdf is still A-1's, as index.csv says


def test_a_full_disk_is_an_input_problem_and_leaves_the_previous_set(
    tmp_path: Path, previous: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    before = _contents(previous)
    import labinterp.atomic as atomic

    calls = {"n": 0}

    class Full:
        def __init__(self, fh) -> None:
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

        def write(self, data) -> int:
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.fh.write(data)

    def full_open(path, *args, **kwargs):
        return Full(open(path, *args, **kwargs))

    monkeypatch.setattr(atomic, "open", full_open, raising=False)
    export = _export(tmp_path, ["B-1", "B-2"], "second.csv")
    code = main(["handout", str(export), "--all", "-o", str(previous), "--workers", "1", "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no space left on the device holding" in err and str(previous.name) in err
    assert ".labinterp-" not in err and "bug" not in err
    assert _contents(previous) == before


def test_a_single_handout_on_a_full_disk_is_an_input_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import labinterp.atomic as atomic

    def full_open(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "open", full_open, raising=False)
    export = _export(tmp_path, ["B-1"], "one.csv")
    target = tmp_path / "pdfs" / "b1.pdf"
    target.parent.mkdir()
    assert main(["handout", str(export), "--patient", "B-1", "-o", str(target), "-q"]) == 2
    assert "no space left on the device holding" in capsys.readouterr().err
    assert list(target.parent.iterdir()) == []


def test_a_staging_folder_a_killed_batch_left_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # a pid no process has (pids are below 2**22 on Linux), and one that runs: this one
    dead = out / ".labinterp-handouts-4194999-abc"
    alive = out / f".labinterp-handouts-{os.getpid()}-def"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "handout-0001.pdf").write_bytes(b"%PDF- a patient's results")
    render_batch(_export(tmp_path, ["B-1"], "e.csv"), None, out, workers=1)
    assert not dead.exists()
    assert alive.exists()  # another batch's, still running
    assert sorted(p.name for p in out.iterdir() if p != alive) == ["handout-0001.pdf", "index.csv"]


def test_a_second_batch_keeps_the_permissions_set_on_the_first(
    tmp_path: Path, previous: Path
) -> None:
    for name in ("handout-0001.pdf", "index.csv"):
        (previous / name).chmod(0o600)
    render_batch(_export(tmp_path, ["B-1", "B-2"], "second.csv"), None, previous, workers=1)
    for name in ("handout-0001.pdf", "index.csv"):
        assert stat.S_IMODE((previous / name).stat().st_mode) == 0o600
    assert pd.read_csv(previous / "index.csv")["patient_id"].tolist() == ["B-1", "B-2"]


def test_workers_exit_and_remove_the_staging_folder_when_the_batch_is_killed(
    tmp_path: Path,
) -> None:
    """SIGKILL (the OOM killer) gives the batch no chance to clean up: its workers (forks
    of a fork server, which they keep alive) must notice on their own that it is gone,
    exit, and take the staging folder (patient data) with them."""
    psutil = pytest.importorskip("psutil")
    sys.path.insert(0, str(ROOT))
    from benchmarks.make_export import generate

    export = tmp_path / "big.csv"
    generate(export, 2000, seed=5)  # some 75 patients: a batch of many seconds
    out = tmp_path / "out"
    out.mkdir()
    before = {"handout-0001.pdf": b"%PDF- the previous batch", "index.csv": b"file,patient_id\n"}
    for name, data in before.items():
        (out / name).write_bytes(data)
    code = (
        "import sys; from labinterp.handout import render_batch;"
        " render_batch(sys.argv[1], None, sys.argv[2], workers=2)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(export), str(out)], cwd=ROOT)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    family: list = []
    while len(list(out.rglob("handout-*.pdf"))) < 2:  # the workers have written one
        if proc.poll() is not None:
            pytest.skip("the batch finished before it could be killed")
        assert time.monotonic() < deadline, "the workers wrote no handout"
        time.sleep(0.05)
    family = parent.children(recursive=True)  # the fork server and its workers
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 15
    alive = family
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _running(p, psutil)]
    for p in alive:  # never leave them behind, even when the test fails
        p.kill()
    assert not alive, "worker processes outlived the killed batch"
    assert not list(out.glob(".labinterp-handouts-*")), "the staging folder outlived the batch"
    assert _contents(out) == before


def _running(process: object, psutil: object) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except psutil.NoSuchProcess:  # type: ignore[attr-defined]
        return False
