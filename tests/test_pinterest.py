"""Pinterest act-alike: the encoder learns (transfer task), density beats voting where background density
varies, LSH finds true neighbours, and the scorers beat random and popularity on held-out seeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lookalike_models.catalog import build_scorer
from lookalike_models.dataset import LookalikeData
from lookalike_models.evaluation import summarize
from lookalike_models.pinterest.encoder import EncoderConfig, train_encoder, transfer_error
from lookalike_models.pinterest.ensemble import EnsembleConfig, embedding_share, merge_rankings
from lookalike_models.pinterest.lsh import HyperplaneLSH, RegionTable
from lookalike_models.protocol import evaluate_scorers

torch.set_num_threads(1)
SMALL = EncoderConfig(max_epochs=3, dim=24, negatives=20, batch_users=128)
# The StarSpace objective alone, from a random item table (no SVD warm start): does it learn?
RANDOM_INIT = SMALL.model_copy(update={"init": "random", "lr": 0.01, "max_epochs": 5, "patience": 5})


def _clusters(n_per_cluster: np.ndarray, dim: int, noise: float, seed: int):
    """Unit vectors around random unit centres; returns (embeddings [n, dim], cluster id [n])."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_per_cluster.size, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    label = np.repeat(np.arange(n_per_cluster.size), n_per_cluster)
    x = centres[label] + noise * rng.standard_normal((label.size, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), label


@pytest.fixture(scope="module")
def fitted(synthetic_data):
    return train_encoder(synthetic_data, SMALL)


def _popularity_transfer_error(data: LookalikeData, task) -> float:
    """The transfer task answered by activity alone: the most active non-seed users."""
    activity = data.activity()
    recalls = []
    for seeds, targets in zip(task.seeds, task.targets):
        scores = activity.copy()
        scores[seeds] = -np.inf
        recalls.append(np.isin(targets, np.argsort(-scores, kind="stable")[: task.audience]).mean())
    return 1.0 - float(np.mean(recalls))


def test_starspace_from_random_init_beats_untrained_and_popularity_on_transfer_task(synthetic_data):
    # The proxy items are withheld from training altogether: held-out organic signal.
    fitted = train_encoder(synthetic_data, RANDOM_INIT)
    errors = [h["transfer_error"] for h in fitted.history]
    untrained, trained = errors[0], min(errors)
    popularity = _popularity_transfer_error(synthetic_data, fitted.transfer_task)
    # Measured: untrained 0.56, trained 0.23 (epoch 2+), popularity 0.82 (audience 5%, 24 proxy items).
    assert trained < untrained - 0.2, errors
    assert trained < popularity - 0.4, (errors, popularity)


def test_default_encoder_keeps_its_best_checkpoint_and_beats_random_vectors(synthetic_data, fitted):
    errors = [h["transfer_error"] for h in fitted.history]
    gaussian = transfer_error(np.random.default_rng(0).standard_normal(fitted.embeddings.shape), fitted.transfer_task)
    # Epoch 0 is the TF-IDF SVD warm start; a later epoch is kept only when it is better by min_improvement.
    assert min(errors) < gaussian - 0.5, (errors, gaussian)  # measured 0.22 vs 0.95
    kept = fitted.best_epoch
    assert errors[kept] <= errors[0]
    assert all(errors[kept] <= e + SMALL.min_improvement for e in errors)


def test_embeddings_are_signed_unit_vectors(fitted, synthetic_data):
    emb = fitted.embeddings
    assert emb.dtype == np.float32 and emb.shape == (synthetic_data.n_users, SMALL.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # No ReLU before the normalisation: coordinates take both signs, so hyperplanes split users.
    assert 0.3 < (emb < 0).mean() < 0.7


def test_encoder_never_reads_campaign_seeds(synthetic_data, fitted):
    # dataclasses.replace, not __dict__: cached properties (user_items) of the shared fixture live there too.
    no_campaigns = dataclasses.replace(synthetic_data, campaigns={})
    again = train_encoder(no_campaigns, SMALL)
    np.testing.assert_array_equal(again.embeddings, fitted.embeddings)


def test_density_beats_voting_where_background_density_differs():
    # Crowded clusters convert rarely, sparse clusters often: voting follows the crowd, density the rate.
    sizes = np.array([3000, 2500, 2000, 1500] + [150] * 8)
    rates = np.array([0.02] * 4 + [0.25] * 8)
    emb, cluster = _clusters(sizes, 16, 0.6, seed=3)
    rng = np.random.default_rng(4)
    converter = rng.random(cluster.size) < rates[cluster]
    users = np.flatnonzero(converter)
    held = rng.random(users.size) < 0.3
    seeds, heldout = users[~held], users[held]
    lsh = HyperplaneLSH(emb, n_partitions=8, n_bits=8, seed=0)
    eligible = np.setdiff1d(np.arange(emb.shape[0]), seeds)
    label = np.isin(eligible, heldout)
    auc = {}
    top_hits = {}
    for kind in ("density", "voting"):
        scores = lsh.score(lsh.region_table(seeds, kind, min_region_users=3), eligible)
        auc[kind] = roc_auc_score(label, scores)
        top_hits[kind] = label[np.argsort(-scores, kind="stable")[:500]].mean()
    # Measured: AUC density 0.74, voting 0.49; precision@500 density 0.086, voting 0.010.
    assert auc["density"] > auc["voting"] + 0.1
    assert top_hits["density"] > 1.5 * top_hits["voting"]


def test_lsh_finds_most_true_top_neighbours_while_scanning_few_users():
    emb, _ = _clusters(np.full(50, 400), 32, 0.5, seed=5)  # 100th neighbour at cosine ~0.83
    lsh = HyperplaneLSH(emb, n_partitions=16, n_bits=10, seed=1)
    recalls, scanned = [], []
    for q in np.random.default_rng(6).choice(emb.shape[0], 20, replace=False):
        exact = np.argsort(-(emb @ emb[q]))[:100]
        approx, n_cand = lsh.nearest(emb[q], emb, 100)
        recalls.append(np.isin(exact, approx).mean())
        scanned.append(n_cand / emb.shape[0])
    # Measured: recall@100 0.92 scanning 4% of the users.
    assert np.mean(recalls) > 0.85
    assert np.mean(scanned) < 0.1


def test_region_table_is_small_persisted_and_scores_by_lookup(tmp_path):
    emb, _ = _clusters(np.full(10, 300), 16, 0.5, seed=7)
    lsh = HyperplaneLSH(emb, n_partitions=4, n_bits=6, seed=2)
    seeds = np.arange(0, 300, 3)
    table = lsh.region_table(seeds, "density", min_region_seeds=2)
    loaded = RegionTable.load(table.save(tmp_path / "campaign.npz"))
    np.testing.assert_array_equal(lsh.score(loaded), lsh.score(table))
    assert table.region.size <= 4 * 2**6 and (table.score <= 1).all()
    # The user score is the mean over partitions of the region density (checked for one user).
    user = seeds[0]
    expected = 0.0
    for p in range(4):
        r = lsh.codes[user, p]
        n_seeds, n_users = (lsh.codes[seeds, p] == r).sum(), (lsh.codes[:, p] == r).sum()
        expected += n_seeds / n_users if n_seeds >= 2 else 0.0
    assert lsh.score(table, np.array([user]))[0] == pytest.approx(expected / 4, rel=1e-5)


def test_merge_puts_intersection_first_then_fills_by_share():
    a = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], np.float32)  # ranks users 0..9
    b = a[::-1].copy()  # ranks users 9..0
    b[2] = 100  # user 2 is also B's best
    merged = merge_rankings(a, b, top=3, share_a=0.5)
    order = np.argsort(-merged)
    assert order[0] == 2  # only user in both top-3 lists
    assert set(order[1:5]) == {0, 1, 9, 8}  # then alternating fill
    cfg = EnsembleConfig()
    assert embedding_share(10, cfg) == cfg.embedding_share_small
    assert embedding_share(10_000, cfg) == cfg.embedding_share_large


