"""Vectorized building blocks shared by the rules (no clinical numbers here)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labinterp.episodes import Context, nearest, take, tri_below

# Lower rank wins when an episode has several anchors.
STATUS_RANK = {"fired": 0, "not_fired": 1, "suppressed": 2, "indeterminate": 3}


def anchors(ctx: Context, analytes: tuple[str, ...]) -> pd.DataFrame:
    """One anchor per draw holding a numeric result of any of `analytes` (measured only)."""
    obs = ctx.obs
    mask = ctx.is_analyte(*analytes) & obs["has_value"].to_numpy() & ~obs["derived"].to_numpy()
    a = obs.loc[mask, ["pat", "t", "dated", "draw_id", "episode_id", "obs_id"]]
    a = a.drop_duplicates("draw_id").reset_index(drop=True)
    draw_contaminated = (
        obs.loc[obs["contaminated"].to_numpy(), "draw_id"].unique()
        if obs["contaminated"].any()
        else np.array([], dtype="int64")
    )
    a["contaminated"] = a["draw_id"].isin(draw_contaminated).to_numpy()
    return a


def known(ctx: Context, column: str = "low") -> np.ndarray:
    """Observations usable as evidence: state known and not from a contaminated draw."""
    return (
        ~np.isnan(ctx.obs[column].to_numpy(dtype="float64")) & ~ctx.obs["contaminated"].to_numpy()
    )


def flags(*pairs: tuple[str, np.ndarray]) -> np.ndarray:
    """';'-joined names of the masks that are true, per row."""
    n = len(pairs[0][1]) if pairs else 0
    out = np.full(n, "", dtype=object)
    for name, mask in pairs:
        m = np.asarray(mask, dtype=bool)
        both = m & (out != "")
        out[both] = out[both] + ";" + name
        out[m & ~both] = name
    return out


def best_per_group(frame: pd.DataFrame, group: str, tier_rank: dict[str, int]) -> pd.DataFrame:
    """Keep one row per group: best status, then best tier, then earliest anchor."""
    f = frame.assign(
        _s=frame["status"].map(STATUS_RANK).to_numpy(),
        _t=frame["tier"].map(tier_rank).fillna(99).to_numpy(),
    )
    f = f.sort_values([group, "_s", "_t", "t"], kind="stable")
    return f.drop_duplicates(group).drop(columns=["_s", "_t"]).reset_index(drop=True)


def with_episode_span(ctx: Context, frame: pd.DataFrame) -> pd.DataFrame:
    ep = ctx.episodes.set_index("episode_id")
    ids = frame["episode_id"].to_numpy()
    frame["start"] = ep["start"].reindex(ids).to_numpy()
    frame["end"] = ep["end"].reindex(ids).to_numpy()
    return frame


def missing_patients(ctx: Context, covered: np.ndarray, missing: str, note: str) -> pd.DataFrame:
    """Indeterminate rows for patients the rule could not anchor anywhere."""
    p = ctx.patients[~ctx.patients["pat"].isin(covered).to_numpy()]
    return pd.DataFrame(
        {
            "pat": p["pat"].to_numpy(),
            "start": p["start"].to_numpy(),
            "end": p["end"].to_numpy(),
            "status": "indeterminate",
            "tier": "",
            "grade": np.nan,
            "missing_inputs": missing,
            "suppressed_by": "",
            "caveats": "",
            "note": note,
        }
    )


def ckd_nearby(ctx: Context, a: pd.DataFrame, window: pd.Timedelta, below: float) -> np.ndarray:
    """True where an eGFR below `below` lies within `window` of the anchor."""
    egfr = ctx.obs["value"].to_numpy(dtype="float64")
    comp = ctx.comparator()
    low = ctx.is_analyte("egfr") & (tri_below(egfr, comp, np.full(len(egfr), below)) == 1.0)
    ids = nearest(ctx, a, "egfr", window, where=low)
    return ids >= 0


def state(ctx: Context, ids: np.ndarray, column: str = "low") -> np.ndarray:
    return take(ctx, ids, column)


def low_mg_with(
    ctx: Context,
    partner: str,
    partner_mask: np.ndarray,
    window: pd.Timedelta,
    note: str,
    *,
    extra_caveats: tuple[tuple[str, np.ndarray], ...] = (),
) -> pd.DataFrame:
    """Context findings: a low Mg with a `partner` observation matching `partner_mask`
    within `window`; fired rows only, one per episode."""
    obs = ctx.obs
    mg_low = (
        ctx.is_analyte("magnesium")
        & (obs["low"].to_numpy(dtype="float64") == 1.0)
        & ~obs["contaminated"].to_numpy()
    )
    a = obs.loc[mg_low, ["pat", "t", "dated", "draw_id", "episode_id", "obs_id"]].reset_index(
        drop=True
    )
    clean = ~obs["contaminated"].to_numpy()
    p = nearest(ctx, a, partner, window, where=partner_mask & clean)
    hit = p >= 0
    a = a[hit].reset_index(drop=True)
    out = a.assign(
        status="fired",
        tier="",
        ev_magnesium=a["obs_id"].to_numpy(),
        **{f"ev_{partner}": p[hit]},
        grade_obs=-1,
        grade_term="",
        missing_inputs="",
        suppressed_by="",
        caveats=flags(*[(name, m[hit]) for name, m in extra_caveats]) if extra_caveats else "",
        note=note,
    )
    out = out.sort_values(["episode_id", "t"], kind="stable").drop_duplicates("episode_id")
    return with_episode_span(ctx, out.reset_index(drop=True))


def range_unknown(ctx: Context, ids: np.ndarray) -> np.ndarray:
    """True where the observation exists but its lower limit is unknown."""
    return (ids >= 0) & np.isnan(take(ctx, ids, "range_low"))
