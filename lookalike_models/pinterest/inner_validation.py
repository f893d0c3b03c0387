"""Scoring an inner validation cut (``protocol.inner_validation_cut``) the way the outer protocol scores the
held-out seeds: validation seeds compete for a top share of the users who are not fit seeds."""

from __future__ import annotations

import numpy as np

from lookalike_models.dataset import CampaignSeeds


def competing_users(n_users: int, fit_seeds: CampaignSeeds, val: np.ndarray, max_users: int,
                    rng: np.random.Generator) -> np.ndarray:
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
