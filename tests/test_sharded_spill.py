"""State a scorer derives from a shard (MinHash signatures, SVD factors, the ensemble's user state) is kept on the
worker's disk and read back, not recomputed, once the shard was dropped from memory and read again: the same
scores, and nothing but arrays and CSR matrices written (read with ``allow_pickle=False``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from lookalike_models.config import DataSource
from lookalike_models.evaluation import holdout_split
from lookalike_models.sharded import exact_minhash, spill
from lookalike_models.sharded.exact_minhash import ShardedMinHash
from lookalike_models.sharded.shard_data import LocalShardPool, split_into_shards
from lookalike_models.sources import load_encoded
from lookalike_models.synthetic import SyntheticConfig


def test_a_kept_value_reads_back_equal_and_a_new_key_replaces_the_old(tmp_path):
    csr = sp.random(50, 30, density=0.1, format="csr", dtype=np.float32, random_state=0)
    value = (np.arange(12, dtype=np.uint32).reshape(3, 4), csr, None, np.linspace(0, 1, 5))
    assert spill.save(tmp_path, "state", ("k", 1), value)
    back = spill.load(tmp_path, "state", ("k", 1))
    assert isinstance(back, tuple) and len(back) == 4 and back[2] is None
    np.testing.assert_array_equal(back[0], value[0])
    assert back[0].dtype == np.uint32
    assert (back[1] != csr).nnz == 0 and back[1].shape == csr.shape
    np.testing.assert_array_equal(back[3], value[3])
    assert spill.load(tmp_path, "state", ("k", 2)) is None  # another key: not this entry

    single = np.ones(7)
    assert spill.save(tmp_path, "state", ("k", 2), single)
    assert spill.load(tmp_path, "state", ("k", 1)) is None  # replaced: one entry per name
    np.testing.assert_array_equal(spill.load(tmp_path, "state", ("k", 2)), single)
    assert len(list(tmp_path.glob("state-*"))) == 1


def test_values_it_cannot_keep_without_pickle_are_refused_and_nothing_is_written(tmp_path):
    assert not spill.save(tmp_path, "a", 0, np.array([{"x": 1}], dtype=object))
    assert not spill.save(tmp_path, "b", 0, {"not": "an array"})
    assert not spill.save(tmp_path, "c", 0, (np.ones(2), "text"))
    assert list(tmp_path.iterdir()) == []


def test_a_half_written_entry_is_never_read(tmp_path):
    assert spill.save(tmp_path, "sigs", 0, np.ones(3))
    entry = spill.entry_path(tmp_path, "sigs", 1)
    entry.mkdir()  # arrays of a writer that died before its rename: no parts.json, so not an entry
    np.save(entry / "0.npy", np.zeros(3))
    assert spill.load(tmp_path, "sigs", 1) is None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    source = DataSource(kind="synthetic", synthetic=SyntheticConfig(n_users=3000, n_items=300, n_campaigns=3))
    return load_encoded(source, tmp_path_factory.mktemp("spill")).without_campaign_leakage()


def test_minhash_reads_its_signatures_back_from_disk_after_the_shard_left_memory(data, tmp_path, monkeypatch):
    train, _ = holdout_split(data.campaigns, data.n_users, 0.1, seed=0)
    shards = split_into_shards(data, 3)
    for shard in shards:
        shard.spill = spill.spill_dir(tmp_path, "folder", "v1", shard.index)
    model = ShardedMinHash({})
    pool = LocalShardPool(shards)
    prepared = model.prepare(pool, train)
    seeds = next(iter(train.values()))
    first = [ShardedMinHash.score_shard(prepared, shard, seeds) for shard in shards]
    assert all(any(shard.spill.glob("minhash-*")) for shard in shards)

    # The shards read again (empty memory caches); signing is now an error: the scores must come from disk.
    reread = [dataclasses.replace(shard, cache={}) for shard in shards]
    monkeypatch.setattr(exact_minhash, "signatures", lambda *a, **k: pytest.fail("signatures recomputed"))
    again = [ShardedMinHash.score_shard(prepared, shard, seeds) for shard in reread]
    for (users_a, scores_a), (users_b, scores_b) in zip(first, again):
        np.testing.assert_array_equal(users_a, users_b)
        np.testing.assert_array_equal(scores_a, scores_b)
    assert ShardedMinHash.score_shard(prepared, reread[0], seeds)[1].size > 0
