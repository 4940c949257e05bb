"""Patient handouts: content of the PDF, safety of rendering, readability, atomic output.

Renders a handful of PDFs from small synthetic RESULTS/FINDINGS tables that cover every
pattern, tier, guard and honest non-result, in both languages and in large print; the
sample-export test switches to the real reader and pattern engine when they are present.
"""

from __future__ import annotations

import contextlib
import html.parser
import io
import re
import socket
from pathlib import Path

import pandas as pd
import pytest
from pypdf import PdfReader

from labinterp import schema
from labinterp.handout import handout_name, render_batch, render_handout
from labinterp.handout.context import build_context
from labinterp.handout.fetcher import ASSET_BASE, SafeFetcher
from labinterp.handout.render import Renderer, shared_renderer

REPO = Path(__file__).resolve().parent.parent

MG = ("magnesium", "mg/dL", 1.7, 2.55)
CA = ("calcium", "mg/dL", 8.5, 10.5)
CAI = ("calcium_ionized", "mmol/L", 1.15, 1.32)
K = ("potassium", "mmol/L", 3.5, 5.0)
VD = ("vitamin_d_25oh", "ng/mL", 30.0, 100.0)
PTH = ("pth", "pg/mL", 15.0, 65.0)
CRP = ("crp", "mg/L", None, 10.0)

INJECTION = '<img src="file:///etc/passwd"> http://example.com/x.png'

# patient -> (results as (analyte spec, value text, day), findings as dicts)
CASES: dict[str, tuple[list, list]] = {
    "P1-supported": (
        [(MG, "0.6", 0), (CA, "7.4", 0), (PTH, "40", 1), (MG, "1.1", 9)],
        [
            {
                "rule_id": "hypomagnesemia_hypocalcemia",
                "status": "fired",
                "tier": "supported",
                "grade": 4,
            },
            {"rule_id": "hypomagnesemia_hypokalemia", "status": "not_fired"},
            {
                "rule_id": "vitamin_d_resistance",
                "status": "indeterminate",
                "missing_inputs": "vitamin_d_25oh",
            },
        ],
    ),
    "P1-possible": (
        [(MG, "1.5", 0), (CA, "8.1", 0), (PTH, "90", 2)],
        [
            {
                "rule_id": "hypomagnesemia_hypocalcemia",
                "status": "fired",
                "tier": "possible",
                "caveats": "albumin_unknown",
            }
        ],
    ),
    "P3-refractory": (
        [(MG, "1.3", 0), (K, "3.0", 0), (K, "3.1", 2), (MG, "1.4", 2)],
        [{"rule_id": "hypomagnesemia_hypokalemia", "status": "fired", "tier": "refractory"}],
    ),
    "P3-concurrent": (
        [(MG, "1.4", 0), (K, "3.2", 0), (CAI, "1.2", 0)],
        [{"rule_id": "hypomagnesemia_hypokalemia", "status": "fired", "tier": "concurrent"}],
    ),
    "P2-serial": (
        [(VD, "14", 0), (MG, "1.5", 60), (VD, "16", 90), (CRP, "22", 90)],
        [
            {
                "rule_id": "vitamin_d_resistance",
                "status": "fired",
                "tier": "serial",
                "caveats": "inflammation_caveat;vitamin_d_supplement",
            },
            {"rule_id": "crp_with_low_magnesium", "kind": "context", "status": "fired"},
        ],
    ),
    "P2-single": (
        [(VD, "<8", 0), (MG, "1.6", 3)],
        [{"rule_id": "vitamin_d_resistance", "status": "fired", "tier": "single"}],
    ),
    "P2-rose-later": (  # a low D with a low Mg, then a sufficient D months later
        [(VD, "12", 0), (MG, "1.4", 0), (VD, "45", 150), (MG, "2.1", 150)],
        [
            {
                "rule_id": "vitamin_d_resistance",
                "status": "fired",
                "tier": "single",
                "caveats": "vitamin_d_rose_later",
            }
        ],
    ),
    "C-shpt-calcium-high": (  # raised PTH, low D and a high Ca: the primary picture
        [(PTH, "180", 0), (VD, "15", 0), (CA, "11.8", 0), (MG, "2.0", 0)],
        [
            {
                "rule_id": "secondary_hyperparathyroidism",
                "kind": "context",
                "status": "fired",
                "caveats": "calcium_high",
            }
        ],
    ),
    "G-edta": (
        [(K, "7.9", 0), (CA, "5.1", 0), (MG, "1.2", 0)],
        [
            {"rule_id": "edta_contamination", "kind": "guard", "status": "fired"},
            {
                "rule_id": "hypomagnesemia_hypocalcemia",
                "status": "suppressed",
                "suppressed_by": "edta_contamination",
            },
            {
                "rule_id": "hypomagnesemia_hypokalemia",
                "status": "suppressed",
                "suppressed_by": "edta_contamination",
            },
        ],
    ),
    "G-edta-kidney": (  # the same picture with low kidney function nearby
        [(K, "6.1", 0), (CA, "7.9", 0)],
        [
            {
                "rule_id": "edta_contamination",
                "kind": "guard",
                "status": "fired",
                "caveats": "kidney_function_low",
            },
        ],
    ),
    "C-conflict": (  # two different Mg results recorded at one time
        [(MG, "1.2", 0), (MG, "2.1", 0), (K, "3.1", 0)],
        [
            {
                "rule_id": "hypomagnesemia_hypokalemia",
                "status": "not_fired",
                "caveats": "conflicting_results",
            },
        ],
    ),
    "N-none": (
        [(MG, "2.0", 0), (CA, "9.1", 0)],
        [
            {"rule_id": "hypomagnesemia_hypocalcemia", "status": "not_fired"},
            {"rule_id": "some_future_rule", "kind": "context", "status": "fired"},
        ],
    ),
    # patterns left unchecked for different reasons: a hemolyzed potassium, a calcium without
    # a range, a magnesium not usable with the others, a vitamin D never measured
    "I-unchecked": (
        [(MG, "1.2", 0), (K, "4.4", 0), (("calcium", "mg/dL", None, None), "8.0", 0)],
        [
            {
                "rule_id": "hypomagnesemia_hypocalcemia",
                "status": "indeterminate",
                "missing_inputs": "calcium;magnesium",
                "caveats": "range_unknown",
            },
            {
                "rule_id": "hypomagnesemia_hypokalemia",
                "status": "indeterminate",
                "missing_inputs": "potassium",
                "caveats": "hemolyzed",
            },
            {
                "rule_id": "vitamin_d_resistance",
                "status": "indeterminate",
                "missing_inputs": "vitamin_d_25oh",
            },
        ],
    ),
    "P3-concurrent-twice": (  # fired in two episodes weeks apart, neither refractory
        [(MG, "1.3", 0), (K, "3.1", 0), (MG, "1.4", 30), (K, "3.2", 30)],
        [
            {
                "rule_id": "hypomagnesemia_hypokalemia",
                "status": "fired",
                "tier": "concurrent",
                "evidence_at": pd.Timestamp("2024-03-01 08:00"),
            },
            {
                "rule_id": "hypomagnesemia_hypokalemia",
                "status": "fired",
                "tier": "concurrent",
                "evidence_at": pd.Timestamp("2024-03-31 08:00"),
            },
        ],
    ),
    INJECTION: (
        [(MG, "1.2", 0)],
        [
            {
                "rule_id": "hypomagnesemia_hypocalcemia",
                "status": "indeterminate",
                "missing_inputs": "calcium",
            }
        ],
    ),
}


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, finds = [], []
    for pid, (results, findings) in CASES.items():
        for (analyte, unit, lo, hi), text, day in results:
            comparator = text[0] if text[0] in "<>" else ""
            rows.append(
                {
                    "source_file": "fixture.csv",
                    "patient_id": pid,
                    "analyte": analyte,
                    "collected_at": pd.Timestamp("2024-03-01 08:00") + pd.Timedelta(days=day),
                    "value_raw": text,
                    "unit_raw": unit,
                    "comparator": comparator,
                    "value_reported": float(text.lstrip("<>")),
                    "unit_reported": unit,
                    "unit_system": "si" if "mol" in unit else "conventional",
                    "range_low_reported": lo,
                    "range_high_reported": hi,
                    "range_origin": "unknown" if lo is None and hi is None else "row",
                    "comment": INJECTION if pid == INJECTION else None,
                }
            )
        for f in findings:
            finds.append({"patient_id": pid, "kind": "pattern", "tier": "", **f})
    return (
        schema.conform(pd.DataFrame(rows), schema.RESULTS),
        schema.conform(pd.DataFrame(finds), schema.FINDINGS),
    )


