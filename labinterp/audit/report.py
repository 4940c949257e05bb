"""report.html: one self-contained page (inline CSS, SVG and a few lines of JS, no network).

The template (templates/audit/report.html.j2) gets plain dicts and lists; chart geometry
is computed here so the template only places shapes and text.
"""

from __future__ import annotations

import math
from typing import Any

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labinterp.audit.collapse import HISTOGRAMS, bins
from labinterp.catalog import analytes, fallback_ranges
from labinterp.resources import template_dir
from labinterp.rules import REGISTRY
from labinterp.rules.base import TIER_RANK

PATIENT_LIST_MAX = 2000
TABLE_MAX = 200
PATTERNS = ("hypomagnesemia_hypocalcemia", "hypomagnesemia_hypokalemia", "vitamin_d_resistance")
GUARDS = ("edta_contamination",)
# the context findings (CLINICAL.md sec. 6): findings.csv has their rows only where they fired
CONTEXT = tuple(r.id for r in REGISTRY if r.kind == "context")
_LABELS = {
    "hypomagnesemia_hypocalcemia": "Low Mg with low Ca",
    "hypomagnesemia_hypokalemia": "Low Mg with low K",
    "vitamin_d_resistance": "Vitamin D not rising with low Mg",
    "edta_contamination": "Suspected EDTA contamination",
    # context findings (CLINICAL.md sec. 6)
    "hypercalcemia_hypomagnesemia": "High Ca with low Mg",
    "hyperphosphatemia_hypomagnesemia": "High phosphate with low Mg",
    "inflammation_hypomagnesemia": "Raised CRP with low Mg",
    "secondary_hyperparathyroidism": "High PTH with low vitamin D",
    "ckd_context": "CKD context (low eGFR)",
}
_ANALYTE_LABELS = {"magnesium": "Magnesium", "calcium": "Calcium (total)", "potassium": "Potassium"}
_CHAR_W = 6.8  # an upper bound on the width of a character of the charts' 11px text


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir() / "audit")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["n"] = lambda v: f"{int(v):,}"
    return env


def _rule_order(rules: list[str]) -> list[str]:
    known = [r for r in (*PATTERNS, *GUARDS) if r in rules]
    return known + sorted(r for r in rules if r not in known)


# by strength (TIER_RANK): the strongest tier darkest, on every row
_TIER_COLOURS = ("#b2182b", "#ef8a62", "#fddbc7")
_SUPPRESSED_COLOUR = "#7f7f7f"
_MIN_BAR_W = 3.0  # px: a non-zero count stays visible among thousands of patients


def _strength(tier: str) -> int:
    """0 for a strongest tier (or an untiered rule), 1 for the next, ..."""
    return max(TIER_RANK.values()) - TIER_RANK.get(tier, max(TIER_RANK.values()))


def _share(n: int, total: int) -> str:
    """n of total as a percentage that a tiny share does not round to 0 ("0.034%")."""
    if not n or not total:
        return "0%"
    percent = 100 * n / total
    if percent >= 10:
        return f"{percent:.0f}%"
    return f"{percent:.1f}%" if percent >= 1 else f"{percent:.2g}%"


