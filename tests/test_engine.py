"""Engine behaviour that YAML cases through the reader cannot express: undated rows,
partition invariance, determinism, schema, and the parameter file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import labinterp
from labinterp import schema
from labinterp.episodes import tri_above, tri_below
from labinterp.interpret import interpret, interpret_results
from labinterp.parameters import parameters
from labinterp.rules import PATTERN_IDS, REGISTRY

SAMPLE = Path(labinterp.__file__).parent / "sample_data" / "clinic_export.csv"


def _results(rows: list[dict]) -> pd.DataFrame:
    return schema.conform(pd.DataFrame(rows), schema.RESULTS)


def _row(pid, t, analyte, value, lo, hi, **kw):
    base = {
        "patient_id": pid,
        "collected_at": pd.Timestamp(t) if t else pd.NaT,
        "analyte": analyte,
        "value": value,
        "value_reported": value,
        "unit": "mmol/L",
        "unit_reported": "mmol/L",
        "unit_system": "si",
        "range_low": lo,
        "range_high": hi,
        "range_low_reported": lo,
        "range_high_reported": hi,
        "range_origin": "row",
        "comparator": "",
        "value_raw": str(value),
        "source_row": 1,
        "quality": "",
    }
    base.update(kw)
    return base


def test_undated_rows_of_a_patient_form_one_draw() -> None:
    res = _results(
        [
            _row("U1", None, "magnesium", 0.45, 0.7, 1.0),
            _row("U1", None, "calcium_ionized", 1.0, 1.15, 1.32),
        ]
    )
    f = interpret_results(res)
    p1 = f[f["rule_id"] == "hypomagnesemia_hypocalcemia"].iloc[0]
    assert (p1["status"], p1["tier"]) == ("fired", "supported")
    assert pd.isna(p1["episode_start"])


def test_text_result_is_never_a_number() -> None:
    res = _results(
        [
            _row("T1", "2024-01-01 08:00", "magnesium", 0.5, 0.7, 1.0),
            _row(
                "T1", "2024-01-01 08:00", "calcium", np.nan, 2.15, 2.55, text_result="See Comments"
            ),
        ]
    )
    p1 = interpret_results(res).query("rule_id == 'hypomagnesemia_hypocalcemia'").iloc[0]
    assert p1["status"] == "indeterminate"
    assert "calcium" in p1["missing_inputs"]


def test_unknown_range_is_indeterminate_not_normal() -> None:
    res = _results(
        [
            _row(
                "R1", "2024-01-01 08:00", "magnesium", 0.9, np.nan, np.nan, range_origin="unknown"
            ),
            _row("R1", "2024-01-01 08:00", "potassium", 3.0, 3.5, 5.1),
        ]
    )
    p3 = interpret_results(res).query("rule_id == 'hypomagnesemia_hypokalemia'").iloc[0]
    assert p3["status"] == "indeterminate" and p3["missing_inputs"] == "magnesium"


def test_censoring_tri_state() -> None:
    v = np.array([0.5, 0.9, 10.0, 10.0, 0.5])
    c = np.array(["<", "<", ">", "", ""], dtype=object)
    lo = np.array([0.7, 0.7, 3.5, 3.5, np.nan])
    assert list(np.nan_to_num(tri_below(v, c, lo), nan=-1)) == [1, -1, 0, 0, -1]
    hi = np.array([1.0, 1.0, 5.1, 10.0, 1.0])
    assert list(np.nan_to_num(tri_above(v, c, hi), nan=-1)) == [0, 0, 1, 0, 0]


def test_unbounded_comparator_gives_no_state() -> None:
    v = np.array([1.0, 1.0])
    c = np.array(["?", ""], dtype=object)
    assert np.isnan(tri_below(v, c, np.array([2.0, 2.0]))[0])
    assert np.isnan(tri_above(v, c, np.array([0.5, 0.5]))[0])


def test_corrected_calcium_comparator_follows_albumin_bound() -> None:
    from labinterp.episodes import _corrected_comparator

    ca = np.array(["", "", "", ">", "<", ""], dtype=object)
    alb = np.array(["", "<", ">=", "<", "<", ""], dtype=object)
    # albumin below a bound puts corrected Ca above the computed value, and so on;
    # calcium and albumin censored in opposite senses leave nothing known
    assert list(_corrected_comparator(ca, alb)) == ["", ">", "<=", ">", "?", ""]


def test_low_total_calcium_with_censored_low_albumin_is_not_hypocalcemia(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "patient_id,collected_at,test,result,unit,reference_range\n"
        "P1,2024-03-01 08:00,Magnesium,1.1,mg/dL,1.6-2.6\n"
        "P1,2024-03-01 08:00,Calcium,7.0,mg/dL,8.6-10.3\n"
        "P1,2024-03-01 08:00,Albumin,<1.5,g/dL,3.5-5.0\n"
    )
    f = interpret(path)
    p1 = f[f["rule_id"] == "hypomagnesemia_hypocalcemia"].iloc[0]
    # albumin under 1.5 g/dL puts corrected Ca above 9.0 mg/dL (the mg/dL form, as the Ca
    # is in mg/dL: 7.0 + 0.8 x (4.0 - 1.5)): not low, so no flag
    assert p1["status"] == "not_fired"
    assert (
        "corrected Ca (derived) >9.00 mg/dL (2.2456 mmol/L; range 8.6-10.3 mg/dL"
        in (p1["evidence"])
    )
    assert "pseudo_hypocalcemia" in p1["caveats"]


def test_sample_every_pattern_has_a_row_per_patient_and_schema() -> None:
    f = interpret(SAMPLE)
    schema.check(f, schema.FINDINGS, "findings")
    patients = f["patient_id"].unique()
    for rule_id in PATTERN_IDS:
        assert set(f.loc[f["rule_id"] == rule_id, "patient_id"]) == set(patients)
    fired = f[f["status"] == "fired"]
    tiers = set(zip(fired["rule_id"], fired["tier"], strict=True))
    for pair in [
        ("hypomagnesemia_hypocalcemia", "supported"),
        ("hypomagnesemia_hypocalcemia", "possible"),
        ("vitamin_d_resistance", "serial"),
        ("vitamin_d_resistance", "single"),
        ("hypomagnesemia_hypokalemia", "refractory"),
        ("hypomagnesemia_hypokalemia", "concurrent"),
    ]:
        assert pair in tiers
    assert {"edta_contamination", "ckd_context"} <= set(fired["rule_id"])
    assert set(f["status"]) == {"fired", "not_fired", "indeterminate", "suppressed"}
    assert f["caveats"].str.contains("pseudo_hypocalcemia").any()
    assert f["caveats"].str.contains("inflammation_caveat").any()


def test_partition_invariance_and_determinism() -> None:
    from labinterp.reading import read

    res = read([SAMPLE]).results
    whole = interpret_results(res)
    ids = sorted(res["patient_id"].unique())
    parts = [interpret_results(res[res["patient_id"].isin(ids[i::3])]) for i in range(3)]
    joined = pd.concat(parts, ignore_index=True)
    joined = joined.sort_values(["patient_id"], kind="stable").reset_index(drop=True)
    key = ["patient_id", "rule_id", "status", "tier", "evidence", "episode_start"]
    a = whole[key].astype(str).sort_values(key).reset_index(drop=True)
    b = joined[key].astype(str).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    shuffled = res.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(interpret_results(shuffled), whole)


def test_threads_give_the_same_table(tmp_path: Path) -> None:
    from benchmarks.make_export import generate
    from labinterp.reading import read

    path = tmp_path / "export.csv"
    generate(path, 20_000, seed=3)
    res = read([path]).results
    one = interpret_results(res, threads=1)
    assert len(one) > 1000
    for threads in (2, 3):
        pd.testing.assert_frame_equal(interpret_results(res, threads=threads), one)
    sample = read([SAMPLE]).results
    two = sample[sample["patient_id"].isin(sorted(set(sample["patient_id"]))[:2])]
    pd.testing.assert_frame_equal(  # more threads than patients: some parts are empty
        interpret_results(two, threads=4), interpret_results(two, threads=1)
    )


def test_without_evidence_json_only_that_column_is_missing() -> None:
    from labinterp.reading import read

    res = read([SAMPLE]).results
    full = interpret_results(res)
    lean = interpret_results(res, evidence_json=False)
    schema.check(lean, schema.FINDINGS, "findings")
    assert lean["evidence_json"].isna().all()
    assert full["evidence_json"].notna().all()
    pd.testing.assert_frame_equal(
        lean.drop(columns="evidence_json"), full.drop(columns="evidence_json")
    )


def test_evidence_helpers_give_what_plain_arrow_gives() -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from labinterp.interpret import _take_presized

    words = pa.array(["", "a", "bb" * 50, "ccc"], pa.large_string())
    picks = np.array([2, 2, 0, 3, 1, 2])
    assert _take_presized(words, picks).equals(pc.take(words, pa.array(picks)))
    empty = pa.array(["", ""], pa.large_string())
    assert _take_presized(empty, np.array([1, 0])).equals(pc.take(empty, pa.array([1, 0])))


def test_parameters_have_units_and_sources() -> None:
    params = parameters()
    used = {k for rule in REGISTRY for k in rule.parameters}
    assert used <= set(params)
    assert all(p.source and p.unit for p in params.values())


def test_rule_helpers_give_what_their_plain_versions_give() -> None:
    from labinterp.rules import common

    rng = np.random.default_rng(7)
    n = 2000
    masks = [rng.random(n) < p for p in (0.5, 0.2, 0.7)]
    plain = [
        ";".join(k for k, m in zip("abc", row, strict=True) if m)
        for row in zip(*masks, strict=True)
    ]
    assert list(common.flags(*zip("abc", masks, strict=True))) == plain
    words = ["x", "y", "x"]
    assert list(common.choose(masks, words, "-")) == list(np.select(masks, words, "-"))

    # best_per_group: rows in (group, time) order take the quick path, shuffled rows the
    # sort; both must keep the row sort_values + drop_duplicates would keep
    group = np.sort(rng.integers(0, 300, n))
    t = np.datetime64("2024-01-01") + np.sort(rng.integers(0, 50, n)).astype("timedelta64[h]")
    t = np.sort(t.reshape(-1, 1), axis=0).ravel()  # nondecreasing within each group too
    status = rng.choice(["fired", "not_fired", "suppressed", "indeterminate"], n)
    tier = rng.choice(["a", "b", ""], n)
    frame = pd.DataFrame({"g": group, "s": status, "tier": tier, "t": t, "row": np.arange(n)})
    frame["sr"] = frame["s"].map(common.STATUS_RANK)
    frame["tr"] = frame["tier"].map({"a": 0, "b": 1}).fillna(99)

    def expected(f: pd.DataFrame) -> list[int]:
        kept = f.sort_values(["g", "sr", "tr", "t"], kind="stable").drop_duplicates("g")
        return list(kept["row"])

    def best(f: pd.DataFrame) -> list[int]:
        keep = common.best_per_group(
            f["g"].to_numpy(),
            f["s"].to_numpy(),
            f["tier"].to_numpy(),
            f["t"].to_numpy(),
            {"a": 0, "b": 1},
        )
        return list(f["row"].to_numpy()[keep])

    assert best(frame) == expected(frame)
    shuffled = frame.sample(frac=1, random_state=1).reset_index(drop=True)
    assert best(shuffled) == expected(shuffled)


def test_nearest_candidate_search_matches_a_plain_scan() -> None:
    from labinterp.episodes import _nearest_sorted

    rng = np.random.default_rng(3)
    window = pd.Timedelta(hours=48)
    w = window.value
    for duplicates in (False, True):
        n_pat, n_c, n_a = 40, 400, 600
        times = np.unique(rng.integers(0, 30 * 24, 2000)) * 3_600_000_000_000
        span = 2 * len(times) + 2
        c_pat = rng.integers(0, n_pat, n_c)
        c_rank = rng.integers(0, len(times), n_c)
        keep = np.unique(c_pat * span + c_rank, return_index=True)[1]
        c_pat, c_rank = c_pat[keep], c_rank[keep]  # one candidate per (patient, time)
        if duplicates:  # then a second one for some
            again = rng.choice(len(c_pat), 50, replace=False)
            c_pat, c_rank = np.append(c_pat, c_pat[again]), np.append(c_rank, c_rank[again])
        ckey = c_pat * span + 2 * c_rank + 1
        order = np.argsort(ckey, kind="stable")
        ckey, ct = ckey[order], times[c_rank[order]]
        assert ((ckey[1:] == ckey[:-1]).any()) == duplicates
        # anchors: some at a candidate's own time, the rest anywhere
        a_pat = np.append(c_pat[: n_a // 3], rng.integers(0, n_pat, n_a))
        a_rank = np.append(c_rank[: n_a // 3], rng.integers(0, len(times), n_a))
        akey, at = a_pat * span + 2 * a_rank + 1, times[a_rank]

        expected = []
        for k, p, t in zip(akey, a_pat, at, strict=True):
            same = ckey // span == p
            back = np.flatnonzero(same & (ckey <= k) & (ct >= t - w))
            fwd = np.flatnonzero(same & (ckey >= k) & (ct <= t + w))
            b = back[-1] if len(back) else -1
            f = fwd[0] if len(fwd) else -1
            if f >= 0 and (b < 0 or ct[f] - t < t - ct[b]):
                expected.append(f)
            else:
                expected.append(b)
        got = _nearest_sorted(akey, a_pat, at, ckey, ct, window, span)
        assert got.tolist() == expected


def test_times_with_a_fraction_of_a_second_are_read_to_the_second() -> None:
    """Exports (FHIR, LIS) can stamp a draw to the millisecond: the evidence prints such a
    time to the second, like the audit's CSV, and an undated result as null."""

    res = _results(
        [
            _row("P1", "2024-01-01 08:00:00.250", "magnesium", 0.5, 0.7, 1.0),
            _row("P1", "2024-01-01 08:00:00.250", "calcium", 1.9, 2.15, 2.55),
            _row("P2", None, "magnesium", 0.5, 0.7, 1.0),
        ]
    )
    found = interpret_results(res)
    stamps = {
        (row.patient_id, item["role"]): item["collected_at"]
        for row in found.itertuples()
        for item in row.evidence_json
    }
    assert stamps[("P1", "magnesium")] == "2024-01-01T08:00:00"
    assert stamps[("P1", "calcium")] == "2024-01-01T08:00:00"
    assert stamps[("P2", "magnesium")] is None


