"""P3 `hypomagnesemia_hypokalemia`: low potassium with low magnesium.

What it flags:
    A potassium below its lower limit paired (same draw, else within the electrolyte window)
    with a magnesium below its lower limit. Tier `refractory` when two low K of the episode
    that fire (each paired with a low Mg) lie at least `p3_refractory_min_gap` apart with
    no known normal Mg measured between them, at their own times included (the evidence
    then also cites the later low K of that pair, role `potassium_last`); else
    `concurrent`. A normal Mg before the first or after the later K of the pair, or a low K
    paired with a normal Mg, does not change the tier. A fired finding carries
    `mg_lowering_medication`, and says so in its note, when the export's medication column
    lists a proton pump inhibitor or a diuretic on a row of the patient within the
    electrolyte window of the Mg cited (CLINICAL.md sec. 5: common causes of low Mg, for
    the clinician's text).

Why it matters:
    Magnesium deficiency releases the brake on renal potassium secretion (ROMK), so K
    repletion fails until Mg is corrected; over half of significant hypokalemia has Mg
    deficiency.

Limitations:
    Pairs each draw with the nearest value in the window; a K counts only within the window
    of the Mg it is paired with, and the same draw first as seen from the K: a K whose own
    draw holds a Mg pairs with that Mg only, while a K drawn without a Mg pairs with a Mg
    of another draw even when that draw holds a K of its own. Episodes are chains of draws
    with gaps no longer than the electrolyte window, so a refractory course with sparser
    sampling (two low draws 72 h apart) is two `concurrent` episodes. A hemolyzed sample
    cannot show K or Mg "not low" (a normal value may hide a low one); a low value from it
    still counts. Draws flagged by `edta_contamination` are suppressed. Medicines are seen
    by generic name (reference_ranges/medications.toml) in a medication column of the
    export or in medication records read with it (FHIR resources, a preset's medication
    list).

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


def _refractory_pairs(ctx: Context, fired_k: np.ndarray) -> pd.DataFrame:
    """Per episode (index) whose tier is refractory, the pair of fired low K (obs ids,
    columns `first` and `last`) that shows it: two low K of `fired_k` (obs ids, -1 for
    none; each paired with a low Mg) at least `p3_refractory_min_gap` apart with no known
    normal Mg of a clean draw measured between them, at their own times included. `last`
    is the episode's latest K that has such an earlier K, `first` the earliest such K."""
    ks = np.unique(fired_k[fired_k >= 0])  # in obs order: (patient, time)
    if len(ks) < 2:
        return pd.DataFrame({"first": [], "last": []}, dtype="int64")
    obs = ctx.obs
    times, _ = ctx.search_key()
    t = ctx.t_ns()
    episode = obs["episode_id"].to_numpy().astype("int64")
    # one sortable int64 per (episode, time): episodes are runs of a patient's times, so
    # observations in obs order have ascending keys
    stride = len(times) + 1

    def key(ids: np.ndarray, at: np.ndarray) -> np.ndarray:
        # rank of the latest listed time at or before `at` (-1 before them all)
        return episode[ids] * stride + np.searchsorted(times, at, side="right") - 1

    kkey = key(ks, t[ks])
    low = obs["low"].to_numpy(dtype="float64")
    normal_mg = np.flatnonzero(
        ctx.is_analyte("magnesium") & (low == 0.0) & ~obs["contaminated"].to_numpy()
    )
    mkey = key(normal_mg, t[normal_mg])
    # For each fired K, the latest other fired K of its episode at least the gap before
    # it: of all such earlier K it spans the fewest Mg results, so if a normal Mg lies
    # between them, one lies between the K and every earlier one.
    gap = duration("p3_refractory_min_gap").as_unit("ns").value
    pos = np.searchsorted(kkey, key(ks, t[ks] - gap), side="right") - 1
    pos = np.minimum(pos, np.arange(len(ks)) - 1)
    earlier = ks[np.maximum(pos, 0)]
    between = np.searchsorted(mkey, kkey, side="right") - np.searchsorted(
        mkey, key(earlier, t[earlier]), side="left"
    )
    qualifies = (pos >= 0) & (episode[earlier] == episode[ks]) & (between == 0)
    last = ks[qualifies]
    if not len(last):
        return pd.DataFrame({"first": [], "last": []}, dtype="int64")
    latest = np.append(episode[last][1:] != episode[last][:-1], True)
    last, last_key = last[latest], kkey[qualifies][latest]
    ep = episode[last]
    # the earliest fired K after the last normal Mg at or before `last` (after the
    # episode's start where there is none): the widest pair that still qualifies
    m = np.searchsorted(mkey, last_key, side="right") - 1
    before = mkey[np.maximum(m, 0)] if len(mkey) else np.full(len(last), -1)
    floor = np.where((m >= 0) & (before // stride == ep), before, ep * stride - 1)
    first = ks[np.searchsorted(kkey, floor, side="right")]
    return pd.DataFrame({"first": first, "last": last}, index=ep, dtype="int64")


def evaluate(ctx: Context) -> pd.DataFrame:
    w = duration("window_electrolytes")
    a = common.anchors(ctx, ("potassium", "magnesium"))
    ok = common.known(ctx)
    mg = nearest(ctx, a, "magnesium", w, where=ok)
    # the window is measured from the anchor draw: the K must also lie within it of the Mg
    k = paired_with(ctx, nearest(ctx, a, "potassium", w, where=ok), mg, w)
    # ... and the same draw first, seen from the K: a K drawn with a Mg pairs with that Mg
    # only; a K drawn without one pairs with the Mg found (whatever that Mg's draw holds)
    k = same_draw_first(ctx, k, mg, "magnesium", ok)
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
    # Refractory: the anchors whose K is the earlier of the pair that shows it (so the
    # episode's finding is one of them), citing the later K as well (`potassium_last`).
    pairs = _refractory_pairs(ctx, np.where(fired, k, -1))
    episode = a["episode_id"]
    first_k = episode.map(pairs["first"]).fillna(-1).to_numpy(dtype="int64")
    refractory = fired & (k == first_k)
    tier = common.choose([refractory, fired], ["refractory", "concurrent"])
    later_k = np.where(
        refractory, episode.map(pairs["last"]).fillna(-1).to_numpy(dtype="int64"), -1
    )
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
        [contaminated, refractory, fired],
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
