"""MetaHeac: modules behave, meta-training learns planted signal, small campaigns and both orders run."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import holdout_split, summarize
from lookalike_models.metaheac.network import Critics, HybridExperts, MetaHeacNet, UserBatch
from lookalike_models.metaheac.training import MetaHeacConfig, UserTable, build_net, campaign_kind, make_task
from lookalike_models.pipeline import evaluate_scorers
from lookalike_models.scorers import build_scorer

torch.set_num_threads(1)
FAST = {"dim": 8, "hidden": 16, "gate_hidden": 16, "meta_steps": 40, "batch_size": 128}


def test_gates_mix_to_one_and_respond_to_the_task():
    torch.manual_seed(0)
    experts = HybridExperts(user_dim=12, task_dim=6, hidden=4, n_experts=3, gate_hidden=5)
    t1, t2 = torch.randn(7, 6), torch.randn(7, 6)
    assert torch.allclose(experts.gate(t1).sum(-1), torch.ones(7))
    assert not torch.allclose(experts.gate(t1), experts.gate(t2))
    assert experts(torch.randn(7, 12), t1).shape == (7, 4)
    critics = Critics(hidden=4, task_dim=6, n_critics=5, gate_hidden=5)
    prob = critics(torch.randn(7, 4), t1)
    assert prob.shape == (7,) and bool(((prob > 0) & (prob < 1)).all())


def test_network_scores_users_for_a_campaign(synthetic_data):
    net = build_net(synthetic_data, MetaHeacConfig(**FAST))
    users = UserTable(synthetic_data)
    batch = users.batch(np.arange(10))
    task = make_task(synthetic_data, next(iter(synthetic_data.campaigns.values())))
    prob = net(batch, task.campaign)
    assert isinstance(net, MetaHeacNet) and isinstance(batch, UserBatch) and prob.shape == (10,)


def test_metaheac_learns_planted_campaigns_better_than_random_and_popularity(synthetic_data):
    models = {"metaheac": {"model": "metaheac", **FAST}, "popularity": {"model": "popularity"},
              "random": {"model": "random"}}
    summary = summarize(evaluate_scorers(synthetic_data, models, holdout_frac=0.2, fractions=[0.05]))
    overall = {r["model"]: r for r in summary.filter(pl.col("seed_bucket") == "all").iter_rows(named=True)}
    assert overall["metaheac"]["gauc"] > 0.75
    assert overall["metaheac"]["gauc"] > overall["random"]["gauc"] + 0.15
    assert overall["metaheac"]["gauc"] > overall["popularity"]["gauc"] + 0.1
    assert overall["metaheac"]["recall_at_5pct"] > 2 * overall["random"]["recall_at_5pct"]


def test_meta_learned_weights_transfer_to_held_out_campaigns_and_both_baselines_run(synthetic_data):
    train, heldout = holdout_split(synthetic_data.campaigns, synthetic_data.n_users, 0.2, 0)
    names = sorted(heldout)
    new = {c: heldout[c] for c in names[len(names) // 2:]}
    common = {**FAST, "meta_campaigns": names[: len(names) // 2]}
    models = {"metaheac": {"model": "metaheac", **common}, "joint": {"model": "joint_baseline", **common},
              "scratch": {"model": "scratch_baseline", **FAST}, "random": {"model": "random"}}
    summary = summarize(evaluate_scorers(synthetic_data, models, split=(train, new), fractions=[0.05]))
    gauc = dict(summary.filter(pl.col("seed_bucket") == "all").select("model", "gauc").iter_rows())
    for name in ("metaheac", "joint", "scratch"):
        assert gauc[name] > gauc["random"] + 0.1, (name, gauc)


def test_tiny_campaigns_do_not_crash_and_sampled_negatives_are_flagged(synthetic_data):
    users = np.arange(synthetic_data.n_users)
    seeds = {"one": CampaignSeeds("one", users[:1]), "two": CampaignSeeds("two", users[5:7]),
             "five": CampaignSeeds("five", users[10:15], users[20:21])}
    for name in ("metaheac", "joint_baseline", "scratch_baseline"):
        scorer = build_scorer(name, {**FAST, "meta_steps": 5, "batch_size": 512})
        scorer.fit(synthetic_data, seeds)
        for s in seeds.values():
            scores = scorer.score(synthetic_data, s, users[:50])
            assert scores.shape == (50,) and np.isfinite(scores).all()
        assert scorer.params()["negatives_sampled"]


@pytest.mark.parametrize("second_order", [False, True])
def test_first_and_second_order_meta_training_both_run(synthetic_data, second_order):
    scorer = build_scorer("metaheac", {**FAST, "meta_steps": 3, "second_order": second_order, "adapt_steps": 3})
    scorer.fit(synthetic_data, synthetic_data.campaigns)
    torch.manual_seed(scorer.config.seed)  # same seed -> the initial weights
    before = build_net(synthetic_data, scorer.config)
    moved = [not torch.equal(a, b) for a, b in zip(before.parameters(), scorer.net.parameters())]
    assert any(moved) and scorer.stats.steps == 3 and np.isfinite(scorer.stats.final_loss)


def test_second_order_differs_from_first_order(synthetic_data):
    nets = []
    for second_order in (False, True):
        scorer = build_scorer("metaheac", {**FAST, "meta_steps": 2, "second_order": second_order, "adapt_steps": 2,
                                           "adapt_lr": 0.1})
        scorer.fit(synthetic_data, synthetic_data.campaigns)
        nets.append(scorer.net)
    assert any(not torch.allclose(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters()))


def test_saved_meta_weights_reload_to_the_same_scores(synthetic_data, tmp_path):
    scorer = build_scorer("metaheac", {**FAST, "meta_steps": 5})
    scorer.fit(synthetic_data, synthetic_data.campaigns)
    scorer.save(tmp_path)
    again = build_scorer("metaheac", {**FAST, "meta_steps": 5})
    again.load(tmp_path, synthetic_data)
    seeds = next(iter(synthetic_data.campaigns.values()))
    candidates = np.arange(200)
    assert np.allclose(scorer.score(synthetic_data, seeds, candidates), again.score(synthetic_data, seeds, candidates))


def test_hot_and_cold_campaigns_split_by_positives():
    assert campaign_kind(2000, 2000) == "cold" and campaign_kind(2001, 2000) == "hot"


def test_tencent_sample_meta_trains_and_adapts(tmp_path):
    from lookalike_models.adapters import tencent
    from lookalike_models.contract import read_dataset
    from lookalike_models.dataset import encode
    from tests.conftest import require_shared

    data = encode(read_dataset(tencent.build(tmp_path / "tencent", require_shared("tencent-lookalike-2018"))))
    train, heldout = holdout_split(data.campaigns, data.n_users, 0.2, 0)
    scorer = build_scorer("metaheac", {**FAST, "meta_steps": 10, "cold_threshold": 100})
    scorer.fit(data, train)
    cid = max(heldout, key=lambda c: train[c].size)
    scores = scorer.score(data, train[cid], np.arange(data.n_users))
    assert scores.shape == (data.n_users,) and np.isfinite(scores).all()
    assert scorer.params()["negatives_sampled"]  # the public sample has positives only
    assert scorer.campaign_kind(train[cid]) == "hot" and cid in scorer.adapt_seconds


def test_stage_one_runs_only_when_due(synthetic_data, tmp_path):
    path = tmp_path / "meta" / "weights.pt"
    first = build_scorer("metaheac", {**FAST, "meta_steps": 4, "meta_weights_path": str(path)})
    first.fit(synthetic_data, synthetic_data.campaigns)
    assert path.exists() and len(first.history["meta_loss"]) == 4
    again = build_scorer("metaheac", {**FAST, "meta_steps": 4, "meta_weights_path": str(path)})
    again.fit(synthetic_data, synthetic_data.campaigns)  # fresh weights on disk: reused, not re-trained
    assert again.history == {"stage1_reused": [1.0]}
    assert all(torch.equal(a, b) for a, b in zip(first.net.parameters(), again.net.parameters()))
    overdue = build_scorer("metaheac", {**FAST, "meta_steps": 4, "meta_weights_path": str(path),
                                        "meta_max_age_hours": 1e-9})
    overdue.fit(synthetic_data, synthetic_data.campaigns)
    assert "meta_loss" in overdue.history