def test_evidence_at_is_the_latest_dated_result_a_finding_cites() -> None:
    res = _results(
        [
            _row("P1", "2024-01-01 08:00", "magnesium", 0.5, 0.7, 1.0),
            _row("P1", "2024-01-01 08:00", "calcium_ionized", 1.0, 1.15, 1.32),
            _row("P1", "2024-01-02 08:00", "pth", 3.0, 1.6, 6.9),  # cited: in the 7-day window
            _row("P1", "2024-01-03 07:00", "potassium", 4.0, 3.5, 5.0),  # episode, not cited
            _row("P2", "2024-01-01 08:00", "magnesium", 0.9, 0.7, 1.0),  # nothing to cite
        ]
    )
    found = interpret_results(res).set_index(["patient_id", "rule_id"])
    p1 = found.loc[("P1", "hypomagnesemia_hypocalcemia")]
    assert p1["status"] == "fired"
    assert p1["evidence_at"] == pd.Timestamp("2024-01-02 08:00")
    assert p1["episode_end"] == pd.Timestamp("2024-01-03 07:00")
    assert pd.isna(found.loc[("P2", "vitamin_d_resistance"), "evidence_at"])


def test_a_refractory_finding_cites_the_later_low_potassium() -> None:
    """The tier says K stayed low on a later draw: the evidence shows that draw too."""
    res = _results(
        [
            _row("P1", "2024-01-01 08:00", "magnesium", 0.5, 0.7, 1.0),
            _row("P1", "2024-01-01 08:00", "potassium", 3.0, 3.5, 5.0),
            _row("P1", "2024-01-02 10:00", "magnesium", 0.55, 0.7, 1.0),
            _row("P1", "2024-01-02 10:00", "potassium", 2.9, 3.5, 5.0, source_row=4),
        ]
    )
    found = interpret_results(res)
    p3 = found[found["rule_id"] == "hypomagnesemia_hypokalemia"].iloc[0]
    assert (p3["status"], p3["tier"]) == ("fired", "refractory")
    cited = {r["role"]: (r["value"], r["collected_at"]) for r in p3["evidence_json"]}
    assert cited["potassium"] == (3.0, "2024-01-01T08:00:00")
    assert cited["potassium_last"] == (2.9, "2024-01-02T10:00:00")
    assert p3["evidence_at"] == pd.Timestamp("2024-01-02 10:00")
    assert "2.9" in p3["evidence"] and "3.0" in p3["evidence"]


