"""Results -> observations, draws and episodes, ready for guards and rules.

* A **draw** is one blood sample: rows of a patient with the same specimen id, or else the
  same collection time. Rows without any date (a one-sample survey) form one draw per
  patient; internally they get a sentinel time far from every real date, so they pair only
  with each other, and findings show NaT for their episode span.
* An **episode** is a run of a patient's draws in which each draw is within the
  electrolyte window (parameter `window_electrolytes`) of the previous one.
* Each observation carries tri-state flags `low` and `high` (1.0 yes, 0.0 no, NaN
  unknown) computed against its own range, honouring censoring: `<0.5` with LLN 0.7 is
  low; `>10` is high when ULN <= 10 but says nothing about low-ness the other way round.
  Text results have no value and never get a state. An unknown range gives an unknown
  state, never "normal".
* Derived values: albumin-corrected calcium (S18) from a total Ca and the nearest albumin
  within the electrolyte window, and total 25-OH vitamin D from the D2 and D3 of a draw
  printed without a total (reference_ranges/vitamin_d_components.toml), appended as extra
  observations with `derived` set; CKD stage from eGFR (S28).

Pairing (`nearest`) finds, for each anchor time, the nearest numeric observation of one
analyte within a window (same draw first, since its distance is zero).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from labinterp import units
from labinterp.parameters import as_compared, duration, number
from labinterp.readers.duplicates import same_number

# Dates in real exports run from 1900 to 2200 (MIMIC shifts into the 2100s); undated draws
# are placed here so no window can reach them from a real date.
SENTINEL = pd.Timestamp("1700-01-01")

CORRECTED_CALCIUM = "calcium_corrected"
VITAMIN_D = "vitamin_d_25oh"
VITAMIN_D2, VITAMIN_D3 = "vitamin_d2_25oh", "vitamin_d3_25oh"
# The evidence label of a total 25-OH vitamin D summed here, as "corrected Ca (derived)".
SUMMED_VITAMIN_D_LABEL = "25-OH vitamin D, D2 + D3 (derived)"
# The units of the conventional form of the calcium correction (CLINICAL.md sec. 3):
# Ca in mg/dL + coefficient x (reference - albumin in g/dL).
CONVENTIONAL_CALCIUM_UNIT = "mg/dL"
CONVENTIONAL_ALBUMIN_UNIT = "g/dL"

CENSOR_BELOW = ("<", "<=")
CENSOR_ABOVE = (">", ">=")
# The comparator of a derived value computed from a censored input (corrected calcium from
# "<1.5" albumin): neither exact nor bounded in a known direction, so it gives no state.
UNBOUNDED = "?"

# Text columns only evidence (and grading) reads. They stay out of obs, which rules filter
# many times, and are read per observation through `Context.codes` and `Context.text_of`
# when evidence is built (obs column `src` is the row in `Context.text`).
TEXT_FIELDS = (
    "test_label",
    "value_raw",
    "text_result",
    "unit_reported",
    "unit",
    "range_origin",
    "source_file",
)

# The RESULTS columns build reads (the engine needs no others).
INPUT_COLUMNS = tuple(
    dict.fromkeys(
        (
            "patient_id",
            "collected_at",
            "specimen_id",
            "analyte",
            "comparator",
            "value",
            "range_low",
            "range_high",
            "quality",
            "mg_lowering_medicines",
            "result_status",
            "value_reported",
            "range_low_reported",
            "range_high_reported",
            "source_row",
            # the bundled range of a derived 25-OH vitamin D is chosen by them
            "sex",
            "age_years",
            *TEXT_FIELDS,
        )
    )
)


@dataclass
class Context:
    """Everything a rule may read. Built once per call of interpret_results."""

    obs: pd.DataFrame  # one row per observation; obs_id == position, sorted by (pat, t)
    episodes: pd.DataFrame  # one row per patient episode; episode_id == row position
    patients: pd.DataFrame  # pat code -> patient_id, first/last time, sex, age
    vitamin_d_guideline: str = "iom2011"
    # TEXT_FIELDS of each observation, indexed by obs["src"]: the RESULTS rows, then the
    # derived rows (one chunk each, so the results columns are not copied)
    text: dict[str, pa.ChunkedArray] = field(default_factory=dict)
    extras: dict[str, object] = field(default_factory=dict)
    # Analytes, values and times of observations never change after `build` (guards only
    # touch the flags), so masks and search keys over them are computed once and shared.
    _cache: dict[object, Any] = field(default_factory=dict, repr=False)

    def codes(self, column: str) -> tuple[np.ndarray, pa.Array]:
        """A text column of the observations as a code per observation (-1: missing) and
        the distinct values the codes index: obs "analyte" or "comparator", or one of
        TEXT_FIELDS. Computed once: rules test and evidence formats distinct values, not
        a million rows."""
        key = ("codes", column)
        if key not in self._cache:
            if column in TEXT_FIELDS:
                # one encoding of the whole column (cheaper than copying the strings of
                # the observations first); the chunks share one dictionary
                enc = pc.dictionary_encode(self.text[column]).unify_dictionaries()
                values = enc.chunk(0).dictionary if enc.num_chunks else pa.array([], pa.string())
                per_src = np.concatenate(
                    [np.zeros(0, "int64")]
                    + [pc.fill_null(c.indices, -1).to_numpy().astype("int64") for c in enc.chunks]
                )
                codes = per_src[self.obs["src"].to_numpy()]
            else:
                codes, uniques = pd.factorize(self.obs[column].to_numpy())
                values = pa.array(np.asarray(uniques, dtype=object), type=pa.string())
            self._cache[key] = (codes, values)
        return self._cache[key]

    def is_analyte(self, *names: str) -> np.ndarray:
        """Boolean mask over obs: the observation is one of the analytes `names`."""
        if names not in self._cache:
            codes, values = self.codes("analyte")
            known = np.append(np.isin(values.to_numpy(zero_copy_only=False), names), False)
            self._cache[names] = known[codes]  # missing (-1) picks the trailing False
        return self._cache[names]

    def text_of(self, column: str, ids: np.ndarray) -> pa.Array:
        """TEXT_FIELDS `column` of observations `ids`, as one arrow string array."""
        src = self.obs["src"].to_numpy()[ids]
        return pc.cast(pc.take(self.text[column], pa.array(src)).combine_chunks(), pa.string())

    def comparator(self) -> np.ndarray:
        """The comparator of each observation as fixed-width numpy text ("", "<", ...),
        which tri_below/tri_above compare much faster than Python string objects."""
        if "comparator" not in self._cache:
            codes, values = self.codes("comparator")
            names = np.asarray([*values.to_pylist(), ""], dtype=str)
            self._cache["comparator"] = names[codes]  # missing (-1) -> ""
        return self._cache["comparator"]

    def numeric_ids(self, analyte: str) -> np.ndarray:
        """obs ids of the numeric observations of `analyte`, in (pat, t) order."""
        key = ("numeric", analyte)
        if key not in self._cache:
            mask = self.is_analyte(analyte) & self.obs["has_value"].to_numpy()
            self._cache[key] = np.flatnonzero(mask)
        return self._cache[key]

    def tri(
        self,
        analyte: str,
        test: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
        threshold: str,
    ) -> np.ndarray:
        """`test` (tri_below or tri_above) of the numeric `analyte` observations against the
        rule parameter `threshold` (compared as parameters.as_compared says), as a state per
        observation (NaN for all other observations): rules compare one analyte at a time,
        a small part of a million rows."""
        ids = self.numeric_ids(analyte)
        value = self.obs["value"].to_numpy(dtype="float64")[ids]
        reported = self.obs["value_reported"].to_numpy(dtype="float64")[ids]
        values, limits = as_compared(threshold, value, reported)
        out = np.full(len(self.obs), np.nan)
        out[ids] = test(values, self.comparator()[ids], limits)
        return out

    def t_ns(self) -> np.ndarray:
        """Observation times as int64 nanoseconds."""
        if "t_ns" not in self._cache:
            self._cache["t_ns"] = _ns(self.obs["t"].to_numpy())
        return self._cache["t_ns"]

    def search_key(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct times, key per obs): see `_pair_keys` (build fills it)."""
        if "times" not in self._cache:
            t = self.t_ns()
            times = np.unique(t)
            self._cache["times"] = times
            self._cache["okey"] = _pair_keys(self.obs["pat"].to_numpy(), t, times)
        return self._cache["times"], self._cache["okey"]


