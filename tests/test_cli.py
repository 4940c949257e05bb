"""The command line: exit codes, output formats, messages (run in-process and as a script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labinterp.cli import main
from labinterp.cli_demo import sample_path

REPO = Path(__file__).resolve().parent.parent


def test_check_prints_the_mapping_and_the_accounting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(sample_path())]) == 0
    out = capsys.readouterr().out
    assert "[columns]" in out and 'patient_id = "patient_id"' in out
    assert "rows in =" in out


def test_check_json_balances(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--format", "json", str(sample_path())]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows_in"] == info["rows_used"] + info["rows_rejected"]


def test_check_counts_the_utc_offsets_times_were_printed_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "zones.csv"
    path.write_text(
        "patient_id,collected_at,test,result,unit\n"
        "P1,2018-05-26T23:21:43-07:00,Magnesium,1.9,mg/dL\n"
        "P1,2018-12-01T23:21:43-08:00,Magnesium,1.9,mg/dL\n"
        "P2,2018-12-01T10:00:00+05:30,Magnesium,1.9,mg/dL\n"
        "P2,2018-12-02 10:00,Magnesium,1.9,mg/dL\n"
    )
    assert main(["check", "--format", "json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["utc_offsets"] == {"-08:00": 1, "-07:00": 1, "+05:30": 1}
    assert main(["check", str(path)]) == 0
    assert "offset from UTC (-08:00: 1, -07:00: 1, +05:30: 1 rows)" in capsys.readouterr().out
    assert main(["check", "--format", "json", str(sample_path())]) == 0
    assert json.loads(capsys.readouterr().out)["utc_offsets"] == {}


def test_every_command_reads_a_folder_and_says_what_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "export.csv").write_bytes(sample_path().read_bytes())
    (folder / "items.csv").write_text("itemid,label\n50960,Magnesium\n")
    assert main(["check", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "== items.csv: skipped, found in a folder but not a lab export" in captured.out
    assert "skipped 1 file(s) found in folders that are not lab exports: items.csv" in captured.err
    assert main(["check", "--format", "json", str(folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [s["file"] for s in info["skipped_files"]] == ["items.csv"]
    assert main(["check", "--format", "json", str(sample_path())]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert info["rows_in"] == expected["rows_in"] and info["patients"] == expected["patients"]
    assert main(["interpret", "--format", "csv", str(folder)]) == 0
    from_folder = capsys.readouterr().out
    assert main(["interpret", "--format", "csv", str(sample_path())]) == 0
    assert from_folder.replace("export.csv", "") == capsys.readouterr().out.replace(
        sample_path().name, ""
    )


def test_check_counts_printed_ranges_it_could_not_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ranges.csv"
    path.write_text(
        "patient_id,collected_at,test,result,unit,reference_range\n"
        "P1,2024-03-01,Potassium,4.0,mmol/L,M: 3.5-5.0; F: 3.4-4.8\n"
        "P1,2024-03-01,Magnesium,1.9,mg/dL,Adult: 1.6-2.6\n"
    )
    assert main(["check", str(path)]) == 0
    assert "1 rows printed a range that was not used: no limit could be read" in (
        capsys.readouterr().out
    )
    assert main(["check", "--format", "json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["range_not_used"] == {"unreadable_range": 1}
    assert info["range_origin"] == {"row": 1, "bundled": 1}


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"", "empty"), (b"\x00\x01" * 100, "binary"), (b"a,b\n1,2\n", "no column")],
)
def test_bad_input_exits_2_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    assert main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    if words == "no column":  # check lists the names read, the file's own text, on stdout
        assert captured.out.startswith("== bad.csv: the column names read on row 1")
        assert "'a'" not in captured.err
    else:
        assert captured.out == ""
    assert "bad.csv" in captured.err and words in captured.err and "Traceback" not in captured.err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 2
    assert main(["no-such-command"]) == 2


def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "labinterp", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("labinterp ")


def test_readme_starts_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    block = text.split("```", 2)[1].strip().splitlines()
    commands = [line.split("#")[0].strip() for line in block[1:] if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


@pytest.mark.slow
def test_demo_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "hypomagnesemia_hypocalcemia" in printed and "edta_contamination" in printed
    for name in ("findings.csv", "summary.json", "report.html", "rejected_rows.csv"):
        assert (out / "audit" / name).is_file(), name
    pdfs = sorted((out / "handouts").glob("handout-*.pdf"))
    assert pdfs and (out / "handouts" / "index.csv").is_file()
    summary = json.loads((out / "audit" / "summary.json").read_text())
    assert summary["rows_in"] == summary["rows_used"] + summary["rows_rejected"]


def test_readme_python_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (REPO / "README.md").read_text()
    code = text.split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(REPO)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "hypomagnesemia" in out and out.strip().endswith("2\n4")  # the two grades


def test_library_chatter_stays_out_of_stderr(tmp_path: Path) -> None:
    """fontTools and WeasyPrint log at INFO (sometimes with export text); we never show it.

    Run as a real process: inside pytest the root logger already has handlers, which would
    hide a logging set-up that lets library messages through.
    """
    out = tmp_path / "h.pdf"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "labinterp",
            "handout",
            str(sample_path()),
            "--patient",
            "DEMO-001",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    assert proc.stderr.strip() == f"labinterp: wrote the handout to {out}"


def test_check_of_a_file_with_no_row_used_lists_only_the_rejections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.csv"
    path.write_text("patient_id,collected_at,test,result,unit\nP1,2024-03-01,Sodium,140,mmol/L\n")
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 used + 1 rejected" in out and "out_of_scope" in out
    assert "Reference ranges from" not in out and "Results by analyte" not in out


# -- user mistakes are usage errors (exit 2) naming the fix, never "a bug" (exit 1) ----------


@pytest.mark.parametrize("fmt", ["%Q", "no directive"])
def test_a_date_format_that_cannot_read_dates_is_a_usage_error(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["interpret", str(sample_path()), "--date-format", fmt]) == 2
    assert "--date-format" in capsys.readouterr().err


def test_a_folder_given_for_one_handout_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["handout", str(sample_path()), "--patient", "DEMO-001", "-o", str(tmp_path)])
    assert code == 2
    assert "is a folder, not a file" in " ".join(capsys.readouterr().err.split())


def test_debug_is_taken_after_the_command_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(sample_path()), "--debug"]) == 0


def test_interpret_says_how_many_rows_were_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["interpret", str(sample_path()), "--status", "fired"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "rejected: `labinterp check FILE --rejected`" in err


def test_audit_takes_the_number_of_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--workers N` reaches the audit (a machine with more cores, or less memory, than the
    default of at most 2 suits); 0 is a usage error."""
    import importlib

    package = importlib.import_module("labinterp.audit")
    real = package.audit
    seen: list[object] = []

    def audit_seeing_workers(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("workers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(package, "audit", audit_seeing_workers)
    out = tmp_path / "audit"
    assert main(["audit", str(sample_path()), "-o", str(out), "--workers", "3", "-q"]) == 0
    assert seen == [3] and (out / "findings.csv").is_file()
    assert main(["audit", str(sample_path()), "-o", str(out), "-q"]) == 0
    assert seen == [3, None]
    assert main(["audit", str(sample_path()), "-o", str(out), "--workers", "0"]) == 2
    assert "whole number of 1 or more" in capsys.readouterr().err


def test_check_rejected_on_a_terminal_writes_each_detail_whole_with_its_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detail of a rejected row ends in its fix: the terminal table writes it whole,
    wrapped under its row, instead of cutting it to a cell."""
    monkeypatch.setenv("COLUMNS", "60")
    path = tmp_path / "export.csv"
    path.write_text(
        "patient_id,collected_at,test,result,unit\n"
        "P1,2024-03-01 08:00,Magnesium,(1.2),mg/dL\n"
        "P1,2024-03-01 08:00,Potassium,3.9,mmol/L\n"
    )
    assert main(["check", str(path), "--rejected"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("source_file") :].splitlines()
    assert "detail" not in table[0] and "(1.2)" in table[1]
    below = table[2:]
    assert below and all(line.startswith("    ") and len(line) <= 59 for line in below)
    words = " ".join(line.strip() for line in below)
    assert (
        words == "the result '(1.2)' is not a number labinterp can read; correct it in the export"
    )
