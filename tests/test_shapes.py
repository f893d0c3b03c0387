"""Derived data shapes (lookalike_models/shapes.py), recall by the held-out seeds' activity, and the
benchmark's virtual champion."""

import math

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from lookalike_models.config import DataSource
from lookalike_models.contract import CAMPAIGN_ID, ITEM_ID, USER_ID, FeatureSchema, RawDataset
from lookalike_models.evaluation import HeldOut, campaign_means, campaign_metrics, summarize
from lookalike_models.shapes import ShapeConfig, apply_shape, drop_popular_items, keep_users, popular_items
from lookalike_models.sources import load_encoded


def tiny_raw() -> RawDataset:
    """40 users, 100 items: item i is touched by the users u < 40 - i//3 (a popularity ladder); item 0
    (the most popular) is campaign c1's own item, its engagers c1's seeds."""
    rows = [(u, i) for i in range(100) for u in range(max(1, 40 - i // 3))]
    interactions = pl.DataFrame(
        {USER_ID: [u for u, _ in rows], ITEM_ID: [i for _, i in rows], "weight": 1.0, "domain": "d"},
        schema_overrides={"weight": pl.Float32},
    )
    seeds = pl.DataFrame({CAMPAIGN_ID: "c1", USER_ID: list(range(40)), "label": 1})
    features = pl.DataFrame({USER_ID: list(range(40)), "history": [[0, 1, 2, 50, 99]] * 40})
    campaigns = pl.DataFrame({CAMPAIGN_ID: ["c1"], ITEM_ID: [0]})
    return RawDataset(None, interactions, seeds, FeatureSchema(user_multi=["history"]), features, campaigns)


def test_keep_users_samples_users_and_keeps_all_their_items_deterministically():
    raw = tiny_raw()
    shaped = keep_users(raw, 10, seed=3)
    kept = set(shaped.interactions[USER_ID])
    assert len(kept) == 10 and kept == set(shaped.user_features[USER_ID]) and set(shaped.seeds[USER_ID]) <= kept
    # Every interaction of a kept user survives: no item is filtered, so items outnumber users.
    assert shaped.interactions.height == raw.interactions.filter(pl.col(USER_ID).is_in(list(kept))).height
    assert shaped.interactions[ITEM_ID].n_unique() > len(kept)
    assert keep_users(raw, 10, seed=3).interactions.equals(shaped.interactions)
    assert set(keep_users(raw, 10, seed=4).interactions[USER_ID]) != kept
    assert keep_users(raw, 1000) is raw


def test_drop_popular_items_removes_the_head_but_never_a_campaign_item():
    raw = tiny_raw()
    dropped = set(popular_items(raw, 0.1))
    assert dropped == set(range(1, 11))  # 10% of the 99 organic items, rounded up; item 0 is c1's own
    shaped = drop_popular_items(raw, 0.1)
    left = set(shaped.interactions[ITEM_ID])
    assert 0 in left and not dropped & left and left | dropped == set(range(100))
    assert shaped.user_features["history"][0].to_list() == [0, 50, 99]  # order kept, dropped items gone
    assert drop_popular_items(raw, 0.1).interactions.equals(shaped.interactions)
    assert drop_popular_items(raw, 0.0) is raw


def test_shape_config_defaults_change_nothing_and_typos_fail():
    assert DataSource().shape.is_identity
    with pytest.raises(ValidationError):
        DataSource(shape={"max_user": 10})
    with pytest.raises(ValidationError):
        ShapeConfig(drop_popular_share=1.0)
    raw = tiny_raw()
    assert apply_shape(raw, ShapeConfig()) is raw


def test_movielens_longtail_has_more_items_than_users(tmp_path, movielens_dir):
    full = load_encoded(DataSource(kind="folder", path=str(movielens_dir)), tmp_path)
    shaped = load_encoded(DataSource(kind="folder", path=str(movielens_dir), shape={"max_users": 300}), tmp_path)
    assert shaped.n_users == 300 and shaped.n_items > shaped.n_users
    assert shaped.campaign_items.keys() == full.campaign_items.keys()
    # every organic item any kept user touched is still there
    kept = np.isin(full.user_ids.to_numpy(), shaped.user_ids.to_numpy())
    touched = set(full.item_ids.gather(np.unique(full.item_idx[kept[full.user_idx]])).to_list())
    assert touched <= set(shaped.item_ids.to_list())
    nopop = load_encoded(
        DataSource(kind="folder", path=str(movielens_dir), shape={"drop_popular_share": 0.1}), tmp_path
    )
    assert nopop.user_idx.size < full.user_idx.size and set(nopop.campaigns) == set(full.campaigns)


def test_a_campaign_the_shape_empties_is_a_campaign_problem(tmp_path):
    from lookalike_models.contract import write_dataset

    raw = tiny_raw()
    seeds = pl.concat([raw.seeds, pl.DataFrame({CAMPAIGN_ID: "c2", USER_ID: [39], "label": 1})])
    seeds = seeds.with_columns(pl.col("label").cast(pl.Int8))
    folder = write_dataset(
        tmp_path / "d", raw.interactions, seeds, raw.schema, raw.user_features, raw.campaign_features
    )
    seed = next(s for s in range(50) if 39 not in set(keep_users(raw, 5, s).interactions[USER_ID]))
    data = load_encoded(DataSource(kind="folder", path=str(folder), shape={"max_users": 5, "seed": seed}), tmp_path)
    assert "c2" in data.campaign_problems and "c2" not in data.campaigns and data.n_users == 5


def test_recall_by_held_out_seed_activity_on_a_hand_made_ranking():
    # Held-out seeds 1 (3 items), 2 (10 items), 3 (30 items), 4 (2 items); audience ranks 1, 9, 3, 2.
    activity = np.array([0, 3, 10, 30, 2, 0, 0, 0, 0, 50])
    held = HeldOut(positives=np.array([1, 2, 3, 4]), negatives=np.array([5, 6]), negatives_sampled=True)
    audience = np.array([1, 9, 3, 2])
    scores = np.array([4.0, 3.0, 2.0, 1.0])
    row = campaign_metrics(audience, audience, scores, held, {"k2": 2, "k4": 4}, activity)
    assert row["recall_at_k2"] == 0.25 and row["recall_at_k4"] == 0.75
    assert row["recall_at_k2_act_le5"] == 0.5 and row["recall_at_k4_act_le5"] == 0.5  # 1 found, 4 never
    assert row["recall_at_k2_act_6_20"] == 0.0 and row["recall_at_k4_act_6_20"] == 1.0
    assert row["recall_at_k2_act_gt20"] == 0.0 and row["recall_at_k4_act_gt20"] == 1.0
    without = campaign_metrics(audience, audience, scores, held, {"k2": 2, "k4": 4})
    assert not any("act_" in k for k in without)  # unchanged without activity
    few = HeldOut(positives=np.array([3]), negatives=np.array([5]), negatives_sampled=True)
    row = campaign_metrics(audience, audience, scores, few, {"k4": 4}, activity)
    assert math.isnan(row["recall_at_k4_act_le5"]) and row["recall_at_k4_act_gt20"] == 1.0


def test_activity_columns_average_over_the_splits_that_had_such_seeds_and_stay_out_of_summaries():
    frame = pl.DataFrame(
        {
            "model": ["m", "m"],
            "split_seed": [0, 1],
            "campaign_id": ["a", "a"],
            "seed_bucket": ["<50", "<50"],
            "recall_at_5pct": [0.5, 0.7],
            "auc": [0.6, 0.6],
            "recall_at_5pct_act_le5": [float("nan"), 1.0],
            "recall_at_5pct_act_gt20": [float("nan"), float("nan")],
        }
    )
    means = campaign_means(frame)
    assert means["recall_at_5pct_act_le5"][0] == 1.0 and math.isnan(means["recall_at_5pct_act_gt20"][0])
    assert not any("act_" in c for c in summarize(frame).columns)


def test_evaluate_over_splits_reports_activity_recall(synthetic_data):
    from lookalike_models.protocol import evaluate_scorers

    per_campaign = evaluate_scorers(synthetic_data, {"popularity": {}}, fractions=[0.05], seed=0)
    for bucket in ("act_le5", "act_6_20", "act_gt20"):
        assert f"recall_at_5pct_{bucket}" in per_campaign.columns
    values = per_campaign.select(pl.col("^recall_at_5pct_act_.*$")).to_numpy()
    assert np.isfinite(values).any() and ((values[np.isfinite(values)] >= 0) & (values[np.isfinite(values)] <= 1)).all()


def test_quality_champion_picks_the_best_eligible_model_per_split():
    from bench.quality import champion_rows

    def rows(model, split, values):
        return [
            {"model": model, "split_seed": split, "campaign_id": f"c{i}", "recall_at_5pct": v}
            for i, v in enumerate(values)
        ]

    frame = pl.DataFrame(
        rows("popularity", 0, [0.9, 0.9])  # best, but never eligible
        + rows("a", 0, [0.5, 0.3])
        + rows("b", 0, [0.2, 0.4])
        + rows("popularity", 1, [0.9, 0.9])
        + rows("a", 1, [0.1, 0.1])
        + rows("b", 1, [0.3, 0.2])
    )
    champion, picks = champion_rows(frame, "recall_at_5pct")
    assert picks == {0: "a", 1: "b"}
    assert set(champion["model"]) == {"champion"}
    by_split = champion.sort("split_seed", "campaign_id")["recall_at_5pct"].to_list()
    assert by_split == [0.5, 0.3, 0.3, 0.2]


def test_sparsify_histories_cuts_a_share_of_users_to_a_few_items_and_keeps_campaign_items():
    from lookalike_models.shapes import sparsify_histories

    raw = tiny_raw()
    shaped = sparsify_histories(raw, 0.5, 5, seed=1)
    before = raw.interactions.group_by(USER_ID).agg(pl.col(ITEM_ID).n_unique().alias("n"))
    after = shaped.interactions.group_by(USER_ID).agg(pl.col(ITEM_ID).n_unique().alias("n"))
    both = before.join(after, on=USER_ID, suffix="_after")
    cut = both.filter(pl.col("n_after") < pl.col("n"))
    assert 10 <= cut.height <= 30  # about half of the 40 users
    # A cut user keeps its campaign item (item 0) and 1-5 organic items; the others keep everything.
    assert (cut["n_after"] <= 6).all() and (cut["n_after"] >= 2).all()
    engagers = [r.interactions.filter(pl.col(ITEM_ID) == 0).height for r in (raw, shaped)]
    assert engagers[0] == engagers[1]
    assert shaped.seeds.equals(raw.seeds)
    # History lists lose exactly the user's cut items, order kept.
    kept = set(zip(shaped.interactions[USER_ID], shaped.interactions[ITEM_ID]))
    had = set(zip(raw.interactions[USER_ID], raw.interactions[ITEM_ID]))
    for user, history in zip(shaped.user_features[USER_ID], shaped.user_features["history"]):
        assert history.to_list() == [i for i in [0, 1, 2, 50, 99] if (user, i) in kept or (user, i) not in had]
    assert sparsify_histories(raw, 0.5, 5, seed=1).interactions.equals(shaped.interactions)
    assert sparsify_histories(raw, 0.0, 5) is raw
    assert not ShapeConfig(sparse_share=0.5).is_identity
