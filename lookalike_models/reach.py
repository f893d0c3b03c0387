"""Reach control and audience drift: what an advertiser's audience-size slider and a nightly monitor need.

- ``reach_table``: for each audience size (1%..10% of the population, like ad platforms' slider) the
  expected precision and recall, read off the held-out curve of the campaign's seed-size bucket.
- ``load_exclusions``: users that must never be targeted (existing customers, suppressed users),
  globally or per campaign, applied before an audience is selected, so the audience keeps its size.
- ``audience_drift``: how much a campaign's audience changed between two runs (overlap, churn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lookalike_models.contract import CAMPAIGN_ID, USER_ID, DataContractError, read_table
from lookalike_models.dataset import LookalikeData


def reach_table(
    per_campaign: pl.DataFrame, model: str, campaigns: dict[str, int], bucket_edges: list[int], n_users: int
) -> pl.DataFrame:
    """One row per (campaign, audience size): expected precision/recall from held-out metrics.

    ``per_campaign``: rows of ``evaluate_scorers``/score tasks; ``campaigns``: campaign_id -> seed count.
    The estimate for a campaign is the mean over the campaigns of its seed-size bucket: one campaign's
    few held-out seeds are too noisy to quote alone.
    """
    from lookalike_models.evaluation import seed_bucket

    rows = per_campaign.filter(pl.col("model") == model)
    labels = sorted(
        {c.removeprefix("precision_at_") for c in rows.columns if c.startswith("precision_at_")},
        key=lambda s: float(s.removesuffix("pct").replace("_", ".")),
    )
    by_bucket = rows.group_by("seed_bucket").agg(
        [pl.col(f"precision_at_{s}").mean() for s in labels] + [pl.col(f"recall_at_{s}").mean() for s in labels]
    )
    overall = rows.select(
        [pl.col(f"precision_at_{s}").mean() for s in labels] + [pl.col(f"recall_at_{s}").mean() for s in labels]
    )
    out = []
    for cid, n_seeds in campaigns.items():
        bucket = seed_bucket(n_seeds, bucket_edges)
        match = by_bucket.filter(pl.col("seed_bucket") == bucket)
        source = match if match.height else overall
        for label in labels:
            fraction = float(label.removesuffix("pct").replace("_", ".")) / 100
            out.append(
                {
                    CAMPAIGN_ID: cid,
                    "audience_fraction": fraction,
                    "audience_size": max(1, int(round(fraction * n_users))),
                    "expected_precision": source[f"precision_at_{label}"][0],
                    "expected_recall": source[f"recall_at_{label}"][0],
                    "estimate_from": f"bucket {bucket}" if match.height else "all campaigns",
                }
            )
    return pl.DataFrame(out)


def load_exclusions(paths: list[str], data: LookalikeData) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read exclusion lists (Parquet: ``user_id``, optional ``campaign_id``) into user_idx arrays.

    Returns (users excluded from every campaign, campaign_id -> users excluded from that campaign).
    Ids unknown to the data are ignored: they could not be targeted anyway.
    """
    everywhere, per_campaign = [], {}
    for path in paths:
        frame = read_table(path)
        if USER_ID not in frame.columns:
            raise DataContractError(path, USER_ID, f"required column missing; found {frame.columns}")
        if frame.schema[USER_ID] != data.user_ids.dtype:
            raise DataContractError(
                path,
                USER_ID,
                f"ids are {frame.schema['user_id']}, the data's are {data.user_ids.dtype}",
                frame[USER_ID][0] if frame.height else None,
            )
        idx = data.index_of(frame[USER_ID])
        known = idx >= 0
        if CAMPAIGN_ID in frame.columns:
            cids = frame[CAMPAIGN_ID].cast(pl.String).to_numpy()
            glob = frame[CAMPAIGN_ID].is_null().to_numpy()
            everywhere.append(idx[known & glob])
            for cid in np.unique(cids[known & ~glob]):
                per_campaign.setdefault(cid, []).append(idx[known & ~glob & (cids == cid)])
        else:
            everywhere.append(idx[known])
    glob_idx = np.unique(np.concatenate(everywhere)) if everywhere else np.empty(0, np.int64)
    return glob_idx, {cid: np.unique(np.concatenate(parts)) for cid, parts in per_campaign.items()}


def audience_drift(previous: pl.DataFrame, current: pl.DataFrame) -> dict[str, float]:
    """Overlap and churn between two audiences of one campaign (frames with ``user_id``)."""
    before, after = set(previous[USER_ID].to_list()), set(current[USER_ID].to_list())
    union = before | after
    return {
        "overlap_jaccard": len(before & after) / len(union) if union else 1.0,
        "churn_in": len(after - before) / len(after) if after else 0.0,  # share of today's audience that is new
        "churn_out": len(before - after) / len(before) if before else 0.0,  # share of yesterday's that left
    }


def drift_between_runs(audiences_root: str | Path, previous_run: str, current_run: str) -> pl.DataFrame:
    """Drift of every campaign published in both runs."""
    from lookalike_models.publishing import AUDIENCE_FILE

    root = Path(audiences_root)
    rows = []
    for path in sorted((root / f"run_id={current_run}").glob(f"campaign_id=*/{AUDIENCE_FILE}")):
        cid = path.parent.name.removeprefix("campaign_id=")
        old = root / f"run_id={previous_run}" / path.parent.name / AUDIENCE_FILE
        if old.exists():
            rows.append({CAMPAIGN_ID: cid, **audience_drift(pl.read_parquet(old), pl.read_parquet(path))})
    return pl.DataFrame(
        rows,
        schema={CAMPAIGN_ID: pl.String, "overlap_jaccard": pl.Float64, "churn_in": pl.Float64, "churn_out": pl.Float64},
    )
