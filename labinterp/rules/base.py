"""What every rule declares (see DESIGN.md, idiom 1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labinterp.parameters import as_compared, change_as_compared, duration, number, parameters

__all__ = ["Rule", "as_compared", "change_as_compared", "duration", "number", "parameters"]


# Stronger tiers rank higher: of a patient's fired episodes of a rule, the audit's row and
# the handout show the strongest (unknown tiers rank 0).
TIER_RANK = {
    "supported": 2,
    "possible": 1,
    "refractory": 2,
    "concurrent": 1,
    "serial": 2,
    "single": 1,
    # the EDTA guard: a low Mg or ALP, or a contamination comment, supports the signature
    "with_supporting_evidence": 2,
    "core_signature": 1,
}


@dataclass(frozen=True)
class Rule:
    """A rule: a pure, vectorized function over the engine's Context.

    `evaluate(ctx)` returns one row per patient x episode with the columns of
    `labinterp.interpret.RULE_OUTPUT` (status, tier, evidence obs ids, ...).
    """

    id: str
    kind: str  # "pattern" | "guard" | "context"
    analytes: tuple[str, ...]  # inputs the rule needs (for missing_inputs and docs)
    parameters: tuple[str, ...]  # keys of rule_parameters.toml it reads
    citations: tuple[str, ...]  # source keys of CLINICAL.md
    evaluate: Callable[[Any], pd.DataFrame]
    doc: str  # the module docstring (What it flags / Why it matters / Limitations / References)
