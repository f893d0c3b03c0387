"""Staging and held-out evaluation of any ``ShardedScorer``, shard by shard, merged into exactly what the
single-process steps give (``pipeline.score_campaign`` top lists, ``protocol.evaluate_campaigns`` rows).

A shard sends back only bounded things: its top ``size`` per campaign, the scores of the held-out users (and
of its part of the evaluation's uniform sample) among its candidates, counts, the held-out seeds' activity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import lookalike_models.sharded.exact_models  # noqa: F401 (registers the exact twins)
from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import (
    HeldOut,
    campaign_metrics,
    campaign_rng,
    sampled_campaign_metrics,
    seed_bucket,
)
from lookalike_models.pipeline import merge_shards
from lookalike_models.scorers import top_k
from lookalike_models.sharded.scorer import SHARDED_SCORERS, ShardedScorer
from lookalike_models.sharded.shard_data import ShardData, ShardPool

TopList = tuple[np.ndarray, np.ndarray]


def scorer_class(scorer: str | type[ShardedScorer]) -> type[ShardedScorer]:
    """The sharded scorer class registered under ``scorer`` (or ``scorer`` itself when a class)."""
    if isinstance(scorer, str):
        if scorer not in SHARDED_SCORERS:
            raise ValueError(f"no sharded scorer '{scorer}'; have {sorted(SHARDED_SCORERS)}")
        return SHARDED_SCORERS[scorer]
    return scorer


def in_shard(shard: ShardData, users: np.ndarray) -> np.ndarray:
    """The global ``users`` that lie in ``shard`` (what an ``np.isin`` against its candidates needs)."""
    users = np.asarray(users, np.int64)
    return users[(users >= shard.offset) & (users < shard.stop)]


def shard_tops(
    shard: ShardData,
    scorer: str | type[ShardedScorer],
    prepared: object,
    campaigns: dict[str, CampaignSeeds],
    size: int,
    excluded: np.ndarray,
) -> dict[str, TopList | str]:
    """Per campaign, the shard's top ``size`` (global users, float32 scores) once the campaign's seeds
    (positives and negatives) and ``excluded`` are removed, as ``pipeline.score_campaign`` does; a campaign
    whose scoring fails gets its error as a string (the other campaigns still run)."""
    cls = scorer_class(scorer)
    tops: dict[str, TopList | str] = {}
    for cid, seeds in campaigns.items():
        try:
            candidates, scores = cls.score_shard(prepared, shard, seeds)
            scores = np.asarray(scores, np.float32)
            if scores.shape != candidates.shape:
                raise ValueError(f"{cls.name} returned {scores.shape} scores for {candidates.shape} candidates")
            exclude = in_shard(shard, np.concatenate([seeds.positives, seeds.negatives, excluded]))
            tops[cid] = top_k(candidates, scores, size, exclude)
        except Exception as error:  # one campaign's failure must not sink the shard's other campaigns
            tops[cid] = f"{type(error).__name__}: {error}"
    return tops


def merge_tops(parts: list[dict[str, TopList | str]], size: int) -> dict[str, TopList | str]:
    """Per campaign, the merged top ``size`` of every shard's top list (``pipeline.merge_shards``), or the
    first shard's error when a shard failed on it."""
    merged: dict[str, TopList | str] = {}
    for cid in parts[0] if parts else {}:
        errors = [p[cid] for p in parts if isinstance(p[cid], str)]
        merged[cid] = errors[0] if errors else merge_shards([p[cid] for p in parts], size)
    return merged


def stage_sharded(
    pool: ShardPool,
    prepared: object,
    scorer: str | type[ShardedScorer],
    campaigns: dict[str, CampaignSeeds],
    size: int,
    excluded: np.ndarray | None = None,
) -> dict[str, TopList | str]:
    """Every campaign's audience of ``size`` users (best first) from one map round over the shards."""
    excluded = np.empty(0, np.int64) if excluded is None else np.asarray(excluded, np.int64)
    return merge_tops(pool.map(shard_tops, scorer, prepared, campaigns, size, excluded), size)


@dataclass
class ShardHeldOut:
    """What one shard returns for one campaign's held-out evaluation."""

    top: TopList | None  # full branch: the shard's top list of the largest size
    n_candidates: int  # candidates scored (full) or kept (sampled)
    users: np.ndarray  # global ids of the held-out (and sampled) users among the shard's candidates
    scores: np.ndarray  # float32, aligned with users
    positives: np.ndarray  # the held-out seeds in this shard (global), and
    activity: np.ndarray  # their distinct organic items
    n_sampled: int  # sampled branch: the shard's sampled users left once seeds are excluded


@dataclass
class Sampling:
    """The sampled branch's draws, made once by the caller: per campaign ``protocol.sampled_scores``'s
    ``rng.choice(n_users, max_users)``, sorted (int32 while ids fit), so each shard cuts its range out by binary
    search instead of repeating a draw over the whole population (a shuffle of it, at 200k of 10M)."""

    samples: dict[str, np.ndarray]

    @classmethod
    def draw(cls, campaigns: list[str], n_users: int, max_users: int) -> Sampling:
        dtype = np.int32 if n_users < 2**31 else np.int64
        return cls(
            {
                cid: np.sort(campaign_rng(17, cid).choice(n_users, min(max_users, n_users), replace=False)).astype(
                    dtype
                )
                for cid in campaigns
            }
        )


