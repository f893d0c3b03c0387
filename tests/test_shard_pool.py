"""A worker's shard cache gives memory back before Dask would pause the worker (at 80% of its limit): the cache
is memory Dask cannot spill, so a cache that only counted its arrays grew until every worker paused (a 10M
night stood still until the caches were cleared by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike_models.config import DataSource
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


def test_a_worker_s_shard_reads_its_rows_only_when_a_round_needs_them(monkeypatch, tmp_path):
    """A gathering round of item_logreg needs only the shard's TF-IDF rows: once they are on the worker's disk, a
    shard that left memory is not read again (at 10M users, re-reading shards was ~70% of that fit)."""
    from lookalike_models.sharded import peer_models, spill, store
    from lookalike_models.sharded.synthetic_shards import write_synthetic_shards
    from lookalike_models.synthetic import SyntheticConfig

    config = SyntheticConfig(n_users=900, n_items=120, n_campaigns=2, min_seeds=20, max_seeds=40, seed=4)
    folder = str(write_synthetic_shards(config, 3, tmp_path / "shards"))
    monkeypatch.setattr(shard_pool, "_SHARDS", shard_pool.OrderedDict())
    monkeypatch.setattr(shard_pool, "worker_spill_dir", lambda f, v, i: spill.spill_dir(tmp_path / "worker", f, v, i))
    eager = store.load_shard(folder, 1)
    idf = np.linspace(1.0, 3.0, eager.data.n_items).astype(np.float32)
    users = eager.global_index(np.arange(0, eager.n_users, 7))

    shard = shard_pool.cached_shard(folder, "v", 1)
    assert not shard.loaded and (shard.offset, shard.n_users) == (eager.offset, eager.n_users)
    ids, rows = peer_models.tfidf_rows_of(shard, idf, users)  # reads the rows, keeps the TF-IDF on disk
    expected_ids, expected_rows = peer_models.tfidf_rows_of(eager, idf, users)
    assert shard.loaded and np.array_equal(ids, expected_ids) and (rows != expected_rows).nnz == 0

    shard_pool._SHARDS.clear()  # the shard left memory; reading its rows is now an error
    monkeypatch.setattr(store, "load_shard", lambda *a, **k: pytest.fail("the shard's rows were read again"))
    again = shard_pool.cached_shard(folder, "v", 1)
    ids, rows = peer_models.tfidf_rows_of(again, idf, users)
    assert not again.loaded and np.array_equal(ids, expected_ids) and (rows != expected_rows).nnz == 0
    with pytest.raises(pytest.fail.Exception, match="read again"):
        again.data  # noqa: B018 (a round that needs the rows reads them)


def test_an_over_budget_shard_lets_its_rows_go_before_what_was_derived_from_them(monkeypatch, tmp_path):
    from lookalike_models.sharded.shard_data import LazyShardData
    from lookalike_models.synthetic import SyntheticConfig

    data = load_encoded(DataSource(kind="synthetic", synthetic=SyntheticConfig(n_users=300, n_items=50)), tmp_path)
    shard = LazyShardData(0, 0, data.n_users, lambda: data, None)
    shard.cache["tfidf"] = ("key", np.zeros(10))
    assert shard.data is data and shard.loaded
    monkeypatch.setattr(shard_pool, "_SHARDS", shard_pool.OrderedDict({("f", "v", 0): shard}))
    monkeypatch.setattr(shard_pool, "worker_memory_limit", lambda: 1000)
    rss = iter([900, 400])  # over half the limit until the rows go
    monkeypatch.setattr(shard_pool, "process_rss", lambda: next(rss))
    assert shard_pool.cached_shard("f", "v", 0) is shard
    assert not shard.loaded and "tfidf" in shard.cache
    assert shard.data is data  # read again on use
