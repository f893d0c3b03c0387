"""Incremental refresh in the library: per-user fingerprints, MinHash re-signing, campaign top refresh."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lookalike_models.incremental import PreviousTop, refresh_campaign
from lookalike_models.minhash import MinHashScorer
from lookalike_models.user_state import match_previous, user_fingerprints


def day_two(data, users, rng):
    """The same data with half the interactions of ``users`` gone."""
    return data.without_interactions(~(np.isin(data.user_idx, users) & (rng.random(data.user_idx.size) < 0.5)))


def test_fingerprints_see_item_set_changes_only(synthetic_data):
    order = np.random.default_rng(0).permutation(synthetic_data.user_idx.size)
    shuffled = replace(synthetic_data, user_idx=synthetic_data.user_idx[order], item_idx=synthetic_data.item_idx[order])
    assert (user_fingerprints(shuffled) == user_fingerprints(synthetic_data)).all()
    moved = day_two(synthetic_data, np.arange(50), np.random.default_rng(0))
    changed = user_fingerprints(moved) != user_fingerprints(synthetic_data)
    assert changed[:50].sum() >= 45 and not changed[50:].any()


def test_minhash_refit_resigns_only_changed_users_and_equals_a_full_fit(synthetic_data, tmp_path):
    yesterday = MinHashScorer()
    yesterday.fit(synthetic_data, {})
    yesterday.save(tmp_path / "model")
    today = day_two(synthetic_data, np.arange(100, 180), np.random.default_rng(1))
    incremental, full = MinHashScorer(), MinHashScorer()
    redone = incremental.refit(today, {}, tmp_path / "model")
    full.fit(today, {})
    assert 0 < redone <= 80
    assert (incremental.sigs == full.sigs).all()


def test_campaign_refresh_is_exact_and_falls_back_when_the_top_churned(synthetic_data):
    rng = np.random.default_rng(2)
    seeds = max(synthetic_data.campaigns.values(), key=lambda s: s.size)
    old = MinHashScorer()
    old.fit(synthetic_data, {})
    none = np.empty(0, np.int64)
    users, scores, key, _ = refresh_campaign(
        old, synthetic_data, seeds, 100, 200, none, np.zeros(synthetic_data.n_users, bool), None
    )
    previous = PreviousTop(synthetic_data.user_ids.gather(users), scores, 100, key)

    def refresh(changed_users):
        today = day_two(synthetic_data, changed_users, rng)
        scorer = MinHashScorer()
        scorer.fit(today, {})
        _, unchanged = match_previous(today, old.user_state)
        inc = refresh_campaign(scorer, today, seeds, 100, 200, none, ~unchanged, previous)
        full = refresh_campaign(scorer, today, seeds, 100, 200, none, ~unchanged, None)
        return inc, full

    outsiders = np.setdiff1d(np.arange(synthetic_data.n_users), seeds.positives)
    (u, s, _, reused), (fu, fs, _, _) = refresh(rng.choice(outsiders, 60, replace=False))
    assert reused and np.array_equal(u[:100], fu[:100]) and np.allclose(s[:100], fs[:100])
    # Yesterday's whole list changed: too little of it survives, so the campaign is rescored in full.
    (_, _, _, reused), _ = refresh(users[:150])
    assert not reused
