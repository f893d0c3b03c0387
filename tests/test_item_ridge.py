import numpy as np
import polars as pl
from sklearn.linear_model import Ridge

from lookalike_models.evaluation import summarize
from lookalike_models.item_ridge import ItemRidgeScorer
from lookalike_models.protocol import compare_to_reference, evaluate_over_splits


def test_closed_form_weights_equal_sklearn_ridge(synthetic_data):
    scorer = ItemRidgeScorer({"max_items": 300})
    scorer.fit(synthetic_data, synthetic_data.campaigns)
    seeds = next(iter(synthetic_data.campaigns.values()))
    target = np.zeros(synthetic_data.n_users)
    target[seeds.positives] = 1.0
    expected = Ridge(alpha=scorer.lam, fit_intercept=False, solver="cholesky").fit(scorer.features, target).coef_
    assert np.allclose(scorer.weights(seeds.positives), expected, atol=1e-6)


def test_item_ridge_learns_the_planted_signal(synthetic_data):
    frame = evaluate_over_splits(
        synthetic_data, {"item_ridge": {}, "popularity": {}, "random": {}}, [0], fractions=[0.05]
    )
    overall = summarize(frame).filter(pl.col("seed_bucket") == "all")
    recall = dict(zip(overall["model"], overall["recall_at_5pct"]))
    assert recall["item_ridge"] > recall["popularity"] + 0.1 and recall["item_ridge"] > recall["random"] + 0.2
    gap = compare_to_reference(frame, "popularity", ["recall_at_5pct"]).filter(
        (pl.col("model") == "item_ridge") & (pl.col("seed_bucket") == "all")
    )
    assert gap["ci_low"][0] > 0


def test_save_then_load_scores_the_same(synthetic_data, tmp_path):
    scorer = ItemRidgeScorer({"max_items": 200})
    scorer.fit(synthetic_data, synthetic_data.campaigns)
    scorer.save(tmp_path)
    again = ItemRidgeScorer({"max_items": 200})
    again.load(tmp_path, synthetic_data)
    seeds = next(iter(synthetic_data.campaigns.values()))
    users = np.arange(synthetic_data.n_users)
    assert np.array_equal(scorer.score(synthetic_data, seeds, users), again.score(synthetic_data, seeds, users))


def test_incremental_refit_equals_a_cold_fit_bit_for_bit(synthetic_data, tmp_path):
    """Night two: some users changed, one left, one is new, and the kept item set moved. The Gram built from
    last night's (only changed rows applied) is the cold one exactly, so the factor and the scores are too."""
    rng = np.random.default_rng(4)
    yesterday = ItemRidgeScorer({"max_items": 150})
    yesterday.fit(synthetic_data, synthetic_data.campaigns)
    yesterday.save(tmp_path / "model")
    changed_users = rng.choice(synthetic_data.n_users, 40, replace=False)
    popular = np.argsort(-np.bincount(synthetic_data.item_idx, minlength=synthetic_data.n_items))
    # Drop half of the changed users' rows, and every interaction of the 5 least popular kept items (which
    # leave the kept set: their places go to items that enter it).
    drop = (np.isin(synthetic_data.user_idx, changed_users) & (rng.random(synthetic_data.user_idx.size) < 0.5)) | (
        np.isin(synthetic_data.item_idx, popular[145:150])
    )
    today = synthetic_data.without_interactions(~drop)
    incremental, cold = ItemRidgeScorer({"max_items": 150}), ItemRidgeScorer({"max_items": 150})
    applied = incremental.refit(today, today.campaigns, tmp_path / "model")
    cold.fit(today, today.campaigns)
    assert not np.array_equal(incremental.keep, yesterday.keep)  # the kept set did move
    assert 0 < applied < today.n_users // 2  # only the changed users' rows were applied
    assert np.array_equal(incremental.state.gram, cold.state.gram)
    assert np.array_equal(incremental.factor, cold.factor)
    seeds = next(iter(today.campaigns.values()))
    users = np.arange(today.n_users)
    assert np.array_equal(incremental.score(today, seeds, users), cold.score(today, seeds, users))


def test_state_of_other_users_gives_the_cold_gram(synthetic_data, tmp_path):
    """A previous state none of whose users exist tonight: every row is replaced, and the result is exact."""
    yesterday = ItemRidgeScorer({"max_items": 100})
    yesterday.fit(synthetic_data, synthetic_data.campaigns)
    yesterday.state.users = yesterday.state.users.with_columns(pl.col("user_id").cast(pl.String) + "x")
    yesterday.save(tmp_path / "model")
    again = ItemRidgeScorer({"max_items": 100})
    assert again.refit(synthetic_data, synthetic_data.campaigns, tmp_path / "model") == synthetic_data.n_users
    assert np.array_equal(again.factor, yesterday.factor)
