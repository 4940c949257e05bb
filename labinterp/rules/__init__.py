"""The rule registry: every rule the engine runs, listed explicitly (never discovered).

Order matters only for output sorting; guards run before the patterns in
`labinterp.interpret` regardless of where they are listed.
"""

from __future__ import annotations

from labinterp.rules import (
    ckd_context,
    edta_contamination,
    hypercalcemia_hypomagnesemia,
    hyperphosphatemia_hypomagnesemia,
    hypomagnesemia_hypocalcemia,
    hypomagnesemia_hypokalemia,
    inflammation_hypomagnesemia,
    secondary_hyperparathyroidism,
    vitamin_d_resistance,
)
from labinterp.rules.base import Rule

REGISTRY: tuple[Rule, ...] = (
    edta_contamination.RULE,
    hypomagnesemia_hypocalcemia.RULE,
    vitamin_d_resistance.RULE,
    hypomagnesemia_hypokalemia.RULE,
    hyperphosphatemia_hypomagnesemia.RULE,
    inflammation_hypomagnesemia.RULE,
    hypercalcemia_hypomagnesemia.RULE,
    secondary_hyperparathyroidism.RULE,
    ckd_context.RULE,
)

PATTERN_IDS: tuple[str, ...] = tuple(r.id for r in REGISTRY if r.kind == "pattern")


def by_id(rule_id: str) -> Rule:
    for rule in REGISTRY:
        if rule.id == rule_id:
            return rule
    raise KeyError(rule_id)
