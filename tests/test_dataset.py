import numpy as np
import polars as pl

from lookalike_models.dataset import LookalikeData


def test_ids_are_contiguous_and_mapping_is_kept(synthetic_data, synthetic_dir):
    raw_users = pl.read_parquet(synthetic_dir / "interactions.parquet")["user_id"].unique()
    assert synthetic_data.n_users >= raw_users.len()
    assert synthetic_data.user_idx.max() < synthetic_data.n_users
    # Mapping back and forth is the identity.
    some = synthetic_data.user_ids[:50].to_list()
    assert (synthetic_data.index_of(some) == np.arange(50)).all()
    assert synthetic_data.index_of([-999])[0] == -1


def test_user_fields_are_encoded(synthetic_data):
    users = synthetic_data.users
    assert users.single.shape == (synthetic_data.n_users, 3)
    assert (users.single > 0).all()  # every synthetic user has every field
    assert all(users.single[:, j].max() < size for j, size in enumerate(users.single_sizes))
    interests = users.multi[0]
    assert (interests[:, 0] > 0).all() and interests.max() < users.multi_sizes[0]
    assert 0 <= users.continuous.min() and users.continuous.max() <= 1


def test_save_load_round_trip(synthetic_data, tmp_path):
    synthetic_data.save(tmp_path / "enc")
    back = LookalikeData.load(tmp_path / "enc")
    assert back.n_users == synthetic_data.n_users
    assert (back.item_idx == synthetic_data.item_idx).all()
    for cid, seeds in synthetic_data.campaigns.items():
        assert (back.campaigns[cid].positives == seeds.positives).all()
    assert back.user_ids.to_list() == synthetic_data.user_ids.to_list()


def test_user_items_csr_matches_interactions(synthetic_data):
    indptr, items = synthetic_data.user_items
    u = 17
    expected = np.unique(synthetic_data.item_idx[synthetic_data.user_idx == u])
    assert (items[indptr[u] : indptr[u + 1]] == expected).all()


def test_campaign_item_leakage_is_removed(movielens_data, movielens_dir):
    # Every campaign movie's ratings are gone from the training interactions.
    assert len(movielens_data.campaign_items) == len(movielens_data.campaigns)
    own = np.fromiter(movielens_data.campaign_items.values(), np.int64)
    assert not np.isin(movielens_data.item_idx, own).any()
    raw = pl.read_parquet(movielens_dir / "interactions.parquet")
    assert raw.height > movielens_data.user_idx.size


def test_campaign_items_are_dropped_from_the_interactions(synthetic_data):
    # A campaign's own item is its label: a model that saw interactions with it would read the answer.
    item = int(synthetic_data.item_idx[0])
    clean = synthetic_data.without_campaign_leakage({"c000": item})
    assert item not in set(clean.item_idx.tolist())
    assert clean.user_idx.size == synthetic_data.user_idx.size - int((synthetic_data.item_idx == item).sum())
    assert synthetic_data.without_campaign_leakage({}) is synthetic_data


def test_content_key_names_the_content_not_the_object(synthetic_data, tmp_path):
    # The shared-encoder cache is keyed by it: a reloaded copy must hit, other data must miss.
    copy = LookalikeData.load(synthetic_data.save(tmp_path / "encoded"))
    assert copy is not synthetic_data and copy.content_key == synthetic_data.content_key
    fewer = synthetic_data.without_interactions(np.arange(synthetic_data.user_idx.size) > 0)
    assert fewer.content_key != synthetic_data.content_key


def test_distinct_is_numpy_unique():
    from lookalike_models.dataset import distinct

    values = np.random.default_rng(0).integers(-50, 50, 1000)
    assert np.array_equal(distinct(values), np.unique(values))
    assert distinct(np.empty(0, np.int64)).size == 0


def test_adapter_options_belong_to_their_kind_and_stay_out_of_default_dumps():
    import pytest
    from pydantic import ValidationError

    from lookalike_models.config import DataSource, NightlyConfig, apply_overrides

    # Left out while at their defaults: a config that sets none hashes and logs as before the options existed.
    assert {"movielens", "amazon"}.isdisjoint(DataSource(kind="movielens").model_dump())
    assert DataSource(kind="tencent").adapter_options is None and DataSource().adapter_options is None
    config = apply_overrides(NightlyConfig(), ["data.kind=movielens", "data.movielens.n_campaigns=5"])
    assert config.data.adapter_options.n_campaigns == 5 and config.data.model_dump()["movielens"]["n_campaigns"] == 5
    with pytest.raises(ValidationError, match="data.kind is amazon"):  # another adapter's knobs would go unused
        DataSource(kind="amazon", movielens={"n_campaigns": 5})
    with pytest.raises(ValidationError, match="user_historyy"):
        DataSource(kind="amazon", amazon={"user_historyy": True})


def test_a_data_source_hands_its_adapter_options_to_the_adapter(tmp_path):
    from lookalike_models.config import DataSource
    from lookalike_models.sources import load_encoded
    from tests.conftest import require_shared

    path = str(require_shared("movielens-100k"))
    source = DataSource(kind="movielens", path=path, movielens={"n_campaigns": 5, "n_meta_campaigns": 3})
    data = load_encoded(source, tmp_path)
    assert len(data.campaigns) == 8 and sum(c.startswith("meta_movie_") for c in data.campaigns) == 3
    assert len(load_encoded(DataSource(kind="movielens", path=path), tmp_path / "default").campaigns) == 40


def test_bench_data_sources_carry_adapter_options():
    import pytest
    from pydantic import ValidationError

    from bench.common import data_source
    from lookalike_models.adapters.options import MovieLensOptions

    source = data_source("movielens_longtail", adapter=MovieLensOptions(n_meta_campaigns=7), path="/raw/ml")
    assert (source.kind, source.path, source.shape.max_users) == ("movielens", "/raw/ml", 300)
    assert source.adapter_options.n_meta_campaigns == 7
    with pytest.raises(ValidationError):  # MovieLens knobs are not Amazon's
        data_source("amazon", adapter=MovieLensOptions())
