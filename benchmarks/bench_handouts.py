"""Handouts per second for a batch of patients, and the speed-up over a plain loop.

    .venv/bin/python benchmarks/bench_handouts.py [--patients 200] [--no-hb-subset] [--repeat 3]
                                                  [--export ROWS]

Batch: `render_batch` end to end (context building, templating, PDF, atomic writes) with a
process pool, one parsed stylesheet and one FontConfiguration per worker, markup parsed as
XML and the handout user-agent stylesheet (the PDFs are byte-identical to plain WeasyPrint's;
tests/test_handout_render.py). Plain loop: the *same HTML*, pre-rendered and not timed,
turned into PDFs one at a time in this process by plain `weasyprint.HTML(string=...)` with a
fresh `CSS` and a fresh `FontConfiguration` per document, so that the loop draws with the
same @font-face fonts as the batch (without a font configuration WeasyPrint would skip
them and fall back to the system's DejaVu Sans, a different PDF). The ratio is measured in
the same run. `--no-hb-subset` makes both paths behave as if the Debian package
libharfbuzz-subset0 were missing: the loop's fonts are then subset with fontTools, while
the batch embeds its two small fonts whole (see `render.pdf_options`).
Patients: 200 synthetic ones by default (3-4 results each, ~3.6 pages per handout);
`--export ROWS` takes them from a generated export instead (benchmarks/make_export.py: a
few dozen results each over repeated visits, ~4.3 pages per handout).
`--repeat N` (default 3) alternates batch and loop N times and reports the best of each (the
machine is shared: best-of is the least disturbed figure), with the load average before and
after. The first batch of the process, which also starts the workers' server, is printed apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labinterp import schema
from labinterp.handout import render_batch
from labinterp.handout.api import _worker_init, iter_contexts
from labinterp.handout.fetcher import ASSET_BASE, SafeFetcher
from labinterp.handout.render import PDF_OPTIONS, make_environment, page_css, squeeze
from labinterp.resources import template_dir

MG = ("magnesium", "mg/dL", 1.7, 2.55)
CA = ("calcium", "mg/dL", 8.5, 10.5)
K = ("potassium", "mmol/L", 3.5, 5.0)
VD = ("vitamin_d_25oh", "ng/mL", 30.0, 100.0)
PTH = ("pth", "pg/mL", 15.0, 65.0)
CRP = ("crp", "mg/L", None, 10.0)
ALB = ("albumin", "g/dL", 3.5, 5.0)

Spec = tuple[str, str, float | None, float | None]
SCENARIOS: list[tuple[str, str, str, list[tuple[Spec, float]]]] = [
    (
        "hypomagnesemia_hypocalcemia",
        "fired",
        "supported",
        [(MG, 1.0), (CA, 7.4), (PTH, 40), (ALB, 4.0)],
    ),
    (
        "hypomagnesemia_hypokalemia",
        "fired",
        "refractory",
        [(MG, 1.3), (K, 3.0), (K, 3.1), (MG, 1.4)],
    ),
    ("vitamin_d_resistance", "fired", "serial", [(VD, 14), (MG, 1.5), (VD, 16), (CRP, 22)]),
    ("edta_contamination", "fired", "", [(K, 7.9), (CA, 5.1), (MG, 1.2)]),
    ("hypomagnesemia_hypocalcemia", "not_fired", "", [(MG, 2.0), (CA, 9.1), (K, 4.2)]),
]


def synthetic(n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, finds = [], []
    for i in range(n):
        pid = f"BENCH{i:05d}"
        rule, status, tier, tests = SCENARIOS[i % len(SCENARIOS)]
        for j, ((analyte, unit, lo, hi), value) in enumerate(tests):
            rows.append(
                {
                    "patient_id": pid,
                    "collected_at": pd.Timestamp("2024-01-01") + pd.Timedelta(days=7 * j),
                    "analyte": analyte,
                    "value_raw": f"{value:g}",
                    "unit_raw": unit,
                    "comparator": "",
                    "value_reported": float(value),
                    "unit_reported": unit,
                    "range_low_reported": lo,
                    "range_high_reported": hi,
                    "range_origin": "row",
                    "source_file": "bench.csv",
                }
            )
        kind = "guard" if rule == "edta_contamination" else "pattern"
        finds.append(
            {"patient_id": pid, "rule_id": rule, "kind": kind, "status": status, "tier": tier}
        )
        if rule == "edta_contamination":
            finds.append(
                {
                    "patient_id": pid,
                    "rule_id": "hypomagnesemia_hypocalcemia",
                    "kind": "pattern",
                    "status": "suppressed",
                    "suppressed_by": "edta_contamination",
                }
            )
    return (
        schema.conform(pd.DataFrame(rows), schema.RESULTS),
        schema.conform(pd.DataFrame(finds), schema.FINDINGS),
    )


def exported(rows: int, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first `n` patients (by id) of an export made by benchmarks/make_export.py, read
    and interpreted (not timed): longer handouts than the synthetic ones, as the generator
    gives each patient a few dozen results over repeated visits."""
    from benchmarks.make_export import generate
    from labinterp.interpret import interpret_results
    from labinterp.reading import read

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.csv"
        generate(path, rows, seed=0)
        res = read([path]).results
    ids = sorted(res["patient_id"].dropna().unique())[:n]
    res = res[res["patient_id"].isin(ids).to_numpy()].reset_index(drop=True)
    return res, interpret_results(res)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-hb-subset", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--export",
        type=int,
        metavar="ROWS",
        help="patients from a generated export of ROWS rows instead of the synthetic ones",
    )
    args = ap.parse_args()
    res, fnd = exported(args.export, args.patients) if args.export else synthetic(args.patients)
    workers = args.workers or os.cpu_count() or 1
    load_before = os.getloadavg()

    def batch() -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            render_batch(res, fnd, tmp, workers=workers, _no_hb_subset=args.no_hb_subset)
            seconds = time.perf_counter() - t0
            return seconds, sum(1 for _ in Path(tmp).glob("*.pdf"))

    # The plain loop gets the same HTML and the same stylesheet text, rendered before timing.
    _worker_init(args.no_hb_subset)
    from weasyprint import CSS, HTML
    from weasyprint.text.fonts import FontConfiguration

    env = make_environment()
    template = env.get_template("handout/handout.html.j2")
    ids = sorted(res["patient_id"].unique())
    htmls = [
        squeeze(template.render(**ctx))  # exactly what the batch hands WeasyPrint
        for ctx in iter_contexts(res, fnd, ids, lang="en", large_print=False, paper="A4")
    ]
    css_text = (template_dir() / "handout" / "handout.css").read_text("utf-8") + page_css(
        "A4", False
    )

    def loop() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            for k, html in enumerate(htmls):
                fetcher = SafeFetcher()
                fonts = FontConfiguration()
                css = CSS(
                    string=css_text, base_url=ASSET_BASE, url_fetcher=fetcher, font_config=fonts
                )
                HTML(string=html, base_url=ASSET_BASE, url_fetcher=fetcher).write_pdf(
                    Path(tmp) / f"{k}.pdf", stylesheets=[css], font_config=fonts, **PDF_OPTIONS
                )
            return time.perf_counter() - t0

    batch_runs, loop_runs, files = [], [], 0
    for _ in range(max(1, args.repeat)):
        seconds, files = batch()
        batch_runs.append(seconds)
        loop_runs.append(loop())
    batch_s, loop_s = min(batch_runs), min(loop_runs)

    n = len(htmls)
    pages = _mean_pages(htmls[:20], css_text)
    print(
        f"patients: {n} ({'generated export' if args.export else 'synthetic'}, "
        f"{pages:.1f} pages per handout over the first 20), "
        f"workers: {workers}, cores: {os.cpu_count()}, "
        f"hb-subset: {'disabled' if args.no_hb_subset else 'as installed'}, "
        f"best of {len(batch_runs)}"
    )
    print(f"batch:      {n / batch_s:6.1f} handouts/s ({batch_s:.1f} s, {files} files)")
    print(f"plain loop: {n / loop_s:6.1f} handouts/s ({loop_s:.1f} s)")
    print(f"ratio:      {loop_s / batch_s:6.2f}x")
    # The first batch also starts the workers' server (imports, fonts, templates, a first
    # handout: ~1.5 s once per process); later batches reuse it, as a long-lived caller would.
    print(f"first batch (starting the workers' server): {n / batch_runs[0]:6.1f} handouts/s")
    if len(batch_runs) > 1:
        pairs = ", ".join(f"{b:.1f}/{lp:.1f}" for b, lp in zip(batch_runs, loop_runs, strict=True))
        print(f"runs (batch/loop s): {pairs}")
    load_after = os.getloadavg()
    print(
        "load average (1/5/15 min): before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + " ".join(f"{x:.2f}" for x in load_after)
    )
    return 0


def _mean_pages(htmls: list[str], css_text: str) -> float:
    """Pages per handout over `htmls` (laid out once more, outside the timings)."""
    from weasyprint import CSS, HTML
    from weasyprint.text.fonts import FontConfiguration

    fonts = FontConfiguration()
    css = CSS(string=css_text, base_url=ASSET_BASE, url_fetcher=SafeFetcher(), font_config=fonts)
    pages = [
        len(
            HTML(string=h, base_url=ASSET_BASE, url_fetcher=SafeFetcher())
            .render(stylesheets=[css], font_config=fonts)
            .pages
        )
        for h in htmls
    ]
    return sum(pages) / max(1, len(pages))


if __name__ == "__main__":
    raise SystemExit(main())
