"""Scoring an inner validation cut (``evaluation.inner_validation_cut``) the way the outer protocol scores the
held-out seeds (validation seeds compete for a top share of the users who are not fit seeds), and choosing
an option per campaign, per seed-list bucket or once for all campaigns from the cuts' results."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import seed_bucket


def competing_users(
    n_users: int, fit_seeds: CampaignSeeds, val: np.ndarray, max_users: int, rng: np.random.Generator
) -> np.ndarray:
    """user_idx of the users the validation seeds compete with for the audience: everyone but the fit seeds
    and labelled non-converters (the validation seeds included, as held-out seeds are in the outer
    protocol), uniformly sampled down to ``max_users`` (the validation seeds always kept)."""
    competing = np.ones(n_users, bool)
    competing[fit_seeds.positives] = False
    competing[fit_seeds.negatives] = False
    others = np.flatnonzero(competing)
    if others.size > max_users:
        others = np.union1d(rng.choice(others, max_users, replace=False), val)
    return others


def validation_recall(scores_val: np.ndarray, scores_others: np.ndarray, audience_share: float) -> float:
    """Share of validation seeds scoring above the top-``audience_share`` cutoff of the competing users, plus
    1e-3 x their mean percentile among them (an AUC): recall on a handful of seeds ties often, and the
    tie-break prefers the better ranking."""
    if scores_val.size == 0 or scores_others.size == 0:
        return float("nan")
    cutoff = np.quantile(scores_others, 1 - audience_share)
    percentile = np.searchsorted(np.sort(scores_others), scores_val) / scores_others.size
    return float((scores_val > cutoff).mean() + 1e-3 * percentile.mean())


@dataclass
class ScopedChoice:
    """Index of the chosen option per campaign, per seed bucket and over all campaigns, each the argmax of
    the mean validation result of the campaigns it covers (the first option wins ties)."""

    overall: int
    by_bucket: dict[str, int]
    by_campaign: dict[str, int]
    bucket_edges: list[int]

    @classmethod
    def from_results(
        cls,
        results: dict[str, np.ndarray],
        seed_counts: dict[str, int],
        n_options: int,
        bucket_edges: list[int],
        n_protected: int = 0,
        min_gain: float = 0.0,
    ) -> ScopedChoice:
        """``results``: campaign_id -> float [n_options] validation results; ``seed_counts``: campaign_id ->
        its training seeds (the size ``pick`` sees later). The first ``n_protected`` options are the safe
        defaults (an ensemble's single members): another option is chosen only where its mean result beats
        the best of them by more than ``min_gain``, since a choice among many options on a small cut
        overrates the winner."""

        def best(rows: list[np.ndarray] | np.ndarray) -> int:
            mean = np.nanmean(np.asarray(rows), 0)
            top = int(np.nanargmax(mean))
            if n_protected and top >= n_protected:
                safe = int(np.nanargmax(mean[:n_protected]))
                return top if mean[top] > mean[safe] + min_gain else safe
            return top

        table = list(results.values()) or [np.zeros(n_options)]
        buckets: dict[str, list[np.ndarray]] = {}
        for cid, r in results.items():
            buckets.setdefault(seed_bucket(seed_counts[cid], bucket_edges), []).append(r)
        return cls(
            best(table),
            {b: best(rs) for b, rs in buckets.items()},
            {cid: best([r]) for cid, r in results.items()},
            list(bucket_edges),
        )

    def pick(self, scope: str, seeds: CampaignSeeds) -> int:
        """The option for ``seeds`` under ``scope`` (campaign, bucket, all); a campaign or bucket that had no
        validation cut falls back to the wider choice."""
        pick = self.overall
        if scope in ("campaign", "bucket"):
            pick = self.by_bucket.get(seed_bucket(seeds.size, self.bucket_edges), pick)
        if scope == "campaign":
            pick = self.by_campaign.get(seeds.campaign_id, pick)
        return pick

    def to_json(self) -> dict:
        return {
            "overall": self.overall,
            "by_bucket": self.by_bucket,
            "by_campaign": self.by_campaign,
            "bucket_edges": self.bucket_edges,
        }
