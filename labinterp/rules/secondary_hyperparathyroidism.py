"""Context `secondary_hyperparathyroidism`: raised PTH with low 25-OH vitamin D.

What it flags:
    A PTH above its ULN with a 25-OH vitamin D below the guideline sufficiency cut-off
    within the vitamin D window. eGFR below the CKD threshold nearby adds `ckd_context`.

Why it matters:
    Low vitamin D lowers calcium absorption and drives PTH up (secondary
    hyperparathyroidism); in CKD the same picture has a renal cause.

Limitations:
    Only fired rows are reported. PTH assays of different generations are not comparable.

References:
    S25, S27, S30, S31, S28.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labinterp.episodes import Context, nearest, tri_below
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
    out = a.assign(
        status="fired",
        tier="",
        ev_pth=a["obs_id"].to_numpy(),
        ev_vitamin_d=d[hit],
        grade_obs=-1,
        grade_term="",
        missing_inputs="",
        suppressed_by="",
        caveats=np.where(ckd, "ckd_context", ""),
        note="Raised PTH with low 25-OH vitamin D (secondary hyperparathyroidism pattern).",
    )
    out = out.sort_values(["episode_id", "t"], kind="stable").drop_duplicates("episode_id")
    return common.with_episode_span(ctx, out.reset_index(drop=True))


RULE = Rule(
    id=ID,
    kind="context",
    analytes=("pth", "vitamin_d_25oh", "egfr"),
    parameters=("window_vitamin_d", "vitamin_d_sufficient_iom2011", "ckd_context_egfr_below"),
    citations=("S25", "S27", "S28", "S30", "S31"),
    evaluate=evaluate,
    doc=__doc__ or "",
)