def _prevalence(summary: dict[str, Any]) -> dict[str, Any]:
    """Per rule, a bar of its patients out of every patient of the audit (the full width
    is all of them), one segment per fired tier and one for the suppressed."""
    counts: dict[str, dict[str, dict[str, int]]] = summary["counts"]
    patients = int(summary["patients"])
    rows: list[dict[str, Any]] = []
    for rule in _rule_order(list(counts)):
        by_status = counts[rule]
        fired = by_status.get("fired", {})
        tiers = sorted(fired, key=lambda t: (_strength(t), t))
        segments: list[dict[str, Any]] = [
            {
                "label": f"fired: {tier or 'untiered'}",
                "n": fired[tier],
                "colour": _TIER_COLOURS[min(_strength(tier), len(_TIER_COLOURS) - 1)],
            }
            for tier in tiers
        ]
        suppressed = sum(by_status.get("suppressed", {}).values())
        segments.append({"label": "suppressed", "n": suppressed, "colour": _SUPPRESSED_COLOUR})
        indeterminate = sum(by_status.get("indeterminate", {}).values())
        n_fired = sum(fired.values())
        rows.append(
            {
                "rule": rule,
                "label": _LABELS.get(rule, rule.replace("_", " ")),
                "fired": n_fired,
                "segments": [s for s in segments if s["n"]],
                "indeterminate": indeterminate,
                "total": sum(sum(v.values()) for v in by_status.values()),
                "note": " \u00b7 ".join(
                    [f"{n_fired:,} of {patients:,} patients fired ({_share(n_fired, patients)})"]
                    + (
                        [f"{suppressed:,} suppressed ({_share(suppressed, patients)})"]
                        if suppressed
                        else []
                    )
                    + ([f"{indeterminate:,} indeterminate"] if indeterminate else [])
                ),
            }
        )
    # the widest label, "Vitamin D not rising with low Mg", takes under 220 px
    width, bar_h, gap, left = 330.0, 18, 10, 230
    for i, r in enumerate(rows):
        x = float(left)
        r["y"] = 10 + i * (bar_h + gap)
        for s in r["segments"]:
            s["x"] = round(x, 2)
            s["w"] = round(max(s["n"] / max(patients, 1) * width, _MIN_BAR_W), 2)
            s["share"] = _share(s["n"], patients)
            x += s["w"]
        r["end"] = round(max(x, left + width) + 6, 2)
    # the drawing is as wide as its longest line of text (11px text: under 7px a
    # character), so the page can keep it at full size and scroll it on a narrow screen
    view_w = max([r["end"] + _CHAR_W * len(r["note"]) for r in rows] + [left + width]) + 10
    return {
        "rows": rows,
        "height": 20 + len(rows) * (bar_h + gap),
        "bar_h": bar_h,
        "left": left,
        "bar_w": width,
        "patients": patients,
        "width": round(view_w),
    }


def _fallback(analyte: str) -> tuple[float | None, float | None]:
    for r in fallback_ranges():
        if r.canonical and r.analyte == analyte and r.sex == "any":
            return r.low, r.high
    return None, None


_ORIGIN_TEXT = {"row": "printed with the results", "bundled": "the bundled adult fallback"}


def _count_ticks(top: int) -> list[int]:
    """Round counts for a chart's count axis, from 0 to at least `top`: steps of 1, 2 or
    5 times a power of ten, three to five of them."""
    step = 1
    while step * 4 < top:
        for factor in (2, 2.5, 2):  # 1, 2, 5, 10, 20, 50, ...
            step = int(step * factor)
            if step * 4 >= top:
                break
    return list(range(0, step * math.ceil(max(top, 1) / step) + 1, step))


def _range_text(lo: float | None, hi: float | None) -> str:
    low = "" if lo is None else f"{lo:.3g}"
    high = "" if hi is None else f"{hi:.3g}"
    return f"{low}-{high}" if lo is not None and hi is not None else low or f"up to {high}"