def test_each_evidence_record_names_the_file_and_row_it_came_from() -> None:
    """Row numbers alone are ambiguous when several files are read together; a derived
    value (corrected calcium) points at the calcium row it was computed from."""
    res = _results(
        [
            _row("P1", "2024-01-01 08:00", "magnesium", 0.5, 0.7, 1.0, source_file="a.csv"),
            _row("P1", "2024-01-01 08:00", "calcium", 1.9, 2.15, 2.55, source_file="b.csv"),
            _row(
                "P1", "2024-01-01 08:00", "albumin", 30, 35, 50, source_file="b.csv", source_row=9
            ),
        ]
    )
    found = interpret_results(res)
    p1 = found[found["rule_id"] == "hypomagnesemia_hypocalcemia"].iloc[0]
    cited = {
        (r["analyte"], r["derived"]): (r["source_file"], r["source_row"]) for r in p1.evidence_json
    }
    assert cited[("magnesium", False)] == ("a.csv", 1)
    assert cited[("calcium_corrected", True)] == ("b.csv", 1)
    assert cited[("albumin", False)] == ("b.csv", 9)


def test_evidence_with_no_numeric_result_and_with_extreme_numbers() -> None:
    """An analyte with text results only gives findings (no evidence to cite), and numbers
    too large to round or not finite are printed as they are or left out, never a crash
    or invalid JSON."""
    import json

    import pyarrow as pa

    from labinterp.interpret import _number, evidence_json_text

    text_only = _results(
        [_row("P1", "2024-03-01 08:30", "magnesium", np.nan, 0.7, 1.0, value_raw="hemolyzed")]
    )
    found = interpret_results(text_only)
    assert set(found["status"]) == {"indeterminate"}
    assert all(len(records) == 0 for records in found["evidence_json"])

    numbers = pa.array([1e308, float("inf"), -float("inf"), None, 1.23456789, 2.0, -0.5])
    assert _number(4)(numbers).to_pylist() == ["1e+308", None, None, None, "1.2346", "2", "-0.5"]

    huge_range = _results([_row("P1", "2024-03-01 08:30", "magnesium", 0.5, 0.0, float("inf"))])
    found = interpret_results(huge_range)
    texts = evidence_json_text(found["evidence_json"])
    cited = [json.loads(text) for text in texts]
    assert any(cited)
    for records, parsed in zip(found["evidence_json"], cited, strict=True):
        assert [r["range_high"] for r in parsed] == [None] * len(records)  # not finite
        assert [r["range_high"] for r in records] == [None] * len(records)


