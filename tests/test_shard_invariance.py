"""Every registered scorer scores a user the same whichever users it is given with them: a score is a function
of the user, the campaign's seeds and the fitted model only. That is what lets a night score user shards on
Dask workers and still publish the single-process audiences (``pipeline.merge_shards``)."""

from __future__ import annotations

import numpy as np
import pytest

import lookalike_models.catalog  # noqa: F401 (registers every scorer)
from lookalike_models.catalog import build_scorer
from lookalike_models.contract import read_dataset
from lookalike_models.dataset import encode
from lookalike_models.pipeline import merge_shards, score_campaign, shard_ranges
from lookalike_models.scorers import SCORERS
from lookalike_models.synthetic import SyntheticConfig, write_synthetic

ENCODER = {"max_epochs": 2, "dim": 16, "negatives": 10, "batch_users": 256}
# The smallest fits that still exercise every scoring path (invariance, not quality, is under test here).
FAST = {
    "affinity_mlp": {"encoder": ENCODER, "max_epochs": 2},
    "centroid_cosine": {"encoder": ENCODER},
    "lsh_density": {"encoder": ENCODER},
    "lsh_voting": {"encoder": ENCODER},
    # Ranks among a 1,000-user reference sample (below the population), as at scale.
    "pinterest_ensemble": {"encoder": ENCODER, "embedding_model": "centroid_cosine", "rank_reference_users": 1000},
    "ralm": {"user_epochs": 1, "lookalike_epochs": 2, "dim": 8, "field_dim": 8, "transform_dim": 8, "k": 4},
    "ralm_average": {"user_epochs": 1, "lookalike_epochs": 2, "dim": 8, "field_dim": 8, "transform_dim": 8, "k": 4},
    "metaheac": {"dim": 8, "hidden": 16, "gate_hidden": 16, "meta_steps": 5, "batch_size": 64},
    "joint_baseline": {"dim": 8, "hidden": 16, "gate_hidden": 16, "meta_steps": 5, "batch_size": 64},
    "scratch_baseline": {"dim": 8, "hidden": 16, "gate_hidden": 16, "meta_steps": 5, "batch_size": 64},
    "ptupcdr_bridge": {"dim": 6, "meta_epochs": 2, "mf_epochs": 3},
    "ptupcdr_hybrid": {"bridge_params": {"dim": 6, "meta_epochs": 2, "mf_epochs": 3}},
    "item_ridge": {"max_items": 300},
}
TWO_DOMAINS = SyntheticConfig(
    n_users=1500, n_items=400, n_campaigns=3, min_seeds=30, max_seeds=150, n_domains=2, seed=5
)
SHARDS = 3


@pytest.fixture(scope="module")
def two_domain_data(tmp_path_factory):
    return encode(read_dataset(write_synthetic(TWO_DOMAINS, tmp_path_factory.mktemp("two") / "dataset")))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCORERS))
def test_a_users_score_does_not_depend_on_the_other_users_scored(name, two_domain_data):
    data = two_domain_data
    scorer = build_scorer(name, FAST.get(name, {}))
    scorer.fit(data, data.campaigns)
    size = data.n_users // 20
    for cid in list(data.campaigns)[:2]:
        seeds = data.campaigns[cid]
        everyone = scorer.candidates(data, seeds)
        whole = np.asarray(scorer.score(data, seeds, everyone), np.float32)
        local = score_campaign(scorer, data, seeds, size)
        parts = []
        for user_range in shard_ranges(data.n_users, SHARDS):
            shard = score_campaign(scorer, data, seeds, size, user_range=user_range)
            in_range = (everyone >= user_range[0]) & (everyone < user_range[1])
            np.testing.assert_allclose(
                shard.candidate_scores, whole[in_range], rtol=1e-5, atol=1e-6, err_msg=f"{name} {cid}"
            )
            for member in scorer.members if name == "pinterest_ensemble" else []:
                # Whichever blend the cuts chose, every member's ranks are the population's ranks.
                ranks = scorer.member_ranks(member, data, seeds, everyone)
                assert np.array_equal(scorer.member_ranks(member, data, seeds, shard.candidates), ranks[in_range])
            parts.append((shard.users, shard.scores))
        users, _ = merge_shards(parts, size)
        assert np.array_equal(users, local.users), f"{name} {cid}: sharded audience differs from the local one"


def test_ranks_against_the_scores_themselves_are_the_rank_scores_bit_for_bit():
    from lookalike_models.pinterest.ensemble import rank_scores, ranks_against

    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=500), 1)  # many ties
    scores[[3, 7]] = [np.nan, -np.inf]
    assert np.array_equal(ranks_against(scores, scores), rank_scores(scores))
    # Against a fixed reference, a user's rank is the same whichever users are ranked with it.
    reference = rng.normal(size=300)
    assert np.array_equal(ranks_against(reference, scores)[100:200], ranks_against(reference, scores[100:200]))
