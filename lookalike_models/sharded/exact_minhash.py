"""``minhash`` on shards, equal bit for bit to ``minhash.MinHashScorer``.

A signature is a function of the user's item set alone, so each shard signs its own users (memoised on the
shard). The seeds' signatures are gathered (a map round; bounded by the seed lists), their band keys sent
to every shard: a user is a candidate when it shares a band bucket with a seed in some band
(``MinHashLSHIndex`` semantics). ``min_candidates`` counts candidates over all shards (a second map round):
below it, everyone is scored. A candidate's score is ``mean_jaccard_to_seeds``, elementwise in the
candidate, so a shard's scores are the single-process ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasketch import MinHashLSH

from lookalike_models.dataset import CampaignSeeds
from lookalike_models.minhash import (
    MinHashConfig,
    band_keys,
    expand_ranges,
    item_hashes,
    mean_jaccard_to_seeds,
    signatures,
)
from lookalike_models.sharded.exact_models import everyone_in, shard_memo
from lookalike_models.sharded.scorer import ShardedScorer, register_sharded
from lookalike_models.sharded.shard_data import ShardData, ShardPool


@dataclass(frozen=True)
class Banding:
    num_perm: int
    seed: int
    bands: int
    rows: int


@dataclass
class MinHashPrepared:
    """Per campaign: the seeds' signatures (in ``positives`` order), the seeds' distinct key per band, and
    whether the campaign scores everyone (too few LSH candidates over all shards)."""

    banding: Banding
    seed_sigs: dict[str, np.ndarray]  # uint32 [n_pos, num_perm]
    seed_keys: dict[str, list[np.ndarray]]  # per band: sorted distinct uint64 keys
    everyone: dict[str, bool]


def shard_signatures(shard: ShardData, banding: Banding) -> tuple[np.ndarray, np.ndarray]:
    """(uint32 [n, num_perm] signatures, uint64 [n, bands] band keys) of the shard's users, memoised."""

    def compute() -> tuple[np.ndarray, np.ndarray]:
        indptr, items = shard.data.user_items
        hashes = item_hashes(shard.data.item_ids.to_list())
        sigs = signatures(indptr, items, hashes, banding.num_perm, banding.seed)
        return sigs, band_keys(sigs, banding.bands, banding.rows)

    return shard_memo(shard, "minhash", banding, compute, spill=True)


