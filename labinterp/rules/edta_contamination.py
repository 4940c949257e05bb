"""Guard `edta_contamination`: suspected K2-EDTA contaminated sample.

What it flags:
    A draw with potassium above ULN together with calcium below LLN, or with a
    contamination comment or text result ("UNABLE TO REPORT DUE TO CONTAMINATION") and no
    calcium measured not low (EDTA chelates calcium: a normal one speaks against it). Low Mg,
    low ALP or a contamination comment on the draw give tier `with_supporting_evidence`;
    otherwise `core_signature`. The finding says: recollect before acting. It suppresses
    P1 and P3 for that draw (their rows then say `suppressed` by `edta_contamination`).

Why it matters:
    K2-EDTA from a purple-top tube chelates Ca and Mg and adds K; about 4 % of high-K
    samples are contaminated. Acting on such values (giving Ca, Mg, or treating
    hyperkalemia) harms the patient.

Limitations:
    A hemolyzed K cannot prove "high", so a hemolyzed and contaminated sample may escape.
    Real hypocalcemia with real hyperkalemia (e.g. renal failure) also matches: the finding
    asks for a recollection, not a diagnosis. When an eGFR below the CKD threshold or a
    creatinine above its range lies within the electrolyte window, it carries the caveat
    `kidney_function_low` and says so (CLINICAL.md sec. 5: CKD is context, not a veto).
    Only fired rows are reported.

References:
    S63, S64, S65 (EDTA contamination), S66, S67 (hemolysis), S28 (CKD).
"""

from __future__ import annotations

import pandas as pd

from labinterp import guards
from labinterp.episodes import Context
from labinterp.rules.base import Rule

ID = "edta_contamination"


def evaluate(ctx: Context) -> pd.DataFrame:
    found = ctx.extras.get("edta_contamination")
    return found if isinstance(found, pd.DataFrame) else pd.DataFrame()


RULE = Rule(
    id=ID,
    kind="guard",
    analytes=("potassium", "calcium", "calcium_ionized", "magnesium", "alp", "egfr", "creatinine"),
    parameters=("window_electrolytes", "ckd_context_egfr_below"),
    citations=("S63", "S64", "S65", "S28"),
    evaluate=evaluate,
    doc=__doc__ or "",
)

__all__ = ["RULE", "guards"]
