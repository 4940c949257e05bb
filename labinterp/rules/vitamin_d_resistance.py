"""P2 `vitamin_d_resistance`: 25-OH vitamin D not rising as expected, with low magnesium.

What it flags:
    Tier `serial`: two or more 25-OH D results at least `p2_serial_min_span` apart, the
    latest still below the sufficiency cut-off of the chosen guideline, a rise from first to
    last smaller than `p2_min_expected_rise`, and a Mg below LLN between the first and the
    last result (or within the vitamin D window before the last); the first is that of the
    patient's latest run of Ds not known to be sufficient (a D at or above the cut-off
    starts the run anew: "still below" the cut-off). Tier `single`: one low
    25-OH D with a Mg below LLN within the vitamin D window. "Low" means below the guideline
    cut-off (IOM 2011 by default, Endocrine Society 2011 as a setting), not below the lab's
    printed range. CRP above the inflammation threshold within the CRP window of a D result
    used adds the caveat `inflammation_caveat`; eGFR below the CKD threshold adds
    `ckd_context`. A tier `serial` finding is strengthened, and says so with
    `vitamin_d_supplement`, when the export's medication column names a form of vitamin D
    that raises 25-OH D on a row of the patient from the vitamin D window before the first
    D cited to the last (CLINICAL.md sec. 4 names the supplement with that tier: beside a
    single D it says nothing about a rise). A
    proton pump inhibitor or diuretic listed within the electrolyte window of the Mg cited
    adds `mg_lowering_medication` (see P3). A tier `single` finding followed by a 25-OH D at
    or above the cut-off, or risen from the cited one by at least `p2_min_expected_rise`,
    gets `vitamin_d_rose_later` (the later D is not cited: the finding is about the low
    one). A Mg whose state is unknown is still cited, with `range_unknown`
    (no range: a child without a printed one, CLINICAL.md sec. 2) or `hemolyzed` (a normal
    Mg of a hemolyzed sample cannot rule out a low one), as P1 does.
    Thresholds printed in two units are compared in the result's own (parameters.as_compared).
    One row per patient (the whole D history is one episode).

Why it matters:
    Magnesium is a cofactor of the vitamin D hydroxylases, so replacing vitamin D may not
    raise 25-OH D (or its active form) while Mg is low. Patient wording says "not rising as
    expected", never "resistance" (a term for genetic rickets).

Limitations:
    The evidence is weaker than for P1 and P3. Supplementation is seen only in a medication
    column of the lab export itself (not in separate prescription files), read as what the
    patient takes, without dose or adherence; beyond the few negations listed in
    medications.toml ("no vitamin D", "stopped vitamin D"), free text is not understood.
    Assays that miss D2 (the lab's comment may say so) are not told apart. Censored D
    results settle "low" only when the censoring does. A censored result bounds the rise:
    a "<" last or a ">" first from above (it can settle `serial`), a ">" last or a "<"
    first only from below; when that leaves the rise open and no D fired `single`, the
    outcome is indeterminate with `vitamin_d_25oh` missing (the Mg is measured). One episode
    per patient hides a second, separate course. A total summed from the D2 and D3 of a
    draw printed without one (reference_ranges/vitamin_d_components.toml) is read like a
    printed total and cited with both; a censored component leaves it a bound.

References:
    S56 (Mg as hydroxylase cofactor), S55 (weaker evidence), S30-S34 (cut-offs), S38, S39
    (CRP lowers 25-OH D), S28 (CKD).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labinterp.episodes import (
    CENSOR_ABOVE,
    CENSOR_BELOW,
    UNBOUNDED,
    Context,
    nearest,
    take_bool,
    tri_above,
    tri_below,
)
from labinterp.rules import common
from labinterp.rules.base import Rule, change_as_compared, duration

ID = "vitamin_d_resistance"
TIERS = {"serial": 0, "single": 1}
GUIDELINES = {"iom2011": "vitamin_d_sufficient_iom2011", "es2011": "vitamin_d_sufficient_es2011"}


def cutoff_parameter(guideline: str) -> str:
    """The rule parameter holding the sufficiency cut-off of `guideline`."""
    try:
        return GUIDELINES[guideline]
    except KeyError:
        raise ValueError(
            f"unknown vitamin D guideline '{guideline}'; use one of {sorted(GUIDELINES)}"
        ) from None


def evaluate(ctx: Context) -> pd.DataFrame:
    obs = ctx.obs
    wd = duration("window_vitamin_d")
    d_low_all = ctx.tri("vitamin_d_25oh", tri_below, cutoff_parameter(ctx.vitamin_d_guideline))
    crp_high = ctx.tri("crp", tri_above, "crp_inflammation_above") == 1.0
    mg_ok = common.known(ctx)
    mg_low_mask = (
        mg_ok & ctx.is_analyte("magnesium") & (obs["low"].to_numpy(dtype="float64") == 1.0)
    )

    d = obs[ctx.is_analyte("vitamin_d_25oh") & obs["has_value"].to_numpy()].copy()
    if d.empty:
        return common.missing_patients(
            ctx,
            np.array([], dtype="int64"),
            "vitamin_d_25oh",
            "No 25-OH vitamin D result to assess.",
        )
    d["d_low"] = d_low_all[d["obs_id"].to_numpy()]
    d = d.sort_values(["pat", "t", "obs_id"], kind="stable").reset_index(drop=True)
    mg_low_id = nearest(ctx, d, "magnesium", wd, where=mg_low_mask)
    mg_any_id = nearest(ctx, d, "magnesium", wd, where=mg_ok)
    # a Mg whose state is unknown (no range: a child without a printed one) is still cited,
    # with caveat range_unknown, as P1 does
    mg_seen_id = nearest(ctx, d, "magnesium", wd, where=~obs["contaminated"].to_numpy())
    d_low = d["d_low"].to_numpy()
    single = (d_low == 1.0) & (mg_low_id >= 0)
    per_d = np.select(
        [single, d_low == 0.0, (d_low == 1.0) & (mg_any_id >= 0)],
        ["fired", "not_fired", "not_fired"],
        "indeterminate",
    )
    d["status"] = per_d
    d["mg"] = np.where(mg_low_id >= 0, mg_low_id, np.where(mg_any_id >= 0, mg_any_id, mg_seen_id))
    d["missing"] = np.where(
        per_d == "indeterminate",
        np.where(np.isnan(d_low), "vitamin_d_25oh", "magnesium"),
        "",
    )

    # serial tier: the first and last D of each patient's latest run of Ds not known to be
    # sufficient. "The latest still below the cut-off" (CLINICAL.md sec. 4) speaks of a D
    # that was low and stayed low: a D at or above the cut-off starts the run anew, so 35
    # then 15 ng/mL, or 12, 35, 14, is no failure to rise from the first.
    pat_of_d = d["pat"].to_numpy()
    sufficient = d["d_low"].to_numpy() == 0.0
    run = pd.Series(sufficient).groupby(pat_of_d).cumsum().to_numpy()
    latest_run = pd.Series(run).groupby(pat_of_d).transform("max").to_numpy()
    run_d = d[(run == latest_run) & ~sufficient]
    g = run_d.groupby("pat", sort=True)
    first = run_d.loc[g["t"].idxmin()].set_index("pat")
    last = run_d.loc[g["t"].idxmax()].set_index("pat")
    small = _rise_below(first, last)
    # every serial condition but the rise (which may be unknown: a censored result)
    candidate = (
        (last["t"] - first["t"]).to_numpy() >= duration("p2_serial_min_span").to_timedelta64()
    ) & (last["d_low"].to_numpy() == 1.0)
    span = pd.DataFrame(
        {
            "first_t": first["t"],
            "last_t": last["t"],
            "first_id": first["obs_id"],
            "last_id": last["obs_id"],
            "small": small,
        }
    )[candidate & (small != 0.0)]
    mg_low_obs = obs.loc[mg_low_mask, ["pat", "t", "obs_id"]]
    hits = mg_low_obs.merge(span.rename_axis("_p"), left_on="pat", right_index=True)
    lo_t = np.minimum(hits["first_t"], hits["last_t"] - wd)
    hits = hits[(hits["t"] >= lo_t) & (hits["t"] <= hits["last_t"])]
    span_mg = hits.groupby("pat")["obs_id"].max()
    # serial, or serial unless the rise (unknown) reaches the expected one
    serial_pats = span_mg.index[span["small"].reindex(span_mg.index).to_numpy() == 1.0]
    open_pats = span_mg.index[np.isnan(span["small"].reindex(span_mg.index).to_numpy())]

    # patient outcome: any fired D, else the latest D decides
    d["_rank"] = np.where(d["status"] == "fired", 0, 1)
    best = d.sort_values(["pat", "_rank", "t"], ascending=[True, True, False], kind="stable")
    best = best.drop_duplicates("pat").set_index("pat")
    is_serial = best.index.isin(serial_pats)
    status = np.where(is_serial, "fired", best["status"].to_numpy())
    # no tier fired, and the serial one turns on a rise a censored D leaves unknown: the D
    # is what is missing (the Mg it would need is measured and low)
    rise_unknown = (status != "fired") & best.index.isin(open_pats)
    status = np.where(rise_unknown, "indeterminate", status)
    tier = np.where(is_serial, "serial", np.where(status == "fired", "single", ""))
    pats = best.index.to_numpy()
    spanned = is_serial | rise_unknown  # cites the first and last D and the Mg of the span
    ev_first = np.where(spanned, span["first_id"].reindex(pats).fillna(-1), -1).astype("int64")
    ev_last = np.where(
        spanned, span["last_id"].reindex(pats).fillna(-1), best["obs_id"].to_numpy()
    ).astype("int64")
    ev_mg = np.where(spanned, span_mg.reindex(pats).fillna(-1), best["mg"].to_numpy()).astype(
        "int64"
    )
    missing = np.where(
        is_serial, "", np.where(rise_unknown, "vitamin_d_25oh", best["missing"].to_numpy())
    )
    is_single = tier == "single"
    rose_later = is_single & np.isin(pats, _rose_later(obs, d, pats[is_single], ev_last[is_single]))

    used = pd.DataFrame({"pat": pats, "t": obs["t"].to_numpy()[ev_last]})
    crp_id = nearest(ctx, used, "crp", duration("window_crp"), where=crp_high)
    if spanned.any():
        used_first = pd.DataFrame({"pat": pats, "t": obs["t"].to_numpy()[np.maximum(ev_first, 0)]})
        crp_first = nearest(ctx, used_first, "crp", duration("window_crp"), where=crp_high)
        crp_id = np.where((crp_id < 0) & (ev_first >= 0), crp_first, crp_id)
    ckd = common.ckd_nearby(ctx, used, wd, "ckd_context_egfr_below")
    fired = status == "fired"
    # a supplement strengthens a D that stayed low over time (the serial tier, CLINICAL.md
    # sec. 4); beside one D it says nothing about a rise
    supplemented = is_serial & _supplement_recorded(ctx, pats, ev_first, ev_last, wd)
    near, medicines = common.mg_lowering_nearby(ctx, ev_mg, duration("window_electrolytes"))
    mg_lowering = fired & near
    caveats = common.flags(
        ("inflammation_caveat", crp_id >= 0),
        ("ckd_context", ckd),
        ("vitamin_d_supplement", supplemented),
        ("mg_lowering_medication", mg_lowering),
        ("vitamin_d_rose_later", rose_later),
        ("range_unknown", common.range_unknown(ctx, ev_mg)),
        ("hemolyzed", take_bool(ctx, ev_mg, "hemolyzed")),
    )
    times = [obs["t"].to_numpy()[np.maximum(ids, 0)] for ids in (ev_first, ev_last, ev_mg)]
    present = [ids >= 0 for ids in (ev_first, ev_last, ev_mg)]
    dated = obs["dated"].to_numpy()
    tt = np.stack(
        [
            np.where(p & dated[np.maximum(ids, 0)], t, np.datetime64("NaT"))
            for p, t, ids in zip(present, times, (ev_first, ev_last, ev_mg), strict=True)
        ]
    )
    start = pd.DataFrame(tt.T).min(axis=1).to_numpy()
    end = pd.DataFrame(tt.T).max(axis=1).to_numpy()
    note = common.choose(
        [is_serial, fired, rise_unknown],
        [
            "25-OH vitamin D not rising as expected on repeat testing, with low Mg.",
            "Low 25-OH vitamin D with low Mg nearby; Mg is needed to activate vitamin D.",
            "Low Mg in the span of a low 25-OH vitamin D, but the rise from the first D is"
            " unknown: a censored result does not bound it from above.",
        ],
    )
    note = common.noted(note, supplemented, "A vitamin D supplement is recorded.")
    note = common.noted(note, mg_lowering, common.mg_lowering_sentences(medicines))
    note = common.noted(
        note,
        rose_later,
        "A later 25-OH vitamin D rose to the sufficiency cut-off or by the expected rise.",
    )
    out = pd.DataFrame(
        {
            "pat": pats,
            "t": obs["t"].to_numpy()[ev_last],
            "start": start,
            "end": end,
            "status": status,
            "tier": tier,
            "ev_vitamin_d_first": ev_first,
            **common.vitamin_d_components(ctx, ev_first, "vitamin_d_first"),
            "ev_vitamin_d": ev_last,
            **common.vitamin_d_components(ctx, ev_last, "vitamin_d"),
            "ev_magnesium": ev_mg,
            "ev_crp": crp_id,
            "grade_obs": np.where(fired, ev_mg, -1),
            "grade_term": "hypomagnesemia",
            "missing_inputs": missing,
            "suppressed_by": "",
            "caveats": caveats,
            "note": note,
        }
    )
    rest = common.missing_patients(
        ctx, pats, "vitamin_d_25oh", "No 25-OH vitamin D result to assess."
    )
    return pd.concat([out, rest], ignore_index=True)


def _rise_below(first: pd.DataFrame, last: pd.DataFrame) -> np.ndarray:
    """Per patient (rows of `first` and `last`, their first and last D): 1.0 when the rise
    from first to last is surely below `p2_min_expected_rise`, 0.0 when surely not, NaN when
    a censored result leaves it open.

    A bound on a result bounds the rise: a "<" last or a ">" first from above, a ">" last
    or a "<" first from below. The rise between the numbers printed is then a bound on the
    true rise, strict when either bound is strict.
    """
    rise, least = change_as_compared(
        "p2_min_expected_rise",
        (first["value"].to_numpy(dtype="float64"), first["value_reported"].to_numpy("float64")),
        (last["value"].to_numpy(dtype="float64"), last["value_reported"].to_numpy("float64")),
    )
    f_cmp = first["comparator"].to_numpy()
    l_cmp = last["comparator"].to_numpy()
    unbounded = np.isin(f_cmp, (UNBOUNDED,)) | np.isin(l_cmp, (UNBOUNDED,))
    # the printed rise is at least the true one / at most the true one
    upper = ~unbounded & ~np.isin(f_cmp, CENSOR_BELOW) & ~np.isin(l_cmp, CENSOR_ABOVE)
    lower = ~unbounded & ~np.isin(f_cmp, CENSOR_ABOVE) & ~np.isin(l_cmp, CENSOR_BELOW)
    strict_upper = (f_cmp == ">") | (l_cmp == "<")
    out = np.full(len(rise), np.nan)
    with np.errstate(invalid="ignore"):
        out[lower & (rise >= least)] = 0.0
        out[upper & ((rise < least) | (strict_upper & (rise == least)))] = 1.0
    return out


def _rose_later(
    obs: pd.DataFrame, d: pd.DataFrame, pats: np.ndarray, cited: np.ndarray
) -> np.ndarray:
    """The patients of `pats` with a 25-OH D after the one they cite (`cited`, obs ids) that
    is at or above the cut-off, or surely risen from it by at least `p2_min_expected_rise`:
    vitamin D did rise as expected then. That D is not cited (the evidence would then end
    after the follow-up the audit looks for)."""
    pairs = d[["pat", "t", "obs_id", "d_low"]].merge(
        pd.DataFrame({"pat": pats, "cited": cited}), on="pat"
    )
    pairs = pairs[pairs["t"].to_numpy() > obs["t"].to_numpy()[pairs["cited"].to_numpy()]]
    cited_rows = obs.iloc[pairs["cited"].to_numpy()]
    risen = _rise_below(cited_rows, obs.iloc[pairs["obs_id"].to_numpy()]) == 0.0
    up = (pairs["d_low"].to_numpy() == 0.0) | risen
    return pairs.loc[up, "pat"].unique()


def _supplement_recorded(
    ctx: Context, pats: np.ndarray, ev_first: np.ndarray, ev_last: np.ndarray, wd: pd.Timedelta
) -> np.ndarray:
    """Per patient of `pats`: a row of theirs whose medication column names vitamin D lies
    between the vitamin D window before the first 25-OH D the finding cites (the only one,
    for tier single) and the last. A supplement taken while 25-OH D stays low strengthens
    the finding (CLINICAL.md sec. 4)."""
    obs = ctx.obs
    if "vitamin_d_supplement" not in obs:  # the export names no vitamin D, or no medicines
        return np.zeros(len(pats), dtype=bool)
    t = obs["t"].to_numpy()
    span = pd.DataFrame(
        {
            "pat": pats,
            "since": t[np.where(ev_first >= 0, ev_first, ev_last)] - wd.to_timedelta64(),
            "until": t[ev_last],
        }
    )
    taken = obs.loc[obs["vitamin_d_supplement"].to_numpy(), ["pat", "t"]].merge(span, on="pat")
    inside = taken[(taken["t"] >= taken["since"]) & (taken["t"] <= taken["until"])]
    return np.isin(pats, inside["pat"].unique())


RULE = Rule(
    id=ID,
    kind="pattern",
    analytes=("vitamin_d_25oh", "magnesium", "crp", "egfr"),
    parameters=(
        "window_vitamin_d",
        "window_electrolytes",
        "window_crp",
        "p2_serial_min_span",
        "p2_min_expected_rise",
        "vitamin_d_sufficient_iom2011",
        "vitamin_d_sufficient_es2011",
        "crp_inflammation_above",
        "ckd_context_egfr_below",
    ),
    citations=("S28", "S30", "S31", "S33", "S34", "S38", "S39", "S55", "S56"),
    evaluate=evaluate,
    doc=__doc__ or "",
)