def test_results_contradicting_each_other_at_one_time_are_flagged() -> None:
    """Two different Mg values for one patient at one time: which one a rule cites depends
    on row order, so findings citing either carry the caveat conflicting_results; equal
    values (within 2 %) and undated rows do not."""

    def caveats(rows: list[dict]) -> dict[str, str]:
        found = interpret_results(_results(rows))
        return dict(
            zip(found["rule_id"] + "/" + found["patient_id"], found["caveats"], strict=True)
        )

    t = "2024-03-01 08:30"
    ca = _row("P1", t, "calcium", 1.9, 2.15, 2.55)
    two = caveats(
        [_row("P1", t, "magnesium", 0.5, 0.7, 1.0), ca, _row("P1", t, "magnesium", 0.9, 0.7, 1.0)]
    )
    assert two["hypomagnesemia_hypocalcemia/P1"] == "conflicting_results"
    assert two["hypomagnesemia_hypokalemia/P1"] == "conflicting_results"
    assert "conflicting" not in two["vitamin_d_resistance/P1"]
    same = caveats(
        [_row("P1", t, "magnesium", 0.5, 0.7, 1.0), ca, _row("P1", t, "magnesium", 0.505, 0.7, 1.0)]
    )
    assert "conflicting" not in same["hypomagnesemia_hypocalcemia/P1"]
    undated = caveats(
        [_row("P1", None, "magnesium", 0.5, 0.7, 1.0), _row("P1", None, "magnesium", 0.9, 0.7, 1.0)]
    )
    assert "conflicting" not in undated["hypomagnesemia_hypokalemia/P1"]


