"""One evaluation protocol for flows, benchmarks and tests.

Repeated splits: every model is fitted and measured on several seed splits (``split_seeds``); a campaign's
metric is its mean over the splits, and each model is compared with a named reference by a paired
bootstrap over campaigns (the same campaigns, so campaign difficulty cancels out). Defaults are chosen
on tuning splits (``TUNING_SPLITS``) that are never reported; reported numbers use ``REPORTED_SPLITS``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl

from lookalike_models.catalog import build_scorer
from lookalike_models.contract import CAMPAIGN_ID
from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.evaluation import (
    HeldOut,
    audience_sizes,
    campaign_means,
    campaign_metrics,
    campaign_rng,
    holdout_split,
    sampled_campaign_metrics,
    seed_bucket,
)
from lookalike_models.pipeline import score_campaign
from lookalike_models.scorers import AudienceScorer

log = logging.getLogger(__name__)

TUNING_SPLITS = [100, 101, 102, 103, 104]  # choose hyper-parameters and defaults here, never report
REPORTED_SPLITS = [0, 1, 2, 3, 4]


def evaluate_campaigns(
    scorer: AudienceScorer,
    data: LookalikeData,
    train: dict[str, CampaignSeeds],
    heldout: dict[str, HeldOut],
    sizes: dict[str, int],
    bucket_edges: list[int],
    max_scored_users: int | None = None,
) -> list[dict]:
    """Rank every eligible user from each campaign's training seeds and measure its held-out seeds; with
    ``max_scored_users`` below the population, rank a uniform sample of them instead
    (``evaluation.sampled_campaign_metrics``: the work stops growing with the population).

    One row per campaign of ``heldout``: precision/recall at each size, AUC, seed bucket, candidates, seconds,
    and recall at each size over only the held-out seeds of each organic-activity bucket (distinct items of
    ``data``, which holds no campaign's own item: ``recall_at_<size>_act_le5``, ``_act_6_20``, ``_act_gt20``)."""
    rows = []
    activity = np.diff(data.user_items[0]) if heldout else None  # distinct organic items per user
    sampled = max_scored_users is not None and data.n_users > max_scored_users
    for cid, held in heldout.items():
        start = time.perf_counter()
        seeds = train[cid]
        if sampled:
            candidates, scores, weight = sampled_scores(scorer, data, seeds, held, max_scored_users)
            row = sampled_campaign_metrics(candidates, scores, held, sizes, weight, activity)
        else:
            scored = score_campaign(scorer, data, seeds, max(sizes.values()))
            row = campaign_metrics(scored.users, scored.candidates, scored.candidate_scores, held, sizes, activity)
            candidates = scored.candidates
        row.update(
            campaign_id=cid,
            n_train_seeds=seeds.size,
            seed_bucket=seed_bucket(seeds.size, bucket_edges),
            negatives_sampled=held.negatives_sampled,
            n_candidates=candidates.size,
            score_seconds=time.perf_counter() - start,
        )
        rows.append(row)
    return rows


def sampled_scores(
    scorer: AudienceScorer, data: LookalikeData, seeds: CampaignSeeds, held: HeldOut, max_users: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """(candidates, scores, weight): the scorer's scores of the held-out users and of a uniform sample of
    about ``max_users`` other eligible users (not training seeds), each standing for ``weight`` users."""
    rng = campaign_rng(17, seeds.campaign_id)
    excluded = np.zeros(data.n_users, bool)  # masks, not np.isin: a sort of a million ids per campaign
    excluded[np.concatenate([seeds.positives, seeds.negatives, held.positives])] = True
    sample = rng.choice(data.n_users, min(max_users, data.n_users), replace=False)
    sample = sample[~excluded[sample]]
    n_others = data.n_users - int(excluded.sum())
    wanted = np.zeros(data.n_users, bool)
    wanted[sample] = wanted[held.positives] = wanted[held.negatives] = True
    candidates = scorer.candidates(data, seeds)
    candidates = candidates[wanted[candidates]]
    scores = np.asarray(scorer.score(data, seeds, candidates), np.float32)
    return candidates, scores, n_others / max(sample.size, 1)


def evaluate_scorers(
    data: LookalikeData,
    models: dict[str, dict],
    holdout_frac: float = 0.1,
    fractions: list[float] | None = None,
    bucket_edges: list[int] | None = None,
    seed: int = 0,
    split: tuple[dict[str, CampaignSeeds], dict[str, HeldOut]] | None = None,
) -> pl.DataFrame:
    """One split (``seed``, or the given ``split``): fit each model on the training seeds and measure every
    evaluable campaign. ``models``: name -> params, ``model`` naming the registered scorer (default: the
    name). One row per (model, campaign), tagged with ``split_seed``."""
    fractions = fractions or [0.01, 0.02, 0.05, 0.1]
    bucket_edges = bucket_edges or [50, 200]
    sizes = audience_sizes(data.n_users, fractions)
    train, heldout = split or holdout_split(data.campaigns, data.n_users, holdout_frac, seed)
    frames = []
    for name, params in models.items():
        scorer = build_scorer(params.get("model", name), {k: v for k, v in params.items() if k != "model"})
        start = time.perf_counter()
        scorer.fit(data, train)
        fit_seconds = time.perf_counter() - start
        rows = evaluate_campaigns(scorer, data, train, heldout, sizes, bucket_edges)
        frames.append(
            pl.DataFrame(rows).with_columns(
                pl.lit(name).alias("model"), pl.lit(seed).alias("split_seed"), pl.lit(fit_seconds).alias("fit_seconds")
            )
        )
        log.info("split %d, %s: fitted in %.1fs, evaluated %d campaigns", seed, name, fit_seconds, len(rows))
    return pl.concat(frames, how="diagonal_relaxed")


def evaluate_over_splits(
    data: LookalikeData,
    models: dict[str, dict],
    split_seeds: list[int],
    holdout_frac: float = 0.1,
    fractions: list[float] | None = None,
    bucket_edges: list[int] | None = None,
) -> pl.DataFrame:
    """``evaluate_scorers`` on each split seed: one row per (split_seed, model, campaign)."""
    return pl.concat(
        [evaluate_scorers(data, models, holdout_frac, fractions, bucket_edges, seed) for seed in split_seeds],
        how="diagonal_relaxed",
    )


def paired_bootstrap_ci(
    deltas: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of paired per-campaign differences, percentile bootstrap over campaigns."""
    deltas = np.asarray(deltas, np.float64)
    deltas = deltas[np.isfinite(deltas)]
    if deltas.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = deltas[rng.integers(0, deltas.size, (n_boot, deltas.size))].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(deltas.mean()), float(low), float(high)


def compare_to_reference(
    per_campaign: pl.DataFrame, reference: str, metrics: list[str], by_bucket: bool = True
) -> pl.DataFrame:
    """Per model, seed bucket ('all' plus each bucket) and metric: the model's mean over campaigns (each
    campaign averaged over splits), the reference's mean on the same campaigns, and the paired 95% CI
    of the difference. ``wins``: campaigns where the model beats the reference."""
    means = campaign_means(per_campaign)
    if reference not in set(means["model"]):
        raise ValueError(f"reference model '{reference}' was not evaluated; have {sorted(set(means['model']))}")
    ref = means.filter(pl.col("model") == reference).select(
        CAMPAIGN_ID, *[pl.col(m).alias(f"ref_{m}") for m in metrics]
    )
    paired = means.join(ref, on=CAMPAIGN_ID, how="inner")
    groups = [("all", paired)]
    if by_bucket:
        groups += [
            (bucket, paired.filter(pl.col("seed_bucket") == bucket)) for bucket in sorted(set(paired["seed_bucket"]))
        ]
    rows = []
    for bucket, frame in groups:
        for (model,), part in frame.group_by(["model"], maintain_order=True):
            for metric in metrics:
                values, ref_values = part[metric].to_numpy(), part[f"ref_{metric}"].to_numpy()
                ok = np.isfinite(values) & np.isfinite(ref_values)
                diff, low, high = paired_bootstrap_ci(values[ok] - ref_values[ok])
                rows.append(
                    {
                        "model": model,
                        "seed_bucket": bucket,
                        "metric": metric,
                        "campaigns": int(ok.sum()),
                        "mean": float(values[ok].mean()) if ok.any() else float("nan"),
                        "reference": reference,
                        "reference_mean": float(ref_values[ok].mean()) if ok.any() else float("nan"),
                        "diff": diff,
                        "ci_low": low,
                        "ci_high": high,
                        "wins": int((values[ok] > ref_values[ok]).sum()),
                    }
                )
    return pl.DataFrame(rows)


def format_comparison(comparison: pl.DataFrame, metric: str, bucket: str = "all", digits: int = 3) -> str:
    """Markdown table of one metric: model, mean, diff vs reference with its 95% CI, wins."""
    part = comparison.filter((pl.col("metric") == metric) & (pl.col("seed_bucket") == bucket)).sort(
        "mean", descending=True
    )
    if part.is_empty():
        return ""
    ref = part["reference"][0]
    lines = [f"| model | {metric} | minus {ref} [95% CI] | wins/campaigns |", "|---|---|---|---|"]
    for r in part.iter_rows(named=True):
        lines.append(
            f"| {r['model']} | {r['mean']:.{digits}f} | {r['diff']:+.{digits}f} "
            f"[{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}] | {r['wins']}/{r['campaigns']} |"
        )
    return "\n".join(lines)
