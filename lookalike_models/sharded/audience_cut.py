"""Every campaign's audience from user shards when the audience is too big to pass through one process as
per-shard top lists: 5% of 10M users is 500k per campaign, and a shard of 250k users would send all of its
users for each of 100 campaigns (25M pairs a shard).

Two passes over the shards, then one small reduce per campaign:
1. ``cut_samples``: each shard scores a campaign and sends every ``step``-th score of its own top list
   (and its last one), with their ranks: ~size/step numbers a shard.
2. ``lower_cut`` turns them into a score ``L`` with at least ``size`` eligible users at or above it (each
   sampled point proves that many users of its shard score at least that much); ``write_candidates``: each
   shard scores again and writes only its users scoring >= L (about size/n_shards + step of them) to
   ``<folder>/<campaign>/part-<shard>.parquet``.
3. ``reduce_campaign`` reads one campaign's parts and keeps the top ``size`` in the order ``scorers.top_k``
   uses (score descending, user index ascending): the single-process audience, to the last tie.
Scores are recomputed in pass 2 rather than kept: a worker that died between passes changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lookalike_models.contract import USER_ID
from lookalike_models.dataset import CampaignSeeds
from lookalike_models.io import write_parquet_atomic
from lookalike_models.publishing import ranked_audience
from lookalike_models.reach import load_exclusions
from lookalike_models.sharded.catalog import sharded_scorer
from lookalike_models.sharded.shard_data import ShardData

SampledTop = tuple[np.ndarray, np.ndarray]  # (1-based ranks, scores at those ranks), best first


def eligible_scores(
    shard: ShardData, scorer_name: str, prepared, seeds: CampaignSeeds, excluded: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(global users, scores) of the shard's candidates for one seed list, without its seeds, its labelled
    non-converters, ``excluded`` (global) users and non-finite scores: what ``top_k`` would rank."""
    users, scores = sharded_scorer(scorer_name).score_shard(prepared, shard, seeds)
    users, scores = np.asarray(users, np.int64), np.asarray(scores, np.float32)
    gone = np.concatenate([shard.local(seeds.positives), shard.local(seeds.negatives), shard.local(excluded)])
    mask = np.zeros(shard.n_users, bool)
    mask[gone] = True
    keep = ~mask[users - shard.offset] & np.isfinite(scores)
    return users[keep], scores[keep]


def shard_exclusions(shard: ShardData, paths: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``reach.load_exclusions`` of this shard's users, as global indices."""
    everywhere, by_campaign = load_exclusions(paths, shard.data)
    return shard.global_index(everywhere), {cid: shard.global_index(u) for cid, u in by_campaign.items()}


def excluded_for(exclusions: tuple[np.ndarray, dict[str, np.ndarray]], cid: str) -> np.ndarray:
    everywhere, by_campaign = exclusions
    return np.concatenate([everywhere, by_campaign.get(cid, everywhere[:0])])


def cut_samples(
    shard: ShardData,
    scorer_name: str,
    prepared,
    campaigns: dict[str, CampaignSeeds],
    size: int,
    step: int,
    exclusion_paths: list[str],
) -> dict[str, SampledTop | str]:
    """Per campaign: every ``step``-th score of this shard's top ``size`` and its last, with their ranks; or
    the error the campaign raised (one bad campaign must not sink the shard)."""
    exclusions = shard_exclusions(shard, exclusion_paths)
    samples: dict[str, SampledTop | str] = {}
    for cid, seeds in campaigns.items():
        try:
            _, scores = eligible_scores(shard, scorer_name, prepared, seeds, excluded_for(exclusions, cid))
            m = min(size, scores.size)
            top = -np.sort(-np.partition(scores, scores.size - m)[scores.size - m :]) if m else scores[:0]
            ranks = np.unique(np.concatenate([np.arange(step, m + 1, step), [m] if m else []])).astype(np.int64)
            samples[cid] = (ranks, top[ranks - 1])
        except Exception as exc:
            samples[cid] = f"{type(exc).__name__}: {exc}"
    return samples


def lower_cut(samples: list[SampledTop], size: int) -> float:
    """The highest score with at least ``size`` users at or above it that the samples prove, or -inf when
    the shards hold fewer than ``size`` eligible users (then everyone is a candidate)."""
    if not samples or not any(r.size for r, _ in samples):
        return -np.inf
    shard_of = np.concatenate([np.full(r.size, i, np.int64) for i, (r, _) in enumerate(samples)])
    ranks = np.concatenate([r for r, _ in samples]).astype(np.int64)
    values = np.concatenate([v for _, v in samples]).astype(np.float64)
    order = np.lexsort((ranks, -values))  # best score first; within one shard, ranks grow
    proven = np.zeros(len(samples), np.int64)
    total = 0
    for at, point in enumerate(order):
        shard = shard_of[point]
        total += ranks[point] - proven[shard]
        proven[shard] = ranks[point]
        last_of_value = at + 1 == order.size or values[order[at + 1]] != values[point]
        if total >= size and last_of_value:
            return float(values[point])
    return -np.inf


def write_candidates(
    shard: ShardData,
    scorer_name: str,
    prepared,
    campaigns: dict[str, CampaignSeeds],
    cuts: dict[str, float],
    folder: str,
    exclusion_paths: list[str],
) -> dict[str, int | str]:
    """Write each campaign's users of this shard scoring at least its cut (global index, id, score) to
    ``<folder>/<campaign>/part-<shard>.parquet``; returns rows written, or the campaign's error."""
    exclusions = shard_exclusions(shard, exclusion_paths)
    written: dict[str, int | str] = {}
    for cid, cut in cuts.items():
        try:
            seeds = campaigns[cid]
            users, scores = eligible_scores(shard, scorer_name, prepared, seeds, excluded_for(exclusions, cid))
            keep = scores >= np.float32(cut) if np.isfinite(cut) else np.ones(scores.size, bool)
            users, scores = users[keep], scores[keep]
            frame = pl.DataFrame(
                {
                    "user_idx": users,
                    USER_ID: shard.data.user_ids.gather(users - shard.offset),
                    "score": scores,
                }
            )
            write_parquet_atomic(frame, Path(folder) / cid / f"part-{shard.index:05d}.parquet")
            written[cid] = int(users.size)
        except Exception as exc:
            written[cid] = f"{type(exc).__name__}: {exc}"
    return written


def reduce_campaign(folder: str | Path, size: int, source: str) -> pl.DataFrame:
    """One campaign's audience from its shards' candidate files: the top ``size`` by (score descending, user
    index ascending), ranked from 1, in the published audience's columns."""
    parts = sorted(Path(folder).glob("part-*.parquet"))
    frame = pl.concat([pl.read_parquet(p) for p in parts]) if parts else pl.DataFrame()
    if frame.height == 0:
        return frame
    top = frame.sort(["score", "user_idx"], descending=[True, False]).head(size)
    return ranked_audience(top[USER_ID], top["score"].to_numpy(), source)
