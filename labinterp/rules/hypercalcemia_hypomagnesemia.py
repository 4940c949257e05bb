"""Context `hypercalcemia_hypomagnesemia`: high calcium with low magnesium.

What it flags:
    A magnesium below LLN with a high calcium within the electrolyte window. The calcium
    judged is the one P1 would judge: the nearest ionized Ca when one is in the window, else
    the nearest albumin-corrected Ca (reported or derived), else the nearest total Ca. A
    total Ca above its ULN next to a normal ionized Ca does not fire: CLINICAL.md sec. 3
    prefers ionized Ca whenever one exists within the window (total Ca follows albumin,
    which is often abnormal in the patients who get both tests). A corrected Ca gets the
    caveats P1 gives one: `corrected_ca_low_albumin` when the albumin it rests on (cited) is
    below `albumin_unreliable_below`, `ckd_context` when an eGFR below the CKD threshold is
    within the window.

Why it matters:
    A calcium load, or high blood calcium, raises renal magnesium loss.

Limitations:
    Only fired rows are reported. Corrected calcium is unreliable with albumin < 30 g/L
    and in CKD: ionized Ca, when measured, is used instead; else the finding is kept with
    the caveat.

References:
    S7, S15 (the finding); S18-S20 (corrected calcium and its limits); S28 (CKD).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labinterp.episodes import Context, nearest, take
from labinterp.rules import common
from labinterp.rules.base import Rule, duration

ID = "hypercalcemia_hypomagnesemia"


def evaluate(ctx: Context) -> pd.DataFrame:
    w = duration("window_electrolytes")
    a = common.low_mg_anchors(ctx)
    usable = common.known(ctx, "high")  # state known, not from a contaminated draw
    ion = nearest(ctx, a, "calcium_ionized", w, where=usable)
    corr = nearest(ctx, a, "calcium_corrected", w, where=usable)
    total = nearest(ctx, a, "calcium", w, where=usable)
    ca = np.where(ion >= 0, ion, np.where(corr >= 0, corr, total))
    ca = np.where(take(ctx, ca, "high") == 1.0, ca, -1)
    corrected = (ion < 0) & (corr >= 0) & (ca >= 0)
    alb_id, low_alb, ckd = common.corrected_ca_caveats(ctx, a, ca, corrected, w)
    caveats = common.flags(("corrected_ca_low_albumin", low_alb), ("ckd_context", ckd))
    note = common.choose(
        [ion >= 0, corr >= 0],
        ["High Ca with low Mg (Ca basis: ionized).", "High Ca with low Mg (Ca basis: corrected)."],
        "High Ca with low Mg (Ca basis: total; albumin unknown).",
    )
    out = common.low_mg_paired(
        ctx, a, "calcium", ca, note, extra={"ev_albumin": alb_id, "caveats": caveats}
    )
    if out.empty:
        return out
    out["grade_obs"] = np.asarray(out["ev_calcium"], dtype="int64")
    out["grade_term"] = np.where(
        ctx.is_analyte("calcium_ionized")[out["ev_calcium"].to_numpy()],
        "hypercalcemia_ionized",
        "hypercalcemia",
    )
    return out


RULE = Rule(
    id=ID,
    kind="context",
    analytes=("magnesium", "calcium", "calcium_ionized", "calcium_corrected", "albumin", "egfr"),
    parameters=("window_electrolytes", "albumin_unreliable_below", "ckd_context_egfr_below"),
    citations=("S7", "S15", "S18", "S19", "S20", "S28"),
    evaluate=evaluate,
    doc=__doc__ or "",
)
