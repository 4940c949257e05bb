"""Vectorized building blocks shared by the rules (no clinical numbers here)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.extensions import ExtensionArray

from labinterp.episodes import Context, nearest, paired_with, take, take_bool, tri_below
from labinterp.parameters import number

# A text column in any of the forms the rules hold one.
Texts = pd.Series | np.ndarray | ExtensionArray

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


def vitamin_d_components(ctx: Context, ids: np.ndarray, role: str) -> dict[str, np.ndarray]:
    """Evidence columns `ev_<role>_d2` and `ev_<role>_d3`: per cited 25-OH vitamin D
    `ids` (obs ids, -1 none), the D2 and D3 a derived total was summed from (-1 for a
    printed total), so that evidence shows what was added up."""
    out = {}
    for part in ("d2", "d3"):
        column = f"vitamin_{part}_obs"
        found = np.full(len(ids), -1, dtype="int64")
        if column in ctx.obs:  # only where a total was summed
            found = take(ctx, ids, column, fill=-1).astype("int64")
        out[f"ev_{role}_{part}"] = found
    return out


def known(ctx: Context, column: str = "low") -> np.ndarray:
    """Observations usable as evidence: state known and not from a contaminated draw."""
    return (
        ~np.isnan(ctx.obs[column].to_numpy(dtype="float64")) & ~ctx.obs["contaminated"].to_numpy()
    )


def flags(*pairs: tuple[str, np.ndarray]) -> ExtensionArray:
    """';'-joined names of the masks that are true, per row (a text array).

    Each row's set of true masks is a small number (bit i: mask i), so the joined text is
    made once per possible set (2 ** len(pairs): meant for a few masks) and looked up,
    instead of joining strings row by row.
    """
    rows = len(pairs[0][1]) if pairs else 0
    bits = np.zeros(rows, dtype="int64")
    for i, (_, mask) in enumerate(pairs):
        bits |= np.asarray(mask, dtype="int64") << i
    names = [name for name, _ in pairs]
    texts = [
        ";".join(name for i, name in enumerate(names) if subset >> i & 1)
        for subset in range(1 << len(names))
    ]
    return looked_up(texts, bits)


def choose(conditions: list[np.ndarray], choices: list[str], default: str = "") -> ExtensionArray:
    """np.select(conditions, choices, default) for text: the first true condition's choice
    per row, or `default`."""
    position = np.select(conditions, np.arange(len(choices)), len(choices))
    return looked_up([*choices, default], position)


def noted(note: Any, where: np.ndarray, sentence: str | np.ndarray) -> ExtensionArray:
    """The `note` texts with `sentence` (one for all rows, or one per row) added after a
    space where `where` is true."""
    if not where.any():  # most findings, and every export without a medication column
        return note
    large = pa.large_string()
    text = pa.array(note, type=large, from_pandas=True)
    added = pa.scalar(sentence, large) if isinstance(sentence, str) else pa.array(sentence, large)
    longer = pc.binary_join_element_wise(text, added, pa.scalar(" ", large))
    return pd.array(pc.if_else(pa.array(where), longer, text), dtype=pd.StringDtype("pyarrow"))


def mg_lowering_nearby(
    ctx: Context, mg: np.ndarray, window: pd.Timedelta
) -> tuple[np.ndarray, np.ndarray]:
    """Per Mg observation of `mg` (obs ids, -1 for none): whether a row of the same patient
    within `window` of it lists a medicine that lowers Mg in the export's medication column
    (a proton pump inhibitor or a diuretic: CLINICAL.md sec. 5 says these belong in the
    clinician's text; reference_ranges/medications.toml), and the medicines the nearest
    such row names ("omeprazole"; "" where there is none)."""
    obs = ctx.obs
    out = np.zeros(len(mg), dtype=bool)
    names = np.full(len(mg), "", dtype=object)
    if "mg_lowering_medication" not in obs or not (mg >= 0).any():
        return out, names
    cited = np.flatnonzero(mg >= 0)
    pat, t = obs["pat"].to_numpy(), obs["t"].to_numpy()
    mine = pd.DataFrame({"pat": pat[mg[cited]], "t": t[mg[cited]], "i": cited})
    listed = obs.loc[obs["mg_lowering_medication"].to_numpy(), ["pat", "t"]]
    listed = listed.assign(medicines=obs.loc[listed.index, "mg_lowering_medicines"])
    near = pd.merge_asof(
        mine.sort_values("t"),
        listed.sort_values("t"),
        on="t",
        by="pat",
        direction="nearest",
        tolerance=window,
    )
    hit = near["medicines"].notna().to_numpy()
    out[near["i"].to_numpy()[hit]] = True
    names[near["i"].to_numpy()[hit]] = near["medicines"].to_numpy()[hit]
    return out, names


def mg_lowering_sentences(medicines: np.ndarray) -> np.ndarray:
    """Per row, the sentence of the clinician's text CLINICAL.md sec. 5 asks for, naming
    the medicines of `medicines` ("omeprazole; furosemide", from mg_lowering_nearby): "The
    medication list names omeprazole, a medicine that often lowers Mg (a PPI or
    diuretic)." Each distinct list is worded once."""

    def sentence(named: str) -> str:
        words = [w for w in named.split("; ") if w] or ["a medicine"]
        if len(words) == 1:
            what = f"{words[0]}, a medicine that often lowers Mg"
        else:
            what = f"{', '.join(words[:-1])} and {words[-1]}, medicines that often lower Mg"
        return f"The medication list names {what} (a PPI or diuretic)."

    distinct, codes = np.unique(medicines.astype(str), return_inverse=True)
    return np.array([sentence(d) for d in distinct], dtype=object)[codes]


def looked_up(texts: list[str], codes: np.ndarray) -> ExtensionArray:
    """texts[codes] as an Arrow-backed text array, the findings' text type: made by one
    Arrow take, where an array of Python strings would be converted row by row (in every
    frame it is put in)."""
    taken = pa.array(texts, type=pa.large_string()).take(pa.array(codes, type=pa.int64()))
    return pd.array(taken, dtype=pd.StringDtype("pyarrow"))


def first_of_each(group: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Positions of one row per value of the integer `group`, groups ascending: the row
    that sorts first by `keys` (missing last, ties to the earlier row).

    The rows sort_values([group, *keys], kind="stable").drop_duplicates(group) keeps,
    found with one np.lexsort on the key arrays instead of sorting and copying the frame.
    """
    order = np.lexsort((*reversed(keys), group))
    g = group[order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    return order[first]


def best_per_group(
    group: np.ndarray, status: Texts, tier: Texts, t: np.ndarray, tiers: dict[str, int]
) -> np.ndarray:
    """Positions of one row per group, groups ascending: best status (STATUS_RANK), then
    best tier (`tiers`; none last), then earliest time `t` (ties to the earlier row)."""
    tier_rank = rank_of(tier, tiers)
    # status (4 ranks) and tier (< 100 ranks, 99 for none) as one sort key
    rank = rank_of(status, STATUS_RANK) * 100 + np.where(np.isnan(tier_rank), 99, tier_rank)
    step = np.diff(group)
    if len(group) and (step >= 0).all() and ((step > 0) | (np.diff(t) >= np.timedelta64(0))).all():
        # Rows already in (group, time) order, as anchors are: each group's first row of
        # its least rank is the answer, found without sorting.
        new_group = np.concatenate([[True], step > 0])
        starts = np.flatnonzero(new_group)
        rank = np.where(np.isnan(rank), np.inf, rank)
        least = np.minimum.reduceat(rank, starts)[np.cumsum(new_group) - 1]
        best = np.flatnonzero(rank == least)
        first = np.concatenate([[True], group[best][1:] != group[best][:-1]])
        return best[first]
    return first_of_each(group, rank, t)


def rank_of(
    column: Texts,
    ranks: dict[str, int],
    other: float = np.nan,
) -> np.ndarray:
    """The rank of each row's text as floats (`other` where missing or not listed), looked
    up once per distinct value: a per-row map of text is slow."""
    codes, uniques = pd.Series(column, copy=False).factorize()
    lut = np.array([ranks.get(u, other) for u in uniques] + [other], dtype="float64")
    return lut[codes]


def kept_rows(
    ctx: Context, anchors: pd.DataFrame, keep: np.ndarray, columns: dict[str, Any]
) -> pd.DataFrame:
    """The anchors at positions `keep`, with `columns` (per anchor, or one value for all)
    and their episode's time span, made as one frame: adding columns one by one to a
    pandas frame costs ~0.5 ms each, much of a small table's time."""
    data = {c: anchors[c].to_numpy()[keep] for c in anchors.columns}
    data.update({k: v if np.isscalar(v) else v[keep] for k, v in columns.items()})
    data["start"], data["end"] = episode_span(ctx, data["episode_id"])
    return pd.DataFrame(data)


def episode_span(ctx: Context, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of the episodes `ids`: an episode id is the episode's row in
    ctx.episodes (episodes.build numbers them so)."""
    return ctx.episodes["start"].to_numpy()[ids], ctx.episodes["end"].to_numpy()[ids]


def with_episode_span(ctx: Context, frame: pd.DataFrame) -> pd.DataFrame:
    frame["start"], frame["end"] = episode_span(ctx, frame["episode_id"].to_numpy())
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


def finish_per_episode(
    ctx: Context,
    anchors: pd.DataFrame,
    columns: dict[str, Any],
    tiers: dict[str, int],
    missing: str,
    note: str,
) -> pd.DataFrame:
    """The common ending of the electrolyte pattern rules (P1, P3).

    `columns` are the rule's outcome per anchor (arrays, or one value for all). Keep the
    best anchor per episode with its columns, give it the episode's time span, and add
    indeterminate rows for patients with no anchor at all, so every patient has an outcome.
    The columns are taken for the kept anchors only, not put in a frame of every anchor.
    """
    keep = best_per_group(
        anchors["episode_id"].to_numpy(dtype="int64"),
        columns["status"],
        columns["tier"],
        anchors["t"].to_numpy(),
        tiers,
    )
    out = kept_rows(ctx, anchors, keep, columns)
    rest = missing_patients(ctx, out["pat"].unique(), missing, note)
    return pd.concat([out, rest], ignore_index=True)


def ckd_nearby(ctx: Context, a: pd.DataFrame, window: pd.Timedelta, below: str) -> np.ndarray:
    """True where an eGFR below the rule parameter `below` lies within `window` of the anchor."""
    low = ctx.tri("egfr", tri_below, below) == 1.0
    ids = nearest(ctx, a, "egfr", window, where=low)
    return ids >= 0


def corrected_ca_caveats(
    ctx: Context, a: pd.DataFrame, ca: np.ndarray, corrected: np.ndarray, window: pd.Timedelta
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per anchor of `a` whose calcium `ca` (obs ids) is judged as albumin-corrected where
    `corrected`: the albumin it rests on (the one a derived value was computed from; for one
    the lab reported, the nearest albumin within `window` paired with it; -1 for none),
    whether that albumin is below `albumin_unreliable_below`, and whether an eGFR below
    `ckd_context_egfr_below` lies within `window` of the anchor. CLINICAL.md sec. 3:
    corrected Ca is unreliable with low albumin (derived or reported) and in CKD (caveats
    `corrected_ca_low_albumin`, `ckd_context`)."""
    derived = take_bool(ctx, ca, "derived") & corrected
    albumin = paired_with(ctx, nearest(ctx, a, "albumin", window, where=known(ctx)), ca, window)
    alb_id = np.where(
        derived, take(ctx, ca, "albumin_obs", fill=-1), np.where(corrected, albumin, -1)
    ).astype("int64")
    alb_val = take(ctx, alb_id, "value")
    with np.errstate(invalid="ignore"):
        low_alb = corrected & (alb_val < number("albumin_unreliable_below"))
    ckd = corrected & ckd_nearby(ctx, a, window, "ckd_context_egfr_below")
    return alb_id, low_alb, ckd


def low_mg_anchors(ctx: Context) -> pd.DataFrame:
    """Every low magnesium observation of a clean draw, in (patient, time) order; made once
    per context (the guards have marked the draws by then), as every context rule pairing a
    low Mg with something starts from them."""
    if "low_mg_anchors" not in ctx.extras:
        obs = ctx.obs
        mg_low = (
            ctx.is_analyte("magnesium")
            & (obs["low"].to_numpy(dtype="float64") == 1.0)
            & ~obs["contaminated"].to_numpy()
        )
        columns = ["pat", "t", "dated", "draw_id", "episode_id", "obs_id"]
        ctx.extras["low_mg_anchors"] = obs.loc[mg_low, columns].reset_index(drop=True)
    return cast(pd.DataFrame, ctx.extras["low_mg_anchors"])


def low_mg_with(
    ctx: Context, partner: str, partner_mask: np.ndarray, window: pd.Timedelta, note: str
) -> pd.DataFrame:
    """Context findings: a low Mg with a `partner` observation matching `partner_mask`
    within `window`; fired rows only, one per episode (its earliest such low Mg)."""
    a = low_mg_anchors(ctx)
    clean = ~ctx.obs["contaminated"].to_numpy()
    p = nearest(ctx, a, partner, window, where=partner_mask & clean)
    return low_mg_paired(ctx, a, partner, p, note)


def low_mg_paired(
    ctx: Context,
    a: pd.DataFrame,
    partner: str,
    p: np.ndarray,
    note: Any,
    *,
    extra: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Context findings from the low Mg anchors `a` and, per anchor, the partner observation
    `p` that makes the finding (-1 for none): fired rows only, one per episode (its
    earliest low Mg with a partner). `note` is one text, or one per anchor; `extra` adds or
    replaces output columns (per anchor, or one value for all: caveats, more evidence)."""
    hit = np.flatnonzero(p >= 0)
    keep = hit[first_of_each(a["episode_id"].to_numpy()[hit], a["t"].to_numpy()[hit])]
    columns = {  # per anchor, or one value for all
        "status": "fired",
        "tier": "",
        "ev_magnesium": a["obs_id"].to_numpy(),
        f"ev_{partner}": p,
        "grade_obs": -1,
        "grade_term": "",
        "missing_inputs": "",
        "suppressed_by": "",
        "caveats": "",
        "note": note,
        **(extra or {}),
    }
    return kept_rows(ctx, a, keep, columns)


def range_unknown(ctx: Context, ids: np.ndarray) -> np.ndarray:
    """True where the observation exists but its lower limit is unknown."""
    return (ids >= 0) & np.isnan(take(ctx, ids, "range_low"))