def test_tri_above_by_the_definition_of_each_comparator() -> None:
    """tri_above is computed as the mirror of tri_below; check it against what each
    comparator says about the true value, at, below and above the threshold."""

    def expected(comparator: str, v: float, t: float) -> float:
        if np.isnan(v) or np.isnan(t):
            return np.nan
        return {
            "": float(v > t),  # exact
            ">": 1.0 if v >= t else np.nan,  # true value above v
            ">=": 1.0 if v > t else np.nan,
            "<": 0.0 if v <= t else np.nan,  # true value below v
            "<=": 0.0 if v <= t else np.nan,
            "?": np.nan,
        }[comparator]

    cases = [(c, v, 1.0) for c in ("", ">", ">=", "<", "<=", "?") for v in (0.5, 1.0, 1.5, np.nan)]
    comparators = np.array([c for c, _, _ in cases], dtype=object)
    values = np.array([v for _, v, _ in cases])
    thresholds = np.array([t for _, _, t in cases])
    got = tri_above(values, comparators, thresholds)
    want = np.array([expected(*case) for case in cases])
    np.testing.assert_array_equal(got, want)


def test_evidence_json_text_is_the_records_as_json() -> None:
    """CSV output holds the evidence records as JSON text: every field, in order, text
    escaped (control characters as spaces), numbers to 6 decimals, not-finite ones null;
    an empty list is "[]" and a missing row stays missing."""
    import json

    import pyarrow as pa

    from labinterp.interpret import evidence_json_text

    names = [f.name for f in schema.EVIDENCE_RECORD]

    def record(**given: object) -> dict:
        return {name: given.get(name) for name in names}

    rows = [
        [
            record(role="magnesium", value_raw='1.2 "H"', value=0.49361234567, source_row=7),
            record(role="calcium", test="Ca\\total\x01é", value=2.0, derived=True),
        ],
        [],
        None,
        [
            record(
                role="potassium",
                value=float("inf"),
                range_low=-0.5,
                collected_at="2024-03-01T08:30:00",
            )
        ],
    ]
    column = pd.Series(
        pd.arrays.ArrowExtensionArray(pa.array(rows, type=pa.list_(schema.EVIDENCE_RECORD)))
    )
    text = evidence_json_text(column)
    assert text.iloc[1] == "[]" and pd.isna(text.iloc[2])
    first = json.loads(text.iloc[0])
    assert [list(r) for r in first] == [names, names]  # every field, in order
    assert first[0]["value_raw"] == '1.2 "H"' and first[0]["value"] == 0.493612
    assert first[0]["source_row"] == 7 and first[0]["derived"] is None
    assert first[1]["test"] == "Ca\\total é" and first[1]["value"] == 2 and first[1]["derived"]
    last = json.loads(text.iloc[3])
    assert last == [record(role="potassium", range_low=-0.5, collected_at="2024-03-01T08:30:00")]