def seed_signatures(shard: ShardData, banding: Banding, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted global ids, their signatures) of the distinct ``users`` that lie in this shard."""
    local = np.unique(shard.local(users))
    return shard.global_index(local), shard_signatures(shard, banding)[0][local]


def shard_band_index(shard: ShardData, banding: Banding) -> tuple[np.ndarray, np.ndarray]:
    """(order, sorted keys), each [n, bands]: the shard's band keys sorted per band (memoised), so a seed list's
    few keys are looked up by binary search instead of testing every user (``MinHashLSHIndex``'s layout)."""

    def compute() -> tuple[np.ndarray, np.ndarray]:
        keys = shard_signatures(shard, banding)[1]
        order = np.argsort(keys, axis=0, kind="stable")
        return order, np.take_along_axis(keys, order, axis=0)

    return shard_memo(shard, "minhash_bands", banding, compute)


def lsh_candidates(shard: ShardData, banding: Banding, keys: list[np.ndarray]) -> np.ndarray:
    """Sorted local indices of the shard's users sharing a band bucket with one of the seeds (``keys``: per
    band, the seeds' sorted distinct keys)."""
    order, sorted_keys = shard_band_index(shard, banding)
    found = np.zeros(shard.n_users, bool)
    for band, wanted in enumerate(keys):
        lo = np.searchsorted(sorted_keys[:, band], wanted, side="left")
        hi = np.searchsorted(sorted_keys[:, band], wanted, side="right")
        found[order[expand_ranges(lo, hi), band]] = True
    return np.flatnonzero(found)


def candidate_counts(
    shard: ShardData, banding: Banding, seed_keys: dict[str, list[np.ndarray]], enough: int
) -> dict[str, int]:
    """Per campaign: the shard's LSH candidates, counted up to ``enough`` (all a "too few candidates?" question
    needs: with the default threshold the first band alone usually finds that many, so most bands are skipped)."""
    order, sorted_keys = shard_band_index(shard, banding)
    counts = {}
    for cid, keys in seed_keys.items():
        found = np.zeros(shard.n_users, bool)
        for band, wanted in enumerate(keys):
            lo = np.searchsorted(sorted_keys[:, band], wanted, side="left")
            hi = np.searchsorted(sorted_keys[:, band], wanted, side="right")
            found[order[expand_ranges(lo, hi), band]] = True
            if found.sum() >= enough:
                break
        counts[cid] = min(int(found.sum()), enough)
    return counts


@register_sharded
class ShardedMinHash(ShardedScorer):
    """``minhash``: signatures where the users lie, the seeds' signatures and band keys sent to every shard."""

    name = "minhash"
    config_class = MinHashConfig

    def banding(self) -> Banding:
        probe = MinHashLSH(threshold=self.config.threshold, num_perm=self.config.num_perm)
        return Banding(self.config.num_perm, self.config.seed, probe.b, probe.r)

    def fit(self, pool: ShardPool, train_seeds: dict[str, CampaignSeeds]) -> None:
        """Nothing to learn: each shard signs its users when first asked (a signing round here would be redone
        anyway once the shard left its worker's cache)."""

    def prepare(self, pool: ShardPool, seeds: dict[str, CampaignSeeds]) -> MinHashPrepared:
        banding = self.banding()
        wanted = np.unique(np.concatenate([s.positives for s in seeds.values()] or [np.empty(0, np.int64)]))
        parts = pool.map(seed_signatures, banding, wanted)
        ids = np.concatenate([i for i, _ in parts])
        sigs = np.concatenate([s for _, s in parts])
        seed_sigs = {cid: sigs[np.searchsorted(ids, s.positives)] for cid, s in seeds.items()}
        seed_keys = {}
        for cid, own in seed_sigs.items():
            keys = band_keys(own, banding.bands, banding.rows)
            seed_keys[cid] = [np.unique(keys[:, band]) for band in range(banding.bands)]
        counts = pool.map(candidate_counts, banding, seed_keys, self.config.min_candidates)
        everyone = {cid: sum(c[cid] for c in counts) < self.config.min_candidates for cid in seeds}
        return MinHashPrepared(banding, seed_sigs, seed_keys, everyone)

    @staticmethod
    def score_shard(prepared: MinHashPrepared, shard: ShardData, seeds: CampaignSeeds) -> tuple[np.ndarray, np.ndarray]:
        cid = seeds.campaign_id
        sigs = shard_signatures(shard, prepared.banding)[0]
        if prepared.everyone[cid]:
            return everyone_in(shard), mean_jaccard_to_seeds(prepared.seed_sigs[cid], sigs)
        local = lsh_candidates(shard, prepared.banding, prepared.seed_keys[cid])
        return shard.global_index(local), mean_jaccard_to_seeds(prepared.seed_sigs[cid], sigs, local)

    @classmethod
    def score_users(
        cls, prepared: MinHashPrepared, shard: ShardData, seeds: CampaignSeeds, users: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Only the asked users are tested for candidacy (their own band keys against the seeds') and scored:
        a sampled evaluation asks for a few thousand of a shard's users, not for all of its candidates."""
        cid = seeds.campaign_id
        local = np.unique(shard.local(users))
        if not prepared.everyone[cid]:
            own = shard_signatures(shard, prepared.banding)[1][local]
            found = np.zeros(local.size, bool)
            for band, wanted in enumerate(prepared.seed_keys[cid]):
                found |= np.isin(own[:, band], wanted)
            local = local[found]
        sigs = shard_signatures(shard, prepared.banding)[0]
        return shard.global_index(local), mean_jaccard_to_seeds(prepared.seed_sigs[cid], sigs, local)
