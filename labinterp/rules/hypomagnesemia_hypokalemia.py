"""P3 `hypomagnesemia_hypokalemia`: low potassium with low magnesium.

What it flags:
    A potassium below its lower limit paired (same draw, else within the electrolyte window)
    with a magnesium below its lower limit. Tier `refractory` when, within the episode, K is
    below LLN on two or more draws at least `p3_refractory_min_gap` apart and every Mg
    measured from one window before the first low K to the last low K is low (the evidence
    then also cites that last low K, role `potassium_last`); else `concurrent`. A fired
    finding carries `mg_lowering_medication`, and says so in its note, when the export's
    medication column lists a proton pump inhibitor or a diuretic on a row of the patient
    within the electrolyte window of the Mg cited (CLINICAL.md sec. 5: common causes of
    low Mg, for the clinician's text).

Why it matters:
    Magnesium deficiency releases the brake on renal potassium secretion (ROMK), so K
    repletion fails until Mg is corrected; over half of significant hypokalemia has Mg
    deficiency.

Limitations:
    Pairs each draw with the nearest value in the window; a K counts only within the window
    of the Mg it is paired with, and not across draws when either has the other's analyte
    in its own draw (the same draw first). Episodes are chains of draws with
    gaps no longer than the electrolyte window, so a refractory course with sparser sampling
    is reported as `concurrent`. A hemolyzed sample cannot show K or Mg "not low" (a normal
    value may hide a low one); a low value from it still counts. Draws flagged by
    `edta_contamination` are suppressed. Medicines are seen by generic name
    (reference_ranges/medications.toml) in a medication column of the export or in
    medication records read with it (FHIR resources, a preset's medication list).

References:
    S59 (mechanism, ROMK), S43 (hypokalemia), S6 (Mg deficiency), S66, S67 (hemolysis).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labinterp.episodes import Context, nearest, paired_with, same_draw_first, take, take_bool
from labinterp.rules import common
from labinterp.rules.base import Rule, duration

ID = "hypomagnesemia_hypokalemia"
TIERS = {"refractory": 0, "concurrent": 1}


def _refractory_episodes(ctx: Context) -> pd.Series:
    """The last low K (obs id) of each episode (index) where low K persists across draws
    >= the gap while Mg stays low."""
    none = pd.Series([], dtype="int64")
    obs = ctx.obs
    clean = ~obs["contaminated"].to_numpy()
    low = obs["low"].to_numpy(dtype="float64")
    k = obs[ctx.is_analyte("potassium") & (low == 1.0) & clean]
    if k.empty:
        return none
    # one pass over the low K rows; obs are in (patient, time) order, so an episode's last
    # row is its latest low K
    span = k.groupby("episode_id").agg(
        first=("t", "min"), last=("t", "max"), last_k=("obs_id", "last")
    )
    span = span[(span["last"] - span["first"]) >= duration("p3_refractory_min_gap")]
    if span.empty:
        return none
    mg = obs[ctx.is_analyte("magnesium") & ~np.isnan(low) & clean][["episode_id", "t", "low"]]
    mg = mg.merge(span, left_on="episode_id", right_index=True)
    w = duration("window_electrolytes")
    mg = mg[(mg["t"] >= mg["first"] - w) & (mg["t"] <= mg["last"])]
    agg = mg.groupby("episode_id")["low"].agg(["min", "max"])
    kept = agg.index[(agg["min"] == 1.0) & (agg["max"] == 1.0)]
    return span.loc[kept, "last_k"].astype("int64")


def evaluate(ctx: Context) -> pd.DataFrame:
    w = duration("window_electrolytes")
    a = common.anchors(ctx, ("potassium", "magnesium"))
    ok = common.known(ctx)
    mg = nearest(ctx, a, "magnesium", w, where=ok)
    # the window is measured from the anchor draw: the K must also lie within it of the Mg
    k = paired_with(ctx, nearest(ctx, a, "potassium", w, where=ok), mg, w)
    # ... and a K and a Mg of different draws pair only where neither has the other's
    # analyte in its own draw (the same draw first)
    k = same_draw_first(ctx, k, mg, ("potassium", "magnesium"), ok)
    any_k = nearest(ctx, a, "potassium", w)
    any_mg = nearest(ctx, a, "magnesium", w)
    k_low = take(ctx, k, "low")
    mg_low = take(ctx, mg, "low")
    contaminated = a["contaminated"].to_numpy()
    fired = ~contaminated & (k_low == 1.0) & (mg_low == 1.0)
    not_fired = ~contaminated & ~fired & ((k_low == 0.0) | (mg_low == 0.0))
    status = common.choose(
        [contaminated, fired, not_fired], ["suppressed", "fired", "not_fired"], "indeterminate"
    )
    last_low_k = _refractory_episodes(ctx)
    refractory = a["episode_id"].isin(last_low_k.index).to_numpy()
    tier = common.choose([fired & refractory, fired], ["refractory", "concurrent"])
    # a refractory finding also cites the episode's last low K, which shows the persistence
    later_k = a["episode_id"].map(last_low_k).fillna(-1).to_numpy(dtype="int64")
    later_k = np.where(fired & refractory & (later_k != k), later_k, -1)
    hemolyzed = take_bool(ctx, any_k, "hemolyzed") | take_bool(ctx, any_mg, "hemolyzed")
    indeterminate = ~contaminated & ~fired & ~not_fired
    missing = common.flags(
        ("potassium", indeterminate & np.isnan(k_low)),
        ("magnesium", indeterminate & np.isnan(mg_low)),
    )
    near, medicines = common.mg_lowering_nearby(ctx, mg, w)
    mg_lowering = fired & near
    caveats = common.flags(
        ("hemolyzed", hemolyzed),
        ("range_unknown", common.range_unknown(ctx, any_k) | common.range_unknown(ctx, any_mg)),
        ("mg_lowering_medication", mg_lowering),
    )
    note = common.choose(
        [contaminated, fired & refractory, fired],
        [
            "Not assessed: this draw looks EDTA-contaminated; recollect.",
            "Low K on repeated draws while Mg stays low: K repletion may fail until Mg "
            "is corrected.",
            "Low K with low Mg in the same window.",
        ],
    )
    note = common.noted(note, mg_lowering, common.mg_lowering_sentences(medicines))
    columns = dict(
        status=status,
        tier=tier,
        ev_potassium=np.where(k >= 0, k, any_k),
        ev_potassium_last=later_k,
        ev_magnesium=np.where(mg >= 0, mg, any_mg),
        grade_obs=np.where(fired, k, -1),
        grade_term="hypokalemia",
        missing_inputs=missing,
        suppressed_by=common.choose([contaminated], ["edta_contamination"]),
        caveats=caveats,
        note=note,
    )
    return common.finish_per_episode(
        ctx, a, columns, TIERS, "potassium;magnesium", "No K or Mg result to assess."
    )


RULE = Rule(
    id=ID,
    kind="pattern",
    analytes=("potassium", "magnesium"),
    parameters=("window_electrolytes", "p3_refractory_min_gap"),
    citations=("S6", "S43", "S59", "S66", "S67"),
    evaluate=evaluate,
    doc=__doc__ or "",
)
