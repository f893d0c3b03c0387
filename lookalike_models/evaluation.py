"""Offline protocol (Pinterest, KDD 2019, sec. 5): per campaign hold out a share of the seeds plus as
many non-seeds, fit on the rest, rank every eligible user, and measure precision and recall of the
held-out seeds at several audience sizes, by seed-list size bucket. AUC/GAUC where negatives exist and
RALM's user-centric prec@K complete the picture.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from lookalike_models.contract import CAMPAIGN_ID
from lookalike_models.dataset import CampaignSeeds
from lookalike_models.metric_names import (
    AUC,
    GAUC,
    RECALL_AT,
    SIZE_METRIC_PREFIXES,
    precision_at,
    recall_at,
    size_label,
)


@dataclass
class HeldOut:
    positives: np.ndarray  # user_idx of held-out seeds
    negatives: np.ndarray  # user_idx of held-out non-seeds
    negatives_sampled: bool  # True when the data had no labelled non-converters to hold out


def campaign_rng(seed: int, campaign_id: str, *extra: int) -> np.random.Generator:
    """A campaign's own random stream (``extra``: more entropy, e.g. the seed-list size, for a stream that
    changes when the seeds do). Adding a campaign does not change any other campaign's draws."""
    return np.random.default_rng([seed, zlib.crc32(campaign_id.encode()), *extra])


def holdout_split(
    campaigns: dict[str, CampaignSeeds],
    n_users: int,
    holdout_frac: float = 0.1,
    seed: int = 0,
    min_train_seeds: int = 3,
) -> tuple[dict[str, CampaignSeeds], dict[str, HeldOut]]:
    """Split every campaign's seeds into training seeds and a held-out set.

    Campaigns too small to keep ``min_train_seeds`` after holding out one seed are trained on all
    their seeds and not evaluated.
    """
    train, heldout = {}, {}
    for cid, seeds in campaigns.items():
        rng = campaign_rng(seed, cid)
        pos = rng.permutation(seeds.positives)
        n_hold = max(1, int(round(holdout_frac * pos.size)))
        if pos.size - n_hold < min_train_seeds:
            train[cid] = seeds
            continue
        neg = rng.permutation(seeds.negatives)
        if neg.size >= n_hold:
            hold_neg, train_neg, sampled = neg[:n_hold], neg[n_hold:], False
        else:
            # No (or too few) labelled non-converters: sample users who are not seeds.
            pool = np.setdiff1d(np.arange(n_users), np.concatenate([seeds.positives, seeds.negatives]))
            hold_neg = rng.choice(pool, min(n_hold, pool.size), replace=False)
            train_neg, sampled = neg, True
        train[cid] = CampaignSeeds(cid, np.sort(pos[n_hold:]), np.sort(train_neg))
        heldout[cid] = HeldOut(np.sort(pos[:n_hold]), np.sort(hold_neg), sampled)
    return train, heldout


def inner_validation_cut(
    seeds: CampaignSeeds, frac: float = 0.2, seed: int = 0, min_fit: int = 3
) -> tuple[CampaignSeeds, np.ndarray] | None:
    """Hold out ``frac`` of a campaign's *training* seeds for choosing its hyper-parameters (regularisation,
    ensemble weights): (seeds to fit on, validation positives), or None when too few seeds to cut."""
    n_val = int(round(frac * seeds.size))
    if n_val < 1 or seeds.size - n_val < min_fit:
        return None
    order = campaign_rng(seed + 7919, seeds.campaign_id).permutation(seeds.positives)  # apart from the outer split
    fit = CampaignSeeds(seeds.campaign_id, np.sort(order[n_val:]), seeds.negatives)
    return fit, np.sort(order[:n_val])


