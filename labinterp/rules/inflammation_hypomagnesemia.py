"""Context `inflammation_hypomagnesemia`: raised CRP with low magnesium.

What it flags:
    A magnesium below LLN with a CRP above the inflammation threshold within the CRP window.

Why it matters:
    Long-term inflammation is associated with lower magnesium; the CRP also warns that other
    results (25-OH vitamin D) may read low during inflammation.

Limitations:
    Association only; an acute-phase CRP says nothing about cause. Only fired rows are
    reported. mg/dL CRP is converted by the reader (the 10x trap of CLINICAL.md sec. 1).

References:
    S38, S39, S40.
"""

from __future__ import annotations

import pandas as pd

from labinterp.episodes import Context, tri_above
from labinterp.rules import common
from labinterp.rules.base import Rule, duration

ID = "inflammation_hypomagnesemia"


def evaluate(ctx: Context) -> pd.DataFrame:
    high = ctx.tri("crp", tri_above, "crp_inflammation_above") == 1.0
    return common.low_mg_with(ctx, "crp", high, duration("window_crp"), "Raised CRP with low Mg.")


RULE = Rule(
    id=ID,
    kind="context",
    analytes=("magnesium", "crp"),
    parameters=("window_crp", "crp_inflammation_above"),
    citations=("S38", "S39", "S40"),
    evaluate=evaluate,
    doc=__doc__ or "",
)