def test_scorers_beat_random_and_popularity_on_held_out_seeds(synthetic_data, tmp_path):
    enc = SMALL.model_dump()
    models = {
        name: {"encoder": enc} for name in ("lsh_density", "pinterest_ensemble", "affinity_mlp", "centroid_cosine")
    }
    per_campaign = evaluate_scorers(
        synthetic_data, {**models, "random": {}, "popularity": {}}, fractions=[0.02, 0.05, 0.1]
    )
    overall = summarize(per_campaign).filter(pl.col("seed_bucket") == "all")
    recall = {r["model"]: r["recall_at_5pct"] for r in overall.iter_rows(named=True)}
    # Measured (8 campaigns): lsh_density 0.69, ensemble 0.70, affinity 0.71, centroid 0.61, popularity 0.09,
    # random 0.08.
    for name in models:
        assert recall[name] > recall["popularity"] + 0.3, (name, recall)
        assert recall[name] > 4 * recall["random"], (name, recall)


@pytest.mark.parametrize(
    "name",
    ["centroid_cosine", "lsh_density", "lsh_voting", "affinity_mlp", "pinterest_classifier", "pinterest_ensemble"],
)
def test_save_then_load_scores_the_same(name, synthetic_data, tmp_path):
    params = {"encoder": SMALL.model_dump()}
    scorer = build_scorer(name, params)
    scorer.fit(synthetic_data, synthetic_data.campaigns)
    seeds = next(iter(synthetic_data.campaigns.values()))
    candidates = np.arange(synthetic_data.n_users)
    before = scorer.score(synthetic_data, seeds, candidates)
    scorer.save(tmp_path / name)
    restored = build_scorer(name, params)
    restored.load(tmp_path / name, synthetic_data)
    np.testing.assert_allclose(restored.score(synthetic_data, seeds, candidates), before, rtol=1e-5, atol=1e-6)


