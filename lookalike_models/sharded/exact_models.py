"""The sharded twins of the exact models: scores equal, bit for bit, to the single-process scorer's for every
user. ``popularity`` and ``random`` here; ``item_ridge`` in ``exact_ridge.py``, ``minhash`` in
``exact_minhash.py`` (imported at the end, so importing this module registers all four)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

from lookalike_models.baselines import PopularityConfig, RandomConfig
from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import campaign_rng
from lookalike_models.sharded import spill as spilled
from lookalike_models.sharded.scorer import ShardedScorer, register_sharded
from lookalike_models.sharded.shard_data import ShardData, ShardPool

T = TypeVar("T")


def shard_memo(shard: ShardData, name: str, key: Hashable, compute: Callable[[], T], spill: bool = False) -> T:
    """``compute()`` once per shard object and ``key`` (one entry per ``name``): per-user state a model derives
    from the shard (binary rows, signatures) is built where the shard lies and reused by every campaign.
    ``spill``: also kept on the worker's disk (arrays and CSR matrices, ``spill.py``) when the shard has a spill
    folder, and read back from there after the shard was dropped from memory and read again."""
    store = shard.cache
    hit = store.get(name)
    if hit is None or hit[0] != key:
        kept = spilled.load(shard.spill, name, key) if spill and shard.spill is not None else None
        store[name] = hit = (key, compute() if kept is None else kept)
        if spill and shard.spill is not None and kept is None:
            spilled.save(shard.spill, name, key, hit[1])
    return hit[1]


def everyone_in(shard: ShardData) -> np.ndarray:
    """Global indices of all the shard's users, in order."""
    return shard.global_index(np.arange(shard.n_users))


@register_sharded
class ShardedPopularity(ShardedScorer):
    """``baselines.PopularityScorer``: each user's interaction count, which lies whole in the user's shard."""

    name = "popularity"
    config_class = PopularityConfig

    def fit(self, pool: ShardPool, train_seeds: dict[str, CampaignSeeds]) -> None:
        pass

    def prepare(self, pool: ShardPool, seeds: dict[str, CampaignSeeds]) -> None:
        return None

    @staticmethod
    def score_shard(prepared: Any, shard: ShardData, seeds: CampaignSeeds) -> tuple[np.ndarray, np.ndarray]:
        activity = shard_memo(shard, "popularity", 0, lambda: shard.data.activity().astype(np.float32))
        return everyone_in(shard), activity


@register_sharded
class ShardedRandom(ShardedScorer):
    """``baselines.RandomScorer``: the campaign's stream draws one double per user of the population; a shard
    skips the draws of the users before it (``advance``: one 64-bit step per double) and draws its own."""

    name = "random"
    config_class = RandomConfig

    def fit(self, pool: ShardPool, train_seeds: dict[str, CampaignSeeds]) -> None:
        pass

    def prepare(self, pool: ShardPool, seeds: dict[str, CampaignSeeds]) -> int:
        return self.config.seed

    @staticmethod
    def score_shard(prepared: int, shard: ShardData, seeds: CampaignSeeds) -> tuple[np.ndarray, np.ndarray]:
        rng = campaign_rng(prepared, seeds.campaign_id)
        # PCG64's random() consumes exactly one 64-bit output per double: advancing by the offset lands on
        # this shard's first user's draw without generating the n_users-long array.
        rng.bit_generator.advance(shard.offset)
        return everyone_in(shard), rng.random(shard.n_users).astype(np.float32)


from lookalike_models.sharded import exact_minhash, exact_ridge  # noqa: E402, F401 (registers both)