def test_hemolysis_noted_on_one_result_holds_for_its_whole_sample() -> None:
    """A hemolysis note on the K makes the Mg of the same tube unable to prove "not low";
    a second tube drawn at the same minute, with its own specimen id, is not affected."""

    def p3_status(rows: list[dict]) -> str:
        found = interpret_results(_results(rows))
        p3 = found[found["rule_id"] == "hypomagnesemia_hypokalemia"]
        return str(p3["status"].iloc[0])

    t = "2024-03-01 08:00"
    k_low = _row("P1", t, "potassium", 3.0, 3.5, 5.0, quality="hemolyzed", specimen_id="A")
    mg_normal_same_tube = _row("P1", t, "magnesium", 0.85, 0.7, 1.0, specimen_id="A")
    mg_normal_other_tube = _row("P1", t, "magnesium", 0.85, 0.7, 1.0, specimen_id="B")
    # the normal Mg of the hemolyzed tube cannot rule out a low true Mg
    assert p3_status([k_low, mg_normal_same_tube]) == "indeterminate"
    # the other tube's normal Mg can
    assert p3_status([k_low, mg_normal_other_tube]) == "not_fired"
    # without specimen ids, one draw is one sample
    k_no_id = {**k_low, "specimen_id": None}
    mg_no_id = {**mg_normal_same_tube, "specimen_id": None}
    assert p3_status([k_no_id, mg_no_id]) == "indeterminate"
    assert p3_status([{**k_no_id, "quality": ""}, mg_no_id]) == "not_fired"