def test_embeddings_parquet_has_one_row_per_user(synthetic_data, tmp_path):
    from lookalike_models.publishing import write_embeddings

    emb = np.random.default_rng(0).standard_normal((synthetic_data.n_users, 8)).astype(np.float32)
    frame = pl.read_parquet(write_embeddings(synthetic_data, emb, tmp_path / "embeddings.parquet"))
    assert frame.height == synthetic_data.n_users
    assert frame["user_id"].to_list() == synthetic_data.user_ids.to_list()
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_list()), emb)


def test_on_movielens_density_beats_voting_and_affinity_mlp_beats_popularity(movielens_data):
    enc = EncoderConfig().model_dump()  # 943 users: the default encoder trains in a few seconds
    models = {name: {"encoder": enc} for name in ("lsh_density", "lsh_voting", "affinity_mlp")}
    per_campaign = evaluate_scorers(movielens_data, {**models, "popularity": {}, "random": {}}, fractions=[0.05, 0.1])
    overall = summarize(per_campaign).filter(pl.col("seed_bucket") == "all")
    recall = {r["model"]: r["recall_at_5pct"] for r in overall.iter_rows(named=True)}
    gauc = {r["model"]: r["gauc"] for r in overall.iter_rows(named=True)}
    # Measured (40 campaigns, recall@5%): affinity 0.37, density 0.31, popularity 0.31,
    # voting 0.22, random 0.05; GAUC density 0.84 vs voting 0.77.
    assert recall["lsh_density"] > recall["lsh_voting"] + 0.03
    assert gauc["lsh_density"] > gauc["lsh_voting"] + 0.03
    assert recall["affinity_mlp"] > recall["popularity"]
    assert recall["lsh_density"] > 4 * recall["random"]


def test_scorers_expose_encoder_curves_for_tracking(synthetic_data):
    scorer = build_scorer("pinterest_ensemble", {"encoder": SMALL.model_dump()})
    assert scorer.history == {}
    scorer.fit(synthetic_data, synthetic_data.campaigns)
    curves = scorer.history
    assert len(curves["encoder_transfer_error"]) == len(curves["encoder_loss"]) + 1
    assert all(np.isfinite(curves["encoder_loss"]))


def test_affinity_mlp_without_usable_campaigns_falls_back_to_cosine(synthetic_data):
    scorer = build_scorer("affinity_mlp", {"encoder": SMALL.model_dump()})
    scorer.fit(synthetic_data, {})
    seeds = next(iter(synthetic_data.campaigns.values()))
    cosine = build_scorer("centroid_cosine", {"encoder": SMALL.model_dump()})
    cosine.fit(synthetic_data, {})
    users = np.arange(100)
    np.testing.assert_allclose(scorer.score(synthetic_data, seeds, users), cosine.score(synthetic_data, seeds, users))


@pytest.mark.slow
def test_on_movielens_starspace_centroid_matches_svd_and_beats_popularity(movielens_data):
    from lookalike_models.protocol import TUNING_SPLITS, evaluate_over_splits

    models = {"centroid_cosine": {}, "svd_centroid": {}, "popularity": {}}
    per_campaign = evaluate_over_splits(movielens_data, models, TUNING_SPLITS[:2], fractions=[0.05])
    recall = {m: float(v) for m, v in per_campaign.group_by("model").agg(pl.col("recall_at_5pct").mean()).iter_rows()}
    # Measured on tuning splits 100-104: centroid_cosine 0.440, svd_centroid 0.441, popularity 0.308
    # (before issue 10: 0.245).
    assert recall["centroid_cosine"] > recall["svd_centroid"] - 0.015, recall
    assert recall["centroid_cosine"] > recall["popularity"] + 0.08, recall


def test_strongest_first_orders_like_lexsort_with_ties_and_unsorted_users():
    from lookalike_models.pinterest.encoder_inputs import strongest_first

    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, 5000)
    items = rng.integers(0, 30, 5000).astype(np.int32)
    weight = rng.choice(np.array([0.5, 1.0, 2.0, 3.5], np.float32), 5000)  # many exact ties
    assert np.array_equal(strongest_first(users, items, weight, 30), np.lexsort((items, -weight, users)))
    assert strongest_first(users[:0], items[:0], weight[:0], 30).size == 0
