"""The two-pass audience cut over shards: the sampled lower bound never cuts a user of the true top list,
and the candidates it lets through stay few (the top list plus a step per shard)."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike_models.sharded.audience_cut import lower_cut


def sampled(scores: np.ndarray, size: int, step: int):
    """What ``cut_samples`` sends for one shard's eligible scores."""
    m = min(size, scores.size)
    top = -np.sort(-scores)[:m]
    ranks = np.unique(np.concatenate([np.arange(step, m + 1, step), [m] if m else []])).astype(np.int64)
    return ranks, top[ranks - 1]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("size", [1, 37, 500, 4000])
def test_lower_cut_keeps_the_whole_top_list_and_little_more(size, ties):
    rng = np.random.default_rng(size)
    shards = [rng.normal(size=n).astype(np.float32) for n in (900, 1500, 10, 0, 2000)]
    if ties:  # few distinct values: many users tie at the cut
        shards = [np.round(s * 2) / 2 for s in shards]
    step = max(1, size // 16)
    cut = lower_cut([sampled(s, size, step) for s in shards], size)
    everyone = np.concatenate(shards)
    kth = -np.sort(-everyone)[min(size, everyone.size) - 1]
    assert cut <= kth  # every user of the true top list scores at least the cut
    through = int((everyone >= cut).sum())
    assert through >= min(size, everyone.size)
    at_kth_or_above = int((everyone >= kth).sum())  # the top list and the users tied with its last
    assert through <= max(at_kth_or_above, size) + len(shards) * step + int((everyone == cut).sum())


def test_lower_cut_lets_everyone_through_when_the_shards_hold_fewer_than_the_size():
    shards = [np.array([0.3, 0.1], np.float32), np.array([0.2], np.float32)]
    assert lower_cut([sampled(s, 10, 1) for s in shards], 10) == -np.inf
    assert lower_cut([], 10) == -np.inf


def test_lower_cut_is_exact_when_every_score_is_sampled():
    rng = np.random.default_rng(3)
    shards = [rng.random(50).astype(np.float32) for _ in range(4)]
    cut = lower_cut([sampled(s, 20, 1) for s in shards], 20)
    assert cut == -np.sort(-np.concatenate(shards))[19]
