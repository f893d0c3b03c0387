"""MetaHeac: modules behave, meta-training learns planted signal, small campaigns and both orders run."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from lookalike_models.catalog import build_scorer
from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import holdout_split, summarize
from lookalike_models.metaheac.episodes import make_task
from lookalike_models.metaheac.network import Critics, HybridExperts, MetaHeacNet
from lookalike_models.metaheac.training import MetaHeacConfig, build_net, campaign_kind
from lookalike_models.nn.fields import UserFeatures
from lookalike_models.protocol import evaluate_scorers

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
    users = UserFeatures.of(synthetic_data.users)
    batch = users.rows(np.arange(10))
    task = make_task(synthetic_data, next(iter(synthetic_data.campaigns.values())))
    prob = net(batch, task.campaign)
    assert isinstance(net, MetaHeacNet) and isinstance(batch, UserFeatures) and prob.shape == (10,)


def test_metaheac_learns_planted_campaigns_better_than_random_and_popularity(synthetic_data):
    models = {
        "metaheac": {"model": "metaheac", **FAST},
        "popularity": {"model": "popularity"},
        "random": {"model": "random"},
    }
    summary = summarize(evaluate_scorers(synthetic_data, models, holdout_frac=0.2, fractions=[0.05]))
    overall = {r["model"]: r for r in summary.filter(pl.col("seed_bucket") == "all").iter_rows(named=True)}
    assert overall["metaheac"]["gauc"] > 0.75
    assert overall["metaheac"]["gauc"] > overall["random"]["gauc"] + 0.15
    assert overall["metaheac"]["gauc"] > overall["popularity"]["gauc"] + 0.1
    assert overall["metaheac"]["recall_at_5pct"] > 2 * overall["random"]["recall_at_5pct"]


def test_meta_learned_weights_transfer_to_held_out_campaigns_and_both_baselines_run(synthetic_data):
    train, heldout = holdout_split(synthetic_data.campaigns, synthetic_data.n_users, 0.2, 0)
    names = sorted(heldout)
    new = {c: heldout[c] for c in names[len(names) // 2 :]}
    common = {**FAST, "meta_campaigns": names[: len(names) // 2]}
    models = {
        "metaheac": {"model": "metaheac", **common},
        "joint": {"model": "joint_baseline", **common},
        "scratch": {"model": "scratch_baseline", **FAST},
        "random": {"model": "random"},
    }
    summary = summarize(evaluate_scorers(synthetic_data, models, split=(train, new), fractions=[0.05]))
    gauc = dict(summary.filter(pl.col("seed_bucket") == "all").select("model", "gauc").iter_rows())
    for name in ("metaheac", "joint", "scratch"):
        assert gauc[name] > gauc["random"] + 0.1, (name, gauc)


def test_tiny_campaigns_do_not_crash_and_sampled_negatives_are_flagged(synthetic_data):
    users = np.arange(synthetic_data.n_users)
    seeds = {
        "one": CampaignSeeds("one", users[:1]),
        "two": CampaignSeeds("two", users[5:7]),
        "five": CampaignSeeds("five", users[10:15], users[20:21]),
    }
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
        scorer = build_scorer(
            "metaheac", {**FAST, "meta_steps": 2, "second_order": second_order, "adapt_steps": 2, "adapt_lr": 0.1}
        )
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
    overdue = build_scorer(
        "metaheac", {**FAST, "meta_steps": 4, "meta_weights_path": str(path), "meta_max_age_hours": 1e-9}
    )
    overdue.fit(synthetic_data, synthetic_data.campaigns)
    assert "meta_loss" in overdue.history
    # Fresh weights of another model (or config) are not reused: the record beside them says what they are.
    joint = build_scorer("joint_baseline", {**FAST, "meta_steps": 4, "meta_weights_path": str(path)})
    joint.fit(synthetic_data, synthetic_data.campaigns)
    assert "meta_loss" in joint.history
    wider = build_scorer("joint_baseline", {**FAST, "meta_steps": 4, "hidden": 8, "meta_weights_path": str(path)})
    wider.fit(synthetic_data, synthetic_data.campaigns)
    assert "meta_loss" in wider.history
    # Weights that match their record but do not load are an error to see, not a silent re-training.
    path.write_bytes(b"not a checkpoint")
    broken = build_scorer("joint_baseline", {**FAST, "meta_steps": 4, "hidden": 8, "meta_weights_path": str(path)})
    with pytest.raises(Exception, match="(?i)pickle|zip|load|magic"):
        broken.fit(synthetic_data, synthetic_data.campaigns)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_one_adaptation_procedure_matches_torch_optimisers_with_and_without_graph(synthetic_data, optimizer):
    """Serving and the stage-1 inner loop share ``adapt_weights``: its fused (detached) and differentiable
    updates both follow torch.optim.Adam / SGD step for step on the same batches."""
    from torch.func import functional_call

    from lookalike_models.metaheac.episodes import RowSampler
    from lookalike_models.metaheac.training import Adaptation, adapt_weights, bce

    cfg = MetaHeacConfig(**FAST)
    torch.manual_seed(0)
    net, users = build_net(synthetic_data, cfg), UserFeatures.of(synthetic_data.users)
    task = make_task(synthetic_data, next(iter(synthetic_data.campaigns.values())))
    how = Adaptation(optimizer, 0.01, 4, 64)
    results = []
    for create_graph in (False, True):
        params = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
        sampler = RowSampler(users.n_users, 1.0, np.random.default_rng(5))
        results.append(adapt_weights(net, params, users, task, how, sampler, None, create_graph=create_graph))
    reference = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(reference.values(), lr=0.01)
    batches = RowSampler(users.n_users, 1.0, np.random.default_rng(5)).batches(task, 64)
    for _ in range(4):
        batch_users, labels = next(batches)
        opt.zero_grad()
        bce(functional_call(net, reference, (users.rows(batch_users), task.campaign)), labels).backward()
        opt.step()
    for name, expected in reference.items():
        for got in results:
            assert torch.allclose(got[name], expected, atol=1e-5), name
    assert any(not torch.allclose(reference[n], p) for n, p in net.named_parameters())


def _planted_interaction_tasks(n_users: int = 800, n_campaigns: int = 50, seed: int = 0):
    """Users carry two fields f1, f2 in 0..2 (and a noise field); a campaign converts users of one
    community (f1 + f2) mod 3. Neither field alone says anything, so a network adapted from random
    weights on a few seeds cannot rank the community; one meta-trained on other campaigns can."""
    from lookalike_models.dataset import LookalikeData, UserFields

    rng = np.random.default_rng(seed)
    f1, f2, noise = rng.integers(0, 3, n_users), rng.integers(0, 3, n_users), rng.integers(0, 10, n_users)
    community = (f1 + f2) % 3
    campaigns = {}
    for c in range(n_campaigns):
        converts = np.flatnonzero((community == rng.integers(0, 3)) & (rng.random(n_users) < 0.8))
        campaigns[f"c{c:02d}"] = CampaignSeeds(f"c{c:02d}", converts)
    single = np.stack([f1 + 1, f2 + 1, noise + 1], 1).astype(np.int64)
    users = UserFields(["f1", "f2", "noise"], [], [], single, [4, 4, 11], [], [], np.zeros((n_users, 0), np.float32))
    none = np.zeros(0, np.int32)
    return LookalikeData(
        pl.Series(np.arange(n_users)),
        pl.Series([0]),
        none,
        none,
        none.astype(np.float32),
        none.astype(np.int8),
        ["d"],
        users,
        campaigns,
        {},
        [],
        [],
    )


def test_meta_learned_init_adapts_faster_than_random_init_and_joint_training_on_new_campaigns():
    from lookalike_models.evaluation import safe_auc

    data = _planted_interaction_tasks()
    names = sorted(data.campaigns)
    train, new = {c: data.campaigns[c] for c in names[:40]}, names[40:]
    common = {
        "dim": 8,
        "hidden": 16,
        "gate_hidden": 16,
        "meta_steps": 60,
        "support_seeds": [10],
        "adapt_steps": 3,
        "adapt_lr": 0.05,
        "outer_lr": 0.01,
    }
    scorers = {
        "meta": build_scorer("metaheac", common),
        "joint": build_scorer("joint_baseline", common),
        "random_init": build_scorer("scratch_baseline", {**common, "scratch_steps": 3, "scratch_lr": 0.05}),
    }
    gauc = {}
    for name, scorer in scorers.items():
        scorer.fit(data, train)
        aucs = []
        for cid in new:  # 10 seeds each, the same 3 adaptation steps for all three initialisations
            pos = np.random.default_rng(len(aucs)).permutation(data.campaigns[cid].positives)
            scores = scorer.score(data, CampaignSeeds(cid, pos[:10]), np.arange(data.n_users))
            aucs.append(safe_auc(scores[pos[10:]], scores[np.setdiff1d(np.arange(data.n_users), pos)]))
        gauc[name] = float(np.mean(aucs))
    assert gauc["meta"] > 0.8, gauc  # measured 0.88; random init 0.52, joint 0.62
    assert gauc["meta"] > gauc["random_init"] + 0.2, gauc
    assert gauc["meta"] > gauc["joint"] + 0.1, gauc


def test_row_gating_mixes_experts_per_user_and_campaign_gating_once_per_campaign(synthetic_data):
    users = UserFeatures.of(synthetic_data.users)
    task = make_task(synthetic_data, next(iter(synthetic_data.campaigns.values())))
    mixes = {}
    for gating in ("row", "campaign"):
        torch.manual_seed(0)
        net = build_net(synthetic_data, MetaHeacConfig(**FAST, gating=gating))
        batch = users.rows(np.arange(20))
        seeds = users.rows(task.positives[:8]) if gating == "campaign" else None
        mixes[gating] = net.experts.gate(net.gate_input(net.fields(batch), task.campaign, seeds))
    assert mixes["row"].std(0).max() > 1e-3  # users of one campaign get different expert mixes
    assert torch.allclose(mixes["campaign"], mixes["campaign"][:1].expand(20, -1))


def test_stage_one_episodes_keep_support_seeds_apart_from_query_positives():
    from lookalike_models.metaheac.episodes import RowSampler, Task

    task = Task("c", np.arange(100, 160), np.arange(0), torch.zeros(0, dtype=torch.long))
    sampler = RowSampler(1000, 1.0, np.random.default_rng(0))
    for _ in range(20):
        support, query = sampler.support_query(task, [5, 10, 20], 32)
        assert support.positives.size in (5, 10, 20) and query.positives.size > 0
        assert not np.intersect1d(support.positives, query.positives).size
        users, labels = sampler.label_rows(support, np.arange(support.n_rows))
        assert not np.isin(users[labels == 0], task.positives).any()  # hidden query seeds never negatives


def test_uniform_task_sampling_gives_the_cold_tail_its_share():
    from lookalike_models.metaheac.episodes import Task, task_sampler

    tasks = [Task("hot", np.arange(5000), np.arange(0), torch.zeros(0, dtype=torch.long))] + [
        Task(f"cold{i}", np.arange(10), np.arange(0), torch.zeros(0, dtype=torch.long)) for i in range(9)
    ]
    share = {}
    for how in ("uniform", "proportional"):
        draw = task_sampler(tasks, np.random.default_rng(0), 1, how)
        share[how] = np.mean([draw()[0].campaign_id == "hot" for _ in range(2000)])
    assert abs(share["uniform"] - 0.1) < 0.03 and share["proportional"] > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("name", ["movielens", "amazon"])
def test_adapters_add_meta_training_tasks_disjoint_from_campaigns_and_kept_out_of_user_fields(name, tmp_path):
    from lookalike_models.adapters import amazon, movielens
    from lookalike_models.adapters.options import AmazonOptions, MovieLensOptions
    from lookalike_models.contract import read_dataset
    from tests.conftest import require_shared

    adapter, source = {"movielens": (movielens, "movielens-100k"), "amazon": (amazon, "amazon-books-movies-dense")}[
        name
    ]
    options = AmazonOptions(n_campaigns=10, user_history=True) if name == "amazon" else MovieLensOptions(n_campaigns=10)
    plain = read_dataset(adapter.build(tmp_path / "plain", require_shared(source), options))
    more = read_dataset(
        adapter.build(tmp_path / "more", require_shared(source), options.model_copy(update={"n_meta_campaigns": 50}))
    )
    ids = set(more.seeds["campaign_id"].unique().to_list())
    assert {c for c in ids if not c.startswith("meta_")} == set(plain.seeds["campaign_id"].unique().to_list())
    assert len([c for c in ids if c.startswith("meta_")]) == 50
    items = set(more.campaign_features["item_id"].cast(pl.String).to_list())
    assert len(items) == 60  # a meta task never shares its movie with an evaluated campaign
    for column in more.schema.user_multi:
        used = set(more.user_features[column].explode().drop_nulls().cast(pl.String).to_list())
        assert not used & items, column
