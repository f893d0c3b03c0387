"""The pipeline's steps as plain functions, shared by the Prefect tasks, the benchmarks and the tests."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lookalike_models.contract import CAMPAIGN_ID, USER_ID
from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.scorers import AudienceScorer, top_k

log = logging.getLogger(__name__)


@dataclass
class ScoredAudience:
    campaign_id: str
    users: np.ndarray  # user_idx, best first
    scores: np.ndarray  # float32, aligned with users
    candidates: np.ndarray  # everything the scorer scored (for AUC of held-out users)
    candidate_scores: np.ndarray


def score_campaign(
    scorer: AudienceScorer,
    data: LookalikeData,
    seeds: CampaignSeeds,
    size: int,
    excluded: np.ndarray | None = None,
    user_range: tuple[int, int] | None = None,
) -> ScoredAudience:
    """Candidates -> scores -> top ``size`` users. Known seeds, known non-converters and ``excluded`` users
    (exclusion lists) are removed before the top is taken, so the audience keeps its size.

    ``user_range`` = (lo, hi) scores only user_idx in [lo, hi): one shard of a distributed run. The top
    ``size`` of the union of every shard's top ``size`` is exactly the unsharded top (see ``merge_shards``).
    """
    candidates = scorer.candidates(data, seeds)
    if user_range is not None:
        candidates = candidates[(candidates >= user_range[0]) & (candidates < user_range[1])]
    scores = np.asarray(scorer.score(data, seeds, candidates), np.float32)
    if scores.shape != candidates.shape:
        raise ValueError(f"{scorer.name} returned {scores.shape} scores for {candidates.shape} candidates")
    exclude = np.concatenate([seeds.positives, seeds.negatives] + ([excluded] if excluded is not None else []))
    users, top_scores = top_k(candidates, scores, size, exclude)
    return ScoredAudience(seeds.campaign_id, users, top_scores, candidates, scores)


def merge_shards(parts: list[tuple[np.ndarray, np.ndarray]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Combine per-shard (users, scores) top lists into the global top ``size``, with the same
    tie-breaking as ``top_k``, so sharded and single-process audiences are identical."""
    users = np.concatenate([u for u, _ in parts]) if parts else np.empty(0, np.int64)
    scores = np.concatenate([s for _, s in parts]) if parts else np.empty(0, np.float32)
    return top_k(users, scores, size)


def shard_ranges(n_users: int, n_shards: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n_users, n_shards + 1).astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def resolve_seeds(
    data: LookalikeData,
    campaign_id: str | None,
    seed_user_ids: list[str],
    name: str,
    min_match_rate: float = 0.5,
) -> tuple[CampaignSeeds, list[str]]:
    """Seeds for an ad-hoc expansion: a known campaign, or an inline list of user ids; and the inline ids
    the data does not know (ignored). An inline list follows the campaigns' rule: at least
    ``min_match_rate`` of its ids (and one) must be known users, else it is refused naming the unknown ids."""
    from lookalike_models.contract import DataContractError, check_campaign_id

    if campaign_id:
        if campaign_id in data.campaign_problems:
            raise DataContractError("seeds.parquet", CAMPAIGN_ID, data.campaign_problems[campaign_id], campaign_id)
        if campaign_id not in data.campaigns:
            raise DataContractError("seeds.parquet", CAMPAIGN_ID, "no such campaign", campaign_id)
        return data.campaigns[campaign_id], []
    check_campaign_id(name, "parameter name")
    if not seed_user_ids:
        raise DataContractError("parameter seed_user_ids", USER_ID, "empty seed list: give ids or a campaign_id")
    ids = [int(u) if data.user_ids.dtype.is_integer() and str(u).lstrip("-").isdigit() else u for u in seed_user_ids]
    if data.user_ids.dtype.is_integer() and any(isinstance(u, str) for u in ids):
        bad = next(u for u in ids if isinstance(u, str))
        raise DataContractError("parameter seed_user_ids", USER_ID, "user ids of this data are integers", bad)
    idx = data.index_of(ids)
    unknown = [str(u) for u, i in zip(seed_user_ids, idx) if i < 0]
    known = len(seed_user_ids) - len(unknown)
    if known < max(1, min_match_rate * len(seed_user_ids)):
        listed = ", ".join(unknown[:5]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
        raise DataContractError(
            "parameter seed_user_ids",
            USER_ID,
            f"only {known} of {len(seed_user_ids)} seeds are known users (need {min_match_rate:.0%}, "
            f"data.min_seed_match_rate); unknown: {listed}",
        )
    return CampaignSeeds(name, np.unique(idx[idx >= 0])), unknown
