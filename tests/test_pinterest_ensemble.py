"""Per-campaign classifier and ensemble (issue 10, items 5-6): the classifier learns the planted signal at
least as well as the plain TF-IDF logistic regression, and the validated ensemble keeps to its better member."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from lookalike_models.catalog import build_scorer
from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import audience_sizes, holdout_split, summarize
from lookalike_models.inner_validation import competing_users, validation_recall
from lookalike_models.pinterest.encoder import EncoderConfig
from lookalike_models.pinterest.ensemble import blend_grid, rank_scores
from lookalike_models.protocol import compare_to_reference, evaluate_campaigns, evaluate_over_splits

torch.set_num_threads(1)
SMALL = EncoderConfig(max_epochs=8, dim=24).model_dump()


def recall_by_model(frame: pl.DataFrame) -> dict[str, float]:
    overall = summarize(frame).filter(pl.col("seed_bucket") == "all")
    return dict(zip(overall["model"], overall["recall_at_5pct"]))


def test_classifier_learns_planted_signal_at_least_as_well_as_item_logreg(synthetic_data):
    frame = evaluate_over_splits(
        synthetic_data,
        {"pinterest_classifier": {}, "item_logreg": {}, "popularity": {}, "random": {}},
        [0],
        fractions=[0.05],
    )
    recall = recall_by_model(frame)
    # Measured (8 campaigns, split 0): classifier 0.73, item_logreg 0.74, popularity 0.09, random 0.08.
    assert recall["pinterest_classifier"] > recall["popularity"] + 0.3, recall
    assert recall["pinterest_classifier"] > recall["random"] + 0.4, recall
    assert recall["pinterest_classifier"] >= recall["item_logreg"] - 0.02, recall
    gap = compare_to_reference(frame, "popularity", ["recall_at_5pct"]).filter(
        (pl.col("model") == "pinterest_classifier") & (pl.col("seed_bucket") == "all")
    )
    assert gap["ci_low"][0] > 0.1


def test_classifier_chooses_its_regularisation_per_campaign_on_the_inner_cut(synthetic_data):
    scorer = build_scorer("pinterest_classifier", {"C_grid": [0.01, 4.0], "tuning": "campaign"})
    scorer.fit(synthetic_data, synthetic_data.campaigns)
    for seeds in list(synthetic_data.campaigns.values())[:3]:
        scorer.score(synthetic_data, seeds, np.arange(synthetic_data.n_users))
    # C=0.01 shrinks the model to nearly the intercept: the cut's held-back seeds reject it.
    assert set(scorer.chosen_C.values()) == {4.0}
    fixed = build_scorer("pinterest_classifier", {"tuning": "fixed", "C": 0.5})
    fixed.fit(synthetic_data, {})
    fixed.score(synthetic_data, next(iter(synthetic_data.campaigns.values())), np.arange(10))
    assert set(fixed.chosen_C.values()) == {0.5}


def test_validated_ensemble_drops_a_useless_member(synthetic_data):
    # The 'embedding' member is a random audience: the inner cut must leave it out of the blend.
    train, heldout = holdout_split(synthetic_data.campaigns, synthetic_data.n_users, 0.1, seed=0)
    sizes = audience_sizes(synthetic_data.n_users, [0.05])
    recall = {}
    for name, params in {
        "ensemble": {"embedding_model": "random", "encoder": SMALL, "stacker": False},  # the grid's choice
        "random": {},
        "pinterest_classifier": {},
        "item_ridge": {},
    }.items():
        scorer = build_scorer("pinterest_ensemble" if name == "ensemble" else name, params)
        scorer.fit(synthetic_data, train)
        rows = evaluate_campaigns(scorer, synthetic_data, train, heldout, sizes, [50, 200])
        recall[name] = np.mean([r["recall_at_5pct"] for r in rows])
        if name == "ensemble":
            assert scorer.blends[scorer.choice.overall][0] == 0.0  # no weight on the random member
    # Measured (8 campaigns): ensemble 0.72 (item_ridge alone chosen), item_ridge 0.72, classifier 0.73,
    # random 0.01: the inner cuts cannot tell the two useful members apart, and either is a sound choice.
    assert recall["ensemble"] >= max(recall["pinterest_classifier"], recall["item_ridge"]) - 0.02, recall
    assert recall["ensemble"] > recall["random"] + 0.4, recall


def test_blend_grid_sums_to_one_and_lists_single_members_first():
    grid = blend_grid(3, 0.25)
    assert np.allclose(grid.sum(1), 1.0) and len(grid) == 15
    assert np.array_equal(grid[:3], np.eye(3)[[2, 1, 0]])
    ranks = rank_scores(np.array([0.3, -np.inf, 5.0, 0.3]))
    assert ranks.argmax() == 2 and ranks.argmin() == 1 and ranks[0] == ranks[3]


def test_validation_recall_counts_seeds_above_the_audience_cutoff():
    others = np.arange(100, dtype=float)  # cutoff of the top 10% is 89.1
    assert validation_recall(np.array([95.0, 99.0, 10.0, 50.0]), others, 0.1) == pytest.approx(0.5, abs=2e-3)
    seeds = CampaignSeeds("c", np.arange(10), np.array([10, 11]))
    users = competing_users(1000, seeds, np.array([500]), 50, np.random.default_rng(0))
    assert 500 in users and not np.isin(np.arange(12), users).any() and users.size <= 51


def test_blend_validation_gives_the_same_results_on_one_thread_or_two(synthetic_data, monkeypatch):
    from lookalike_models.pinterest import ensemble

    train, _ = holdout_split(synthetic_data.campaigns, synthetic_data.n_users, 0.1, seed=0)
    validation = []
    for threads in (1, 2):
        monkeypatch.setattr(ensemble, "free_cores", lambda threads=threads: threads)
        scorer = build_scorer("pinterest_ensemble", {"embedding_model": "centroid_cosine", "encoder": SMALL})
        scorer.fit(synthetic_data, train)
        validation.append(scorer.validation)
    assert validation[0].keys() == validation[1].keys() and len(validation[0]) > 0
    assert all(np.array_equal(validation[0][cid], validation[1][cid]) for cid in validation[0])
