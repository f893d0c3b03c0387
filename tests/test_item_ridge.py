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
