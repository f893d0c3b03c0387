"""RALM's user embeddings learn (issue 10, item 4): the SVD warm start is what it says, the sampled softmax
improves held-out interaction recall from a random start, centroid cosine on the embeddings beats
popularity and random on held-out seeds, and the look-alike transform keeps its units alive."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.preprocessing import normalize

from lookalike_models.catalog import build_scorer
from lookalike_models.evaluation import holdout_split, summarize
from lookalike_models.protocol import evaluate_scorers
from lookalike_models.ralm.config import RalmConfig
from lookalike_models.ralm.lookalike import transform_users
from lookalike_models.ralm.model import FieldSpec, UserModel, UserModelShape
from lookalike_models.ralm.user_model import (
    init_from_svd,
    interaction_recall,
    split_validation,
    train_user_model,
    user_inputs,
    validation_recall,
)
from lookalike_models.ralm.warm_start import organic_tfidf, svd_item_factors, weighted_history

torch.set_num_threads(1)
SMALL = {"dim": 32, "field_dim": 32, "user_epochs": 4, "transform_dim": 16, "k": 8}
CENTROID_COSINE = {"model": "ralm_average", **SMALL, "transform": False, "lookalike_epochs": 0}


@pytest.fixture(scope="module")
def split(synthetic_data):
    return holdout_split(synthetic_data.campaigns, synthetic_data.n_users, 0.1, seed=0)


def recall_by_model(data, models, split) -> dict[str, float]:
    overall = summarize(evaluate_scorers(data, models, split=split)).filter(pl.col("seed_bucket") == "all")
    return {row["model"]: row["recall_at_5pct"] for row in overall.iter_rows(named=True)}


def test_svd_warm_start_gives_the_svd_user_factors(synthetic_data):
    """History-only tower at the warm start: u is the TF-IDF row times the SVD item factors (up to scale)."""
    tfidf = organic_tfidf(synthetic_data)
    spec = FieldSpec([], [], 0, synthetic_data.n_items, True)
    model = UserModel(spec, UserModelShape(field_dim=16, dim=16, residual=True))
    factors = svd_item_factors(tfidf, 16)
    init_from_svd(model, factors)
    inputs = user_inputs(
        synthetic_data, spec, weighted_history(tfidf, 10_000, np.random.default_rng(0)), True, history_only=True
    )
    with torch.no_grad():
        u = model.tower(inputs.rows(torch.arange(500))).numpy()
    expected = np.asarray(tfidf[:500] @ factors)
    cos = (normalize(u) * normalize(expected)).sum(1)
    assert np.quantile(cos, 0.01) > 0.999


def test_sampled_softmax_learns_held_out_interactions_from_a_random_start(synthetic_data):
    rng = np.random.default_rng(0)
    tfidf, val_users, val_items = split_validation(organic_tfidf(synthetic_data), 0.1, rng)
    spec = FieldSpec([], [], 0, synthetic_data.n_items, True)
    torch.manual_seed(0)
    model = UserModel(spec, UserModelShape(field_dim=16, dim=16, item_bias=True))
    inputs = user_inputs(synthetic_data, spec, weighted_history(tfidf, 200, rng), True, history_only=True)
    start = validation_recall(model, inputs, val_users, val_items, tfidf)
    cfg = RalmConfig(user_epochs=4, user_batch_size=256, user_lr=0.005, user_patience=3, logq_correction=True)
    curve = train_user_model(model, inputs, tfidf, cfg, interaction_recall(inputs, (val_users, val_items), tfidf))
    best = validation_recall(model, inputs, val_users, val_items, tfidf)
    assert best == max(c["val_recall"] for c in curve)  # the best state is the one kept
    # top 50 of 800 items is 0.06 by chance; a random model sits there, a trained one far above it.
    assert start < 0.12
    assert best > start + 0.15


def test_centroid_cosine_on_ralm_embeddings_beats_popularity_and_random(synthetic_data, split):
    recall = recall_by_model(
        synthetic_data, {"ralm_embeddings": CENTROID_COSINE, "popularity": {}, "random": {}}, split
    )
    assert recall["ralm_embeddings"] > recall["popularity"] + 0.1
    assert recall["ralm_embeddings"] > recall["random"] + 0.2


def test_lookalike_transform_units_stay_alive(synthetic_data, split):
    """The pre-issue transform had 30 of 32 ReLU units dead on every user; now nearly all carry signal."""
    scorer = build_scorer("ralm_average", {**SMALL, "lookalike_epochs": 3})
    scorer.fit(synthetic_data, split[0])
    transformed = transform_users(scorer.lookalike, scorer.embeddings)
    alive = (transformed > 0).mean(0) > 0.01  # positive on at least 1% of users
    assert alive.mean() >= 0.9
    assert transformed.std(0).min() > 0


@pytest.mark.slow
def test_ralm_embeddings_on_movielens_match_svd_and_beat_popularity(movielens_data):
    """Tuning split 100 (never reported): centroid cosine on RALM's embeddings is level with the SVD
    reference (pre-issue: 0.15 against 0.40) and well above popularity."""
    split = holdout_split(movielens_data.campaigns, movielens_data.n_users, 0.1, seed=100)
    recall = recall_by_model(
        movielens_data,
        {
            "ralm_embeddings": {"model": "ralm_average", "transform": False, "lookalike_epochs": 0},
            "svd_centroid": {},
            "popularity": {},
        },
        split,
    )
    assert recall["ralm_embeddings"] > recall["popularity"] + 0.05
    assert recall["ralm_embeddings"] > recall["svd_centroid"] - 0.03