def _comparator_classes(comparator: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of each comparator spelling in `comparator`, classified once per distinct value
    (comparisons on a million-row object array cost more than hashing it once)."""
    arr = np.asarray(comparator)
    if arr.dtype.kind == "U":  # fixed-width text (Context.comparator): compare in C

        def mask(*wanted: str) -> np.ndarray:
            out = np.zeros(len(arr), dtype=bool)
            for w in wanted:
                out |= arr == w
            return out

    else:
        codes, uniques = pd.factorize(np.asarray(arr, dtype=object))
        names = list(uniques)

        def mask(*wanted: str) -> np.ndarray:
            hit = np.array([u in wanted for u in names] + [False], dtype=bool)
            return hit[codes]  # code -1 (missing) picks the trailing False

    # one pass per spelling; the classes are unions of these
    one = {w: mask(w) for w in (*CENSOR_BELOW, *CENSOR_ABOVE, UNBOUNDED)}
    below = np.logical_or.reduce([one[w] for w in CENSOR_BELOW])
    above = np.logical_or.reduce([one[w] for w in CENSOR_ABOVE])
    # "censored": anything but an exact value
    return {"censored": below | above | one[UNBOUNDED], "below": below, "above": above, **one}


# Albumin enters corrected Ca with a minus sign: a bound on albumin is the opposite bound on
# the corrected value ("<1.5" g/dL albumin: the corrected Ca is above the computed one).
_OPPOSITE = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _corrected_comparator(calcium: np.ndarray, albumin: np.ndarray) -> np.ndarray:
    """The comparator of each corrected Ca from those of its calcium and albumin.

    Exact albumin keeps the calcium's comparator; a censored albumin bounds the corrected
    value the opposite way, unless the calcium is censored the other way, when nothing is
    known (UNBOUNDED: no low/high state at all).
    """
    calcium = np.asarray(calcium, dtype=object)
    albumin = np.asarray(albumin, dtype=object)
    from_albumin = np.select(
        [albumin == c for c in _OPPOSITE], list(_OPPOSITE.values()), default=""
    ).astype(object)
    out = np.where(from_albumin == "", calcium, from_albumin)
    # +1 bounded below (">", ">="), -1 bounded above, 0 exact
    a_way = np.isin(from_albumin, CENSOR_ABOVE).astype(int) - np.isin(from_albumin, CENSOR_BELOW)
    c_way = np.isin(calcium, CENSOR_ABOVE).astype(int) - np.isin(calcium, CENSOR_BELOW)
    same_way = (a_way == 0) | (c_way == 0) | (a_way == c_way)
    return np.where(same_way, out, UNBOUNDED)


def tri_below(
    value: np.ndarray,
    comparator: np.ndarray,
    threshold: np.ndarray,
    classes: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """1.0 when the true value is surely below `threshold`, 0.0 when surely not, else NaN.
    `classes`: _comparator_classes(comparator), when the caller has it already."""
    out = np.full(len(value), np.nan)
    c = _comparator_classes(comparator) if classes is None else classes
    ok = ~np.isnan(value) & ~np.isnan(threshold)
    exact = ok & ~c["censored"]
    with np.errstate(invalid="ignore"):
        out[exact] = (value[exact] < threshold[exact]).astype(float)
        lt = ok & c["<"]
        out[lt & (value <= threshold)] = 1.0
        le = ok & c["<="]
        out[le & (value < threshold)] = 1.0
        gt = ok & c["above"]
        out[gt & (value >= threshold)] = 0.0
    return out


def tri_above(
    value: np.ndarray,
    comparator: np.ndarray,
    threshold: np.ndarray,
    classes: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """1.0 when the true value is surely above `threshold`, 0.0 when surely not, else NaN.

    The mirror of tri_below: a value is above a threshold exactly when its negative is
    below the threshold's negative, with every comparator turned around ("<" -> ">")."""
    c = _comparator_classes(comparator) if classes is None else classes
    turned = {_TURNED.get(k, k): v for k, v in c.items()}
    return tri_below(-np.asarray(value), comparator, -np.asarray(threshold), turned)


# comparator classes with the inequality turned around (see tri_above)
_TURNED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "below": "above", "above": "below"}


def _per_distinct(column: pd.Series, *tests: Callable[[pd.Series], pd.Series]) -> list[np.ndarray]:
    """Each boolean test run once per distinct value of a text column (missing -> False).

    Quality notes and text results repeat a handful of values over a million rows.
    """
    codes, uniques = pd.factorize(column)
    distinct = pd.Series(uniques, dtype="string")
    hits = [test(distinct).fillna(False).to_numpy(dtype=bool) for test in tests]
    return [np.append(hit, False)[codes] for hit in hits]


