import numpy as np
import polars as pl
import pytest

from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import summarize
from lookalike_models.protocol import compare_to_reference, evaluate_over_splits
from lookalike_models.reference import campaign_labels, user_item_tfidf


def test_campaign_labels_cap_negatives_and_keep_labelled_non_converters():
    seeds = CampaignSeeds("c", np.arange(10), np.array([500, 501]))
    rows, labels = campaign_labels(10_000, seeds, max_negatives=100)
    assert labels.sum() == 10 and set(rows[labels == 1]) == set(range(10))
    assert 100 <= (labels == 0).sum() <= 102 and {500, 501} <= set(rows[labels == 0])
    rows, labels = campaign_labels(50, seeds, max_negatives=100)
    assert rows.size == 50 and labels.sum() == 10  # small population: every other user is a negative


def test_tfidf_rows_are_unit_length_and_weigh_rare_items_up(synthetic_data):
    tfidf = user_item_tfidf(synthetic_data)
    norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(1)).ravel())
    active = np.diff(tfidf.indptr) > 0
    assert np.allclose(norms[active], 1.0, atol=1e-5)
    df = np.bincount(tfidf.indices, minlength=tfidf.shape[1])
    rare, common = np.argmin(np.where(df > 0, df, df.max() + 1)), np.argmax(df)
    col = tfidf.tocsc()
    assert col[:, rare].data.mean() > col[:, common].data.mean()


def test_reference_peers_learn_the_planted_signal(synthetic_data):
    frame = evaluate_over_splits(
        synthetic_data, {"item_logreg": {}, "svd_centroid": {}, "popularity": {}, "random": {}}, [0], fractions=[0.05]
    )
    overall = summarize(frame).filter(pl.col("seed_bucket") == "all")
    recall = dict(zip(overall["model"], overall["recall_at_5pct"]))
    assert recall["item_logreg"] > recall["popularity"] + 0.1 and recall["item_logreg"] > recall["random"] + 0.2
    assert recall["svd_centroid"] > recall["popularity"] + 0.05
    gap = compare_to_reference(frame, "popularity", ["recall_at_5pct"]).filter(
        (pl.col("model") == "item_logreg") & (pl.col("seed_bucket") == "all")
    )
    assert gap["ci_low"][0] > 0


@pytest.mark.slow
def test_reference_peers_beat_popularity_on_movielens(movielens_data):
    frame = evaluate_over_splits(
        movielens_data, {"item_logreg": {}, "svd_centroid": {}, "popularity": {}}, [0, 1], fractions=[0.05]
    )
    table = compare_to_reference(frame, "popularity", ["recall_at_5pct"]).filter(pl.col("seed_bucket") == "all")
    low = dict(zip(table["model"], table["ci_low"]))
    assert low["item_logreg"] > 0.15 and low["svd_centroid"] > 0.05


def test_item_logreg_models_fitted_up_front_score_like_fits_on_demand(synthetic_data):
    from lookalike_models.evaluation import holdout_split
    from lookalike_models.reference import ItemLogRegScorer

    train, _ = holdout_split(synthetic_data.campaigns, synthetic_data.n_users, 0.1, 0)
    upfront, on_demand = ItemLogRegScorer({"n_jobs": 2}), ItemLogRegScorer()
    upfront.fit(synthetic_data, train)
    on_demand.fit(synthetic_data, {})
    users = np.arange(synthetic_data.n_users)
    for cid in list(train)[:3]:
        assert np.array_equal(
            upfront.score(synthetic_data, train[cid], users), on_demand.score(synthetic_data, train[cid], users)
        )
    # All of a campaign's seeds are another seed list: fitted anew, not tonight's training-seed model.
    full = synthetic_data.campaigns[cid]
    assert upfront.campaign_model(full) is not upfront.models[cid][1]
    assert np.array_equal(
        upfront.score(synthetic_data, full, users[::7]), on_demand.score(synthetic_data, full, users[::7])
    )


def test_item_logreg_reloaded_from_its_folder_scores_the_same_without_refitting(synthetic_data, tmp_path, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    from lookalike_models.evaluation import holdout_split
    from lookalike_models.reference import ItemLogRegScorer

    train, _ = holdout_split(synthetic_data.campaigns, synthetic_data.n_users, 0.1, 0)
    fitted = ItemLogRegScorer()
    fitted.fit(synthetic_data, train)
    fitted.save(tmp_path)
    reloaded = ItemLogRegScorer()
    reloaded.load(tmp_path, synthetic_data)
    users = np.arange(synthetic_data.n_users)
    fits = []
    monkeypatch.setattr(LogisticRegression, "fit", lambda *a, **k: fits.append(1) or pytest.fail("refitted"))
    for cid in train:
        assert np.array_equal(
            fitted.score(synthetic_data, train[cid], users), reloaded.score(synthetic_data, train[cid], users)
        )
    assert not fits and set(reloaded.models) == set(train)
