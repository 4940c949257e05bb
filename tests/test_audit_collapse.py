"""collapse() and the result columns of patient_rows() against the plain pandas formulations
they replace, on random data with many ties, missing times and unlisted statuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labinterp import schema
from labinterp.audit.collapse import (
    AUDIT_FINDINGS,
    LATEST_ANALYTES,
    STATUS_RANK,
    TIER_RANK,
    collapse,
    patient_rows,
)


def _reference(findings: pd.DataFrame) -> pd.DataFrame:
    status = findings["status"].astype(object)
    k = pd.DataFrame(
        {
            "patient_id": findings["patient_id"],
            "rule_id": findings["rule_id"],
            "_s": status.map(STATUS_RANK).fillna(-1).astype(int),
            "_t": findings["tier"].astype(object).map(TIER_RANK).fillna(0).astype(int),
            "_fired": (status == "fired").astype(int),
            "_end": findings["episode_end"].fillna(pd.Timestamp.min),
            "_start": findings["episode_start"].fillna(pd.Timestamp.min),
            "_ev": findings["evidence"].fillna("").astype(object),
        }
    ).sort_values(
        ["patient_id", "rule_id", "_s", "_t", "_end", "_start", "_ev"],
        ascending=[True, True, False, False, False, False, True],
        kind="mergesort",
    )
    keys = ["patient_id", "rule_id"]
    counts = k.groupby(keys, sort=False).agg(
        episodes=("_s", "size"), episodes_fired=("_fired", "sum")
    )
    chosen = k.index[~k.duplicated(keys, keep="first").to_numpy()]
    first = findings.loc[chosen].set_index(keys).join(counts).reset_index()
    return schema.conform(first, AUDIT_FINDINGS)


@pytest.mark.parametrize("seed", range(8))
def test_collapse_picks_the_rows_the_pandas_sort_picks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    days = rng.integers(0, 6, n)
    times = pd.to_datetime("2024-01-01") + pd.to_timedelta(days, unit="D")
    times = times.where(rng.random(n) > 0.15)  # some undated episodes
    findings = schema.conform(
        pd.DataFrame(
            {
                "patient_id": rng.choice(["P1", "P10", "P2", "Ä3", "p4"], n),
                "rule_id": rng.choice(["hypomagnesemia_hypocalcemia", "edta_contamination"], n),
                "status": rng.choice([*STATUS_RANK, "odd"], n),
                "tier": rng.choice(["", "supported", "possible", "single"], n),
                "episode_start": times,
                "episode_end": times + pd.to_timedelta(rng.integers(0, 3, n), unit="D"),
                "evidence": rng.choice(["Mg 1.2", "Mg 1.1", "", "K 3.0"], n),
                "caveats": [f"row {i}" for i in range(n)],  # tells equal-looking rows apart
            }
        ),
        schema.FINDINGS,
    )
    pd.testing.assert_frame_equal(collapse(findings), _reference(findings))


def test_the_edta_guard_row_shows_its_strongest_tier() -> None:
    """A patient with two flagged draws, one backed by a low Mg: the audit's row is the
    supported one, though the other draw is later (tier before time, as for patterns)."""
    findings = schema.conform(
        pd.DataFrame(
            {
                "patient_id": ["P1", "P1"],
                "rule_id": ["edta_contamination"] * 2,
                "status": ["fired"] * 2,
                "tier": ["with_supporting_evidence", "core_signature"],
                "episode_start": pd.to_datetime(["2024-01-01", "2024-02-01"]),
                "episode_end": pd.to_datetime(["2024-01-01", "2024-02-01"]),
            }
        ),
        schema.FINDINGS,
    )
    (row,) = collapse(findings).itertuples()
    assert (row.tier, row.episodes_fired) == ("with_supporting_evidence", 2)


def _reference_from_results(results: pd.DataFrame, patients: pd.Index) -> pd.DataFrame:
    """The columns patient_rows derives from the results, the plain pandas way: per
    patient the row count, first and last collection time, and per analyte the latest
    value (sort, then keep the last row of each patient and analyte)."""
    out = pd.DataFrame(index=patients).join(
        results.groupby("patient_id", observed=True).agg(
            results=("analyte", "size"),
            first_at=("collected_at", "min"),
            last_at=("collected_at", "max"),
        )
    )
    out["results"] = out["results"].fillna(0).astype("Int64")
    shown = results["value"].notna() & results["analyte"].isin(LATEST_ANALYTES)
    latest = (
        results[shown.to_numpy(dtype=bool)]
        .sort_values(
            ["patient_id", "analyte", "collected_at", "source_file", "source_row"],
            kind="mergesort",
        )
        .drop_duplicates(["patient_id", "analyte"], keep="last")
    )
    for analyte in LATEST_ANALYTES:
        one = latest[latest["analyte"] == analyte].set_index("patient_id").reindex(patients)
        out[f"{analyte}_latest"] = one["value"].to_numpy(dtype="float64", na_value=np.nan)
        out[f"{analyte}_comparator"] = one["comparator"].astype("string[pyarrow]").array
        out[f"{analyte}_unit"] = one["unit"].astype("string[pyarrow]").array
        out[f"{analyte}_at"] = one["collected_at"].to_numpy()
    return out


@pytest.mark.parametrize("seed", range(8))
def test_patient_rows_match_the_pandas_formulation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    times = pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 5, n), unit="D")
    results = schema.conform(
        pd.DataFrame(
            {
                "patient_id": rng.choice(["P1", "P10", "P2", "Ä3", "p4", None], n),
                "collected_at": times.where(rng.random(n) > 0.1),  # some undated
                "analyte": rng.choice([*LATEST_ANALYTES[:4], "sodium", None], n),
                "value": np.where(rng.random(n) > 0.1, rng.random(n).round(2), np.nan),
                "unit": rng.choice(["mmol/L", "mg/dL"], n),
                "source_file": rng.choice(["a.csv", "b.csv"], n),
                "source_row": rng.integers(1, 6, n),  # repeats: ties on every key
            }
        ),
        schema.RESULTS,
    )
    m = 60
    collapsed = schema.conform(
        pd.DataFrame(
            {
                "patient_id": rng.choice(["P1", "P2", "P9"], m),  # P9: no results
                "rule_id": rng.choice(["hypomagnesemia_hypocalcemia", "ckd_context"], m),
                "status": rng.choice(list(STATUS_RANK), m),
                "tier": rng.choice(["", "possible"], m),
            }
        ).drop_duplicates(["patient_id", "rule_id"]),
        AUDIT_FINDINGS,
    )
    got = patient_rows(collapsed, results).set_index("patient_id")
    want = _reference_from_results(results, got.index)
    pd.testing.assert_frame_equal(got[list(want.columns)], want)
    # the status columns come from the collapsed findings: P9 is listed, without results
    assert got.loc["P9", "results"] == 0


def test_first_later_result_matches_a_plain_search() -> None:
    """`_first_later` (one sorted search) against a loop over every query, on random
    patients and times with ties, queries before, between, at and after the results."""
    from labinterp.audit.collapse import _NAT, _first_later

    rng = np.random.default_rng(7)
    pat = rng.integers(0, 30, 400)
    t = rng.integers(0, 50, 400).astype("int64") * 10**9
    query_pat = rng.integers(0, 35, 300)  # some patients have no results at all
    query_t = rng.integers(-5, 55, 300).astype("int64") * 10**9
    got = _first_later(pat, t, query_pat, query_t)
    for q in range(len(query_t)):
        later = t[(pat == query_pat[q]) & (t > query_t[q])]
        assert got[q] == (later.min() if len(later) else _NAT)
    assert (_first_later(pat[:0], t[:0], query_pat, query_t) == _NAT).all()


def _magnesium_histogram(values_mmol: np.ndarray) -> list[int]:
    """The audit's Mg histogram (inner bins) of these canonical values."""
    from labinterp.audit.collapse import BucketStats, _tally

    n = len(values_mmol)
    results = schema.conform(
        pd.DataFrame(
            {
                "analyte": ["magnesium"] * n,
                "value": values_mmol,
                "range_low": np.full(n, 0.7),
                "range_high": np.full(n, 1.05),
            }
        ),
        schema.RESULTS,
    )
    stats = BucketStats()
    _tally(results, stats)
    return stats.histograms["magnesium"][1:-1]