def _flag(name: str) -> Callable[[pd.Series], pd.Series]:
    """The test for quality flag `name` in ';'-joined quality notes."""
    pattern = rf"(?:^|;)\s*{name}\s*(?:;|$)"
    return lambda s: s.str.contains(pattern, regex=True)


def build(results: pd.DataFrame, *, vitamin_d_guideline: str = "iom2011") -> Context:
    """Observations with draw and episode ids, tri-state flags and derived values."""
    window = duration("window_electrolytes")
    df = results.reset_index(drop=True)
    n = len(df)
    pat_codes, pat_uniques = pd.factorize(df["patient_id"], sort=True)
    collected = df["collected_at"]
    spec = df["specimen_id"]
    has_spec = spec.notna() & (spec.fillna("").str.strip() != "")
    if has_spec.any():
        # the earliest time of each (patient, specimen), grouped on one integer key
        with_spec = has_spec.to_numpy()
        spec_codes, specs = pd.factorize(spec[with_spec])
        group = pat_codes[with_spec].astype("int64") * (len(specs) + 1) + spec_codes
        unified = collected[with_spec].groupby(group, sort=False).transform("min")
        collected = collected.copy()
        collected.loc[unified.index] = unified
    dated = collected.notna().to_numpy()
    t = collected.fillna(SENTINEL).to_numpy()

    # Analytes as codes into their sorted names, so that a code is also the analyte's
    # rank in the sort below. The names build itself looks for are always in the list
    # (an absent one simply has no rows).
    codes, uniques = pd.factorize(df["analyte"], sort=True)
    seen = np.asarray(uniques, dtype=object)
    built = ("albumin", "calcium", CORRECTED_CALCIUM, VITAMIN_D, VITAMIN_D2, VITAMIN_D3)
    names = np.unique(np.append(seen, built))
    analyte = np.append(np.searchsorted(names, seen), -1)[codes]  # missing stays -1
    code = {a: int(np.searchsorted(names, a)) for a in built}
    comparator = df["comparator"].fillna("").astype(str).to_numpy()
    value = _floats(df["value"])
    lo = _floats(df["range_low"])
    hi = _floats(df["range_high"])
    lo_rep = _floats(df["range_low_reported"])
    hi_rep = _floats(df["range_high_reported"])
    has_value = ~np.isnan(value)
    text = {name: _chunked(df[name]) for name in TEXT_FIELDS}

    # One int64 per row that sorts like (pat, t), for sorting and nearest-time searches:
    # see _pair_keys (every row's time is in `times`). Context.search_key reuses it.
    t_ns = _ns(t)
    t_rank, times = pd.factorize(t_ns, sort=True)  # t_rank: position in sorted `times`
    span = 2 * len(times) + 2
    key = pat_codes * span + 2 * t_rank + 1

    # Albumin-corrected Ca (S18): for each numeric total Ca with an albumin nearby, a
    # derived copy of the calcium row with its own analyte, value and flags.
    ca_rows, alb_rows = _corrected_calcium_pairs(
        key,
        pat_codes,
        t_ns,
        span,
        has_value & (analyte == code["calcium"]),
        has_value & (analyte == code["albumin"]),
        window,
    )
    reported = _floats(df["value_reported"])
    corr, corr_reported, conventional = _corrected_calcium(value, reported, ca_rows, alb_rows)
    corr_comp = _corrected_comparator(comparator[ca_rows], comparator[alb_rows])
    if len(ca_rows):
        _append_derived_text(text, ca_rows, corr_reported, corr_comp, conventional)
    # Total 25-OH vitamin D of a draw printed as D2 and D3 without a total (the reader
    # keeps such pairs only): a derived copy of the D3 row
    d2_rows, d3_rows = _same_draw_pairs(
        key, has_value & (analyte == code[VITAMIN_D2]), has_value & (analyte == code[VITAMIN_D3])
    )
    vd = _summed_vitamin_d(df, value, reported, comparator, text, d2_rows, d3_rows)
    if len(d3_rows):
        vd.choose_bounds(vitamin_d_guideline)
        vd.append_text(text, d3_rows)
    n_ca, n_vd = len(ca_rows), len(d3_rows)

    def derived_of(ca_values: np.ndarray, vd_values: np.ndarray) -> np.ndarray:
        """One value per derived row: the corrected Ca rows', then the vitamin D rows'."""
        return np.concatenate([np.asarray(ca_values), np.asarray(vd_values)])

    # The order of sort_values(["pat", "t", "analyte", "source_row"], kind="stable") over
    # the results rows followed by the derived rows, found on integer keys; then every
    # column is gathered once in that order. `order` is also the observation's row in
    # `text` (results rows, then derived row k at n + k).
    copied = np.concatenate([np.arange(n), ca_rows, d3_rows])  # the results row each copies
    row_number = df["source_row"].to_numpy(dtype="float64", na_value=np.inf)[copied]  # missing last
    derived_analyte = derived_of(
        np.full(n_ca, code[CORRECTED_CALCIUM]), np.full(n_vd, code[VITAMIN_D])
    )
    rank = np.append(analyte, derived_analyte)
    if len(key) == 0 or int(key.max()) < 2**62 // (len(names) + 1):
        # (pat, t, analyte) in one int64 when it fits: one sort pass fewer
        order = np.lexsort((row_number, key[copied] * (len(names) + 1) + (rank + 1)))
    else:
        order = np.lexsort((row_number, rank, key[copied]))
    row = copied[order]
    derived = order >= n
    k = order[derived] - n  # which derived row

    def column(base: np.ndarray, derived_values: np.ndarray | None = None) -> np.ndarray:
        """`base` (one value per results row) in observation order, with `derived_values`
        (one per derived row) on the derived observations."""
        out = base[row]
        if derived_values is not None:
            out[derived] = derived_values[k]
        return out

    obs_id = np.empty(len(order), dtype="int64")
    obs_id[order] = np.arange(len(order))  # the first n entries: obs id of results rows
    hemolyzed, contam_comment, supplement, mg_lowering = _per_distinct(
        df["quality"].astype("string"),
        _flag("hemolyzed"),
        _flag("contamination_comment"),
        _flag("vitamin_d_supplement"),
        _flag("mg_lowering_medication"),
    )
    hemolyzed = _whole_sample(hemolyzed, pat_codes, t_rank, df["specimen_id"])
    has_text, contam_text = _per_distinct(
        df["text_result"],
        lambda s: s.str.strip() != "",
        lambda s: s.str.contains("CONTAMINAT", case=False),
    )
    preliminary = _preliminary(df["result_status"])
    analyte_obs = column(analyte, derived_analyte)
    none = np.zeros(n_ca + n_vd, dtype=bool)  # a flag no derived row carries
    classes = _comparator_classes(comparator)  # for both low and high
    obs = pd.DataFrame(
        {
            "pat": column(pat_codes),
            "src": order,
            "t": column(t),
            "dated": column(dated),
            # plain object arrays: rules read these often, and an arrow-backed column
            # would be converted to Python objects on every read
            "analyte": pd.Series(np.array([*names, None], dtype=object)[analyte_obs], dtype=object),
            "has_value": column(has_value),
            "has_text": column(has_text),
            "low": column(
                tri_below(value, comparator, lo, classes),
                derived_of(
                    tri_below(corr, corr_comp, lo[ca_rows]),
                    tri_below(vd.value, vd.comparator, vd.range_low),
                ),
            ),
            "high": column(
                tri_above(value, comparator, hi, classes),
                derived_of(
                    tri_above(corr, corr_comp, hi[ca_rows]),
                    tri_above(vd.value, vd.comparator, vd.range_high),
                ),
            ),
            "hemolyzed": column(hemolyzed, none),
            "contam_comment": column(contam_comment | contam_text),
            "derived": derived,
            "contaminated": False,
            # derived Ca: the obs ids of the total Ca and the albumin it was worked out from
            "calcium_obs": column(np.full(n, -1), derived_of(obs_id[ca_rows], np.full(n_vd, -1))),
            "albumin_obs": column(np.full(n, -1), derived_of(obs_id[alb_rows], np.full(n_vd, -1))),
            "comparator": pd.Series(
                column(comparator.astype(object), derived_of(comparator[ca_rows], vd.comparator)),
                dtype=object,
            ),
            "value_reported": column(reported, derived_of(corr_reported, vd.reported)),
            "value": column(value, derived_of(corr, vd.value)),
            # derived Ca: its Ca's range; derived vitamin D: the bundled total's (a range
            # printed for a component is not the total's)
            "range_low": column(lo, derived_of(lo[ca_rows], vd.range_low)),
            "range_high": column(hi, derived_of(hi[ca_rows], vd.range_high)),
            # derived Ca is reported in the unit it was worked out in (see _corrected_calcium)
            "range_low_reported": column(
                lo_rep,
                derived_of(np.where(conventional, lo_rep[ca_rows], lo[ca_rows]), vd.range_low_rep),
            ),
            "range_high_reported": column(
                hi_rep,
                derived_of(np.where(conventional, hi_rep[ca_rows], hi[ca_rows]), vd.range_high_rep),
            ),
            "source_row": df["source_row"].array.take(row),
            "obs_id": np.arange(len(order)),
        }
    )

    # draws and episodes
    pat = obs["pat"].to_numpy()
    tt = obs["t"].to_numpy()
    obs["conflicting"] = _conflicting(
        pat, tt, analyte_obs, obs["value"].to_numpy(), obs["dated"].to_numpy()
    )
    if preliminary.any():  # most exports mark nothing preliminary: no column to carry
        # a derived value is as preliminary as the results it was worked out from
        obs["preliminary"] = column(
            preliminary,
            derived_of(
                preliminary[ca_rows] | preliminary[alb_rows],
                preliminary[d2_rows] | preliminary[d3_rows],
            ),
        )
    if n_vd:  # a summed vitamin D: the obs ids of the D2 and D3 it was summed from
        obs["vitamin_d2_obs"] = column(
            np.full(n, -1), derived_of(np.full(n_ca, -1), obs_id[d2_rows])
        )
        obs["vitamin_d3_obs"] = column(
            np.full(n, -1), derived_of(np.full(n_ca, -1), obs_id[d3_rows])
        )
    # rows whose medication column names vitamin D, or a medicine that lowers Mg
    # (catalog.names_medicine): only exports with a medication column can say so
    for name, flagged in (
        ("vitamin_d_supplement", supplement),
        ("mg_lowering_medication", mg_lowering),
    ):
        if flagged.any():
            obs[name] = column(flagged, none)
    if mg_lowering.any():  # which medicines, for the finding's note
        medicines = df["mg_lowering_medicines"].fillna("").to_numpy(dtype=object)
        obs["mg_lowering_medicines"] = column(medicines, np.full(n_ca + n_vd, "", dtype=object))
    new_draw = np.ones(len(obs), dtype=bool)
    new_episode = np.ones(len(obs), dtype=bool)
    if len(obs):
        same_pat = pat[1:] == pat[:-1]
        gap = tt[1:] - tt[:-1]
        new_draw[1:] = ~same_pat | (gap > np.timedelta64(0))
        new_episode[1:] = ~same_pat | (gap > window.to_timedelta64())
    obs["draw_id"] = np.cumsum(new_draw) - 1
    obs["episode_id"] = np.cumsum(new_episode) - 1

    # Episodes and patients are runs of rows (rows are sorted by patient, then time): per
    # run its first row, first and last time, and earliest and latest dated time.
    episode_first, t_first, t_last, start, end = _runs(new_episode, tt, obs["dated"].to_numpy())
    episodes = pd.DataFrame(
        {
            "episode_id": np.arange(len(episode_first)),
            "pat": pat[episode_first],
            "start": start,
            "end": end,
            "t_first": t_first,
            "t_last": t_last,
        }
    )
    new_patient = np.ones(len(obs), dtype=bool)
    new_patient[1:] = pat[1:] != pat[:-1]
    patient_first, _, _, start, end = _runs(new_patient, tt, obs["dated"].to_numpy())
    patients = pd.DataFrame(
        {
            "pat": pat[patient_first],
            "patient_id": pd.array(
                np.asarray(pat_uniques)[pat[patient_first]], dtype="string[pyarrow]"
            ),
            "start": start,
            "end": end,
        }
    )
    ctx = Context(
        obs=obs,
        episodes=episodes,
        patients=patients,
        vitamin_d_guideline=vitamin_d_guideline,
        text=text,
    )
    ctx._cache[("codes", "analyte")] = (analyte_obs, pa.array(names, type=pa.string()))
    ctx._cache["times"] = times  # Context.search_key
    ctx._cache["okey"] = column(key)
    return ctx


