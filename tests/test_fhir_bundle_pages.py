"""A FHIR search result is one page at a time: a bundle that links to a next page says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import labinterp
from labinterp.reading import read

MG = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-03-05T08:00:00Z",
    "valueQuantity": {"value": 1.2, "unit": "mg/dL"},
}


def page(tmp_path: Path, *relations: str) -> Path:
    doc = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [
            {"relation": r, "url": f"https://fhir.example/Observation?{r}"} for r in relations
        ],
        "entry": [{"resource": MG}],
    }
    path = tmp_path / "page.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_a_page_with_a_next_link_is_read_and_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labinterp.cli import main

    path = page(tmp_path, "self", "next")
    res = read(path)
    assert res.rows_used == 1
    assert "links to a 'next' page" in res.files[0].warnings[0]
    assert main(["check", str(path)]) == 0
    captured = capsys.readouterr()
    assert "   warning: the bundle is one page of a FHIR search" in captured.out
    summary = labinterp.audit(path, tmp_path / "audit")
    assert summary["inputs"][0]["warnings"] == list(res.files[0].warnings)
    report = (tmp_path / "audit" / "report.html").read_text(encoding="utf-8")
    assert "one page of a FHIR search" in report


@pytest.mark.parametrize("relations", [(), ("self",), ("self", "previous")])
def test_the_last_or_only_page_has_no_warning(tmp_path: Path, relations: tuple[str, ...]) -> None:
    assert read(page(tmp_path, *relations)).files[0].warnings == ()