RESULTS, FINDINGS = _tables()
DISCLAIMER = {
    "en": "For learning only. This is not a diagnosis",
    "es": "Solo para aprender. No es un diagnóstico",
}
VARIANTS = [  # (patient, lang, large_print, paper): a handful, covering every branch once
    ("P1-supported", "en", False, "A4"),
    ("P1-supported", "es", True, "letter"),
    ("G-edta", "en", True, "A4"),
    ("P2-serial", "es", False, "A4"),
    ("P3-refractory", "en", False, "letter"),
    (INJECTION, "en", False, "A4"),
]


def _text(page) -> str:
    return re.sub(r"\s+", " ", page.extract_text() or "")


@pytest.fixture(scope="module")
def pdfs() -> dict[tuple, PdfReader]:
    out = {}
    for pid, lang, large, paper in VARIANTS:
        data = render_handout(RESULTS, FINDINGS, pid, lang=lang, large_print=large, paper=paper)
        out[(pid, lang, large, paper)] = PdfReader(io.BytesIO(data))
    return out


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0][:12]}-{v[1]}-{v[3]}")
def test_pdf_shows_values_units_and_disclaimer_on_every_page(pdfs, variant) -> None:
    reader = pdfs[variant]
    pid, lang = variant[0], variant[1]
    pages = [_text(p) for p in reader.pages]
    for i, text in enumerate(pages, start=1):
        assert DISCLAIMER[lang] in text, f"page {i} lacks the disclaimer"
    full = " ".join(pages)
    for (_, unit, _, _), value, _ in CASES[pid][0]:
        assert f"{value} {unit}" in full
    for leak in ("</", "<p", "<div", "<svg", "{{", "{%", "&lt;", "&amp;", "&#"):
        if pid == INJECTION and leak == "</":
            continue
        assert leak not in full


