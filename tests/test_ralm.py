"""RALM: attention layers behave (weights sum to 1, local attention follows the target user), k-means
is redone every epoch, negatives follow the paper's rank distribution, and the model learns planted
look-alike structure (beats random and popularity on held-out seeds)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from lookalike_models.catalog import build_scorer
from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import holdout_split, summarize
from lookalike_models.nn.attention import AttentionMerge
from lookalike_models.protocol import evaluate_scorers
from lookalike_models.ralm import recluster_campaign
from lookalike_models.ralm.config import RalmConfig
from lookalike_models.ralm.lookalike import kmeans, seeds_fingerprint, train_lookalike
from lookalike_models.ralm.model import GlobalAttention, LocalAttention, LookalikeModel
from lookalike_models.ralm.user_model import RankNegativeSampler

torch.set_num_threads(1)
SMALL = {"user_epochs": 3, "lookalike_epochs": 6, "dim": 16, "field_dim": 16, "transform_dim": 16, "k": 8}


@pytest.fixture(scope="module")
def split(synthetic_data):
    return holdout_split(synthetic_data.campaigns, synthetic_data.n_users, 0.1, seed=0)


@pytest.fixture(scope="module")
def fitted(synthetic_data, split):
    scorer = build_scorer("ralm", SMALL)
    scorer.fit(synthetic_data, split[0])
    return scorer


def test_attention_merge_weights_sum_to_one_per_user_and_differ_between_users(fitted, synthetic_data):
    weights = fitted.field_attention(np.arange(200))
    assert weights.shape == (200, fitted.spec.n_fields)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
    assert (weights >= 0).all()
    assert weights.std(0).max() > 1e-3  # the merge weights depend on the user's own fields

    merge = AttentionMerge(8, 4)
    h = torch.randn(5, 3, 8)
    merged, a = merge(h)
    assert merged.shape == (5, 8)
    torch.testing.assert_close(merged, (a.unsqueeze(-1) * h).sum(1))


def test_local_attention_sums_to_one_and_responds_to_the_target_user(fitted, synthetic_data, split):
    seeds = split[0][next(iter(split[1]))]
    centroids = torch.from_numpy(fitted.campaign(seeds).centroids)
    users = torch.from_numpy(fitted.transformed[:300])
    _, weights = fitted.lookalike.local(users, centroids)
    assert weights.shape == (300, centroids.shape[0])
    torch.testing.assert_close(weights.sum(1), torch.ones(300))
    # Different target users attend to different centroids; the global vector ignores the user.
    assert weights.std(0).max() > 1e-3
    assert len(set(weights.argmax(1).tolist())) > 1
    _, global_weights = fitted.lookalike.glob(centroids)
    torch.testing.assert_close(global_weights.sum(), torch.tensor(1.0))

    local, glob = LocalAttention(4), GlobalAttention(4)
    es = torch.randn(6, 4)
    a1 = local(torch.randn(1, 4), es)[1]
    a2 = local(torch.randn(1, 4), es)[1]
    assert not torch.allclose(a1, a2)
    assert glob(es)[1].shape == (6,)


def test_kmeans_centroids_are_recomputed_every_epoch_and_change(fitted, split):
    model = LookalikeModel(fitted.embeddings.shape[1], 16)
    log: dict[str, list[np.ndarray]] = {}
    cfg = RalmConfig(
        k=8,
        lookalike_epochs=3,
        lookalike_batch_size=256,
        lookalike_lr=0.01,
        negatives_per_positive=2,
        target_frac=0.3,
        max_train_seeds=500,
        lookalike_min_samples=0,
    )
    curve = train_lookalike(model, fitted.embeddings, split[0], cfg, centroid_log=log)
    assert len(curve) == 3
    assert set(log) == {cid for cid, s in split[0].items() if s.size >= 2}
    for per_epoch in log.values():
        assert len(per_epoch) == 3
        assert per_epoch[0].shape[0] <= 8
        assert not np.allclose(per_epoch[0], per_epoch[-1])


def test_kmeans_caps_k_at_the_number_of_points_and_separates_clusters():
    rng = np.random.default_rng(0)
    centroids, labels = kmeans(rng.normal(size=(3, 4)), 20, rng)
    assert centroids.shape == (3, 4)
    blobs = np.concatenate([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))]).astype(np.float32)
    centroids, labels = kmeans(blobs, 2, rng)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[50]


def test_negative_sampler_matches_the_rank_formula():
    rng = np.random.default_rng(0)
    counts = rng.permutation(np.arange(1, 501)).astype(np.float64)
    sampler = RankNegativeSampler(counts)
    expected = sampler.rank_probabilities()
    assert abs(expected.sum() - 1.0) < 1e-9
    n = 400_000
    empirical = np.bincount(sampler.sample_ranks((n,), rng), minlength=500) / n
    assert np.abs(empirical - expected).max() < 0.004
    # Chi-square on rank bins with enough expected mass (top 20 ranks, then the tail in one bin).
    obs = np.append(empirical[:20], empirical[20:].sum()) * n
    exp = np.append(expected[:20], expected[20:].sum()) * n
    chi2 = ((obs - exp) ** 2 / exp).sum()
    assert chi2 < 45.3  # 99.9% quantile of chi-square with 20 degrees of freedom
    # Rank 0 is the most popular item.
    items = sampler.sample((n,), rng)
    assert np.bincount(items).argmax() == counts.argmax()


def test_ralm_beats_random_and_popularity_on_held_out_seeds(synthetic_data, split):
    per_campaign = evaluate_scorers(
        synthetic_data,
        {"ralm": {"model": "ralm", **SMALL}, "random": {"model": "random"}, "popularity": {"model": "popularity"}},
        split=split,
    )
    overall = summarize(per_campaign).filter(pl.col("seed_bucket") == "all")
    by_model = {row["model"]: row for row in overall.iter_rows(named=True)}
    for baseline in ("random", "popularity"):
        assert by_model["ralm"]["recall_at_5pct"] > by_model[baseline]["recall_at_5pct"] + 0.1
        assert by_model["ralm"]["gauc"] > by_model[baseline]["gauc"] + 0.05


def test_ralm_average_and_concat_variant_learn(synthetic_data, split):
    per_campaign = evaluate_scorers(
        synthetic_data,
        {"avg": {"model": "ralm_average", **SMALL, "user_model": "concat"}, "random": {"model": "random"}},
        split=split,
    )
    overall = summarize(per_campaign).filter(pl.col("seed_bucket") == "all")
    by_model = {row["model"]: row for row in overall.iter_rows(named=True)}
    assert by_model["avg"]["gauc"] > by_model["random"]["gauc"] + 0.1


def test_save_load_scores_identically_and_recluster_refreshes_centroids(fitted, synthetic_data, split, tmp_path):
    cid = next(iter(split[1]))
    seeds = split[0][cid]
    candidates = np.arange(synthetic_data.n_users)
    before = fitted.score(synthetic_data, seeds, candidates)
    fitted.save(tmp_path)
    loaded = build_scorer("ralm", SMALL)
    loaded.load(tmp_path, synthetic_data)
    np.testing.assert_allclose(loaded.score(synthetic_data, seeds, candidates), before, rtol=1e-5, atol=1e-6)

    # Unchanged seeds keep their stored centroids; grown seeds are re-clustered and persisted.
    same = recluster_campaign(tmp_path, synthetic_data, seeds, "ralm", SMALL)
    np.testing.assert_array_equal(same.centroids, fitted.centroids[cid].centroids)
    grown = CampaignSeeds(cid, np.union1d(seeds.positives, split[1][cid].positives))
    fresh = recluster_campaign(tmp_path, synthetic_data, grown, "ralm", SMALL)
    assert fresh.fingerprint == seeds_fingerprint(grown.positives) and fresh.n_seeds == grown.size
    reloaded = build_scorer("ralm", SMALL)
    reloaded.load(tmp_path, synthetic_data)
    np.testing.assert_array_equal(reloaded.centroids[cid].centroids, fresh.centroids)
    assert reloaded.campaign(grown) is reloaded.centroids[cid]  # served without re-clustering


def test_recluster_refuses_seeds_unknown_to_the_model(fitted, synthetic_data, tmp_path):
    fitted.save(tmp_path)
    with pytest.raises(ValueError, match="known users"):
        recluster_campaign(
            tmp_path, synthetic_data, CampaignSeeds("new", np.array([0, synthetic_data.n_users])), "ralm", SMALL
        )