def save_split(train: dict[str, CampaignSeeds], heldout: dict[str, HeldOut], path: str | Path) -> Path:
    """One Parquet row per (campaign, user, role): the split is an artifact a later run can audit."""
    from lookalike_models.io import write_parquet_atomic

    parts = []
    for cid, seeds in train.items():
        held = heldout.get(cid)
        roles = {"train_pos": seeds.positives, "train_neg": seeds.negatives}
        if held is not None:
            roles |= {
                "heldout_pos": held.positives,
                "heldout_neg_sampled" if held.negatives_sampled else "heldout_neg": held.negatives,
            }
        for role, users in roles.items():
            parts.append(
                pl.DataFrame(
                    {
                        CAMPAIGN_ID: pl.Series([cid] * users.size, dtype=pl.String),
                        "user_idx": users.astype(np.int64),
                        "role": pl.Series([role] * users.size, dtype=pl.String),
                    }
                )
            )
    return write_parquet_atomic(pl.concat(parts), path)


def load_split(path: str | Path) -> tuple[dict[str, CampaignSeeds], dict[str, HeldOut]]:
    frame = pl.read_parquet(path)
    train, heldout = {}, {}
    for (cid,), group in frame.group_by([CAMPAIGN_ID], maintain_order=True):
        by_role = {r: np.sort(g["user_idx"].to_numpy()) for (r,), g in group.group_by(["role"])}
        empty = np.empty(0, np.int64)
        train[cid] = CampaignSeeds(cid, by_role.get("train_pos", empty), by_role.get("train_neg", empty))
        if "heldout_pos" in by_role:
            sampled = "heldout_neg_sampled" in by_role
            negatives = by_role.get("heldout_neg_sampled" if sampled else "heldout_neg", empty)
            heldout[cid] = HeldOut(by_role["heldout_pos"], negatives, sampled)
    return train, heldout


def audience_size(n_users: int, fraction: float) -> int:
    """Users in an audience of ``fraction`` of the population (at least one)."""
    return max(1, int(round(fraction * n_users)))


def audience_sizes(n_users: int, fractions: list[float]) -> dict[str, int]:
    """Metric label -> audience size, e.g. {'1pct': 200} for 1% of 20,000 users."""
    return {size_label(f): audience_size(n_users, f) for f in fractions}


def seed_bucket(n_seeds: int, edges: list[int]) -> str:
    """Label of the seed-list size bucket, e.g. edges [50, 200] -> '<50', '50-199', '>=200'."""
    for i, edge in enumerate(edges):
        if n_seeds < edge:
            return f"<{edge}" if i == 0 else f"{edges[i - 1]}-{edge - 1}"
    return f">={edges[-1]}"


def safe_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    if positive_scores.size == 0 or negative_scores.size == 0:
        return float("nan")
    scores = np.concatenate([positive_scores, negative_scores]).astype(np.float64)
    # Users a scorer did not reach rank below every scored user, tied with each other.
    floor = np.nanmin(scores[np.isfinite(scores)]) - 1.0 if np.isfinite(scores).any() else 0.0
    scores = np.where(np.isfinite(scores), scores, floor)
    labels = np.concatenate([np.ones(positive_scores.size), np.zeros(negative_scores.size)])
    return float(roc_auc_score(labels, scores))


# Held-out seeds by their organic activity (distinct non-campaign items): label -> (lowest, highest) count.
ACTIVITY_BUCKETS = {"act_le5": (0, 5), "act_6_20": (6, 20), "act_gt20": (21, np.inf)}


def activity_bucket_recall_columns(sizes: dict[str, int] | list[str]) -> list[str]:
    """``recall_at_<size>_<bucket>`` for each audience size label and activity bucket."""
    return [f"{recall_at(label)}_{bucket}" for label in sizes for bucket in ACTIVITY_BUCKETS]


def is_activity_column(column: str) -> bool:
    return column.startswith(RECALL_AT) and column.endswith(tuple(f"_{b}" for b in ACTIVITY_BUCKETS))


class ScoreLookup:
    """The score of any user among what a scorer scored; users it did not score get -inf (ranked last)."""

    def __init__(self, candidates: np.ndarray, scores: np.ndarray):
        order = np.argsort(candidates, kind="stable")
        self.candidates, self.scores = candidates[order], scores[order].astype(np.float64)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        if self.candidates.size == 0:
            return np.full(users.shape, -np.inf)
        pos = np.minimum(np.searchsorted(self.candidates, users), self.candidates.size - 1)
        return np.where(self.candidates[pos] == users, self.scores[pos], -np.inf)


