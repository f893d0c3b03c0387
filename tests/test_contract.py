"""Bad input gets one clear error naming the file, the column and an example value."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from lookalike_models.contract import DataContractError, check_campaign_id, read_dataset
from lookalike_models.dataset import encode


@pytest.fixture
def dataset(synthetic_dir, tmp_path):
    """A private, writable copy of the small synthetic dataset."""
    return shutil.copytree(synthetic_dir, tmp_path / "dataset")


def rewrite(folder, name, frame):
    frame.write_parquet(folder / name)


def test_valid_dataset_reads(dataset):
    raw = read_dataset(dataset)
    assert {"user_id", "item_id", "weight", "domain"} <= set(raw.interactions.columns)


def test_missing_column_names_file_and_column(dataset):
    rewrite(dataset, "interactions.parquet", pl.read_parquet(dataset / "interactions.parquet").drop("item_id"))
    with pytest.raises(DataContractError) as err:
        read_dataset(dataset)
    assert err.value.column == "item_id" and err.value.file.endswith("interactions.parquet")
    assert "required column missing" in str(err.value)


def test_wrong_type_gives_example(dataset):
    frame = pl.read_parquet(dataset / "interactions.parquet").with_columns(pl.col("weight").cast(pl.String))
    rewrite(dataset, "interactions.parquet", frame)
    with pytest.raises(DataContractError, match="must be numeric") as err:
        read_dataset(dataset)
    assert err.value.column == "weight" and err.value.example == frame["weight"][0]


def test_float_ids_are_refused(dataset):
    frame = pl.read_parquet(dataset / "seeds.parquet").with_columns(pl.col("user_id").cast(pl.Float64))
    rewrite(dataset, "seeds.parquet", frame)
    with pytest.raises(DataContractError, match="integers or strings") as err:
        read_dataset(dataset)
    assert err.value.column == "user_id" and err.value.file.endswith("seeds.parquet")


def test_null_ids_are_refused_with_the_row(dataset):
    frame = pl.read_parquet(dataset / "interactions.parquet")
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("user_id")).alias("user_id")
    )
    rewrite(dataset, "interactions.parquet", frame)
    with pytest.raises(DataContractError, match="missing") as err:
        read_dataset(dataset)
    assert err.value.column == "user_id" and err.value.example["user_id"] is None


def test_duplicate_seed_rows_are_refused(dataset):
    frame = pl.read_parquet(dataset / "seeds.parquet")
    rewrite(dataset, "seeds.parquet", pl.concat([frame, frame.head(2)]))
    with pytest.raises(DataContractError, match="repeat the same key") as err:
        read_dataset(dataset)
    assert err.value.example["campaign_id"] == frame["campaign_id"][0]


def test_duplicate_interaction_rows_are_refused(dataset):
    frame = pl.read_parquet(dataset / "interactions.parquet")
    rewrite(dataset, "interactions.parquet", pl.concat([frame, frame.tail(1)]))
    with pytest.raises(DataContractError, match="repeat the same key"):
        read_dataset(dataset)


def test_empty_seed_file_is_refused(dataset):
    rewrite(dataset, "seeds.parquet", pl.read_parquet(dataset / "seeds.parquet").head(0))
    with pytest.raises(DataContractError, match="no rows") as err:
        read_dataset(dataset)
    assert err.value.file.endswith("seeds.parquet")


def test_corrupt_parquet_is_a_contract_error(dataset):
    (dataset / "interactions.parquet").write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DataContractError, match="not a readable Parquet file") as err:
        read_dataset(dataset)
    assert err.value.file.endswith("interactions.parquet")


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", ".hidden", "", "x" * 200, "a\\b"])
def test_unsafe_campaign_ids_are_refused(bad):
    with pytest.raises(DataContractError, match="campaign_id"):
        check_campaign_id(bad)


def test_per_campaign_problems_leave_other_campaigns_intact(dataset):
    seeds = pl.read_parquet(dataset / "seeds.parquet")
    good = seeds["campaign_id"].unique().to_list()
    extra = pl.DataFrame(
        {
            "campaign_id": ["../../etc", "ghosts", "ghosts", "no_converters"],
            "user_id": [seeds["user_id"][0], -1, -2, seeds["user_id"][1]],
            "label": pl.Series([1, 1, 1, 0], dtype=pl.Int8),
        }
    )
    rewrite(dataset, "seeds.parquet", pl.concat([seeds, extra]))
    data = encode(read_dataset(dataset))
    assert set(data.campaigns) == set(good)
    assert "'..' " in data.campaign_problems["../../etc"] or "no '..'" in data.campaign_problems["../../etc"]
    assert "seeds are known users" in data.campaign_problems["ghosts"] and "-1" in data.campaign_problems["ghosts"]
    assert "no seed" in data.campaign_problems["no_converters"]
