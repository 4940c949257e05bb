"""Write large long-format lab exports with known planted patterns, for audits and benchmarks.

    python benchmarks/make_export.py OUT.csv --rows 1000000 [--seed 0] [--manifest OUT.json]

or from Python::

    from benchmarks.make_export import generate
    manifest = generate("export.csv", 1_000_000, seed=0)

The file looks like a lab system's flat export (one result per line, mixed units as labs
print them, censored and text results, hemolysis comments, out-of-scope tests). Most
patients are "background": every value sits well inside the printed range and the bundled
fallback range, so nothing fires for them. A small share of patients each carry exactly one
planted scenario (one rule and tier, the EDTA guard, pseudo-hypocalcemia, hemolysis), so the
number of patients that should fire each rule is known in advance and recorded in the
returned `Manifest`. Background rows are built with numpy and written with pyarrow in
chunks, so ten million rows take well under a minute and little memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

HEADER = (
    "patient_id,sex,birth_date,collected_at,specimen_id,test,loinc,result,unit,"
    "reference_range,flag,comment"
)
COLUMNS = HEADER.split(",")

# How each test is printed: (test name, LOINC, unit, printed range, factor from the canonical
# unit to this unit, decimals). Two spellings per analyte where labs differ.
_TESTS: dict[str, tuple[tuple[str, str, str, str, float, int], ...]] = {
    "magnesium": (
        ("Magnesium", "19123-9", "mg/dL", "1.6-2.6", 1 / 0.4114, 1),
        ("Magnesium", "2601-3", "mmol/L", "0.66-1.07", 1.0, 2),
    ),
    "calcium": (
        ("Calcium", "17861-6", "mg/dL", "8.6-10.3", 1 / 0.2495, 1),
        ("Calcium", "2000-8", "mmol/L", "2.15-2.55", 1.0, 2),
    ),
    "potassium": (
        ("Potassium", "2823-3", "mmol/L", "3.5-5.1", 1.0, 1),
        ("Potassium", "2823-3", "mEq/L", "3.5-5.1", 1.0, 1),
    ),
    "albumin": (("Albumin", "1751-7", "g/dL", "3.5-5.2", 0.1, 1),) * 2,
    "pth": (("PTH Intact", "2731-8", "pg/mL", "15-65", 1.0, 0),) * 2,
    "vitamin_d_25oh": (
        ("25-OH Vitamin D", "62292-8", "ng/mL", "30-100", 1 / 2.496, 0),
        ("25-OH Vitamin D", "62292-8", "nmol/L", "75-250", 1.0, 0),
    ),
    "crp": (("CRP", "1988-5", "mg/L", "0-10", 1.0, 1),) * 2,
    "creatinine": (
        ("Creatinine", "2160-0", "mg/dL", "0.6-1.2", 1 / 88.42, 2),
        ("Creatinine", "14682-9", "umol/L", "53-106", 1.0, 0),
    ),
    "sodium": (("Sodium", "2951-2", "mmol/L", "136-145", 1.0, 0),) * 2,
}

# Background values (canonical units) stay inside both the printed range and the bundled
# fallback range with a margin, so a background patient never fires anything.
_NORMAL: dict[str, tuple[float, float]] = {
    "magnesium": (0.76, 0.98),
    "calcium": (2.22, 2.50),
    "potassium": (3.8, 4.8),
    "albumin": (38.0, 47.0),
    "pth": (22.0, 58.0),
    "vitamin_d_25oh": (85.0, 200.0),
    "crp": (0.6, 8.0),
    "creatinine": (60.0, 100.0),
    "sodium": (137.0, 144.0),
}

# A background draw: a fixed basic panel plus optional tests, each with a probability.
_PANEL = ("magnesium", "calcium", "potassium", "albumin", "creatinine", "sodium")
_OPTIONAL = (("crp", 0.25), ("vitamin_d_25oh", 0.15), ("pth", 0.1))
_SLOTS = _PANEL + tuple(a for a, _ in _OPTIONAL)

_ROWS_PER_DRAW = len(_PANEL) + sum(p for _, p in _OPTIONAL)
_DRAWS_PER_PATIENT = 4
_SCENARIO_SHARE = 0.01  # share of patients given each planted scenario
_DUPLICATE_SHARE = 0.001  # share of background Mg rows printed twice (exact duplicate lines)
_TEXT_SHARE = 0.003  # share of background Mg results printed as text
_CENSORED_SHARE = 0.3  # share of background CRP results printed as "<0.5"
_HEMOLYSIS_SHARE = 0.005  # share of background K rows with a hemolysis comment
_T0 = np.datetime64("2019-01-01T00:00", "m")
_SPAN_MINUTES = 5 * 365 * 24 * 60


@dataclass
class Manifest:
    """What the planted patients should produce (counts are patients unless named rows)."""

    path: str
    rows: int
    seed: int
    patients: int
    # rule id -> tier -> patients whose worst status for that rule is fired with that tier
    fired: dict[str, dict[str, int]] = field(default_factory=dict)
    # rule id -> patients whose only abnormal draw is vetoed by a guard
    suppressed: dict[str, int] = field(default_factory=dict)
    # guard id -> patients for which the guard fires
    guards: dict[str, int] = field(default_factory=dict)
    pseudo_hypocalcemia: int = 0  # low total Ca, normal albumin-corrected Ca, low Mg
    hemolysis_patients: int = 0  # high K only on a hemolysed sample: nothing may fire
    # reject reason -> rows the reader must reject for it
    rejected: dict[str, int] = field(default_factory=dict)
    text_rows: int = 0
    censored_rows: int = 0
    hemolysis_rows: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------
# Planted scenarios. Each is a list of draws: (hours after the patient's start, tests),
# tests being (analyte, canonical value, flag, comment). Values are chosen far from every
# cut-off in either unit so rounding to the printed decimals cannot move them across one.
_MG_SEVERE = 0.41  # < 0.5 mmol/L: PTH secretion fails (tier "supported" without PTH)
_MG_LOW = 0.58  # below both LLNs, above 0.5 mmol/L
_CA_LOW = 1.90
_K_LOW = 3.0
_ALB_OK = 40.0
_CA_OK = 2.35
_K_OK = 4.3
_MG_OK = 0.85

Test = tuple[str, float, str, str]
Draw = tuple[float, tuple[Test, ...]]

SCENARIOS: dict[str, tuple[Draw, ...]] = {
    # P1 with Mg < 0.5 mmol/L and no PTH: supported.
    "p1_supported": (
        (
            0,
            (
                ("magnesium", _MG_SEVERE, "L", ""),
                ("calcium", _CA_LOW, "L", ""),
                ("albumin", _ALB_OK, "", ""),
                ("potassium", _K_OK, "", ""),
            ),
        ),
    ),
    # P1 with a raised PTH in the same draw: possible.
    "p1_possible": (
        (
            0,
            (
                ("magnesium", _MG_LOW, "L", ""),
                ("calcium", _CA_LOW, "L", ""),
                ("albumin", _ALB_OK, "", ""),
                ("potassium", _K_OK, "", ""),
                ("pth", 120.0, "H", ""),
            ),
        ),
    ),
    # P3 once: concurrent.
    "p3_concurrent": (
        (
            0,
            (
                ("magnesium", _MG_LOW, "L", ""),
                ("potassium", _K_LOW, "L", ""),
                ("calcium", _CA_OK, "", ""),
                ("albumin", _ALB_OK, "", ""),
            ),
        ),
    ),
    # P3 on two draws 30 h apart with Mg low both times: refractory.
    "p3_refractory": (
        (
            0,
            (
                ("magnesium", _MG_LOW, "L", ""),
                ("potassium", _K_LOW, "L", ""),
                ("calcium", _CA_OK, "", ""),
                ("albumin", _ALB_OK, "", ""),
            ),
        ),
        (
            30,
            (
                ("magnesium", 0.57, "L", ""),
                ("potassium", 2.9, "L", ""),
                ("calcium", _CA_OK, "", ""),
                ("albumin", _ALB_OK, "", ""),
            ),
        ),
    ),
    # One low 25-OH D with low Mg in the same draw: single.
    "p2_single": (
        (
            0,
            (
                ("magnesium", _MG_LOW, "L", ""),
                ("calcium", _CA_OK, "", ""),
                ("potassium", _K_OK, "", ""),
                ("albumin", _ALB_OK, "", ""),
                ("vitamin_d_25oh", 30.0, "L", ""),
            ),
        ),
    ),
    # Two low 25-OH D 90 days apart, rising by 5 nmol/L, low Mg with the last: serial.
    "p2_serial": (
        (0, (("vitamin_d_25oh", 30.0, "L", ""),)),
        (
            90 * 24,
            (
                ("magnesium", _MG_LOW, "L", ""),
                ("calcium", _CA_OK, "", ""),
                ("potassium", _K_OK, "", ""),
                ("albumin", _ALB_OK, "", ""),
                ("vitamin_d_25oh", 35.0, "L", ""),
            ),
        ),
    ),
    # High K with low Ca (and low Mg) on one draw: EDTA contamination; P1 is vetoed.
    "edta": (
        (
            0,
            (
                ("potassium", 7.6, "H", ""),
                ("calcium", 1.50, "L", ""),
                ("magnesium", _MG_LOW, "L", ""),
                ("albumin", _ALB_OK, "", ""),
            ),
        ),
    ),
    # Low total Ca whose albumin-corrected value is normal (albumin 32 g/L): not fired.
    "pseudo_hypocalcemia": (
        (
            0,
            (
                ("magnesium", _MG_LOW, "L", ""),
                ("calcium", 2.05, "L", ""),
                ("albumin", 32.0, "L", ""),
                ("potassium", _K_OK, "", ""),
            ),
        ),
    ),
    # High K only on a hemolysed sample, everything else normal: nothing fires.
    "hemolysis": (
        (
            0,
            (
                ("potassium", 6.1, "H", "SPECIMEN HEMOLYZED"),
                ("calcium", _CA_OK, "", ""),
                ("magnesium", _MG_OK, "", ""),
                ("albumin", _ALB_OK, "", ""),
            ),
        ),
    ),
}

_EXPECTED_FIRED = {
    "p1_supported": ("hypomagnesemia_hypocalcemia", "supported"),
    "p1_possible": ("hypomagnesemia_hypocalcemia", "possible"),
    "p3_concurrent": ("hypomagnesemia_hypokalemia", "concurrent"),
    "p3_refractory": ("hypomagnesemia_hypokalemia", "refractory"),
    "p2_single": ("vitamin_d_resistance", "single"),
    "p2_serial": ("vitamin_d_resistance", "serial"),
}


def _fmt(values: np.ndarray, decimals: np.ndarray) -> pa.Array:
    """Numbers as a lab prints them: fixed decimals per row, no exponent."""
    out = np.empty(len(values), dtype=object)
    for d in np.unique(decimals):
        sel = decimals == d
        out[sel] = np.char.mod(f"%.{int(d)}f", np.round(values[sel], int(d)))
    return pa.array(out, type=pa.string())


def _scenario_counts(n_patients: int) -> dict[str, int]:
    each = max(1, round(n_patients * _SCENARIO_SHARE))
    return dict.fromkeys(SCENARIOS, each)


def _patient_ids(idx: np.ndarray) -> pa.Array:
    return pa.array(np.char.mod("P%08d", idx), type=pa.string())


def _table(cols: dict[str, pa.Array]) -> pa.Table:
    return pa.table({c: cols[c] for c in COLUMNS})


def _lab_rows(
    pid: np.ndarray,
    analyte: np.ndarray,
    value: np.ndarray,
    when: np.ndarray,
    specimen: np.ndarray,
    flag: np.ndarray,
    comment: np.ndarray,
    unit_choice: np.ndarray,
    sex: np.ndarray,
    birth: np.ndarray,
) -> dict[str, pa.Array]:
    """Turn canonical values into printed rows (name, LOINC, unit, range, text value)."""
    n = len(pid)
    test = np.empty(n, dtype=object)
    loinc = np.empty(n, dtype=object)
    unit = np.empty(n, dtype=object)
    rng_txt = np.empty(n, dtype=object)
    factor = np.ones(n)
    decimals = np.zeros(n, dtype=np.int64)
    for a, spellings in _TESTS.items():
        for k, (name, code, u, r, f, d) in enumerate(spellings):
            sel = (analyte == a) & (unit_choice == k)
            if not sel.any():
                continue
            test[sel], loinc[sel], unit[sel], rng_txt[sel] = name, code, u, r
            factor[sel], decimals[sel] = f, d
    stamps = pa.array(when.astype("datetime64[s]"))
    return {
        "patient_id": _patient_ids(pid),
        "sex": pa.array(np.where(sex, "F", "M"), type=pa.string()),
        "birth_date": pc.strftime(pa.array(birth.astype("datetime64[s]")), format="%Y-%m-%d"),
        "collected_at": pc.strftime(stamps, format="%Y-%m-%d %H:%M"),
        "specimen_id": pa.array(np.char.mod("S%09d", specimen), type=pa.string()),
        "test": pa.array(test, type=pa.string()),
        "loinc": pa.array(loinc, type=pa.string()),
        "result": _fmt(value * factor, decimals),
        "unit": pa.array(unit, type=pa.string()),
        "reference_range": pa.array(rng_txt, type=pa.string()),
        "flag": pa.array(flag, type=pa.string()),
        "comment": pa.array(comment, type=pa.string()),
    }


def _patient_traits(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    sex = rng.random(n) < 0.5
    birth = np.datetime64("1940-01-01", "D") + rng.integers(0, 60 * 365, n).astype("timedelta64[D]")
    return sex, birth


def _scenario_table(
    rng: np.random.Generator,
    counts: dict[str, int],
    first_pid: int,
    first_specimen: int,
) -> tuple[pa.Table, int, int]:
    """Rows for all planted patients (small: built from the scenario lists)."""
    cols: dict[str, list] = {
        k: [] for k in ("pid", "analyte", "value", "when", "spec", "flag", "comment")
    }
    pid, spec = first_pid, first_specimen
    for name, draws in SCENARIOS.items():
        for _ in range(counts[name]):
            start = _T0 + np.timedelta64(int(rng.integers(0, _SPAN_MINUTES - 200 * 24 * 60)), "m")
            for hours, tests in draws:
                when = start + np.timedelta64(int(hours * 60), "m")
                for analyte, value, flag, comment in tests:
                    cols["pid"].append(pid)
                    cols["analyte"].append(analyte)
                    cols["value"].append(value)
                    cols["when"].append(when)
                    cols["spec"].append(spec)
                    cols["flag"].append(flag)
                    cols["comment"].append(comment)
                spec += 1
            pid += 1
    n_pat = pid - first_pid
    sex, birth = _patient_traits(rng, n_pat)
    units = rng.integers(0, 2, n_pat)
    p = np.asarray(cols["pid"], dtype=np.int64)
    local = p - first_pid
    table = _table(
        _lab_rows(
            p,
            np.asarray(cols["analyte"], dtype=object),
            np.asarray(cols["value"], dtype=float),
            np.asarray(cols["when"], dtype="datetime64[m]"),
            np.asarray(cols["spec"], dtype=np.int64),
            np.asarray(cols["flag"], dtype=object),
            np.asarray(cols["comment"], dtype=object),
            units[local],
            sex[local],
            birth[local],
        )
    )
    return table, pid, spec


def generate(path: str | Path, rows: int, *, seed: int = 0) -> Manifest:
    """Write a CSV export of exactly `rows` data rows to `path`; return what was planted."""
    if rows < 1:
        raise ValueError("rows must be at least 1")
    path = Path(path)
    rng = np.random.default_rng(seed)
    n_patients = max(1, int(rows / (_ROWS_PER_DRAW * _DRAWS_PER_PATIENT)))
    counts = _scenario_counts(n_patients)
    scen, next_pid, next_spec = _scenario_table(rng, counts, 0, 0)
    if scen.num_rows > rows:
        raise ValueError(f"rows must be at least {scen.num_rows} to hold the planted patients")

    # Background patients get ids after the planted ones; ids are shuffled across the file
    # by drawing each draw's patient at random.
    n_bg = max(1, n_patients - next_pid)
    bg_sex, bg_birth = _patient_traits(rng, n_bg)
    bg_units = rng.integers(0, 2, (n_bg, len(_SLOTS)))

    manifest = Manifest(path=path.name, rows=rows, seed=seed, patients=0)
    rejected = {"out_of_scope": 0, "duplicate": 0}
    seen_bg = np.zeros(n_bg, dtype=bool)
    remaining = rows - scen.num_rows
    opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with path.open("wb") as fh:
        fh.write((HEADER + "\n").encode())
        pacsv.write_csv(scen, fh, opts)
        spec = next_spec
        while remaining > 0:
            chunk = min(remaining, 500_000)
            table, used_spec, counts_chunk = _background_chunk(
                rng, chunk, n_bg, next_pid, spec, bg_sex, bg_birth, bg_units, seen_bg
            )
            spec = used_spec
            for k, v in counts_chunk.items():
                if k in rejected:
                    rejected[k] += v
                else:
                    setattr(manifest, k, getattr(manifest, k) + v)
            pacsv.write_csv(table, fh, opts)
            remaining -= chunk

    for name, (rule, tier) in _EXPECTED_FIRED.items():
        manifest.fired.setdefault(rule, {})[tier] = counts[name]
    manifest.suppressed = {"hypomagnesemia_hypocalcemia": counts["edta"]}
    manifest.guards = {"edta_contamination": counts["edta"]}
    manifest.pseudo_hypocalcemia = counts["pseudo_hypocalcemia"]
    manifest.hemolysis_patients = counts["hemolysis"]
    manifest.hemolysis_rows += counts["hemolysis"]
    manifest.rejected = rejected
    manifest.patients = next_pid + int(seen_bg.sum())
    return manifest


def _background_chunk(
    rng: np.random.Generator,
    n_rows: int,
    n_bg: int,
    first_pid: int,
    first_spec: int,
    bg_sex: np.ndarray,
    bg_birth: np.ndarray,
    bg_units: np.ndarray,
    seen: np.ndarray,
) -> tuple[pa.Table, int, dict[str, int]]:
    """Exactly `n_rows` rows of normal draws (the last draw may be cut short)."""
    n_draws = int(n_rows / _ROWS_PER_DRAW * 1.02) + 64  # margin for the random panel sizes
    probs = np.array([1.0] * len(_PANEL) + [p for _, p in _OPTIONAL])
    mask = rng.random((n_draws, len(_SLOTS))) < probs
    # Exact duplicate lines of a Mg row: reserve room for them inside the chunk.
    draw_pat = rng.integers(0, n_bg, n_draws)
    draw_time = _T0 + rng.integers(0, _SPAN_MINUTES, n_draws).astype("timedelta64[m]")
    d_idx, s_idx = np.nonzero(mask)
    dup = (s_idx == 0) & (rng.random(len(d_idx)) < _DUPLICATE_SHARE)
    # Repeat duplicated rows once, right after the original.
    rep = np.where(dup, 2, 1)
    d_idx = np.repeat(d_idx, rep)
    s_idx = np.repeat(s_idx, rep)
    dup_flag = np.zeros(len(d_idx), dtype=bool)
    dup_flag[np.cumsum(rep)[dup] - 1] = True
    # Cut to the exact row count, never leaving a duplicate without its original.
    d_idx, s_idx, dup_flag = d_idx[:n_rows], s_idx[:n_rows], dup_flag[:n_rows]
    if len(d_idx) < n_rows:  # pragma: no cover - the 2 % margin makes this unreachable
        raise RuntimeError("background chunk came out short")

    slots = np.asarray(_SLOTS, dtype=object)
    analyte = slots[s_idx]
    lo = np.array([_NORMAL[a][0] for a in _SLOTS])[s_idx]
    hi = np.array([_NORMAL[a][1] for a in _SLOTS])[s_idx]
    value = lo + (hi - lo) * rng.random(len(s_idx))
    pat = draw_pat[d_idx]
    seen[pat] = True
    units = bg_units[pat, s_idx]
    n = len(s_idx)
    flag = np.full(n, "", dtype=object)
    comment = np.full(n, "", dtype=object)
    hemo = (analyte == "potassium") & (rng.random(n) < _HEMOLYSIS_SHARE)
    comment[hemo] = "SPECIMEN HEMOLYZED"
    rows = _lab_rows(
        pat + first_pid,
        analyte,
        value,
        draw_time[d_idx],
        first_spec + d_idx,
        flag,
        comment,
        units,
        bg_sex[pat],
        bg_birth[pat],
    )
    # A duplicate must repeat its original's printed value, so copy the text over.
    result = np.asarray(rows["result"].to_pylist(), dtype=object)
    dup_pos = np.nonzero(dup_flag)[0]
    result[dup_pos] = result[dup_pos - 1]
    text = (analyte == "magnesium") & ~dup_flag & (rng.random(n) < _TEXT_SHARE)
    if len(dup_pos):
        text[dup_pos - 1] = False  # keep duplicated originals numeric
    result[text] = "See Comments"
    censored = (analyte == "crp") & (rng.random(n) < _CENSORED_SHARE)
    result[censored] = "<0.5"
    rows["result"] = pa.array(result, type=pa.string())
    counts = {
        "out_of_scope": int((analyte == "sodium").sum()),
        "duplicate": int(dup_flag.sum()),
        "text_rows": int(text.sum()),
        "censored_rows": int(censored.sum()),
        "hemolysis_rows": int(hemo.sum()),
    }
    return _table(rows), first_spec + n_draws, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--manifest", type=Path, help="also write the manifest as JSON here")
    args = ap.parse_args(argv)
    manifest = generate(args.out, args.rows, seed=args.seed)
    text = manifest.to_json()
    if args.manifest:
        args.manifest.write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
