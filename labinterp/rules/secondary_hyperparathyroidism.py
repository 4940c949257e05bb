"""Context `secondary_hyperparathyroidism`: raised PTH with low 25-OH vitamin D.

What it flags:
    A PTH above its ULN with a 25-OH vitamin D below the guideline sufficiency cut-off
    within the vitamin D window. eGFR below the CKD threshold nearby adds `ckd_context`.
    A high calcium within the PTH window of the PTH (the nearest ionized Ca, else corrected,
    else total, as P1 judges calcium) adds `calcium_high` and is cited: high calcium with a
    raised PTH is the picture of primary, not secondary, hyperparathyroidism.

Why it matters:
    Low vitamin D lowers calcium absorption and drives PTH up (secondary
    hyperparathyroidism); in CKD the same picture has a renal cause.

Limitations:
    Only fired rows are reported. PTH assays of different generations are not comparable.
    High calcium is shown, not used to suppress the finding: the rule does not tell primary
    from secondary hyperparathyroidism (or both, as in CKD).

References:
    S25, S27, S30, S31, S28; S15 (high calcium).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labinterp.episodes import Context, nearest, take, tri_below
from labinterp.rules import common
from labinterp.rules.base import Rule, duration
from labinterp.rules.vitamin_d_resistance import cutoff_parameter

ID = "secondary_hyperparathyroidism"


def evaluate(ctx: Context) -> pd.DataFrame:
    obs = ctx.obs
    clean = ~obs["contaminated"].to_numpy()
    pth_high = ctx.is_analyte("pth") & (obs["high"].to_numpy(dtype="float64") == 1.0) & clean
    d_low = ctx.tri("vitamin_d_25oh", tri_below, cutoff_parameter(ctx.vitamin_d_guideline)) == 1.0
    a = obs.loc[pth_high, ["pat", "t", "dated", "draw_id", "episode_id", "obs_id"]]
    a = a.reset_index(drop=True)
    wd = duration("window_vitamin_d")
    d = nearest(ctx, a, "vitamin_d_25oh", wd, where=d_low)
    hit = d >= 0
    a = a[hit].reset_index(drop=True)
    ckd = common.ckd_nearby(ctx, a, wd, "ckd_context_egfr_below")
    ca = _high_calcium(ctx, a)
    high_ca = ca >= 0
    out = a.assign(
        status="fired",
        tier="",
        ev_pth=a["obs_id"].to_numpy(),
        ev_vitamin_d=d[hit],
        **common.vitamin_d_components(ctx, d[hit], "vitamin_d"),
        ev_calcium=ca,
        grade_obs=-1,
        grade_term="",
        missing_inputs="",
        suppressed_by="",
        caveats=common.flags(("ckd_context", ckd), ("calcium_high", high_ca)),
        note=common.choose(
            [high_ca],
            [
                "Raised PTH with low 25-OH vitamin D; calcium is high, which with a raised"
                " PTH is the primary hyperparathyroidism picture."
            ],
            "Raised PTH with low 25-OH vitamin D (secondary hyperparathyroidism pattern).",
        ),
    )
    out = out.sort_values(["episode_id", "t"], kind="stable").drop_duplicates("episode_id")
    return common.with_episode_span(ctx, out.reset_index(drop=True))


def _high_calcium(ctx: Context, a: pd.DataFrame) -> np.ndarray:
    """Per PTH anchor of `a`: the calcium judged within the PTH window (the nearest ionized
    Ca, else albumin-corrected, else total: CLINICAL.md sec. 3 prefers ionized) when it is
    above its ULN, else -1."""
    w = duration("window_pth")
    usable = common.known(ctx, "high")  # state known, not from a contaminated draw
    ion = nearest(ctx, a, "calcium_ionized", w, where=usable)
    corr = nearest(ctx, a, "calcium_corrected", w, where=usable)
    total = nearest(ctx, a, "calcium", w, where=usable)
    ca = np.where(ion >= 0, ion, np.where(corr >= 0, corr, total))
    return np.where(take(ctx, ca, "high") == 1.0, ca, -1).astype("int64")


RULE = Rule(
    id=ID,
    kind="context",
    analytes=("pth", "vitamin_d_25oh", "egfr", "calcium", "calcium_ionized", "calcium_corrected"),
    parameters=(
        "window_vitamin_d",
        "window_pth",
        "vitamin_d_sufficient_iom2011",
        "vitamin_d_sufficient_es2011",
        "ckd_context_egfr_below",
    ),
    citations=("S15", "S25", "S27", "S28", "S30", "S31", "S33", "S34"),
    evaluate=evaluate,
    doc=__doc__ or "",
)
