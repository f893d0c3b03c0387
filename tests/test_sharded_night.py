"""The sharded night on a real cluster (``dask scheduler`` + two ``dask worker`` processes): it publishes
the single-process night's audiences on the same shards, survives a worker killed mid-night, and fails in
time, publishing nothing, when every worker is gone."""

from __future__ import annotations

import polars as pl
import pytest

from lookalike_models.config import DataSource, EvaluationConfig, ExecutionConfig, ModelSpec, PublishConfig
from lookalike_models.synthetic import SyntheticConfig

pytestmark = pytest.mark.slow  # whole flows on Prefect's temporary server, plus a cluster start-up

# Every sharded model, with knobs that keep the night short; the exact ones must publish the same audiences.
MODELS = [
    ModelSpec(name="item_ridge", model="item_ridge", params={"max_items": 300, "max_validation_users": 1000}),
    ModelSpec(name="minhash", model="minhash"),
    ModelSpec(name="item_logreg", model="item_logreg", params={"max_negatives": 1000}),
    ModelSpec(name="svd_centroid", model="svd_centroid", params={"n_components": 16}),
    ModelSpec(name="popularity", model="popularity"),
    ModelSpec(name="random", model="random"),
    # The sampled ensemble, small: its prepared state (encoder, MLP, per-campaign plans) travels to the workers.
    ModelSpec(
        name="pinterest_ensemble",
        model="pinterest_ensemble",
        params={"encoder": {"max_epochs": 2, "dim": 16, "negatives": 10, "batch_users": 256}},
    ),
]
EXACT = ["item_ridge", "minhash", "item_logreg", "popularity", "random"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from lookalike_models.sharded.synthetic_shards import write_synthetic_shards

    cfg = SyntheticConfig(n_users=3000, n_items=400, n_campaigns=4, min_seeds=40, max_seeds=150, seed=3)
    return write_synthetic_shards(cfg, 5, tmp_path_factory.mktemp("sharded_night") / "shards")


@pytest.fixture
def dask_cluster(tmp_path):
    from bench.dask_cluster import local_dask_cluster

    with local_dask_cluster(tmp_path, n_workers=2, memory_limit="2GB") as cluster:
        yield cluster


def night(shards, out, models=MODELS, publish="item_ridge", **execution):
    from tests.test_flows import nightly_config

    return nightly_config(
        shards,
        out,
        data=DataSource(kind="sharded", path=str(shards)),
        models=models,
        # 2% of 3000 users is 60: a small population evaluates on everyone (the full branch); the sampled
        # branch is compared with single-process in tests/test_sharded_exact.py.
        evaluation=EvaluationConfig(audience_fractions=[0.02, 0.05], max_scored_users=2000),
        publish=PublishConfig(model=publish),
        execution=ExecutionConfig(**execution),
    )


def test_the_sharded_night_publishes_the_single_process_audiences_and_metrics(
    prefect_and_mlflow, shards, tmp_path, dask_cluster
):
    from flows.nightly_refresh import nightly_refresh

    local = nightly_refresh(night(shards, tmp_path / "local"))
    remote = nightly_refresh(night(shards, tmp_path / "cluster", backend="dask", dask_address=dask_cluster.address))
    assert remote.status == "complete" and set(remote.published) == set(local.published) and local.published
    for cid, path in local.published.items():
        assert pl.read_parquet(remote.published[cid]).equals(pl.read_parquet(path)), cid
    metrics = {
        name: pl.read_parquet(next((tmp_path / name / "runs").glob("*/report/metrics_per_campaign.parquet")))
        for name in ("local", "cluster")
    }
    columns = [c for c in metrics["local"].columns if c not in ("score_seconds",)]
    for model in EXACT:
        one, other = (metrics[n].filter(pl.col("model") == model).sort("campaign_id") for n in ("local", "cluster"))
        assert one.height and one.select(columns).equals(other.select(columns)), model
    # The sampled models see everyone at this size (panel_users > users): close, not bit-equal (SVD fold-in; the
    # ensemble's encoder trains in another process order).
    for model in ("svd_centroid", "pinterest_ensemble"):
        recall = [metrics[n].filter(pl.col("model") == model)["recall_at_5pct"].mean() for n in metrics]
        assert abs(recall[0] - recall[1]) < 0.05, (model, recall)


def test_a_worker_killed_mid_night_changes_nothing_published(prefect_and_mlflow, shards, tmp_path, dask_cluster):
    from flows.nightly_refresh import nightly_refresh
    from tests.test_dask_cluster import kill_when_busy

    models = MODELS[:1] + MODELS[4:5]  # item_ridge (several map rounds) and popularity
    local = nightly_refresh(night(shards, tmp_path / "local", models))
    seen = kill_when_busy(dask_cluster.address, lambda: dask_cluster.kill_worker(0), "worker 0")
    remote = nightly_refresh(
        night(shards, tmp_path / "cluster", models, backend="dask", dask_address=dask_cluster.address)
    )
    seen["thread"].join(timeout=30)
    assert seen.get("killed") == "worker 0" and seen["busy"], "the worker was not killed while shards ran"
    assert dask_cluster.workers[0].poll() is not None  # gone for good (its nanny too)
    assert remote.status == "complete" and set(remote.published) == set(local.published)
    for cid, path in local.published.items():
        assert pl.read_parquet(remote.published[cid]).equals(pl.read_parquet(path)), cid


def test_losing_every_worker_fails_the_sharded_night_in_time_and_publishes_nothing(
    prefect_and_mlflow, shards, tmp_path, dask_cluster
):
    import time

    from flows.nightly_refresh import nightly_refresh
    from lookalike_models.publishing import read_latest
    from tests.test_dask_cluster import kill_when_busy

    models = MODELS[:1]
    before = nightly_refresh(night(shards, tmp_path, models))
    live = read_latest(tmp_path / "audiences")
    assert live and before.published

    seen = kill_when_busy(dask_cluster.address, dask_cluster.kill_all_workers, "every worker")
    start = time.monotonic()
    address = dask_cluster.address
    with pytest.raises(Exception, match=f"dask cluster {address} has had no worker for 5s") as failure:
        nightly_refresh(night(shards, tmp_path, models, backend="dask", dask_address=address, no_workers_timeout_s=5))
    assert time.monotonic() - start < 120, "the night waited for workers long after the stated timeout"
    assert seen.get("killed") == "every worker"
    assert "nothing is published" in str(failure.value)
    assert read_latest(tmp_path / "audiences") == live  # LATEST did not move
