"""Guards: checks that run before the patterns and can veto them (CLINICAL.md sec. 5).

* Hemolysis (S66, S67): a quality flag `hemolyzed` (set by the reader from a comment or
  flag, and spread by episodes.build to every result of the same sample) makes the K and
  Mg of that sample unable to prove "high", and unable to prove "not low" (a normal value
  may hide a low true value); a low value stays low, since hemolysis only pushes them up.
* `edta_contamination` (S63-S65): K above ULN on a draw whose calcium is below LLN, or
  whose results carry a contamination comment or text ("UNABLE TO REPORT DUE TO
  CONTAMINATION") while no calcium of the draw was measured not low. K2-EDTA from a
  purple-top tube adds K and chelates Ca and Mg. The draw is marked `contaminated`; P1
  and P3 then report `suppressed` for anything built on it.
  Low Mg and low ALP on the same draw strengthen the finding (listed in its evidence).
  Kidney failure makes the same picture for real (high K, low Ca): an eGFR below the CKD
  threshold or a creatinine above its range within the electrolyte window adds the caveat
  `kidney_function_low`, so that the reader weighs it before recollecting. CLINICAL.md
  sec. 5 keeps CKD as context, not a veto: the finding still fires.
* Pseudo-hypocalcemia: computed inside P1 (total Ca low while corrected or ionized Ca is
  normal), reported as a not-fired P1 with the caveat `pseudo_hypocalcemia`.
* Suspected unit errors (a value impossible for its stated unit) are rejected by the
  reader with reason `implausible_value` and never reach the engine; they appear in the
  rejected-rows table, not in findings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labinterp.episodes import Context, nearest, tri_below
from labinterp.parameters import duration

HEMOLYSIS_SENSITIVE = ("potassium", "magnesium")
EDTA_AFFECTED = ("potassium", "calcium", "calcium_ionized", "calcium_corrected", "magnesium", "alp")
CALCIUM_MEASURED = ("calcium", "calcium_ionized", "calcium_corrected")


def apply_hemolysis(ctx: Context) -> None:
    obs = ctx.obs
    hit = obs["hemolyzed"].to_numpy() & ctx.is_analyte(*HEMOLYSIS_SENSITIVE)
    if not hit.any():
        return
    high = obs["high"].to_numpy().copy()
    low = obs["low"].to_numpy().copy()
    high[hit] = np.nan
    low[hit & (low == 0.0)] = np.nan
    obs["high"] = high
    obs["low"] = low


def _first_per_draw(obs: pd.DataFrame, mask: np.ndarray) -> pd.Series:
    """The first observation id of each draw among the rows `mask`, by draw id.

    Observation ids are positions and draw ids never decrease along them (episodes.build
    numbers both in (patient, time) order), so the first masked row of each draw is the
    one whose draw differs from the masked row before it: no groupby needed."""
    ids = np.flatnonzero(mask)
    draws = obs["draw_id"].to_numpy()[ids]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = draws[1:] != draws[:-1]
    return pd.Series(ids[first], index=draws[first])


def edta_contamination(ctx: Context) -> pd.DataFrame:
    """Fired rows of the guard, one per contaminated draw; marks `obs.contaminated`."""
    obs = ctx.obs
    measured = ~obs["derived"].to_numpy()
    is_k = ctx.is_analyte("potassium")
    is_ca = ctx.is_analyte(*CALCIUM_MEASURED) & measured
    k_high = is_k & (obs["high"].to_numpy() == 1.0)
    ca_low = is_ca & (obs["low"].to_numpy() == 1.0)
    comment = obs["contam_comment"].to_numpy()
    k_by_draw = _first_per_draw(obs, k_high)
    ca_by_draw = _first_per_draw(obs, ca_low)
    comment_by_draw = _first_per_draw(obs, comment)
    # CLINICAL.md sec. 5: the signature is high K with low Ca; a comment only strengthens
    # it. It stands in for the low Ca only where the lab withheld the calcium ("UNABLE TO
    # REPORT DUE TO CONTAMINATION"): a calcium measured and not low speaks against EDTA,
    # which chelates it, whatever the comment says.
    ca_not_low = _first_per_draw(obs, is_ca & (obs["low"].to_numpy() == 0.0)).index
    commented = comment_by_draw.index[~comment_by_draw.index.isin(ca_not_low)]
    draws = k_by_draw.index[
        k_by_draw.index.isin(ca_by_draw.index) | k_by_draw.index.isin(commented)
    ]
    if len(draws) == 0:
        return pd.DataFrame()
    in_draw = obs["draw_id"].isin(draws).to_numpy()
    obs["contaminated"] = obs["contaminated"].to_numpy() | (
        in_draw & ctx.is_analyte(*EDTA_AFFECTED)
    )
    ca_text = is_ca & obs["has_text"].to_numpy()
    mg_low = ctx.is_analyte("magnesium") & (obs["low"].to_numpy() == 1.0)
    alp_low = ctx.is_analyte("alp") & (obs["low"].to_numpy() == 1.0)

    def pick(series: pd.Series) -> np.ndarray:
        return series.reindex(draws).fillna(-1).astype("int64").to_numpy()

    ev_ca = pick(ca_by_draw)
    ev_ca_text = pick(_first_per_draw(obs, ca_text))
    ev_ca = np.where(ev_ca >= 0, ev_ca, ev_ca_text)
    ev_mg = pick(_first_per_draw(obs, mg_low))
    ev_alp = pick(_first_per_draw(obs, alp_low))
    has_comment = pick(comment_by_draw) >= 0
    ev_k = pick(k_by_draw)
    first = obs.iloc[ev_k]
    strength = np.where(
        (ev_mg >= 0) | (ev_alp >= 0) | has_comment, "with_supporting_evidence", "core_signature"
    )
    kidney = _kidney_function_low(ctx, first)
    caveat = np.select(
        [has_comment & kidney, has_comment, kidney],
        ["contamination_comment;kidney_function_low", "contamination_comment", KIDNEY_CAVEAT],
        "",
    )
    note = np.where(kidney, f"{EDTA_NOTE} {KIDNEY_NOTE}", EDTA_NOTE)
    times = first["t"].where(first["dated"].to_numpy())
    return pd.DataFrame(
        {
            "pat": first["pat"].to_numpy(),
            "start": times.to_numpy(),
            "end": times.to_numpy(),
            "status": "fired",
            "tier": strength,
            "grade": np.nan,
            "ev_potassium": ev_k,
            "ev_calcium": ev_ca,
            "ev_magnesium": ev_mg,
            "ev_alp": ev_alp,
            "missing_inputs": "",
            "suppressed_by": "",
            "caveats": caveat,
            "note": note,
        }
    )


EDTA_NOTE = (
    "Suspected EDTA-contaminated sample (high K with low Ca on one draw): "
    "recollect before acting on K, Ca or Mg from this draw."
)
KIDNEY_CAVEAT = "kidney_function_low"
KIDNEY_NOTE = (
    "Kidney function is low nearby (eGFR or creatinine), and kidney failure raises K and "
    "lowers Ca for real: weigh that before calling the sample contaminated."
)


def _kidney_function_low(ctx: Context, draws: pd.DataFrame) -> np.ndarray:
    """Per flagged draw (a row of obs): an eGFR below the CKD-context threshold, or a
    creatinine above its range, within the electrolyte window."""
    window = duration("window_electrolytes")
    egfr_low = ctx.tri("egfr", tri_below, "ckd_context_egfr_below") == 1.0
    creatinine_high = ctx.is_analyte("creatinine") & (ctx.obs["high"].to_numpy() == 1.0)
    anchors = draws[["pat", "t"]]
    return (nearest(ctx, anchors, "egfr", window, where=egfr_low) >= 0) | (
        nearest(ctx, anchors, "creatinine", window, where=creatinine_high) >= 0
    )