def test_pdf_is_tagged_titled_with_language_and_embedded_fonts(pdfs) -> None:
    for (_pid, lang, _large, paper), reader in pdfs.items():
        root = reader.trailer["/Root"]
        assert root["/Lang"] == lang
        assert "/StructTreeRoot" in root and root["/MarkInfo"]["/Marked"]
        assert reader.metadata.title
        width = float(reader.pages[0].mediabox.width)
        assert round(width) == (612 if paper == "letter" else 595)
        for page in reader.pages:
            for font in page["/Resources"]["/Font"].values():
                font = font.get_object()
                descendants = font.get("/DescendantFonts") or [font]
                desc = descendants[0].get_object()["/FontDescriptor"]
                assert any(k in desc for k in ("/FontFile", "/FontFile2", "/FontFile3"))


def test_large_print_uses_bigger_type() -> None:
    from labinterp.handout.render import page_css

    def size(large: bool) -> int:
        found = re.search(r"html \{ font-size: (\d+)pt", page_css("A4", large))
        assert found
        return int(found.group(1))

    assert size(False) >= 14
    assert size(True) > size(False)
    # body text is never scaled below the base size (only footer/notes use smaller type)
    css = (REPO / "templates" / "handout" / "handout.css").read_text()
    assert not re.search(r"font-size:\s*0?\.[0-7]", css)


def test_patterns_tiers_guards_and_honest_wording_in_html() -> None:
    r = shared_renderer()

    def html(pid: str, lang: str = "en") -> str:
        return r.html(build_context(RESULTS, FINDINGS, pid, lang=lang))

    # findings without evidence records: no reason is named that they cannot show
    assert "Other results fit this link well" in html("P1-supported")
    assert "PTH was not high" not in html("P1-supported")
    assert "not show it clearly" in html("P1-possible")
    assert "protein test (albumin)" in html("P1-possible")
    assert "more than one day" in html("P3-refractory")
    assert "one point in time" in html("P3-concurrent")
    assert "Inflammation can make vitamin D look lower" in html("P2-serial")
    assert "tested more than once" in html("P2-serial")
    assert "Your vitamin D was low" in html("P2-single")
    assert "you take vitamin D" in html("P2-serial") and "toma vitamina D" in html(
        "P2-serial", "es"
    )
    assert "you take vitamin D" not in html("P2-single")
    edta = html("G-edta")
    assert "may repeat the test" in edta and "We did not check this pattern" in edta
    assert "a test it needs was missing" in html("P1-supported")
    # an unknown context rule id falls back to a generic, honest paragraph
    assert "Another thing we noticed" in html("N-none")
    # a context finding fired: no pattern showed up, but that is not called good news
    assert "None of the main magnesium patterns" in html("N-none")
    assert "That is good to know" not in html("N-none")
    # Grade 4 magnesium (0.6 mg/dL) followed by a later 1.1 mg/dL (grade 2): the urgent box
    # is about the latest result of each test, so it does not ask to call today
    assert "far from the range" not in html("P1-supported")
    assert "resistance" not in html("P2-serial").lower().replace("vitamin_d_resistance", "")
    assert "later vitamin D test was higher" in html("P2-rose-later")
    assert "salió más alto" in html("P2-rose-later", "es")
    assert "not going up" not in html("P2-rose-later")
    assert "high calcium can have other causes" in html("C-shpt-calcium-high")
    assert "otras causas" in html("C-shpt-calcium-high", "es")
    assert "two different results" in html("C-conflict")
    assert "dos resultados distintos" in html("C-conflict", "es")
    assert "two different results" not in html("P1-supported")
    for pid in CASES:
        for lang in ("en", "es"):
            text = html(pid, lang)
            assert "diagnosis" in text or "diagnóstico" in text


# -- safety ----------------------------------------------------------------------------------


def test_injected_markup_renders_as_text_and_fetches_nothing() -> None:
    spy: list[str] = []
    renderer = Renderer(fetch_log=spy)
    ctx = build_context(RESULTS, FINDINGS, INJECTION)
    html = renderer.html(ctx)
    assert "<img" not in html and "&lt;img src=&#34;file:///etc/passwd&#34;&gt;" in html
    pdf = renderer.render(ctx)
    text = " ".join(_text(p) for p in PdfReader(io.BytesIO(pdf)).pages)
    assert '<img src="file:///etc/passwd">' in text
    assert "http://example.com/x.png" in text
    assert spy == []


def test_fetcher_refuses_everything_but_bundled_assets_and_data(tmp_path) -> None:
    spy: list[str] = []
    renderer = Renderer(fetch_log=spy)
    hostile = (
        '<html lang="en"><head><title>t</title>'
        '<link rel="stylesheet" href="http://example.com/x.css"></head><body>'
        '<img src="file:///etc/passwd"><img src="http://example.com/x.png">'
        '<img src="labinterp-asset:/../pyproject.toml"><img src="/etc/hostname">'
        '<p style="background: url(https://example.com/y.png)">x</p></body></html>'
    )
    calls = []
    real_connect = socket.socket.connect

    def no_network(self, *a, **k):
        calls.append(a)
        raise OSError("network disabled in this test")

    socket.socket.connect = no_network  # type: ignore[method-assign]
    try:
        renderer.pdf(hostile, paper="A4", large_print=False)
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
    assert calls == []
    assert any(u.startswith("file:") for u in spy) and any(u.startswith("http") for u in spy)
    fetcher = SafeFetcher()
    for url in (
        "file:///etc/passwd",
        "http://example.com/x.png",
        "ftp://x/y",
        ASSET_BASE + "../pyproject.toml",
        ASSET_BASE + "%2e%2e/pyproject.toml",
    ):
        with pytest.raises(ValueError):
            fetcher.fetch(url)
    assert fetcher.fetch("data:text/plain;base64,aGk=").read() == b"hi"
    assert b"@page" in fetcher.fetch(ASSET_BASE + "handout/handout.css").read()


