"""Context `ckd_context`: chronic kidney disease range eGFR, with its KDIGO stage.

What it flags:
    An eGFR below the CKD context threshold in an episode; the tier is the KDIGO G-stage of
    the lowest eGFR in the episode (G3a, G3b, G4, G5).

Why it matters:
    CKD changes how phosphate, PTH and vitamin D are read and makes albumin-corrected
    calcium unreliable; it is context for every pattern, not a veto.

Limitations:
    One eGFR is not a CKD diagnosis (that needs 3 months of evidence); stage is reported
    from the value only. A censored eGFR gives the stages it allows ("<60": `G3a-G5`).
    Only fired rows are reported.

References:
    S28 (KDIGO 2012/2017).
"""

from __future__ import annotations

import pandas as pd

from labinterp.episodes import Context, ckd_stage, tri_below
from labinterp.rules.base import Rule
from labinterp.rules.common import with_episode_span

ID = "ckd_context"


def evaluate(ctx: Context) -> pd.DataFrame:
    obs = ctx.obs
    low = ctx.tri("egfr", tri_below, "ckd_context_egfr_below") == 1.0
    a = obs.loc[low, ["pat", "t", "episode_id", "obs_id", "value", "comparator"]]
    a = a.sort_values(["episode_id", "value", "t"], kind="stable").drop_duplicates("episode_id")
    a = a.reset_index(drop=True)
    out = a.assign(
        status="fired",
        tier=ckd_stage(a["value"].to_numpy(dtype="float64"), a["comparator"].to_numpy()),
        ev_egfr=a["obs_id"].to_numpy(),
        grade_obs=-1,
        grade_term="",
        missing_inputs="",
        suppressed_by="",
        caveats="",
        note="eGFR in the CKD range: phosphate, PTH, vitamin D and corrected Ca read differently.",
    ).drop(columns=["value", "comparator"])
    return with_episode_span(ctx, out)


RULE = Rule(
    id=ID,
    kind="context",
    analytes=("egfr",),
    parameters=(
        "ckd_context_egfr_below",
        "ckd_g1_from",
        "ckd_g2_from",
        "ckd_g3a_from",
        "ckd_g3b_from",
        "ckd_g4_from",
    ),
    citations=("S28",),
    evaluate=evaluate,
    doc=__doc__ or "",
)
