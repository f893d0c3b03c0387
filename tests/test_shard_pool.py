"""A worker's shard cache gives memory back before Dask would pause the worker (at 80% of its limit): the cache
is memory Dask cannot spill, so a cache that only counted its arrays grew until every worker paused (a 10M
night stood still until the caches were cleared by hand)."""

from __future__ import annotations

import numpy as np

from lookalike_models.sharded.shard_data import split_into_shards
from lookalike_models.sources import load_encoded
from tasks import shard_pool


def test_the_shard_cache_shrinks_while_the_process_passes_half_its_memory_limit(monkeypatch, tmp_path):
    from lookalike_models.config import DataSource
    from lookalike_models.synthetic import SyntheticConfig

    data = load_encoded(DataSource(kind="synthetic", synthetic=SyntheticConfig(n_users=600, n_items=100)), tmp_path)
    shards = split_into_shards(data, 6)
    monkeypatch.setattr(shard_pool, "_SHARDS", shard_pool.OrderedDict())
    for shard in shards:
        shard_pool._SHARDS[("f", "v", shard.index)] = shard
    rss = {"now": 900}
    monkeypatch.setattr(shard_pool, "worker_memory_limit", lambda: 1000)
    monkeypatch.setattr(shard_pool, "process_rss", lambda: rss["now"])

    shard_pool.make_room()
    assert len(shard_pool._SHARDS) == 0  # rss never fell below the half: every shard is dropped
    for shard in shards:
        shard_pool._SHARDS[("f", "v", shard.index)] = shard
    rss["now"] = 400
    shard_pool.make_room()
    assert len(shard_pool._SHARDS) == 6  # under half the limit and the budget: nothing dropped
    monkeypatch.setenv("LOOKALIKE_SHARD_CACHE_GB", str(2.5 * shard_pool.shard_bytes(shards[0]) / 1e9))
    shard_pool.make_room()
    kept = [key[2] for key in shard_pool._SHARDS]
    assert kept == [4, 5], kept  # the oldest go first, down to the byte budget
    assert np.isclose(shard_pool.shard_bytes(shards[0]), shard_pool.shard_bytes(shards[1]), rtol=0.5)


def test_a_cached_shard_asked_for_again_sheds_the_others_and_its_old_derived_state(monkeypatch, tmp_path):
    """The pause came with every shard already cached: no new shard was read, so nothing was ever dropped."""
    from lookalike_models.config import DataSource
    from lookalike_models.synthetic import SyntheticConfig

    data = load_encoded(DataSource(kind="synthetic", synthetic=SyntheticConfig(n_users=600, n_items=100)), tmp_path)
    shards = split_into_shards(data, 3)
    monkeypatch.setattr(shard_pool, "_SHARDS", shard_pool.OrderedDict())
    for shard in shards:
        shard.cache["minhash"] = ("key", np.zeros(10))
        shard_pool._SHARDS[("f", "v", shard.index)] = shard
    monkeypatch.setattr(shard_pool, "worker_memory_limit", lambda: 1000)
    monkeypatch.setattr(shard_pool, "process_rss", lambda: 900)  # over half the limit, whatever is dropped
    assert shard_pool.cached_shard("f", "v", 1) is shards[1]  # a hit: not read again
    assert list(shard_pool._SHARDS) == [("f", "v", 1)]  # the others dropped
    assert shards[1].cache == {}  # and what earlier models derived from it
