import numpy as np
import polars as pl
import pytest

from lookalike_models.contract import DataContractError
from lookalike_models.reach import audience_drift, load_exclusions, reach_table


def test_reach_table_reads_the_bucket_curve():
    per_campaign = pl.DataFrame(
        {
            "model": ["m", "m", "m", "other"],
            "campaign_id": ["a", "b", "c", "a"],
            "seed_bucket": ["<50", "<50", ">=50", "<50"],
            "precision_at_1pct": [0.2, 0.4, 0.9, 0.0],
            "recall_at_1pct": [0.1, 0.3, 0.5, 0.0],
            "precision_at_2_5pct": [0.1, 0.2, 0.6, 0.0],
            "recall_at_2_5pct": [0.2, 0.4, 0.7, 0.0],
        }
    )
    table = reach_table(per_campaign, "m", {"a": 10, "new": 60}, [50], n_users=1000)
    a = table.filter(pl.col("campaign_id") == "a").sort("audience_fraction")
    assert a["audience_size"].to_list() == [10, 25]
    assert a["expected_precision"].to_list() == pytest.approx([0.3, 0.15])  # mean of a and b, not c
    new = table.filter(pl.col("campaign_id") == "new")
    assert new["expected_precision"].to_list() == pytest.approx([0.9, 0.6])


def test_drift_counts_overlap_and_churn():
    before = pl.DataFrame({"user_id": [1, 2, 3, 4]})
    after = pl.DataFrame({"user_id": [3, 4, 5, 6]})
    drift = audience_drift(before, after)
    assert drift == {"overlap_jaccard": pytest.approx(2 / 6), "churn_in": 0.5, "churn_out": 0.5}
    assert audience_drift(before, before)["overlap_jaccard"] == 1.0


def test_exclusions_split_global_and_per_campaign(synthetic_data, tmp_path):
    ids = synthetic_data.user_ids
    path = tmp_path / "x.parquet"
    pl.DataFrame({"user_id": [ids[0], ids[1], ids[2], -7], "campaign_id": [None, "c000", "c000", None]}).write_parquet(
        path
    )
    everywhere, per_campaign = load_exclusions([str(path)], synthetic_data)
    assert everywhere.tolist() == [0]  # -7 is unknown: nothing to exclude
    assert per_campaign["c000"].tolist() == [1, 2]
    pl.DataFrame({"user_id": ["a"]}).write_parquet(path)
    with pytest.raises(DataContractError, match="ids are"):
        load_exclusions([str(path)], synthetic_data)
    assert isinstance(everywhere, np.ndarray)