def campaign_metrics(
    audience: np.ndarray,
    candidates: np.ndarray,
    scores: np.ndarray,
    heldout: HeldOut,
    sizes: dict[str, int],
    activity: np.ndarray | None = None,
) -> dict[str, float]:
    """Precision/recall at each audience size, and AUC of held-out seeds vs held-out non-seeds.

    ``audience``: ranked user_idx (best first), at least as long as the largest size when possible.
    ``candidates``/``scores``: what the scorer scored; held-out users outside it count as unscored.
    ``activity``: each user's count of distinct organic items ([n_users], e.g. ``np.diff(data.user_items[0])``
    on data without the campaigns' own items); with it, ``recall_at_<size>_<bucket>`` is the recall of only
    the held-out seeds in each ``ACTIVITY_BUCKETS`` bucket (NaN when the campaign has none there).
    """
    hit = np.isin(audience, heldout.positives)
    cum_hits = np.concatenate([[0], np.cumsum(hit)])
    row: dict[str, float] = {"n_heldout": float(heldout.positives.size)}
    for label, k in sizes.items():
        hits = cum_hits[min(k, audience.size)]
        row[precision_at(label)] = hits / k
        row[recall_at(label)] = hits / heldout.positives.size
    if activity is not None:
        seed_activity = activity[heldout.positives]
        for bucket, (low, high) in ACTIVITY_BUCKETS.items():
            members = heldout.positives[(seed_activity >= low) & (seed_activity <= high)]
            cum = np.concatenate([[0], np.cumsum(np.isin(audience, members))])
            for label, k in sizes.items():
                hits = cum[min(k, audience.size)]
                row[f"{recall_at(label)}_{bucket}"] = hits / members.size if members.size else float("nan")
    scores_of = ScoreLookup(candidates, scores)
    row[AUC] = safe_auc(scores_of(heldout.positives), scores_of(heldout.negatives))
    return row


def sampled_campaign_metrics(
    candidates: np.ndarray,
    scores: np.ndarray,
    heldout: HeldOut,
    sizes: dict[str, int],
    sample_weight: float,
    activity: np.ndarray | None = None,
) -> dict[str, float]:
    """``campaign_metrics`` from a uniform sample of the users the held-out seeds compete with.

    ``candidates``/``scores``: what the scorer scored among the held-out users and a uniform sample of the
    other eligible users, each sampled user standing for ``sample_weight`` users of the population. A
    held-out seed's rank in the whole population is estimated as 1 + the held-out seeds above it + the
    sampled users above it (ties count half) x ``sample_weight``, and it is a hit at size k when that rank is
    at most k. At 200,000 sampled users a seed near the 5% cutoff has its rank off by about 1% (binomial),
    while the work per campaign no longer grows with the population."""
    scores_of = ScoreLookup(candidates, scores)
    positive = scores_of(heldout.positives)
    others = np.sort(scores_of.scores[~np.isin(scores_of.candidates, heldout.positives)])
    above = others.size - np.searchsorted(others, positive, side="right")
    tied = np.searchsorted(others, positive, side="right") - np.searchsorted(others, positive, side="left")
    seeds_above = positive.size - np.searchsorted(np.sort(positive), positive, side="right")
    rank = 1 + seeds_above + (above + 0.5 * tied) * sample_weight
    scored = np.isfinite(positive)
    row: dict[str, float] = {"n_heldout": float(heldout.positives.size)}
    for label, k in sizes.items():
        hit = scored & (rank <= k)
        row[precision_at(label)] = hit.sum() / k
        row[recall_at(label)] = hit.mean() if hit.size else float("nan")
        if activity is not None:
            seed_activity = activity[heldout.positives]
            for bucket, (low, high) in ACTIVITY_BUCKETS.items():
                members = (seed_activity >= low) & (seed_activity <= high)
                row[f"{recall_at(label)}_{bucket}"] = hit[members].mean() if members.any() else float("nan")
    row[AUC] = safe_auc(positive, scores_of(heldout.negatives))
    return row