def shard_sample(shard: ShardData, cid: str, excluded: np.ndarray, sampling: Sampling) -> np.ndarray:
    """This shard's part of the campaign's uniform sample, less ``excluded``."""
    sample = sampling.samples[cid]
    lo, hi = np.searchsorted(sample, [shard.offset, shard.stop])
    sample = sample[lo:hi].astype(np.int64)
    return sample[~np.isin(sample, excluded)]


def shard_heldout(
    shard: ShardData,
    scorer: str | type[ShardedScorer],
    prepared: object,
    train: dict[str, CampaignSeeds],
    heldout: dict[str, HeldOut],
    size: int,
    sampling: Sampling | None,
) -> dict[str, ShardHeldOut]:
    """Per held-out campaign: the shard's top ``size`` (full branch) or its sampled users (sampled branch),
    and the scores of the held-out users among its candidates."""
    cls = scorer_class(scorer)
    activity = np.diff(shard.data.user_items[0])  # distinct organic items per user
    out = {}
    for cid, held in heldout.items():
        seeds = train[cid]
        wanted = np.concatenate([held.positives, held.negatives])
        top, n_sampled = None, 0
        if sampling is None:
            candidates, scores = cls.score_shard(prepared, shard, seeds)
            scores = np.asarray(scores, np.float32)
            top = top_k(candidates, scores, size, in_shard(shard, np.concatenate([seeds.positives, seeds.negatives])))
            keep = np.isin(candidates, in_shard(shard, wanted))
            n_candidates, candidates, scores = int(candidates.size), candidates[keep], scores[keep]
        else:
            excluded = in_shard(shard, np.concatenate([seeds.positives, seeds.negatives, held.positives]))
            sample = shard_sample(shard, cid, excluded, sampling)
            wanted, n_sampled = np.unique(np.concatenate([in_shard(shard, wanted), sample])), sample.size
            candidates, scores = cls.score_users(prepared, shard, seeds, wanted)
            scores = np.asarray(scores, np.float32)
            n_candidates = int(candidates.size)
        positives = np.unique(in_shard(shard, held.positives))
        out[cid] = ShardHeldOut(
            top,
            n_candidates,
            candidates,
            scores,
            positives,
            activity[positives - shard.offset],
            int(n_sampled),
        )
    return out


class UserValues:
    """A per-user value known for a few users (``values[users]`` as an array would give it for them)."""

    def __init__(self, users: np.ndarray, values: np.ndarray):
        order = np.argsort(users, kind="stable")
        self.users, self.values = users[order], values[order]

    def __getitem__(self, users: np.ndarray) -> np.ndarray:
        return self.values[np.searchsorted(self.users, users)]


def evaluate_sharded(
    pool: ShardPool,
    scorer: ShardedScorer,
    prepared: object,
    train: dict[str, CampaignSeeds],
    heldout: dict[str, HeldOut],
    sizes: dict[str, int],
    bucket_edges: list[int],
    max_scored_users: int | None = None,
) -> list[dict]:
    """``protocol.evaluate_campaigns`` on shards, row for row (``prepared``: ``scorer.prepare(pool, train)``):
    one map round; every metric column equal to the single-process one, ``score_seconds`` the round's time
    shared evenly among the campaigns."""
    start = time.perf_counter()
    sampled = max_scored_users is not None and pool.n_users > max_scored_users
    sampling = Sampling.draw(list(heldout), pool.n_users, max_scored_users) if sampled else None
    size = max(sizes.values())
    train = {cid: train[cid] for cid in heldout}
    parts = pool.map(shard_heldout, scorer.name, prepared, train, heldout, size, sampling)
    seconds = (time.perf_counter() - start) / max(len(heldout), 1)
    rows = []
    for cid, held in heldout.items():
        seeds, shards = train[cid], [p[cid] for p in parts]
        users = np.concatenate([s.users for s in shards])
        scores = np.concatenate([s.scores for s in shards])
        activity = UserValues(
            np.concatenate([s.positives for s in shards]), np.concatenate([s.activity for s in shards])
        )
        if sampled:
            excluded = np.unique(np.concatenate([seeds.positives, seeds.negatives, held.positives])).size
            weight = (pool.n_users - excluded) / max(sum(s.n_sampled for s in shards), 1)
            row = sampled_campaign_metrics(users, scores, held, sizes, weight, activity)
        else:
            audience, _ = merge_shards([s.top for s in shards], size)
            row = campaign_metrics(audience, users, scores, held, sizes, activity)
        row.update(
            campaign_id=cid,
            n_train_seeds=seeds.size,
            seed_bucket=seed_bucket(seeds.size, bucket_edges),
            negatives_sampled=held.negatives_sampled,
            n_candidates=sum(s.n_candidates for s in shards),
            score_seconds=seconds,
        )
        rows.append(row)
    return rows
