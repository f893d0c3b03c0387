"""The Tencent Look-alike sample (MetaHeac format) loads through the contract with its own vocabularies."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from lookalike_models.contract import read_dataset
from lookalike_models.dataset import encode
from tests.conftest import require_shared


@pytest.fixture(scope="module")
def tencent(tmp_path_factory):
    from lookalike_models.adapters import tencent as adapter

    source = require_shared("tencent-lookalike-2018")
    folder = adapter.build(tmp_path_factory.mktemp("tencent") / "dataset", source)
    return adapter, source, read_dataset(folder)


def test_fields_and_ad_features_follow_the_metaheac_schema(tencent):
    adapter, _, raw = tencent
    assert raw.schema.user_single == adapter.SINGLE_FIELDS and len(adapter.SINGLE_FIELDS) == 7
    assert raw.schema.user_multi == adapter.MULTI_FIELDS and len(adapter.MULTI_FIELDS) == 7
    assert raw.schema.campaign_single == adapter.AD_FIELDS and len(adapter.AD_FIELDS) == 6
    assert raw.seeds.height == 5000 and raw.seeds["campaign_id"].n_unique() == 86
    assert (raw.seeds["label"] == 1).all()  # the public sample is positives only


def test_encoded_fields_keep_the_sample_vocabularies(tencent):
    adapter, source, raw = tencent
    data = encode(raw)
    vocab = adapter.field_vocabularies(source)
    assert not data.campaign_problems and len(data.campaigns) == 86
    for j, name in enumerate(data.users.names_single):
        assert data.users.single_sizes[j] == len(vocab[name]) + 1, name
    for j, name in enumerate(data.users.names_multi):
        assert data.users.multi_sizes[j] == len(vocab[name]) + 1, name
    for j, name in enumerate(data.campaign_field_names):
        assert data.campaign_field_sizes[j] == len(vocab[name]) + 1, name

    # Decoding the contract's codes gives back exactly the sample's values, padding dropped.
    rows = adapter.read_sample(adapter.sample_file(source))
    order = data.index_of(rows["row_id"])
    for j, name in enumerate(data.users.names_single):
        decode = np.array(["<missing>", *sorted(vocab[name])])
        assert (decode[data.users.single[order, j]] == rows[name].cast(pl.String).to_numpy()).all(), name
    name = "kw1"
    j = data.users.names_multi.index(name)
    decode = np.array(["<pad>", *sorted(vocab[name])])
    for i in range(0, rows.height, 97):
        codes = data.users.multi[j][order[i]]
        assert decode[codes[codes > 0]].tolist() == [str(v) for v in rows[name][i].to_list()]
    lengths = (data.users.multi[j][order] > 0).sum(1)
    assert (lengths == rows[f"{name}_length"].to_numpy()).all()
    aid = rows["aid"][0]
    cid = f"aid_{aid}"
    decode_ad = np.array(["<missing>", *sorted(vocab["productType"])])
    assert decode_ad[data.campaign_fields[cid][adapter.AD_FIELDS.index("productType")]] == str(rows["productType"][0])


def test_original_pickle_reads_like_the_derived_csv(tencent):
    adapter, source, _ = tencent
    pytest.importorskip("pandas")
    from_pickle = adapter.read_sample(source / "simuler-metaheac/processed_data/train_stage2.pkl").sort("row_id")
    from_csv = adapter.read_sample(adapter.sample_file(source)).sort("row_id")
    assert from_pickle.select(from_csv.columns).equals(from_csv)


def test_a_pickle_naming_other_classes_is_refused(tencent, tmp_path):
    import os
    import pickle

    adapter = tencent[0]
    pytest.importorskip("pandas")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(os.getcwd))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        adapter.read_sample(bad)
