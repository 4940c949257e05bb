"""Context `hyperphosphatemia_hypomagnesemia`: high phosphate with low magnesium.

What it flags:
    A magnesium below LLN with a phosphate above its ULN within the electrolyte window.
    Context only (kind `context`): shown for the clinician, never a pattern. eGFR below the
    CKD threshold nearby adds `ckd_context`.

Why it matters:
    In kidney disease magnesium and phosphate handling are linked, and CKD changes how
    phosphate, PTH and vitamin D are read.

Limitations:
    Only fired rows are reported. Children have much higher phosphate: without a lab range
    for a child the phosphate is not judged (range unknown).

References:
    S21 (phosphate), S28 (CKD).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labinterp.episodes import Context
from labinterp.rules import common
from labinterp.rules.base import Rule, duration

ID = "hyperphosphatemia_hypomagnesemia"


def evaluate(ctx: Context) -> pd.DataFrame:
    w = duration("window_electrolytes")
    high = ctx.obs["high"].to_numpy(dtype="float64") == 1.0
    out = common.low_mg_with(ctx, "phosphate", high, w, "High phosphate with low Mg.")
    if len(out):
        ckd = common.ckd_nearby(ctx, out, w, "ckd_context_egfr_below")
        out["caveats"] = np.where(ckd, "ckd_context", "")
    return out


RULE = Rule(
    id=ID,
    kind="context",
    analytes=("magnesium", "phosphate", "egfr"),
    parameters=("window_electrolytes", "ckd_context_egfr_below"),
    citations=("S21", "S28"),
    evaluate=evaluate,
    doc=__doc__ or "",
)