def test_every_cited_result_carries_its_own_grade() -> None:
    """The Mg/K finding's grade is the K's; a grade 4 Mg it cites is still shown, in the
    evidence text and in its record."""
    res = _results(
        [
            _row("P1", "2024-01-01 08:00", "magnesium", 0.25, 0.7, 1.0),
            _row("P1", "2024-01-01 08:00", "potassium", 3.1, 3.5, 5.1),
        ]
    )
    found = interpret_results(res)
    p3 = found[found["rule_id"] == "hypomagnesemia_hypokalemia"].iloc[0]
    assert p3.status == "fired" and p3.grade == 2
    assert "0.25 mmol/L (0.25 mmol/L; range 0.7-1 mmol/L, row; CTCAE grade 4)" in p3.evidence
    assert "range 3.5-5.1 mmol/L, row; CTCAE grade 2)" in p3.evidence
    graded = {r["analyte"]: (r["grade"], r["grade_term"]) for r in p3.evidence_json}
    assert graded == {"magnesium": (4, "hypomagnesemia"), "potassium": (2, "hypokalemia")}


def test_results_not_interpreted_are_not_graded() -> None:
    """A hemolyzed high K is not interpreted (CLINICAL.md sec. 5), so not graded; a low
    one still is. A total Ca with an albumin beside it is graded by its corrected value
    (CTCAE grades corrected Ca), not by itself. A censored value's bound is printed with
    its canonical value too."""
    res = _results(
        [
            _row("P1", "2024-01-01 08:00", "magnesium", 0.5, 0.7, 1.0),
            _row("P1", "2024-01-01 08:00", "potassium", 6.8, 3.5, 5.1, quality="hemolyzed"),
            _row("P2", "2024-01-01 08:00", "magnesium", 0.5, 0.7, 1.0),
            _row("P2", "2024-01-01 08:00", "potassium", 2.4, 3.5, 5.1, quality="hemolyzed"),
            _row("P3", "2024-01-01 08:00", "magnesium", 0.5, 0.7, 1.0),
            _row("P3", "2024-01-01 08:00", "calcium", 1.70, 2.15, 2.55),
            _row("P3", "2024-01-01 08:00", "albumin", 20, 35, 50),
            _row("P4", "2024-01-01 08:00", "magnesium", 0.5, 0.7, 1.0, comparator="<"),
        ]
    )
    found = interpret_results(res)

    def graded(patient: str, rule: str) -> dict:
        row = found[(found["patient_id"] == patient) & (found["rule_id"] == rule)].iloc[0]
        return {(r["analyte"], r["derived"]): r["grade"] for r in row.evidence_json}

    k_rule, ca_rule = "hypomagnesemia_hypokalemia", "hypomagnesemia_hypocalcemia"
    assert graded("P1", k_rule)[("potassium", False)] is None
    assert graded("P2", k_rule)[("potassium", False)] == 4
    ca = graded("P3", ca_rule)
    # 1.70 + 0.02 x (40 - 20) = 2.10 mmol/L: grade 1, where the total alone is grade 3
    assert ca[("calcium", False)] is None and ca[("calcium_corrected", True)] == 1
    p4 = found[(found["patient_id"] == "P4") & (found["rule_id"] == ca_rule)].iloc[0]
    assert "(<0.5 mmol/L; range" in p4.evidence


def test_every_citation_key_is_listed_with_its_reference() -> None:
    """A finding's citations (S59, ...) and the data files' sources are keys a reader
    looks up in reference_ranges/sources.csv."""
    import csv
    import re

    from labinterp.resources import reference_file

    with reference_file("sources.csv").open(encoding="utf-8") as fh:
        listed = {row["key"]: row["reference"] for row in csv.DictReader(fh)}
    assert all(listed.values())
    used = {key for rule in REGISTRY for key in rule.citations}
    folder = reference_file("sources.csv").parent
    for path in folder.iterdir():
        if path.is_file() and path.name != "sources.csv":
            used |= set(re.findall(r"\bS\d+\b", path.read_text(encoding="utf-8")))
    assert used - set(listed) == set()


