import numpy as np
import pytest

from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import (
    HeldOut,
    audience_sizes,
    campaign_metrics,
    holdout_split,
    safe_auc,
    seed_bucket,
    user_precision_at_k,
)
from lookalike_models.scorers import top_k


def test_holdout_split_is_disjoint_deterministic_and_ten_percent():
    campaigns = {
        "a": CampaignSeeds("a", np.arange(100), np.arange(500, 600)),
        "b": CampaignSeeds("b", np.arange(200, 240)),
        "tiny": CampaignSeeds("tiny", np.arange(3)),
    }
    train, held = holdout_split(campaigns, n_users=1000, holdout_frac=0.1, seed=1)
    again, held_again = holdout_split(campaigns, n_users=1000, holdout_frac=0.1, seed=1)
    assert held["a"].positives.size == 10 and train["a"].positives.size == 90
    assert not np.intersect1d(train["a"].positives, held["a"].positives).size
    assert not np.intersect1d(train["a"].negatives, held["a"].negatives).size
    assert not held["a"].negatives_sampled  # labelled non-converters exist
    assert held["b"].negatives_sampled and not np.isin(held["b"].negatives, campaigns["b"].positives).any()
    assert "tiny" not in held and train["tiny"].size == 3  # too small to evaluate, still trained
    assert (held_again["a"].positives == held["a"].positives).all()


def test_campaign_metrics_on_a_hand_made_ranking():
    held = HeldOut(positives=np.array([3, 7]), negatives=np.array([8, 9]), negatives_sampled=False)
    audience = np.array([3, 5, 6, 7])
    candidates = np.array([3, 5, 6, 7, 8])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    row = campaign_metrics(audience, candidates, scores, held, {"k1": 1, "k4": 4})
    assert row["precision_at_k1"] == 1.0 and row["recall_at_k1"] == 0.5
    assert row["precision_at_k4"] == 0.5 and row["recall_at_k4"] == 1.0
    assert row["auc"] == 1.0  # 9 was never scored: ranks below everyone


def test_auc_of_reversed_scores_is_zero():
    assert safe_auc(np.array([0.1, 0.2]), np.array([0.5, 0.9])) == 0.0
    assert np.isnan(safe_auc(np.array([0.1]), np.array([])))


def test_top_k_matches_a_full_sort_and_excludes_seeds():
    rng = np.random.default_rng(0)
    candidates = rng.permutation(10_000)
    scores = rng.random(10_000).astype(np.float32)
    users, best = top_k(candidates, scores, 100, exclude=candidates[:5])
    ranked = candidates[np.argsort(-scores, kind="stable")]
    expected = ranked[~np.isin(ranked, candidates[:5])][:100]
    assert (np.sort(users) == np.sort(expected)).all()
    assert (np.diff(best) <= 0).all()


def test_top_k_breaks_ties_at_the_cut_by_user_id():
    candidates = np.array([9, 3, 7, 1, 5])
    scores = np.array([0.5, 0.5, 0.9, 0.5, 0.5], np.float32)
    users, _ = top_k(candidates, scores, 3)
    assert users.tolist() == [7, 1, 3]
    # Sharding and merging gives the same answer.
    from lookalike_models.pipeline import merge_shards

    parts = [top_k(candidates[:2], scores[:2], 3), top_k(candidates[2:], scores[2:], 3)]
    assert merge_shards(parts, 3)[0].tolist() == [7, 1, 3]


def test_user_precision_at_k_follows_the_ralm_formula():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7], [0.1, 0.2, 0.3]])
    clicked = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 0]], bool)
    # user 0: top-1 = campaign 0 (hit) -> 1/1; user 1: top-1 = campaign 1 (miss) -> 0/1; user 2 skipped
    assert user_precision_at_k(scores, clicked, 1) == pytest.approx(0.5)
    # k=2: user 0 -> 1/min(2,1)=1; user 1 top-2 = {1,2}, one hit -> 1/2
    assert user_precision_at_k(scores, clicked, 2) == pytest.approx(0.75)


def test_sizes_and_buckets():
    assert audience_sizes(20_000, [0.01, 0.025]) == {"1pct": 200, "2_5pct": 500}
    assert [seed_bucket(n, [50, 200]) for n in (10, 50, 199, 200)] == ["<50", "50-199", "50-199", ">=200"]