def user_precision_at_k(scores: np.ndarray, clicked: np.ndarray, k: int) -> float:
    """RALM's prec@K: mean over users of |top-K campaigns ∩ clicked| / min(K, |clicked|).

    ``scores``/``clicked``: [n_users, n_campaigns]; users with no click are skipped.
    """
    has_click = clicked.sum(1) > 0
    scores, clicked = scores[has_click], clicked[has_click]
    if scores.shape[0] == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    hits = np.take_along_axis(clicked, top, axis=1).sum(1)
    return float(np.mean(hits / np.minimum(k, clicked.sum(1))))


def metric_columns(per_campaign: pl.DataFrame) -> list[str]:
    """Precision/recall columns of per-campaign rows, then ``auc`` (not the activity-bucket recalls)."""
    return [c for c in per_campaign.columns if c.startswith(SIZE_METRIC_PREFIXES) and not is_activity_column(c)] + [AUC]


def activity_columns(per_campaign: pl.DataFrame) -> list[str]:
    """The activity-bucket recall columns (``campaign_metrics`` with ``activity``) of per-campaign rows."""
    return [c for c in per_campaign.columns if is_activity_column(c)]


def campaign_means(per_campaign: pl.DataFrame) -> pl.DataFrame:
    """Each (model, campaign)'s metrics averaged over the splits it was evaluated in (``split_seed``), so
    every campaign weighs the same however many splits could evaluate it. The seed bucket is the one of
    its first split (buckets only move for a campaign that sits on an edge). Activity-bucket recalls are
    averaged over the splits that had a held-out seed in the bucket (NaN when none had)."""
    metrics = metric_columns(per_campaign)
    if "split_seed" not in per_campaign.columns:
        per_campaign = per_campaign.with_columns(pl.lit(0).alias("split_seed"))
    by_activity = [pl.col(c).fill_nan(None).mean().fill_null(np.nan) for c in activity_columns(per_campaign)]
    return (
        per_campaign.sort("split_seed")
        .group_by("model", CAMPAIGN_ID, maintain_order=True)
        .agg(
            pl.col("seed_bucket").first(), pl.len().alias("splits"), *[pl.col(m).mean() for m in metrics], *by_activity
        )
    )


def summarize(per_campaign: pl.DataFrame) -> pl.DataFrame:
    """Macro average per model and seed bucket (plus an 'all' bucket) of the campaigns' means over splits;
    GAUC = mean per-campaign AUC."""
    means = campaign_means(per_campaign)
    metrics = [c for c in metric_columns(means) if c != AUC]
    aggs = [pl.len().alias("campaigns"), *[pl.col(m).mean() for m in metrics], pl.col(AUC).mean().alias(GAUC)]
    by_bucket = means.group_by("model", "seed_bucket").agg(aggs)
    overall = means.group_by("model").agg(aggs).with_columns(pl.lit("all").alias("seed_bucket"))
    return pl.concat([overall.select(by_bucket.columns), by_bucket]).sort("model", "seed_bucket")


def plot_precision_recall(summary: pl.DataFrame, sizes: dict[str, int], path: str | Path) -> Path:
    """PNG of precision and recall vs audience size, one line per model (overall bucket)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overall = summary.filter(pl.col("seed_bucket") == "all")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    xs = list(sizes.values())
    for row in overall.iter_rows(named=True):
        for ax, metric_at in zip(axes, (precision_at, recall_at)):
            ax.plot(xs, [row[metric_at(label)] for label in sizes], marker="o", label=row["model"])
    for ax, kind in zip(axes, ("precision", "recall")):
        ax.set_xscale("log")
        ax.set_xlabel("audience size (users)")
        ax.set_ylabel(f"{kind} of held-out seeds")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