def test_magnesium_histogram_does_not_alias_printed_steps() -> None:
    """Evenly spread results printed in 0.1 mg/dL steps (0.0411 mmol/L) fill every bin
    alike (0.05 mmol/L bins held one or two steps in turn: a false cliff at 0.7 mmol/L),
    and results printed in 0.01 mmol/L steps nearly alike."""
    from labinterp.audit.collapse import bins

    mmol_per_mg_dl = 10 / 24.305  # molar mass of Mg
    mg_dl = np.round(np.arange(0.1, 4.8, 0.1), 1)  # 0.1 to 4.7 mg/dL, one result each
    counts = _magnesium_histogram(mg_dl * mmol_per_mg_dl)
    edges = bins("magnesium")
    covered = [c for c, lo in zip(counts, edges, strict=False) if 0.1 < lo / mmol_per_mg_dl < 4.6]
    assert set(covered) == {2}
    counts = _magnesium_histogram(np.round(np.arange(0.1, 1.9, 0.01), 2))
    covered = [c for c, lo in zip(counts, edges, strict=False) if 0.1 < lo < 1.8]
    assert set(covered) <= {8, 9}


def test_latest_values_say_when_their_sample_was_hemolyzed_or_contaminated() -> None:
    """The hemolysis noted on a K marks the Mg of the same tube too, not another sample;
    the K, Ca and Mg of a draw the EDTA guard flagged are marked; values keep 4 decimals."""
    t1, t2 = pd.Timestamp("2024-01-01 08:00"), pd.Timestamp("2024-01-02 08:00")
    results = schema.conform(
        pd.DataFrame(
            {
                "patient_id": ["P1", "P1", "P2", "P2", "P3", "P3", "P3"],
                "collected_at": [t1, t1, t1, t2, t1, t1, t1],
                "analyte": [
                    *("potassium", "magnesium", "potassium", "potassium"),
                    *("potassium", "calcium", "creatinine"),
                ],
                "value": [5.9, 0.5760131660152232, 5.5, 4.1, 7.9, 1.52, 80.0],
                "quality": ["hemolyzed", "", "hemolyzed", None, "", "", ""],
                "source_file": ["a.csv"] * 7,
                "source_row": range(1, 8),
            }
        ),
        schema.RESULTS,
    )
    edta = pd.DataFrame({"patient_id": ["P3"], "episode_start": [t1]})
    empty = schema.empty(AUDIT_FINDINGS)
    got = patient_rows(empty, results, edta_draws=edta).set_index("patient_id")
    assert got.loc["P1", "potassium_quality"] == "hemolyzed"
    assert got.loc["P1", "magnesium_quality"] == "hemolyzed"  # the same sample
    assert got.loc["P1", "magnesium_latest"] == 0.576
    assert got.loc["P2", "potassium_quality"] == ""  # its latest K is of a later sample
    assert got.loc["P3", "potassium_quality"] == "edta_suspected"
    assert got.loc["P3", "calcium_quality"] == "edta_suspected"
    assert got.loc["P3", "creatinine_quality"] == ""  # EDTA does not change it
    assert pd.isna(got.loc["P1", "calcium_quality"])  # no Ca: no note either


def test_ranges_are_counted_as_a_groupby_counts_them() -> None:
    from labinterp.audit.collapse import _count_ranges

    rng = np.random.default_rng(3)
    n = 300
    low = rng.choice([0.7, 0.6583, np.nan], n)
    high = rng.choice([1.05, 1.0697, np.nan], n)
    origin = pd.Series(rng.choice(["row", "bundled", None], n), dtype="string[pyarrow]")
    table = pd.DataFrame({"low": low, "high": high, "origin": origin.fillna("").to_numpy()})
    want = table.groupby(["low", "high", "origin"], dropna=False).size()
    got = _count_ranges(low, high, origin)

    def key(lo: float, hi: float, o: str) -> tuple[str, str, str]:
        return (repr(lo), repr(hi), o)  # NaN == NaN as text

    assert {key(*k): v for k, v in got.items()} == {
        key(*k): int(v) for k, v in zip(want.index, want, strict=True)
    }
