"""Imported once by the batch's fork server, so every worker forked from it starts warm.

Workers are recycled (see `MAX_TASKS_PER_CHILD`), so whatever a worker does before its first
handout is paid again and again. Here, in the server, and inherited by each fork: the
cut-down fonts (~0.35 s of fontTools), every handout template compiled (~50 ms), the CTCAE
grading tables loaded (~160 ms), and the process's shared Renderer with its stylesheets for
every paper and print size parsed, its fonts loaded and one handout rendered, which runs
WeasyPrint's lazy imports and first-use set-up (~130 ms a worker would otherwise spend on
its first handout, plus ~25 ms of stylesheet and font set-up).

The Renderer's FontConfiguration keeps its fonts in a temporary folder that WeasyPrint
removes when the object is finalized: the server keeps it for its lifetime, and forked
workers never remove it (see `render._leave_font_folder_to_parent`). Whatever the server
holds afterwards is frozen out of the garbage collector, so the workers never walk (or
copy) those pages.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import shutil

import pandas as pd
import weasyprint.draw
import weasyprint.layout
import weasyprint.pdf
import weasyprint.svg  # noqa: F401

from labinterp.handout import fonts
from labinterp.handout.api import _grader
from labinterp.handout.context import Row, context_from_rows
from labinterp.handout.render import PAPERS, compile_templates, shared_renderer

log = logging.getLogger("labinterp.handout")


def _sample_rows() -> tuple[list[Row], list[Row]]:
    """A made-up patient touching number lines, a trend and a finding text (no real data)."""
    day = pd.Timestamp("2024-01-01")
    tests = [("magnesium", 1.3, 1.7, 2.55, "mg/dL"), ("potassium", 3.0, 3.5, 5.0, "mmol/L")]
    results = [
        {
            "analyte": analyte,
            "collected_at": day + pd.Timedelta(days=7 * k),
            "value_raw": f"{value + k / 10:g}",
            "unit_raw": unit,
            "value_reported": value + k / 10,
            "unit_reported": unit,
            "range_low_reported": low,
            "range_high_reported": high,
            "range_origin": "row",
        }
        for analyte, value, low, high, unit in tests
        for k in range(2)
    ]
    findings = [
        {
            "rule_id": "hypomagnesemia_hypokalemia",
            "kind": "pattern",
            "status": "fired",
            "tier": "refractory",
        }
    ]
    return results, findings


def _remove_font_folder(folder: str, pid: int) -> None:
    if os.getpid() == pid:  # the server only: forked workers inherit this handler too
        shutil.rmtree(folder, ignore_errors=True)


def warm_up() -> None:
    for name in fonts.FILES:
        fonts.font_file(name)
    compile_templates()
    results, findings = _sample_rows()
    try:
        renderer = shared_renderer()
        for paper in PAPERS:
            for large_print in (False, True):
                renderer.stylesheets(paper, large_print)
        renderer.render(context_from_rows(results, findings, "warm-up", grader=_grader()))
        folder = getattr(renderer.font_config, "_folder", None)
        if folder is not None:  # the server ends without finalizing it: remove it then
            atexit.register(_remove_font_folder, str(folder), os.getpid())
    except Exception:  # a cold worker is slower, not wrong: never stop the server over it
        log.debug("handout warm-up render failed", exc_info=True)
    gc.collect()
    gc.freeze()


warm_up()