def _runs(
    starts: np.ndarray, t: np.ndarray, dated: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the runs of rows that begin where `starts` is true (times `t` nondecreasing in
    a run): each run's first row, first and last time, and earliest and latest time of
    its `dated` rows (NaT when it has none)."""
    first = np.flatnonzero(starts)
    last = np.append(first[1:], len(starts)) - 1
    ns = t.view("int64")
    nat, never = np.iinfo("int64").min, np.iinfo("int64").max  # NaT is the smallest int64
    earliest = np.minimum.reduceat(np.where(dated, ns, never), first) if len(first) else first
    latest = np.maximum.reduceat(np.where(dated, ns, nat), first) if len(first) else first
    earliest = np.where(earliest == never, nat, earliest)
    return first, t[first], t[last], earliest.view(t.dtype), latest.view(t.dtype)


def sample_ids(patient: np.ndarray, time: np.ndarray, specimen: np.ndarray) -> np.ndarray:
    """A dense id per row for its sample: one patient, collection time and specimen id,
    each given as non-negative integer codes (rows without a specimen id share one code).

    The engine spreads hemolysis over a sample, and the audit counts samples, by this.
    """
    p, t, s = (np.asarray(a, dtype="int64") for a in (patient, time, specimen))
    # two steps, so that the keys stay far below 2**63 whatever the counts
    draw = pd.factorize(p * (int(t.max()) + 1) + t)[0].astype("int64")
    return pd.factorize(draw * (int(s.max()) + 1) + s)[0]


def _whole_sample(
    flagged: np.ndarray, pat: np.ndarray, t_rank: np.ndarray, specimen: pd.Series
) -> np.ndarray:
    """`flagged` spread from a row to every row of the same sample.

    Hemolysis is a property of the tube, and labs often note it on one result only (on
    the K: "HEMOLYSIS FALSELY ELEVATES K"), which leaves the Mg of the same tube just as
    unreliable. A sample is a draw (same patient and time, times already unified by
    specimen id), split by specimen id: two tubes drawn at the same minute with their own
    ids stay apart, and rows without an id are one sample per draw.
    """
    if not flagged.any():
        return flagged
    # only the rows of patients with a flagged row can change: a few in a million
    of_flagged = np.zeros(int(pat.max()) + 1, dtype=bool)
    of_flagged[pat[flagged]] = True
    rows = np.flatnonzero(of_flagged[pat])
    spec = pd.factorize(specimen.take(rows).fillna("").str.strip())[0]
    sample = sample_ids(pat[rows], t_rank[rows], spec)
    hit = np.zeros(int(sample.max()) + 1, dtype=bool)
    hit[sample[flagged[rows]]] = True
    out = flagged.copy()
    out[rows] = hit[sample]
    return out


def _chunked(column: pd.Series) -> pa.ChunkedArray:
    """A RESULTS text column as arrow strings (no copy for arrow-backed columns)."""
    arr = column.array
    if hasattr(arr, "__arrow_array__"):
        out = pa.chunked_array(pa.array(arr))
    else:
        out = pa.chunked_array([pa.array(column.astype(object).where(column.notna(), None))])
    return out.cast(pa.string())


def _floats(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype="float64", na_value=np.nan)


def _preliminary(status: pd.Series) -> np.ndarray:
    """True for a result the lab marked preliminary: it may still change, so findings
    citing one say so (caveat `preliminary_result`)."""
    if not status.notna().any():  # most exports print no status
        return np.zeros(len(status), dtype=bool)
    return (status == "preliminary").to_numpy(dtype=bool, na_value=False)


def _conflicting(
    pat: np.ndarray, t: np.ndarray, analyte: np.ndarray, value: np.ndarray, dated: np.ndarray
) -> np.ndarray:
    """True for a numeric result with another result of the same test for the same patient
    at the same time whose value differs (beyond the 2 % that makes two rows one result,
    see readers.duplicates). Rows are in (patient, time, analyte) order, so such results
    are neighbours. Which of them a rule uses is a matter of row order, so findings
    citing one say so (caveat `conflicting_results`). Undated rows share no time."""
    out = np.zeros(len(pat), dtype=bool)
    if len(pat) < 2:
        return out
    numeric = ~np.isnan(value)
    differs = numeric[1:] & numeric[:-1] & ~same_number(value[1:], value[:-1])
    pair = (
        (pat[1:] == pat[:-1])
        & (t[1:] == t[:-1])
        & (analyte[1:] == analyte[:-1])
        & dated[1:]
        & dated[:-1]
        & differs
    )
    out[1:] |= pair
    out[:-1] |= pair
    return out


def _corrected_calcium_pairs(
    key: np.ndarray,
    pat: np.ndarray,
    t: np.ndarray,
    span: int,
    is_ca: np.ndarray,
    is_alb: np.ndarray,
    window: pd.Timedelta,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the total Ca results with an albumin within `window`, and the row of
    that albumin (the nearest one; ties: the earlier time, then the later row). `key`,
    `pat` (patient codes), `t` (ns) and `span` are the search keys of all rows (see
    `_pair_keys`)."""
    ca, alb = np.flatnonzero(is_ca), np.flatnonzero(is_alb)
    alb = alb[np.argsort(key[alb], kind="stable")]
    pos = _nearest_sorted(key[ca], pat[ca], t[ca], key[alb], t[alb], window, span)
    ok = pos >= 0
    return ca[ok], alb[pos[ok]]


def _corrected_calcium(
    value: np.ndarray, reported: np.ndarray, ca_rows: np.ndarray, alb_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Albumin-corrected Ca of each (total Ca, albumin) pair (S18): in the canonical unit,
    as reported, and whether it was worked out in the conventional form.

    The formula is printed twice (CLINICAL.md sec. 3): Ca + 0.02 x (40 - albumin g/L) in
    mmol/L, and Ca + 0.8 x (4.0 - albumin g/dL) in mg/dL. The two are rounded versions of
    each other, so a Ca reported in mg/dL is corrected with the mg/dL form and reported in
    mg/dL, to be compared with its range in mg/dL (8.9 mg/dL with albumin 4.5 g/dL is 8.5
    mg/dL, on the lower limit; the mmol/L form gives 2.1207, under 8.5 mg/dL's 2.1209).
    Either result is rounded to 6 decimals, so that float noise cannot decide a tie."""
    ca_factor = units.factor("calcium", CONVENTIONAL_CALCIUM_UNIT)
    alb_factor = units.factor("albumin", CONVENTIONAL_ALBUMIN_UNIT)
    ca, ca_rep, alb = value[ca_rows], reported[ca_rows], value[alb_rows]
    conventional = units.reported_in(ca, ca_rep, ca_factor)
    si = np.round(
        ca + number("calcium_correction_coefficient") * (number("albumin_reference") - alb), 6
    )
    conv = np.round(
        ca_rep
        + number("calcium_correction_coefficient_conventional")
        * (number("albumin_reference") / alb_factor - alb / alb_factor),
        6,
    )
    corrected_reported = np.where(conventional, conv, si)
    corrected = np.where(conventional, conv * ca_factor, si)
    return corrected, corrected_reported, conventional


def _append_derived_text(
    text: dict[str, pa.ChunkedArray],
    ca_rows: np.ndarray,
    corrected: np.ndarray,
    comparator: np.ndarray,
    conventional: np.ndarray,
) -> None:
    """Add the text fields of the derived Ca rows to `text` as one more chunk: the
    calcium row's, with its own label, printed value (after its comparator, as in ">2.25")
    and reported unit: the conventional one where it was worked out in it, else the
    canonical one."""
    rows = pa.array(ca_rows)
    derived = {
        c: pc.take(text[c], rows).combine_chunks()
        for c in ("text_result", "unit", "range_origin", "source_file")
    }
    derived["test_label"] = pa.repeat(
        pa.scalar("corrected Ca (derived)", pa.string()), len(ca_rows)
    )
    # printed with "%.2f", once per distinct value
    distinct, index = np.unique(corrected, return_inverse=True)
    printed = pa.array(np.char.mod("%.2f", distinct), type=pa.string())
    bound = np.isin(comparator, CENSOR_BELOW + CENSOR_ABOVE)
    prefix = pa.array(np.where(bound, comparator, "").astype(str), type=pa.string())
    derived["value_raw"] = pc.binary_join_element_wise(
        prefix, pc.take(printed, pa.array(index.reshape(-1))), ""
    )
    derived["unit_reported"] = pc.if_else(
        pa.array(conventional), CONVENTIONAL_CALCIUM_UNIT, derived["unit"]
    )
    for name in TEXT_FIELDS:
        text[name] = pa.chunked_array([*text[name].chunks, derived[name]], type=pa.string())


def _same_draw_pairs(
    key: np.ndarray, is_a: np.ndarray, is_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of `is_b` with a row of `is_a` in the same draw (same patient and time:
    equal `key`, see `_pair_keys`), and that row (the first of the draw's, in row order)."""
    a, b = np.flatnonzero(is_a), np.flatnonzero(is_b)
    if len(a) == 0 or len(b) == 0:
        return a[:0], b[:0]
    a = a[np.argsort(key[a], kind="stable")]
    pos = np.minimum(np.searchsorted(key[a], key[b]), len(a) - 1)
    ok = key[a[pos]] == key[b]
    return a[pos[ok]], b[ok]


@dataclass
class _SummedVitaminD:
    """Total 25-OH vitamin D of each (D2, D3) pair of a draw: D2 + D3, each already in
    nmol/L by its own factor (CLINICAL.md sec. 1), and as reported: the sum of the printed
    numbers where both share a unit (what a lab prints as the total), else nmol/L.

    A censored component bounds the total from one side only: "<4" D2 lies between 0 and
    4, so D2 "<4" with D3 20 ng/mL is at least 20 and below 24 (`lower`, `upper`). One
    comparator holds one bound: `choose_bounds` keeps the one that settles the total
    against the vitamin D sufficiency cut-off, the only question the rules ask of it."""

    value: np.ndarray  # canonical, the bound kept where censored
    reported: np.ndarray
    comparator: np.ndarray  # "", or a bound: "<", "<=", ">", ">="
    lower: tuple[np.ndarray, np.ndarray]  # (canonical, reported): sure lower bound
    upper: tuple[np.ndarray, np.ndarray]  # NaN where a component is only bounded below
    lower_comparator: np.ndarray
    upper_comparator: np.ndarray
    only_below: np.ndarray  # censored, and every censored component bounded from above
    unit_reported: np.ndarray
    range_low: np.ndarray
    range_high: np.ndarray
    range_low_rep: np.ndarray
    range_high_rep: np.ndarray
    range_origin: np.ndarray

    def choose_bounds(self, guideline: str) -> None:
        """Where only an upper bound ("<") makes the total censored: keep the lower bound
        when it, and not the upper, settles the total at or above the cut-off of
        `guideline` (D2 "<4" with D3 25 ng/mL is ">=25", sufficient at 20 ng/mL; "<29"
        would leave it open); else the upper one (D3 12: "<16", surely low). A total that
        straddles the cut-off stays open either way. Compared as parameters.as_compared
        says (a lower bound of D3 alone in ng/mL is compared in ng/mL)."""
        from labinterp.rules.vitamin_d_resistance import cutoff_parameter  # rules import us

        key = cutoff_parameter(guideline)
        values, limits = as_compared(key, *self.upper)
        surely_low = tri_below(values, self.upper_comparator, limits) == 1.0
        values, limits = as_compared(key, *self.lower)
        surely_not = tri_below(values, self.lower_comparator, limits) == 0.0
        use_lower = self.only_below & ~surely_low & surely_not
        self.value = np.where(use_lower, self.lower[0], self.value)
        self.reported = np.where(use_lower, self.lower[1], self.reported)
        self.comparator = np.where(use_lower, self.lower_comparator, self.comparator)

    def append_text(self, text: dict[str, pa.ChunkedArray], d3_rows: np.ndarray) -> None:
        """Add the text fields of the summed rows to `text` as one more chunk: the D3
        row's file and canonical unit, with their own label, printed value (a kept bound
        after its comparator, as in ">=20"), reported unit and range origin."""
        rows = pa.array(d3_rows)
        chunk = {c: pc.take(text[c], rows).combine_chunks() for c in ("unit", "source_file")}
        chunk["test_label"] = pa.repeat(pa.scalar(SUMMED_VITAMIN_D_LABEL, pa.string()), len(rows))
        chunk["text_result"] = pa.nulls(len(rows), pa.string())
        # printed to 2 decimals at most (the components' own precision, summed), once per
        # distinct value
        distinct, index = np.unique(np.round(self.reported, 2), return_inverse=True)
        printed = np.char.mod("%g", distinct)
        chunk["value_raw"] = pa.array(
            np.char.add(self.comparator.astype(str), printed[index.reshape(-1)]), pa.string()
        )
        chunk["unit_reported"] = pa.array(self.unit_reported.astype(str), pa.string())
        chunk["range_origin"] = pa.array(self.range_origin.astype(str), pa.string())
        for name in TEXT_FIELDS:
            text[name] = pa.chunked_array([*text[name].chunks, chunk[name]], type=pa.string())


def _summed_vitamin_d(
    df: pd.DataFrame,
    value: np.ndarray,
    reported: np.ndarray,
    comparator: np.ndarray,
    text: dict[str, pa.ChunkedArray],
    d2: np.ndarray,
    d3: np.ndarray,
) -> _SummedVitaminD:
    """The total 25-OH vitamin D of each pair of rows (`d2`, `d3`), with the bundled range
    of the total (a component's printed range is not the total's): see _SummedVitaminD."""
    from labinterp.catalog import analytes
    from labinterp.normalize import bundled_ranges  # the reader's choice of a bundled range

    canonical_unit = analytes()[VITAMIN_D].canonical_unit
    unit = {
        name: np.asarray(pc.take(text["unit_reported"], pa.array(rows)).to_pylist(), dtype=object)
        for name, rows in (("d2", d2), ("d3", d3))
    }
    same = (unit["d2"] == unit["d3"]) & (unit["d3"] != None)  # noqa: E711 (elementwise)
    factors = {u: _total_factor(u) for u in set(unit["d3"][same])}
    factor = np.array(
        [factors.get(u, np.nan) if s else 1.0 for u, s in zip(unit["d3"], same, strict=True)]
    )
    same &= ~np.isnan(factor)  # a unit the total cannot be printed in: nmol/L
    factor = np.where(same, factor, 1.0)
    parts = []
    for rows in (d2, d3):
        c = comparator[rows]
        canon = value[rows]
        parts.append((canon, np.where(same, reported[rows], canon), c))
    (v2, r2, c2), (v3, r3, c3) = parts
    below = np.isin(c2, CENSOR_BELOW), np.isin(c3, CENSOR_BELOW)
    above = np.isin(c2, CENSOR_ABOVE) | np.isin(c3, CENSOR_ABOVE)

    # a component printed "<x" lies between 0 and x: it adds 0 to the sure lower bound
    def sure_lower(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.round(np.where(below[0], 0.0, a) + np.where(below[1], 0.0, b), 6)

    def sure_upper(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(above, np.nan, np.round(a + b, 6))

    lower = (sure_lower(v2, v3), sure_lower(r2, r3))
    upper = (sure_upper(v2, v3), sure_upper(r2, r3))
    lower_cmp = np.where((c2 == ">") | (c3 == ">"), ">", ">=")
    upper_cmp = np.where((c2 == "<") | (c3 == "<"), "<", "<=")
    censored = below[0] | below[1] | above
    # exact: the sum; bounded below by a ">" component: that bound; else the upper bound
    # until choose_bounds
    comp = np.where(above, lower_cmp, np.where(censored, upper_cmp, "")).astype(object)
    val = np.where(above, lower[0], upper[0])
    rep = np.where(above, lower[1], upper[1])
    # the D3 rows' only: a whole column to Python objects costs ~50 ms per million rows
    sex = (
        df["sex"].iloc[d3].fillna("").to_numpy(dtype=object)
        if "sex" in df
        else np.full(len(d3), "")
    )
    age = (
        df["age_years"].to_numpy(dtype="float64", na_value=np.nan)[d3]
        if "age_years" in df
        else np.full(len(d3), np.nan)
    )
    limits, origin = bundled_ranges(VITAMIN_D, factor, sex, age)
    return _SummedVitaminD(
        value=val,
        reported=rep,
        comparator=comp,
        lower=lower,
        upper=upper,
        lower_comparator=lower_cmp.astype(object),
        upper_comparator=upper_cmp.astype(object),
        only_below=censored & ~above,
        unit_reported=np.where(same, unit["d3"], canonical_unit),
        range_low=limits["range_low"],
        range_high=limits["range_high"],
        range_low_rep=limits["range_low_reported"],
        range_high_rep=limits["range_high_reported"],
        range_origin=origin,
    )


def _total_factor(unit: str) -> float:
    """The factor of a total 25-OH vitamin D printed in `unit` to nmol/L (the D3 one, as
    the catalog reads a total), NaN when the total cannot be printed in it."""
    try:
        return units.factor(VITAMIN_D, unit)
    except ValueError:
        return np.nan


def _ns(t: object) -> np.ndarray:
    """Times as int64 nanoseconds (whatever resolution pandas chose)."""
    return np.asarray(t).astype("datetime64[ns]").view("int64")


def _pair_keys(pat: np.ndarray, t: np.ndarray, times: np.ndarray) -> np.ndarray:
    """One int64 per (pat, t) that sorts like the pair, for a single `searchsorted`.

    Times become ranks among the sorted distinct `times` (odd: 2 * rank + 1 for a time in
    the list; even for one between two listed times), so keys stay small whatever the span
    of the dates (real dates and the 1700 sentinel do not fit together in nanoseconds).
    """
    pos = np.searchsorted(times, t)
    exact = times[np.minimum(pos, len(times) - 1)] == t if len(times) else np.zeros(len(t), bool)
    return pat.astype("int64") * (2 * len(times) + 2) + 2 * pos + exact


def _nearest_sorted(
    akey: np.ndarray,
    apat: np.ndarray,
    at: np.ndarray,
    ckey: np.ndarray,
    ct: np.ndarray,
    window: pd.Timedelta,
    span: int,
) -> np.ndarray:
    """Positions of the nearest candidate of the same patient within `window` (-1 if none).

    Candidates are sorted by key (patient, time); `apat` is each anchor's patient code
    (its key // span). Same rules as `merge_asof(direction="nearest", tolerance=window)`:
    the backward match is the last candidate at or before the anchor, the forward match
    the first at or after it, both within the window inclusive; a tie in distance goes to
    the backward match.
    """
    n = len(akey)
    if n == 0 or len(ckey) == 0:
        return np.full(n, -1, dtype="int64")
    w = pd.Timedelta(window).as_unit("ns").value
    f = np.searchsorted(ckey, akey, side="left")
    fc = np.minimum(f, len(ckey) - 1)
    # The backward match: the candidate before `f`. Where `f` has the anchor's own key
    # (same patient, same time) it wins at distance 0 anyway, unless several candidates
    # share that key: then, as merge_asof does, the last of them is the match.
    b = f - 1
    if (ckey[1:] == ckey[:-1]).any():
        exact = ckey[fc] == akey
        b[exact] = np.searchsorted(ckey, akey[exact], side="right") - 1
    bc = np.maximum(b, 0)
    # same patient: the key lies in the patient's [apat * span, (apat + 1) * span)
    # (compare before subtracting: real dates minus the 1700 sentinel overflow int64)
    pat_start = apat * span
    b_ok = (b >= 0) & (ckey[bc] >= pat_start) & (ct[bc] >= at - w)
    f_ok = (f < len(ckey)) & (ckey[fc] < pat_start + span) & (ct[fc] <= at + w)
    both = b_ok & f_ok
    closer_f = np.zeros(n, dtype=bool)
    closer_f[both] = (ct[fc][both] - at[both]) < (at[both] - ct[bc][both])
    use_f = f_ok & (~b_ok | closer_f)
    return np.where(use_f, fc, np.where(b_ok, bc, -1)).astype("int64")


def nearest(
    ctx: Context,
    anchors: pd.DataFrame,
    analyte: str,
    window: pd.Timedelta,
    *,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """obs_id of the nearest numeric `analyte` observation within `window` of each anchor
    (-1 when none). `where` optionally restricts candidates (a boolean mask over obs).

    Observations are already sorted by (pat, t), so each analyte's candidates are a
    sorted subset: no sort per call, one binary search per anchor.
    """
    ids = ctx.numeric_ids(analyte)
    if where is not None:
        ids = ids[where[ids]]
    times, okey = ctx.search_key()
    t = ctx.t_ns()
    at = _ns(anchors["t"].to_numpy())
    apat = anchors["pat"].to_numpy()
    akey = None
    if "obs_id" in anchors.columns:
        # anchors that are observations already have their key (checked, not assumed)
        own = anchors["obs_id"].to_numpy()
        pat = ctx.obs["pat"].to_numpy()
        if len(own) and (own >= 0).all() and (t[own] == at).all() and (pat[own] == apat).all():
            akey = okey[own]
    if akey is None:
        akey = _pair_keys(apat, at, times)
    pos = _nearest_sorted(akey, apat, at, okey[ids], t[ids], window, 2 * len(times) + 2)
    return np.where(pos >= 0, ids[np.maximum(pos, 0)] if len(ids) else -1, -1)


def paired_with(
    ctx: Context, ids: np.ndarray, partner: np.ndarray, window: pd.Timedelta
) -> np.ndarray:
    """`ids`, with -1 where the observation is not paired with the `partner` of the same row
    (both present, and neither the same draw nor within `window` of each other).

    `nearest` measures each window from the anchor draw, so two observations found for one
    anchor can lie up to twice the window apart (a Mg 47 h before the anchor, a Ca 47 h
    after it); CLINICAL.md sec. 4 pairs results within the window of each other. Rows
    without a partner keep their observation.
    """
    both = (ids >= 0) & (partner >= 0)
    if not both.any():
        return ids
    i, p = ids[both], partner[both]
    t = ctx.t_ns()
    draw = ctx.obs["draw_id"].to_numpy()
    w = pd.Timedelta(window).as_unit("ns").value
    # undated observations carry the 1700 sentinel: they pair only with each other
    # (the same draw), and subtracting a real date from it could overflow int64
    dated = ctx.obs["dated"].to_numpy()
    close = (dated[i] == dated[p]) & (
        np.abs(t[i] - np.where(dated[i] == dated[p], t[p], t[i])) <= w
    )
    out = ids.copy()
    out[np.flatnonzero(both)[~((draw[i] == draw[p]) | close)]] = -1
    return out


def same_draw_first(
    ctx: Context,
    ids: np.ndarray,
    partner: np.ndarray,
    partner_analyte: str,
    where: np.ndarray,
) -> np.ndarray:
    """`ids`, with -1 where the pair crosses draws although the draw of the `ids`
    observation holds a result of `partner_analyte` (among `where`) of its own.

    CLINICAL.md sec. 4 pairs the same draw first, seen from the result being explained
    (`ids`: the Ca of P1, the K of P3): a low K drawn with a normal Mg is that draw's pair,
    never a low Mg of another draw within the window (which `nearest`, taking the nearest
    to each anchor, would otherwise give from the other draw's anchor). A K drawn without
    a Mg pairs with a Mg of another draw within the window, even when that Mg's own draw
    holds a K: what else the partner's draw holds does not matter.
    """
    both = np.flatnonzero((ids >= 0) & (partner >= 0))
    if not len(both):
        return ids
    draw = ctx.obs["draw_id"].to_numpy()
    found = np.zeros(int(draw.max()) + 1, dtype=bool)
    candidates = ctx.numeric_ids(partner_analyte)
    found[draw[candidates[where[candidates]]]] = True
    i, p = ids[both], partner[both]
    crossed = (draw[i] != draw[p]) & found[draw[i]]
    out = ids.copy()
    out[both[crossed]] = -1
    return out


def take(ctx: Context, ids: np.ndarray, column: str, fill: float = np.nan) -> np.ndarray:
    """Column values of obs rows `ids` (-1 -> fill), as a float array."""
    col = ctx.obs[column].to_numpy(dtype="float64", na_value=np.nan)
    out = np.full(len(ids), fill, dtype="float64")
    ok = ids >= 0
    out[ok] = col[ids[ok]]
    return out


def take_bool(ctx: Context, ids: np.ndarray, column: str) -> np.ndarray:
    col = ctx.obs[column].to_numpy(dtype=bool)
    out = np.zeros(len(ids), dtype=bool)
    ok = ids >= 0
    out[ok] = col[ids[ok]]
    return out


def ckd_stage(egfr: np.ndarray, comparators: np.ndarray | None = None) -> np.ndarray:
    """KDIGO G-stage (S28) for each eGFR value; "" when unknown.

    A censored eGFR ("<15", ">90") gets the one stage every value it allows falls in, else
    the span of stages it allows ("<60": "G3a-G5"), not the stage of its bound.
    """
    stage = _exact_ckd_stage(egfr)
    if comparators is None:
        return stage
    cmp = np.asarray(comparators, dtype=object)
    for signs, toward in ((CENSOR_BELOW, -np.inf), (CENSOR_ABOVE, np.inf)):
        hit = np.isin(cmp, signs) & ~np.isnan(egfr)
        if not hit.any():
            continue
        strict = np.isin(cmp[hit], ("<", ">"))
        bound = _exact_ckd_stage(np.where(strict, np.nextafter(egfr[hit], toward), egfr[hit]))
        far = _exact_ckd_stage(np.array([toward]))[0]
        worst_first = toward < 0  # "<": from the bound's stage down to G5
        stage[hit] = [
            b if b == far else (f"{b}-{far}" if worst_first else f"{far}-{b}") for b in bound
        ]
    stage[cmp == UNBOUNDED] = ""
    return stage


def _exact_ckd_stage(egfr: np.ndarray) -> np.ndarray:
    cuts = [
        ("G1", number("ckd_g1_from")),
        ("G2", number("ckd_g2_from")),
        ("G3a", number("ckd_g3a_from")),
        ("G3b", number("ckd_g3b_from")),
        ("G4", number("ckd_g4_from")),
    ]
    out = np.full(len(egfr), "", dtype=object)
    known = ~np.isnan(egfr)
    out[known] = "G5"
    assigned = ~known
    for stage, floor in cuts:
        with np.errstate(invalid="ignore"):
            hit = ~assigned & (egfr >= floor)
        out[hit] = stage
        assigned |= hit
    return out