def test_a_grade_from_a_censored_result_reads_as_a_least_one(tmp_path: Path) -> None:
    """ "<0.5 mmol/L" Mg is grade 2 or worse: the evidence says "grade >=2", the finding
    graded on it carries grade_at_least and the terminal table shows ">=2"; an exact
    value, or a finding graded on another result, does not."""
    from labinterp.cli_interpret import compact

    path = tmp_path / "lab.csv"
    rows = "".join(
        f"{pid},2024-01-01 08:00,Magnesium,{mg},mmol/L,0.70-1.00\n"
        f"{pid},2024-01-01 08:00,Calcium ionized,1.00,mmol/L,1.15-1.32\n"
        f"{pid},2024-01-01 08:00,Potassium,3.1,mmol/L,3.5-5.1\n"
        for pid, mg in (("P1", "<0.5"), ("P2", "0.45"))
    )
    path.write_text("patient_id,collected_at,test,result,unit,reference_range\n" + rows)
    found = interpret(path)
    fired = found[found["status"] == "fired"]
    p1_ca, p2_ca = (
        fired[
            (fired["patient_id"] == p) & (fired["rule_id"] == "hypomagnesemia_hypocalcemia")
        ].iloc[0]
        for p in ("P1", "P2")
    )
    assert "Magnesium <0.5 mmol/L" in p1_ca["evidence"]
    assert "CTCAE grade \u22652)" in p1_ca["evidence"]
    assert (p1_ca["grade"], p1_ca["caveats"].split(";")) == (2, ["grade_at_least"])
    assert "CTCAE grade 2)" in p2_ca["evidence"] and "\u2265" not in p2_ca["evidence"]
    assert p2_ca["grade"] == 2 and "grade_at_least" not in p2_ca["caveats"]
    # the Mg/K finding is graded on the K (3.1 mmol/L: grade 2, exact)
    p1_k = fired[(fired["patient_id"] == "P1") & (fired["rule_id"] == "hypomagnesemia_hypokalemia")]
    assert "grade_at_least" not in p1_k["caveats"].iloc[0]
    shown = compact(fired).set_index(["patient_id", "rule_id"])["grade"]
    assert shown[("P1", "hypomagnesemia_hypocalcemia")] == "\u22652"
    assert shown[("P2", "hypomagnesemia_hypocalcemia")] == "2"
    assert shown[("P1", "hypomagnesemia_hypokalemia")] == "2"


def test_a_summed_vitamin_d_is_derived_cited_with_its_components(tmp_path: Path) -> None:
    """D2 and D3 of a draw without a total: both rows are used (none rejected), and the
    total summed from them is a derived observation that evidence marks as derived and
    cites beside both components; its range is the bundled total's (the components'
    printed ranges are not the total's) and only it adds a range origin."""
    path = tmp_path / "export.csv"
    path.write_text(
        "patient_id,collected_at,test,value,unit,reference_range\n"
        "A,2024-01-02 08:00,25-OH Vitamin D3,12,ng/mL,\n"
        "A,2024-01-02 08:00,25-OH Vitamin D2,3,ng/mL,\n"
        "A,2024-01-02 08:00,Magnesium,1.5,mg/dL,1.6-2.6\n"
    )
    res = labinterp.read(path)
    assert len(res.results) == 3 and len(res.rejected) == 0
    findings = interpret_results(res.results)
    row = findings[findings["rule_id"] == "vitamin_d_resistance"].iloc[0]
    records = {r["role"]: r for r in row["evidence_json"]}
    total = records["vitamin_d"]
    assert total["derived"] and total["analyte"] == "vitamin_d_25oh"
    assert total["value"] == pytest.approx(12 * 2.496 + 3 * 2.423, rel=1e-3)
    assert (total["value_reported"], total["unit_reported"]) == (15.0, "ng/mL")
    assert (total["range_low_reported"], total["range_origin"]) == (20.0, "bundled")
    assert [records[r]["source_row"] for r in ("vitamin_d_d2", "vitamin_d_d3")] == [3, 2]
    assert not records["vitamin_d_d2"]["derived"]
    assert row["range_origin"] == "row;bundled"
