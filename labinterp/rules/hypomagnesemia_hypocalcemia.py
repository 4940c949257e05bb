"""P1 `hypomagnesemia_hypocalcemia`: low magnesium with true low calcium.

What it flags:
    A magnesium below its lower limit paired (same draw, else within the electrolyte
    window) with true hypocalcemia: ionized Ca below LLN, else albumin-corrected Ca
    (reported, or derived from total Ca and albumin) below LLN, else total Ca below LLN with
    albumin unknown (caveat `albumin_unknown`, tier at most `possible`). Tier `supported`
    when PTH within the PTH window is not raised, or Mg is below the PTH-failure threshold;
    else `possible` (the note says a PTH response is present when PTH is raised). Total Ca
    low with corrected/ionized Ca normal is pseudo-hypocalcemia: not fired, with a caveat.
    A corrected Ca that is unreliable (albumin below `albumin_unreliable_below`, or CKD)
    gives way to a known ionized Ca within the electrolyte window: that ionized Ca is the
    basis when it pairs with the Mg, else the draw is not judged on Ca at all (the ionized
    Ca's own draw judges it), and the note says the ionized Ca was preferred.
    A proton pump inhibitor or diuretic listed near the Mg cited adds
    `mg_lowering_medication` (see P3).

Why it matters:
    Magnesium deficiency blunts PTH release and makes bone and kidney resistant to PTH, so
    calcium stays low until magnesium is replaced (functional hypoparathyroidism).

Limitations:
    Pairs each draw with the nearest value of each analyte in the window, not every
    combination; a Ca counts only within the window of the Mg it is paired with, and the
    same draw first as seen from the Ca: a Ca whose own draw holds a Mg pairs with that Mg
    only, while a Ca drawn without a Mg pairs with a Mg of another draw even when that
    draw holds a Ca of its own. A PTH counts only within the PTH window of both. Corrected
    calcium (derived or reported) is unreliable with albumin < 30 g/L and in CKD (caveats
    `corrected_ca_low_albumin`, `ckd_context` when it is still the basis: no ionized Ca
    with a known range lies within the window). Draws flagged by `edta_contamination` are
    suppressed and their values are not paired with other draws. Hemolysis cannot make a
    Mg "not low". Censored values count only when the censoring settles the comparison.

References:
    S7, S27, S6, S55 (mechanism); S1, S6 (Mg threshold of PTH failure); S18-S20 (corrected
    calcium and its limits); S28 (CKD).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labinterp.episodes import (
    Context,
    nearest,
    paired_with,
    same_draw_first,
    take,
    take_bool,
    tri_below,
)
from labinterp.rules import common
from labinterp.rules.base import Rule, as_compared, duration

ID = "hypomagnesemia_hypocalcemia"
TIERS = {"supported": 0, "possible": 1}


def evaluate(ctx: Context) -> pd.DataFrame:
    w = duration("window_electrolytes")
    obs = ctx.obs
    a = common.anchors(ctx, ("magnesium", "calcium", "calcium_ionized", "calcium_corrected"))
    ok = common.known(ctx)
    mg = nearest(ctx, a, "magnesium", w, where=ok)
    ion_near = nearest(ctx, a, "calcium_ionized", w, where=ok)
    corr_near = nearest(ctx, a, "calcium_corrected", w, where=ok)
    # each window is measured from the anchor draw: a Ca (or PTH) found for it must also
    # lie within the window of the Mg it is paired with (and the PTH of that Ca)
    ion = paired_with(ctx, ion_near, mg, w)
    corr = paired_with(ctx, corr_near, mg, w)
    total = paired_with(ctx, nearest(ctx, a, "calcium", w, where=ok), mg, w)
    # the same draw first, seen from the Ca: a Ca drawn with a Mg pairs with that Mg only;
    # a Ca drawn without one pairs with the Mg found (whatever else that Mg's draw holds)
    ion = same_draw_first(ctx, ion, mg, "magnesium", ok)
    corr = same_draw_first(ctx, corr, mg, "magnesium", ok)
    total = same_draw_first(ctx, total, mg, "magnesium", ok)
    # the albumin a corrected Ca rests on; low albumin or CKD makes it unreliable (computed
    # for the nearest corrected Ca, of which the paired one is the same or none)
    alb_near, low_alb_near, ckd_near = common.corrected_ca_caveats(
        ctx, a, corr_near, corr_near >= 0, w
    )
    unreliable = low_alb_near | ckd_near
    # CLINICAL.md sec. 3: an unreliable corrected Ca gives way to a known ionized Ca within
    # the window; when that ionized Ca is not this anchor's pair (say it was drawn with a
    # Mg of its own), this anchor gives no verdict on Ca and the ionized Ca's draw judges it
    set_aside = (ion < 0) & (corr >= 0) & unreliable & (ion_near >= 0)
    w_pth = duration("window_pth")
    pth = paired_with(
        ctx, nearest(ctx, a, "pth", w_pth, where=common.known(ctx, "high")), mg, w_pth
    )
    any_mg = nearest(ctx, a, "magnesium", w)
    any_ca = np.maximum.reduce(
        [nearest(ctx, a, x, w) for x in ("calcium", "calcium_ionized", "calcium_corrected")]
    )

    basis = np.where(
        ion >= 0, "ionized", np.where(corr >= 0, "corrected", np.where(total >= 0, "total", ""))
    )
    basis[set_aside] = ""
    ca = np.where(set_aside, -1, np.where(ion >= 0, ion, np.where(corr >= 0, corr, total)))
    pth = paired_with(ctx, pth, ca, w_pth)
    ca_low = take(ctx, ca, "low")
    mg_low = take(ctx, mg, "low")
    total_low = take(ctx, total, "low")
    pseudo = (total_low == 1.0) & (basis != "total") & (ca_low == 0.0)

    contaminated = a["contaminated"].to_numpy()
    fired = ~contaminated & (mg_low == 1.0) & (ca_low == 1.0)
    not_fired = ~contaminated & ~fired & ((mg_low == 0.0) | (ca_low == 0.0))
    status = common.choose(
        [contaminated, fired, not_fired], ["suppressed", "fired", "not_fired"], "indeterminate"
    )

    mg_cmp = np.where(mg >= 0, obs["comparator"].to_numpy()[np.maximum(mg, 0)], "")
    mg_val, failure_below = as_compared(
        "p1_mg_pth_failure_below", take(ctx, mg, "value"), take(ctx, mg, "value_reported")
    )
    severe = tri_below(mg_val, mg_cmp, failure_below) == 1.0
    pth_high = take(ctx, pth, "high")
    supported = (severe | (pth_high == 0.0)) & (basis != "total")
    tier = common.choose([fired & supported, fired], ["supported", "possible"])

    on_corrected = basis == "corrected"  # then the Ca is the paired corrected Ca, corr_near
    alb_id = np.where(on_corrected, alb_near, -1)
    low_alb, ckd = low_alb_near & on_corrected, ckd_near & on_corrected
    hemolyzed_mg = take_bool(ctx, any_mg, "hemolyzed")
    indeterminate = ~contaminated & ~fired & ~not_fired
    missing = common.flags(
        ("magnesium", indeterminate & np.isnan(mg_low)),
        ("calcium", indeterminate & np.isnan(ca_low)),
    )
    near, medicines = common.mg_lowering_nearby(ctx, mg, w)
    mg_lowering = fired & near
    caveats = common.flags(
        ("mg_lowering_medication", mg_lowering),
        ("albumin_unknown", fired & (basis == "total")),
        ("pseudo_hypocalcemia", pseudo & ~contaminated),
        ("corrected_ca_low_albumin", low_alb & (fired | not_fired)),
        ("ckd_context", ckd & (fired | not_fired)),
        ("hemolyzed", hemolyzed_mg),
        ("range_unknown", common.range_unknown(ctx, any_mg) | common.range_unknown(ctx, any_ca)),
    )
    note = common.choose(
        [
            contaminated,
            fired & (basis == "total"),
            fired & (basis == "ionized"),
            fired,  # the basis is "corrected" here
            pseudo,
        ],
        [
            "Not assessed: this draw looks EDTA-contaminated; recollect.",
            "Low Mg with low total Ca; albumin unknown, so true hypocalcemia is not proven.",
            "Low Mg with low Ca (Ca basis: ionized).",
            "Low Mg with low Ca (Ca basis: corrected).",
            "Total Ca is low but corrected/ionized Ca is normal (pseudo-hypocalcemia).",
        ],
    )
    # after the Ca basis, which a raised PTH does not make less worth saying (a total Ca
    # with albumin unknown still proves no true hypocalcemia)
    note = common.noted(
        note, fired & (pth_high == 1.0), "PTH is raised, so a PTH response is present."
    )
    # why the tier is "supported" (CLINICAL.md sec. 4), so the clinician need not infer it
    supported_fired = fired & supported
    note = common.noted(
        note,
        supported_fired & (pth_high == 0.0),
        "Supported: PTH is not raised, inappropriately for the low Ca.",
    )
    note = common.noted(
        note,
        supported_fired & severe,
        "Supported: Mg is below the level at which PTH secretion fails.",
    )
    note = common.noted(
        note,
        (basis == "ionized") & unreliable & (fired | not_fired),
        "Ionized Ca preferred: the corrected Ca within the window is unreliable "
        "(low albumin or CKD).",
    )
    note = common.noted(note, mg_lowering, common.mg_lowering_sentences(medicines))
    grade_src = np.where(fired, mg, -1)
    columns = dict(
        status=status,
        tier=tier,
        ev_magnesium=np.where(mg >= 0, mg, any_mg),
        ev_calcium=np.where(ca >= 0, ca, any_ca),
        ev_calcium_total=np.where((basis != "total") & (total >= 0), total, -1),
        ev_albumin=alb_id,
        ev_pth=pth,
        grade_obs=grade_src,
        grade_term="hypomagnesemia",
        missing_inputs=missing,
        suppressed_by=common.choose([contaminated], ["edta_contamination"]),
        caveats=caveats,
        note=note,
    )
    return common.finish_per_episode(
        ctx, a, columns, TIERS, "magnesium;calcium", "No Mg or Ca result to assess."
    )


RULE = Rule(
    id=ID,
    kind="pattern",
    analytes=("magnesium", "calcium", "calcium_ionized", "calcium_corrected", "albumin", "pth"),
    parameters=(
        "window_electrolytes",
        "window_pth",
        "p1_mg_pth_failure_below",
        "albumin_unreliable_below",
        "ckd_context_egfr_below",
    ),
    citations=("S1", "S6", "S7", "S18", "S19", "S20", "S27", "S55"),
    evaluate=evaluate,
    doc=__doc__ or "",
)