def _distributions(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per analyte, a histogram with a count axis, and the range most results were read
    with (shaded, with its origin), or the bundled adult range when no result had one."""
    out = []
    hist = summary["distributions"]["histograms"]
    vs = summary["distributions"]["against_ranges"]
    common = summary["distributions"].get("ranges", {})
    for analyte in HISTOGRAMS:
        counts = hist.get(analyte)
        edges = bins(analyte)
        if not counts:
            counts = [0] * (len(edges) + 1)
        inner = counts[1:-1]
        y_ticks = _count_ticks(max(inner, default=0))
        top = y_ticks[-1]
        width, height, left, pad = 440.0, 140.0, 66.0, 30.0
        base = pad + height
        step = width / len(inner)
        bars = [
            {
                "x": round(left + i * step, 2),
                "w": round(step - 1, 2),
                "h": round(c / top * height, 2),
                "y": round(base - c / top * height, 2),
                "title": f"{edges[i]:.3g}-{edges[i + 1]:.3g} mmol/L: {c:,}",
            }
            for i, c in enumerate(inner)
        ]

        def xpos(
            v: float | None, edges: Any = edges, step: float = step, left: float = left
        ) -> float | None:
            if v is None or v < edges[0] or v > edges[-1]:
                return None
            return round(left + (v - edges[0]) / (edges[1] - edges[0]) * step, 2)

        # ticks at round values, not at the edges (the Mg bins start at 0.0206 mmol/L)
        tick_step = next(
            t for t in (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0) if t * 6 >= edges[-1] - edges[0]
        )
        first_tick = math.ceil(edges[0] / tick_step) * tick_step
        ticks = [
            {"x": xpos(v), "label": f"{v:g}"}
            for v in np.round(np.arange(first_tick, edges[-1], tick_step), 6).tolist()
        ]
        ranges = common.get(analyte, [])
        against = vs.get(analyte, {"below": 0, "within": 0, "above": 0, "no_range": 0})
        with_range = sum(against[k] for k in ("below", "within", "above"))
        if ranges:
            shown = ranges[0]
            lo, hi = shown["low"], shown["high"]
            origin = _ORIGIN_TEXT.get(shown["origin"], "of unknown origin")
            shade = (
                f"the range most results were read with, {_range_text(lo, hi)} mmol/L "
                f"({origin}; {shown['results']:,} of {with_range:,} results with a range"
                + (", other ranges for the rest" if shown["results"] < with_range else "")
                + ")"
            )
        else:
            lo, hi = _fallback(analyte)
            shade = (
                f"the bundled adult range, {_range_text(lo, hi)} mmol/L (no result had a range)"
                if lo is not None or hi is not None
                else "no range"
            )
        out.append(
            {
                "analyte": analyte,
                "label": _ANALYTE_LABELS[analyte],
                "bars": bars,
                "ticks": ticks,
                "y_ticks": [
                    {"y": round(base - t / top * height, 2), "label": f"{t:,}"} for t in y_ticks
                ],
                "left": left,
                "right": left + width,
                "low": lo,
                "high": hi,
                "low_x": xpos(lo),
                "high_x": xpos(hi),
                "shade": shade,
                "width": left + width + 20,
                "height": height + 2 * pad,
                "base": base,
                "under": counts[0],
                "over": counts[-1],
                "n": sum(counts),
                "vs": against,
            }
        )
    return out


def _records(table: pa.Table, columns: list[str], limit: int) -> list[dict[str, Any]]:
    cols = [c for c in columns if c in table.column_names]
    rows = table.select(cols).slice(0, limit).to_pylist()
    for r in rows:
        for k, v in r.items():
            if v is None:
                r[k] = ""
            elif hasattr(v, "strftime"):
                r[k] = v.strftime("%Y-%m-%d %H:%M")
            elif isinstance(v, float):
                r[k] = f"{v:.3g}"
    return rows


LATEST_SHOWN = ("magnesium", "calcium", "potassium")
_LATEST_LABELS = {"magnesium": "Mg", "calcium": "Ca", "potassium": "K"}
# how a censored result's comparator is printed before its value
_COMPARATOR_TEXT = {"<": "<", "<=": "\u2264", ">": ">", ">=": "\u2265"}


# what patients.csv's `<analyte>_quality` says of a latest value's sample, as the list
# marks it (short) and explains it (the cell's title)
_QUALITY_MARKS = {
    "hemolyzed": ("hem.", "the sample was hemolyzed: K and Mg may read falsely high"),
    "edta_suspected": ("EDTA?", "the draw is suspected of EDTA contamination: recollect"),
}


def _latest_cell(value: str, comparator: str | None, quality: str | None = None) -> dict[str, str]:
    """A latest value as shown: "<0.206" for a result the lab gave as below a limit, and
    a mark ("hem.", "EDTA?") when its sample was hemolyzed or its draw suspected of EDTA
    contamination."""
    sign = _COMPARATOR_TEXT.get(comparator or "", "")
    notes = [_QUALITY_MARKS[q] for q in (quality or "").split(";") if q in _QUALITY_MARKS]
    titles = [title for _, title in notes]
    text = value
    if value and sign:
        side = "below" if sign in "<\u2264" else "above"
        text = f"{sign}{value}"
        titles.insert(0, f"reported as {side} a limit: {sign}{value}")
    return {
        "text": text,
        "mark": " ".join(mark for mark, _ in notes) if value else "",
        "title": "; ".join(titles) if value else "",
    }


def _patient_list(patients: pa.Table) -> dict[str, Any]:
    """The patients shown (those with findings first), the rule columns, the context
    findings fired, the latest values (with the comparator of a censored result,
    patients.csv's `<analyte>_comparator`) and the number of patients.

    A patient's `status_set` (what the page's filter matches) holds the statuses of its
    pattern and guard cells, and "context_fired" when a context finding fired, so that
    "nothing fired" leaves out a patient with a context finding."""
    rules = [r for r in (*PATTERNS, *GUARDS) if r in patients.column_names]
    context = [r for r in CONTEXT if r in patients.column_names]
    latest = [a for a in LATEST_SHOWN if f"{a}_latest" in patients.column_names]
    listing: dict[str, Any] = {
        "patients": [],
        "patient_rules": rules,
        "patient_labels": {r: _LABELS.get(r, r) for r in rules},
        "patient_latest": [_LATEST_LABELS[a] for a in latest],
        "patient_context": bool(context),
        "patients_total": patients.num_rows,
    }
    n = patients.num_rows
    if not n:
        return listing
    score = pa.array([0] * n, pa.int64())
    for r in rules:
        col = pc.fill_null(patients.column(r), "")
        hit = pc.cast(pc.starts_with(col, "fired"), pa.int64())
        score = pc.add(score, pc.multiply(hit, 4 if r in PATTERNS else 2))
        score = pc.add(score, pc.cast(pc.starts_with(col, "suppressed"), pa.int64()))
    for r in context:
        col = pc.fill_null(patients.column(r), "")
        score = pc.add(score, pc.cast(pc.starts_with(col, "fired"), pa.int64()))
    with_score = patients.append_column("_score", score)
    order = pc.sort_indices(with_score, [("_score", "descending"), ("patient_id", "ascending")])
    top = with_score.take(order).slice(0, PATIENT_LIST_MAX)
    cols = [
        "patient_id",
        *rules,
        *context,
        *(f"{a}_latest" for a in latest),
        *(f"{a}_comparator" for a in latest),
        *(f"{a}_quality" for a in latest),
    ]
    out: list[dict[str, Any]] = []
    for rec in _records(top, cols, PATIENT_LIST_MAX):
        statuses = [{"text": rec[r], "status": rec[r].split(":")[0]} for r in rules]
        fired_context = [_LABELS.get(r, r) for r in context if rec[r].startswith("fired")]
        status_set = {s["status"] for s in statuses if s["status"]}
        if fired_context:
            status_set.add("context_fired")
        out.append(
            {
                "patient_id": str(rec["patient_id"]),
                "statuses": statuses,
                "context": "; ".join(fired_context),
                # each status once, for the page's filter to match exactly
                "status_set": " ".join(sorted(status_set)),
                "latest": [
                    _latest_cell(
                        str(rec.get(f"{a}_latest", "")),
                        rec.get(f"{a}_comparator"),
                        rec.get(f"{a}_quality"),
                    )
                    for a in latest
                ],
            }
        )
    listing["patients"] = out
    return listing


_OUTCOMES = ("followed_up", "not_followed_up", "undated")


def _follow_up_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per rule that fired for someone: its follow-up counts."""
    rows = []
    names = analytes()
    for rule in _rule_order(list(summary["follow_up"])):
        counts = summary["follow_up"][rule]
        if not any(counts[k] for k in _OUTCOMES):
            continue
        shown = [names[a].display_name if a in names else a for a in counts["analytes"]]
        analytes_text = "; ".join(shown)  # display names hold commas ("Calcium, total")
        rows.append(
            {"label": _LABELS.get(rule, rule), "analytes": analytes_text}
            | {k: counts[k] for k in _OUTCOMES}
        )
    return rows


_QUALITY_LABELS = {
    "hemolyzed": "hemolyzed",
    "clotted": "clotted",
    "lipemic": "lipemic",
    "icteric": "icteric",
    "contamination_comment": "contamination mentioned",
}


def _sample_quality_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per quality note seen: samples with it and their share of all samples."""
    quality = summary["sample_quality"]
    total = quality["samples"]
    return [
        {
            "flag": flag,
            "label": _QUALITY_LABELS.get(flag, flag),
            "samples": n,
            "percent": f"{100 * n / total:.2f}%" if total else "",
        }
        for flag, n in quality["flagged"].items()
    ]


def _status_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Results used per result status, with their share; empty when no export gave one."""
    counts = summary["result_status"]["results"]
    if set(counts) <= {"not_given"}:
        return []
    total = sum(counts.values())
    return [
        {
            "status": status,
            "label": status.replace("_", " "),
            "results": n,
            "percent": f"{100 * n / total:.2f}%" if total else "",
        }
        for status, n in counts.items()
    ]


# The rejected rows the preview lists first: those a lab can fix (a value or unit the
# reader could not take, an impossible magnitude, an unreadable date or id), then the
# other reasons, and last the rows that are expected in any export (a test labinterp
# does not read, a repeat of a row used).
_REJECTED_FIRST = (
    "implausible_value",
    "unit_conflict",
    "unknown_unit",
    "unit_not_valid_for_analyte",
    "unparseable_value",
    "unparseable_date",
    "ambiguous_two_digit_year",
    "damaged_patient_id",
    "missing_value",
    "missing_date",
    "missing_patient_id",
    "missing_test",
    "malformed_row",
)
_REJECTED_LAST = ("out_of_scope", "duplicate")


def _rejected_preview(rejected: pa.Table) -> pa.Table:
    """The first TABLE_MAX rejected rows by _REJECTED_FIRST, the others, _REJECTED_LAST,
    each group in the file and row order of rejected_rows.csv."""
    order = pa.array([*_REJECTED_FIRST, "", *_REJECTED_LAST])  # "": every other reason
    found = pc.index_in(rejected.column("reason"), value_set=order)
    rank = pc.fill_null(found, len(_REJECTED_FIRST)).to_numpy(zero_copy_only=False)
    first = np.argsort(rank, kind="stable")[:TABLE_MAX]
    return rejected.take(pa.array(first))


def render_report(
    summary: dict[str, Any], *, findings: pa.Table, patients: pa.Table, rejected: pa.Table
) -> str:
    fired_pattern = pc.and_(
        pc.equal(findings.column("kind"), "pattern"), pc.equal(findings.column("status"), "fired")
    )
    pattern_patients = len(pc.unique(findings.filter(fired_pattern).column("patient_id")))
    edta = findings.filter(
        pc.and_(
            pc.equal(findings.column("rule_id"), "edta_contamination"),
            pc.equal(findings.column("status"), "fired"),
        )
    )
    context = {
        "summary": summary,
        "headline": [
            {"id": "rows-in", "label": "rows read", "value": summary["rows_in"]},
            {"id": "rows-used", "label": "rows used", "value": summary["rows_used"]},
            {"id": "rows-rejected", "label": "rows rejected", "value": summary["rows_rejected"]},
            {"id": "patients", "label": "patients", "value": summary["patients"]},
            {
                "id": "patients-pattern",
                "label": "patients with a pattern",
                "value": pattern_patients,
            },
            {"id": "contamination", "label": "suspected contaminated", "value": edta.num_rows},
        ],
        "prevalence": _prevalence(summary),
        "follow_up": _follow_up_rows(summary),
        "distributions": _distributions(summary),
        "contamination": _records(
            # the draw itself (its evidence), not the start of its episode
            edta,
            ["patient_id", "evidence_at", "evidence", "caveats"],
            TABLE_MAX,
        ),
        "contamination_total": edta.num_rows,
        "sample_quality": _sample_quality_rows(summary),
        "result_status": _status_rows(summary),
        "fired_caveats": [
            {"rule": _LABELS.get(rule, rule.replace("_", " ")), "caveat": caveat, "patients": n}
            for rule, caveats in summary.get("fired_caveats", {}).items()
            for caveat, n in caveats.items()
        ],
        "fired_on_preliminary": [
            {"rule": _LABELS.get(rule, rule.replace("_", " ")), "patients": n}
            for rule, n in summary["result_status"]["fired_on_preliminary"].items()
        ],
        "rejected_reasons": sorted(
            summary["rows_rejected_by_reason"].items(), key=lambda kv: (-kv[1], kv[0])
        ),
        "rejected": _records(
            _rejected_preview(rejected),
            ["source_file", "source_row", "patient_id", "reason", "test", "value_raw", "unit_raw"],
            TABLE_MAX,
        ),
        **_patient_list(patients),
        "inputs": summary["inputs"],
        "skipped_files": summary["skipped_files"],
        # no Mg value at all: no pattern could fire, and "not fired" says nothing of Mg
        "no_magnesium": not sum(summary["distributions"]["histograms"].get("magnesium", [])),
        "times_utc": summary["collection_times"] == "utc",
        "times_mixed": summary["collection_times"] == "mixed",
    }
    return _env().get_template("report.html.j2").render(**context)