def test_odd_unicode_is_nfc_normalized() -> None:
    results = RESULTS.copy()
    results["comment"] = results["comment"].astype("object")
    mask = results["patient_id"] == "N-none"
    results.loc[mask, "comment"] = "Cafe\u0301 \ufb01ne"  # decomposed é, ligature fi kept
    ctx = build_context(schema.conform(results, schema.RESULTS), FINDINGS, "N-none")
    comments = [r["comment"] for a in ctx["analytes"] for r in a["results"]]
    assert "Caf\u00e9 \ufb01ne" in comments


# -- readability --------------------------------------------------------------------------------


class _Prose(html.parser.HTMLParser):
    """Running text of a handout: blocks of p/li/h*, skipping data lines, SVG and the head."""

    SKIP = frozenset({"svg", "head", "style", "title"})
    BLOCKS = frozenset({"p", "li", "h1", "h2", "h3", "h4"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[bool] = []
        self.blocks: list[str] = []
        self.cur: list[str] = []

    VOID = frozenset({"meta", "link", "br", "img", "hr", "input"})

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        cls = dict(attrs).get("class") or ""
        skip = tag in self.SKIP or "data" in cls.split() or "running-footer" in cls.split()
        self.stack.append(skip or (bool(self.stack) and self.stack[-1]))
        if tag in self.BLOCKS:
            self.cur = []

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if self.stack:
            self.stack.pop()
        if tag in self.BLOCKS:
            text = " ".join("".join(self.cur).split())
            if text:
                self.blocks.append(text if text[-1] in ".?!:" else text + ".")
            self.cur = []

    def handle_data(self, data):
        if not (self.stack and self.stack[-1]):
            self.cur.append(data)


def prose(html_text: str) -> str:
    p = _Prose()
    p.feed(html_text)
    return "\n".join(p.blocks)


@pytest.fixture()
def offline_textstat(monkeypatch):
    """textstat, guaranteed offline: no nltk download, no sockets (English syllables via pyphen)."""
    import nltk
    import textstat
    from textstat.backend.counts import _count_syllables

    def refuse(*a, **k):
        raise AssertionError("readability must not download anything")

    monkeypatch.setattr(nltk, "download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    # textstat 0.7.x downloads the CMU dictionary for English on first use; use its bundled
    # pyphen hyphenation dictionaries instead.
    monkeypatch.setattr(_count_syllables, "get_cmudict", lambda lang: None)
    return textstat


def test_readability_of_every_variant(offline_textstat) -> None:
    from textstat.backend import metrics

    r = shared_renderer()
    worst = {"en": 0.0, "es": 100.0}
    # the first case also has results that could not be read, of every kind the sheet words
    unread = {reason: 1 for reason in schema.REJECT_REASONS}
    for pid in CASES:
        rejected = unread if pid == next(iter(CASES)) else None
        for lang in ("en", "es"):
            for large in (False, True):
                ctx = build_context(
                    RESULTS, FINDINGS, pid, lang=lang, large_print=large, rejected=rejected
                )
                text = prose(r.html(ctx))
                assert (rejected is not None) == ('class="note unread"' in r.html(ctx))
                assert len(text) > 500
                if lang == "en":
                    grade = metrics.flesch_kincaid_grade(text, "en_US")
                    assert grade <= 8.0, (pid, grade)
                    worst["en"] = max(worst["en"], grade)
                else:
                    inflesz = metrics.szigriszt_pazos(text, "es")
                    assert inflesz >= 55.0, (pid, inflesz)
                    worst["es"] = min(worst["es"], inflesz)
    print(f"worst FK grade (en) {worst['en']:.1f}; worst INFLESZ (es) {worst['es']:.1f}")


# -- output -------------------------------------------------------------------------------------


def test_failed_render_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "out.pdf"
    target.write_bytes(b"previous")

    def boom(self, *a, **k):
        raise RuntimeError("renderer crashed")

    import labinterp.atomic as atomic

    real = atomic.atomic_open

    @contextlib.contextmanager
    def half_then_fail(path, mode="w", encoding="utf-8"):  # write half a file, then crash
        with real(path, mode, encoding) as fh:
            fh.write(b"%PDF-1.7 partial")
            raise RuntimeError("disk full")
            yield fh

    monkeypatch.setattr(atomic, "atomic_open", half_then_fail)
    with pytest.raises(RuntimeError):
        render_handout(RESULTS, FINDINGS, "N-none", output=target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pdf"]

    monkeypatch.setattr(atomic, "atomic_open", real)
    monkeypatch.setattr(Renderer, "pdf", boom)
    with pytest.raises(RuntimeError):
        render_handout(RESULTS, FINDINGS, "N-none", output=tmp_path / "new.pdf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pdf"]


def test_batch_writes_non_identifying_names_and_index(tmp_path) -> None:
    keep = ["N-none", "P3-concurrent", INJECTION]
    res = RESULTS[RESULTS["patient_id"].isin(keep)]
    index = render_batch(res, FINDINGS, tmp_path, workers=2, max_tasks_per_child=1)
    files = sorted(p.name for p in tmp_path.glob("*.pdf"))
    assert files == [handout_name(i) for i in (1, 2, 3)]
    assert all(pid not in " ".join(files) for pid in keep)
    mapping = pd.read_csv(tmp_path / "index.csv", dtype=str)
    assert list(mapping.columns) == ["file", "patient_id"]
    assert sorted(mapping["patient_id"]) == sorted(keep)
    assert list(index["file"]) == files
    for f in files:
        assert (tmp_path / f).read_bytes().startswith(b"%PDF")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_batch_failure_leaves_no_index_or_temp_files(tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    real = Renderer.pdf

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("crash on the second patient")
        return real(self, *a, **k)

    monkeypatch.setattr(Renderer, "pdf", flaky)
    with pytest.raises(RuntimeError):
        render_batch(RESULTS, FINDINGS, tmp_path, workers=1)
    # the first handout was made in the staging folder, removed with it
    assert list(tmp_path.iterdir()) == []


def test_cli_rejects_bad_usage(tmp_path, capsys) -> None:
    from labinterp.cli import main

    assert main(["handout", str(tmp_path / "nope.csv"), "--patient", "x", "-o", "o.pdf"]) == 2
    assert main(["handout", "f.csv", "--patient", "x", "--all", "-o", "o.pdf"]) == 2
    assert main(["handout", "f.csv", "--patient", "x", "-o", "o.pdf", "--lang", "fr"]) == 2


# -- the bundled sample through the real pipeline ------------------------------------------------

SAMPLE = REPO / "labinterp" / "sample_data" / "clinic_export.csv"


@pytest.fixture(scope="module")
def sample_tables():
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    results = read(SAMPLE).results
    return results, interpret_results(results)


CONTEXT_TITLES = {
    "ckd_context": ("A note about your kidneys", "Una nota sobre sus riñones"),
    "inflammation_hypomagnesemia": (
        "Signs of inflammation with low magnesium",
        "Señales de inflamación con magnesio bajo",
    ),
    "hypercalcemia_hypomagnesemia": (
        "High calcium with low magnesium",
        "Calcio alto con magnesio bajo",
    ),
    "hyperphosphatemia_hypomagnesemia": (
        "High phosphate with low magnesium",
        "Fosfato alto con magnesio bajo",
    ),
    "secondary_hyperparathyroidism": (
        "High PTH with low vitamin D",
        "PTH alta con vitamina D baja",
    ),
}


def test_every_sample_patient_is_readable_in_both_languages(
    sample_tables, offline_textstat
) -> None:
    """Every handout variant of every sample patient, context findings included, meets the
    reading-level bar; each fired context finding gets its own plain-language section."""
    from textstat.backend import metrics

    results, findings = sample_tables
    r = shared_renderer()
    fired_context = findings[findings["kind"].eq("context") & findings["status"].eq("fired")]
    assert set(fired_context["rule_id"]) == set(CONTEXT_TITLES)
    for pid in sorted(set(results["patient_id"])):
        for lang in ("en", "es"):
            text = prose(r.html(build_context(results, findings, pid, lang=lang)))
            if lang == "en":
                assert metrics.flesch_kincaid_grade(text, "en_US") <= 8.0, pid
            else:
                assert metrics.szigriszt_pazos(text, "es") >= 55.0, pid
            for rule in fired_context.loc[fired_context["patient_id"] == pid, "rule_id"]:
                assert CONTEXT_TITLES[rule][lang == "es"] in text, (pid, rule)


def test_sample_patients_every_pattern_tier_and_guard(sample_tables, tmp_path) -> None:
    results, findings = sample_tables
    fired = findings[findings["status"].isin(["fired", "suppressed", "indeterminate"])]
    # one patient per (rule, status, tier) that occurs in the sample: a handful of renders
    chosen = fired.drop_duplicates(["rule_id", "status", "tier"])
    pids = list(dict.fromkeys(chosen["patient_id"]))
    assert pids
    for n, pid in enumerate(pids):
        lang = "es" if n % 2 else "en"
        data = render_handout(results, findings, pid, lang=lang, large_print=n % 3 == 0)
        pages = [_text(p) for p in PdfReader(io.BytesIO(data)).pages]
        assert all(DISCLAIMER[lang] in t for t in pages)
        full = " ".join(pages)
        rows = results[results["patient_id"] == pid]
        for _, row in rows.iterrows():
            if pd.notna(row["value_reported"]) and row["unit_raw"]:
                assert f"{row['value_raw']} {row['unit_raw']}" in full
            else:  # a text result is shown as the lab wrote it, without a unit
                assert " ".join(str(row["value_raw"]).split()) in full
        assert "<p" not in full and "{{" not in full


def test_an_unchecked_pattern_says_why_a_listed_test_could_not_be_used(sample_tables) -> None:
    """A test the sheet lists is not called "missing": a hemolyzed sample, a result without a
    range and a result not usable with the others each get their own words; only a test
    never measured is "missing"."""
    from labinterp.guards import HEMOLYSIS_SENSITIVE
    from labinterp.handout import context

    assert context.HEMOLYSIS_SENSITIVE is HEMOLYSIS_SENSITIVE  # the engine's own list
    r = shared_renderer()

    def words(results, findings, pid: str, lang: str = "en") -> str:
        return " ".join(r.html(build_context(results, findings, pid, lang=lang)).split())

    def section(text: str, heading: str) -> str:
        return text.split(heading + "</h3>")[1].split("</article>")[0]

    en = words(RESULTS, FINDINGS, "I-unchecked")
    p1 = section(en, "Low magnesium with low calcium")
    assert 'did not give a range for <span class="data">calcium</span>' in p1
    assert 'with your <span class="data">magnesium</span> result' in p1
    assert "missing" not in p1
    p3 = section(en, "Low magnesium with low potassium")
    assert "the lab calls this hemolyzed" in p3 and "missing" not in p3
    vd = section(en, "Vitamin D not rising as expected, with low magnesium")
    assert (
        'a test it needs was missing, or we could not read it: <span class="data">vitamin D</span>'
        in vd
    )
    # a hemolyzed sample does not explain a test that was never done
    from labinterp.handout.context import _why_missing

    hemolyzed = {"missing": ["potassium", "magnesium"], "caveats": ["hemolyzed"]}
    mg_only = {"magnesium": [{"range_origin": "row", "is_number": True}]}
    assert _why_missing(hemolyzed, mg_only) == {
        "damaged": ["magnesium"],
        "no_range": [],
        "unused": [],
        "untested": ["potassium"],
    }
    # nothing was checked, so the sheet does not say that no pattern showed up
    assert "We could not check the magnesium patterns" in en and "showed up" not in en
    assert "We could not check the magnesium patterns" not in words(RESULTS, FINDINGS, "N-none")
    es = words(RESULTS, FINDINGS, "I-unchecked", "es")
    assert "hemolizada" in es and "no dio un rango" in es and "su resultado de" in es

    # the bundled sample: DEMO-009's potassium is hemolyzed, DEMO-014 is a child whose lab
    # printed no ranges (and the bundled adult ones do not apply)
    results, findings = sample_tables
    demo9 = section(words(results, findings, "DEMO-009"), "Low magnesium with low potassium")
    assert "hemolyzed" in demo9 and "missing" not in demo9
    demo14 = section(words(results, findings, "DEMO-014"), "Low magnesium with low calcium")
    assert "did not give a range" in demo14 and "they were low" in demo14


def test_long_histories_draw_only_the_latest_results(tmp_path) -> None:
    """An inpatient with dozens of results of one test gets number lines for the latest few;
    the rest are counted and stay in the trend line (a handout must not run to 70 pages)."""
    from labinterp.handout.context import RESULTS_SHOWN_PER_TEST
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    rows = ["patient_id,collected_at,test,result,unit,reference_range"]
    rows += [
        f"P1,2024-03-{d:02d} 06:00,Magnesium,{1.5 + d / 100:.2f},mg/dL,1.6-2.6"
        for d in range(1, 26)
    ]
    path = tmp_path / "long.csv"
    path.write_text("\n".join(rows) + "\n")
    results = read(path).results
    ctx = build_context(results, interpret_results(results), "P1", lang="en")
    (mg,) = ctx["analytes"]
    assert len(mg["results"]) == RESULTS_SHOWN_PER_TEST
    assert mg["earlier"] == 25 - RESULTS_SHOWN_PER_TEST
    assert mg["trend"]["count"] == 25
    html_text = shared_renderer().html(ctx)
    assert f"{25 - RESULTS_SHOWN_PER_TEST} earlier results are not drawn here" in html_text


def test_findings_read_back_from_csv_give_the_same_handout(sample_tables) -> None:
    """Findings saved with `interpret --format csv` and read back with pandas (the
    evidence records then JSON text) word the handout exactly as the engine's own table."""
    from labinterp.handout.api import load_inputs
    from labinterp.output import write_table

    results, findings = sample_tables
    saved = io.StringIO()
    write_table(findings, "csv", saved)
    back = pd.read_csv(io.StringIO(saved.getvalue()))
    r = shared_renderer()
    for pid in ("DEMO-001", "DEMO-007", "DEMO-012"):
        pages = []
        for table in (findings, back):
            res, fnd = load_inputs(results, table)
            pages.append(r.html(build_context(res, fnd, pid)))
        assert pages[0] == pages[1], pid


def test_dates_are_the_ones_the_lab_printed_when_times_have_an_offset(tmp_path) -> None:
    # 23:21 on the 26th at UTC-7 is 06:21 on the 27th in UTC, which the engine works in;
    # the patient must read the 26th, as on the lab's report
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    export = tmp_path / "offsets.csv"
    export.write_text(
        "patient_id,collected_at,test,result,unit,reference_range\n"
        "P1,2018-05-26T23:21:43-07:00,Magnesium,1.1,mg/dL,1.6-2.6\n"
        "P1,2018-05-26T23:21:43-07:00,Calcium,7.2,mg/dL,8.5-10.5\n"
        "P1,2018-05-26T23:21:43-07:00,Albumin,4.0,g/dL,3.5-5.0\n"
        "P1,2018-06-02 08:00,Magnesium,1.9,mg/dL,1.6-2.6\n"
    )
    results = read(export).results
    findings = interpret_results(results)
    ctx = build_context(results, findings, "P1")
    may26 = {"y": 2018, "m": 5, "d": 26}
    assert ctx["first_date"] == may26
    assert ctx["last_date"] == {"y": 2018, "m": 6, "d": 2}  # no offset printed: as is
    calcium = next(a for a in ctx["analytes"] if a["id"] == "calcium")
    assert [r["date"] for r in calcium["results"]] == [may26]
    fired = [p for p in ctx["patterns"] if p["rule_id"] == "hypomagnesemia_hypocalcemia"]
    assert fired and fired[0]["status"] == "fired"
    assert fired[0]["start"] == fired[0]["end"] == may26


def test_cli_reads_exports_with_a_mapping_a_date_format_and_the_guideline(tmp_path) -> None:
    """The handout command takes the reading and interpreting options of `interpret`:
    several files, a column mapping, a date format and the vitamin D guideline."""
    from labinterp.cli import main

    odd = tmp_path / "odd.csv"  # day-first dates and column names nobody would guess
    odd.write_text(
        "subject;drawn;assay;res;uom\n"
        "P1;01/03/2024 08:00;Magnesium;1.2;mg/dL\n"
        "P1;13/03/2024 08:00;Magnesium;1.3;mg/dL\n"
    )
    mapping = tmp_path / "map.toml"
    mapping.write_text(
        "[columns]\n"
        'patient_id = "subject"\ncollected_at = "drawn"\ntest_name = "assay"\n'
        'value_raw = "res"\nunit_raw = "uom"\n'
    )
    vitamin_d = tmp_path / "vitamin_d.csv"  # 25 ng/mL: enough by IOM 2011, low by ES 2011
    vitamin_d.write_text(
        "subject,drawn,assay,res,uom\nP1,01/03/2024 09:00,25-OH Vitamin D,25,ng/mL\n"
    )
    texts = {}
    for guideline in ("iom2011", "es2011"):
        out = tmp_path / f"{guideline}.pdf"
        args = [str(odd), str(vitamin_d), "--mapping", str(mapping)]
        args += ["--date-format", "%d/%m/%Y %H:%M", "--vitamin-d-guideline", guideline]
        assert main(["handout", *args, "--patient", "P1", "-o", str(out), "-q"]) == 0
        texts[guideline] = " ".join(_text(p) for p in PdfReader(out).pages)
    fired = "Your vitamin D was low, and your magnesium was low around the same time."
    assert fired not in texts["iom2011"]
    assert fired in texts["es2011"]
    assert "13 Mar 2024" in texts["es2011"]  # read day first, as the format says


def test_every_draw_a_guard_cites_is_marked_as_a_sample_issue(tmp_path) -> None:
    """Two suspected contaminated draws weeks apart: the handout lists the guard once, but
    the results of both draws carry the "sample may be wrong" mark, and only theirs: not a
    clean draw later the same day (a hospital stay has several a day)."""
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    export = tmp_path / "stay.csv"
    export.write_text(
        "patient_id,collected_at,test,result,unit,reference_range\n"
        "P1,2024-03-01 08:00,Potassium,4.1,mmol/L,3.5-5.0\n"
        "P1,2024-03-02 08:00,Potassium,7.9,mmol/L,3.5-5.0\n"
        "P1,2024-03-02 08:00,Calcium,5.0,mg/dL,8.5-10.5\n"
        "P1,2024-03-02 17:10,Calcium,8.9,mg/dL,8.5-10.5\n"
        "P1,2024-03-20 08:00,Potassium,7.6,mmol/L,3.5-5.0\n"
        "P1,2024-03-20 08:00,Calcium,5.2,mg/dL,8.5-10.5\n"
        "P1,2024-03-21 08:00,Potassium,4.3,mmol/L,3.5-5.0\n"
    )
    results = read(export).results
    findings = interpret_results(results)
    assert (findings["rule_id"] == "edta_contamination").sum() == 2
    ctx = build_context(results, findings, "P1")
    assert [g["rule_id"] for g in ctx["guards"]] == ["edta_contamination"]
    # the one entry says when: both dates, as a record of months holds both
    guard = ctx["guards"][0]
    assert (guard["seen_first"], guard["seen_last"], guard["seen_times"]) == (
        {"y": 2024, "m": 3, "d": 2},
        {"y": 2024, "m": 3, "d": 20},
        2,
    )
    html = " ".join(shared_renderer().html(ctx).split())
    assert "We saw this in your results from 20 Mar 2024. We saw it on 2 dates" in html
    assert "first on 2 Mar 2024." in html
    es = " ".join(shared_renderer().html(build_context(results, findings, "P1", lang="es")).split())
    assert "Lo vimos en sus análisis del 20 mar 2024." in es
    marked = [
        (a["id"], r["date"]["d"], r["sample_issue"]) for a in ctx["analytes"] for r in a["results"]
    ]
    assert marked == [
        ("calcium", 2, True),
        ("calcium", 2, False),
        ("calcium", 20, True),
        ("potassium", 2, True),
        ("potassium", 20, True),
        ("potassium", 21, False),
    ]


def test_hemolysis_noted_on_one_result_marks_its_whole_sample(sample_tables) -> None:
    """DEMO-009's lab noted hemolysis on the potassium only; the magnesium and calcium of
    the same tube are marked as possibly spoiled too (as the engine reads the sample)."""
    results, findings = sample_tables
    ctx = build_context(results, findings, "DEMO-009", lang="en")
    marked = {a["id"]: [r["sample_issue"] for r in a["results"]] for a in ctx["analytes"]}
    assert marked == {"magnesium": [True], "calcium": [True], "potassium": [True]}
    # another patient's clean draw is not marked
    clean = build_context(results, findings, "DEMO-001", lang="en")
    assert not any(r["sample_issue"] for a in clean["analytes"] for r in a["results"])


def test_results_of_one_test_on_one_day_show_their_clock_times(tmp_path) -> None:
    """A hospital day with several magnesium results: each shows its time so the patient
    can tell them apart; a day's single result (the calcium) shows its date alone."""
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    export = tmp_path / "stay.csv"
    export.write_text(
        "patient_id,collected_at,test,result,unit,reference_range\n"
        "P1,2024-03-02 06:04,Magnesium,1.7,mg/dL,1.6-2.6\n"
        "P1,2024-03-02 17:10,Magnesium,1.4,mg/dL,1.6-2.6\n"
        "P1,2024-03-02 17:10,Calcium,9.1,mg/dL,8.5-10.5\n"
        "P1,2024-03-03 03:21,Magnesium,2.1,mg/dL,1.6-2.6\n"
    )
    results = read(export).results
    ctx = build_context(results, interpret_results(results), "P1")
    shown = {a["id"]: [(r["date"]["d"], r["time"]) for r in a["results"]] for a in ctx["analytes"]}
    assert shown == {
        "magnesium": [(2, "06:04"), (2, "17:10"), (3, "")],
        "calcium": [(2, "")],
    }
    html = " ".join(shared_renderer().html(ctx).split())
    assert "2 Mar 2024, 17:10" in html and "3 Mar 2024, 03:21" not in html


def test_a_guard_on_an_undated_draw_marks_the_undated_results(tmp_path) -> None:
    """A survey export prints no dates: the engine reads a patient's results as one draw.
    A suspected contaminated draw there has no evidence time, and its results are marked."""
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    export = tmp_path / "survey.csv"  # NHANES' layout: one row per participant
    export.write_text("SEQN,LBXSKSI,LBXSCA,LBXSPH\n1001,5.9,7.9,3.6\n1002,4.1,9.4,3.6\n")
    results = read(export).results
    findings = interpret_results(results)
    edta = findings[findings["rule_id"] == "edta_contamination"]
    assert edta["status"].tolist() == ["fired"] and edta["evidence_at"].isna().all()
    ctx = build_context(results, findings, "1001")
    assert [r["sample_issue"] for a in ctx["analytes"] for r in a["results"]] == [True] * 3
    clean = build_context(results, findings, "1002")
    assert not any(r["sample_issue"] for a in clean["analytes"] for r in a["results"])


def test_a_rule_fired_in_several_episodes_shows_its_strongest_tier(tmp_path) -> None:
    """A low Mg with a low total Ca (albumin unknown: tier possible) in March and, weeks
    later, with a low ionized Ca and a very low Mg (supported): the sheet words the
    supported one, without the other episode's albumin caveat, and says both dates."""
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    export = tmp_path / "stay.csv"
    export.write_text(
        "patient_id,collected_at,test,result,unit,reference_range\n"
        "P1,2024-03-01 08:00,Magnesium,1.4,mg/dL,1.6-2.6\n"
        "P1,2024-03-01 08:00,Calcium,7.9,mg/dL,8.5-10.5\n"
        "P1,2024-04-20 08:00,Magnesium,1.0,mg/dL,1.6-2.6\n"
        "P1,2024-04-20 08:00,Calcium ionized,1.01,mmol/L,1.15-1.32\n"
    )
    results = read(export).results
    findings = interpret_results(results)
    p1 = findings[findings["rule_id"] == "hypomagnesemia_hypocalcemia"]
    assert p1["tier"].tolist() == ["possible", "supported"]
    ctx = build_context(results, findings, "P1")
    (entry,) = [f for f in ctx["patterns"] if f["rule_id"] == "hypomagnesemia_hypocalcemia"]
    assert entry["tier"] == "supported" and "albumin_unknown" not in entry["caveats"]
    assert entry["seen_times"] == 2


def test_a_pattern_seen_on_several_dates_is_not_called_a_single_moment() -> None:
    texts = {
        lang: " ".join(
            shared_renderer()
            .html(build_context(RESULTS, FINDINGS, "P3-concurrent-twice", lang=lang))
            .split()
        )
        for lang in ("en", "es")
    }
    assert "We saw it on 2 dates in all, first on 1 Mar 2024." in texts["en"]
    assert "We saw both of them low on separate dates, not on days in a row" in texts["en"]
    assert "at one point in time" not in texts["en"]
    assert "Vimos los dos bajos en fechas separadas, no en días seguidos" in texts["es"]
    assert "en un solo momento" not in texts["es"]


def test_a_contaminated_sample_next_to_low_kidney_function_says_both() -> None:
    for lang, sentence in (
        ("en", "Kidney problems can also cause this mix"),
        ("es", "Los problemas de los riñones también pueden dar esta mezcla"),
    ):
        kidney = " ".join(
            shared_renderer()
            .html(build_context(RESULTS, FINDINGS, "G-edta-kidney", lang=lang))
            .split()
        )
        plain = " ".join(
            shared_renderer().html(build_context(RESULTS, FINDINGS, "G-edta", lang=lang)).split()
        )
        assert sentence in kidney and sentence not in plain
