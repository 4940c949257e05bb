"""collapse() against the plain pandas formulation it replaces, on random findings with many
ties, missing times and unlisted statuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labinterp import schema
from labinterp.audit.collapse import AUDIT_FINDINGS, STATUS_RANK, TIER_RANK, collapse


def _reference(findings: pd.DataFrame) -> pd.DataFrame:
    status = findings["status"].astype(object)
    k = pd.DataFrame(
        {
            "patient_id": findings["patient_id"],
            "rule_id": findings["rule_id"],
            "_s": status.map(STATUS_RANK).fillna(-1).astype(int),
            "_t": findings["tier"].astype(object).map(TIER_RANK).fillna(0).astype(int),
            "_fired": (status == "fired").astype(int),
            "_end": findings["episode_end"].fillna(pd.Timestamp.min),
            "_start": findings["episode_start"].fillna(pd.Timestamp.min),
            "_ev": findings["evidence"].fillna("").astype(object),
        }
    ).sort_values(
        ["patient_id", "rule_id", "_s", "_t", "_end", "_start", "_ev"],
        ascending=[True, True, False, False, False, False, True],
        kind="mergesort",
    )
    keys = ["patient_id", "rule_id"]
    counts = k.groupby(keys, sort=False).agg(
        episodes=("_s", "size"), episodes_fired=("_fired", "sum")
    )
    chosen = k.index[~k.duplicated(keys, keep="first").to_numpy()]
    first = findings.loc[chosen].set_index(keys).join(counts).reset_index()
    return schema.conform(first, AUDIT_FINDINGS)


@pytest.mark.parametrize("seed", range(8))
def test_collapse_picks_the_rows_the_pandas_sort_picks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    days = rng.integers(0, 6, n)
    times = pd.to_datetime("2024-01-01") + pd.to_timedelta(days, unit="D")
    times = times.where(rng.random(n) > 0.15)  # some undated episodes
    findings = schema.conform(
        pd.DataFrame(
            {
                "patient_id": rng.choice(["P1", "P10", "P2", "Ä3", "p4"], n),
                "rule_id": rng.choice(["hypomagnesemia_hypocalcemia", "edta_contamination"], n),
                "status": rng.choice([*STATUS_RANK, "odd"], n),
                "tier": rng.choice(["", "supported", "possible", "single"], n),
                "episode_start": times,
                "episode_end": times + pd.to_timedelta(rng.integers(0, 3, n), unit="D"),
                "evidence": rng.choice(["Mg 1.2", "Mg 1.1", "", "K 3.0"], n),
                "caveats": [f"row {i}" for i in range(n)],  # tells equal-looking rows apart
            }
        ),
        schema.FINDINGS,
    )
    pd.testing.assert_frame_equal(collapse(findings), _reference(findings))
