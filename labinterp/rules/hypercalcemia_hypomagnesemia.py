"""Context `hypercalcemia_hypomagnesemia`: high calcium with low magnesium.

What it flags:
    A magnesium below LLN with a calcium above its ULN within the electrolyte window
    (ionized, corrected or total, whichever is nearest).

Why it matters:
    A calcium load, or high blood calcium, raises renal magnesium loss.

Limitations:
    Only fired rows are reported; total calcium is not corrected for albumin here.

References:
    S7, S15.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labinterp.episodes import Context
from labinterp.rules import common
from labinterp.rules.base import Rule, duration

ID = "hypercalcemia_hypomagnesemia"


def evaluate(ctx: Context) -> pd.DataFrame:
    obs = ctx.obs
    high = (obs["high"].to_numpy(dtype="float64") == 1.0) & ~obs["derived"].to_numpy()
    parts = []
    for name in ("calcium_ionized", "calcium_corrected", "calcium"):
        part = common.low_mg_with(
            ctx,
            name,
            high & ctx.is_analyte(name),
            duration("window_electrolytes"),
            "High calcium with low Mg.",
        )
        parts.append(part.rename(columns={f"ev_{name}": "ev_calcium"}))
    out = pd.concat(parts, ignore_index=True)
    if out.empty:
        return out
    out = out.sort_values(["episode_id", "t"], kind="stable").drop_duplicates("episode_id")
    out["grade_obs"] = np.asarray(out["ev_calcium"], dtype="int64")
    out["grade_term"] = np.where(
        ctx.is_analyte("calcium_ionized")[out["ev_calcium"].to_numpy()],
        "hypercalcemia_ionized",
        "hypercalcemia",
    )
    return out.reset_index(drop=True)


RULE = Rule(
    id=ID,
    kind="context",
    analytes=("magnesium", "calcium", "calcium_ionized", "calcium_corrected"),
    parameters=("window_electrolytes",),
    citations=("S7", "S15"),
    evaluate=evaluate,
    doc=__doc__ or "",
)
