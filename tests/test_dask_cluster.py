"""The Dask backend on a real cluster: a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1,
reached through ``execution.dask_address``, publish exactly the local backend's audiences."""

from __future__ import annotations

import polars as pl
import pytest

from lookalike_models.config import ExecutionConfig, ModelSpec

pytestmark = pytest.mark.slow  # whole flows on Prefect's temporary server, plus a cluster start-up


@pytest.fixture
def dask_cluster(tmp_path):
    from bench.dask_cluster import local_dask_cluster

    with local_dask_cluster(tmp_path, n_workers=2) as cluster:
        yield cluster


def test_dask_cluster_publishes_the_same_audiences_as_local(prefect_and_mlflow, synthetic_dir, tmp_path, dask_cluster):
    from flows.nightly_refresh import nightly_refresh
    from tests.test_flows import nightly_config

    models = [
        ModelSpec(name="item_ridge", model="item_ridge", params={"max_items": 300}),
        ModelSpec(name="popularity", model="popularity"),
    ]
    local = nightly_refresh(nightly_config(synthetic_dir, tmp_path / "local", models=models))
    remote = nightly_refresh(
        nightly_config(
            synthetic_dir,
            tmp_path / "cluster",
            models=models,
            execution=ExecutionConfig(backend="dask", dask_address=dask_cluster.address, shards=2),
        )
    )
    assert local.champion.champion == remote.champion.champion == "item_ridge"
    assert set(remote.published) == set(local.published) and local.published
    for cid, path in local.published.items():
        assert pl.read_parquet(remote.published[cid]).equals(pl.read_parquet(path)), cid


def kill_when_busy(address: str, kill, which: str) -> dict:
    """In a thread: once the scheduler has shards running, ``kill`` (a worker, or all of them); what was
    running then is recorded in the returned dict (``busy``: worker -> shards in progress)."""
    import threading
    import time

    from distributed import Client

    seen: dict = {}

    def watch():
        with Client(address, timeout=30) as client:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                busy = {w: len(tasks) for w, tasks in client.processing().items() if tasks}
                if busy:
                    seen["busy"] = busy
                    kill()
                    seen["killed"] = which
                    return
                time.sleep(0.02)

    seen["thread"] = threading.Thread(target=watch, daemon=True)
    seen["thread"].start()
    return seen


def shard_night(synthetic_dir, out, address: str, **execution):
    from tests.test_flows import nightly_config

    models = [ModelSpec(name="item_ridge", model="item_ridge", params={"max_items": 300})]
    dask = ExecutionConfig(backend="dask", dask_address=address, shards=24, **execution)
    return nightly_config(synthetic_dir, out, models=models, execution=dask)


def test_a_worker_killed_mid_night_is_replaced_by_the_others_and_paths_reach_workers_absolute(
    prefect_and_mlflow, synthetic_dir, tmp_path, dask_cluster, monkeypatch
):
    from flows.nightly_refresh import nightly_refresh
    from tests.test_flows import nightly_config

    models = [ModelSpec(name="item_ridge", model="item_ridge", params={"max_items": 300})]
    local = nightly_refresh(nightly_config(synthetic_dir, tmp_path / "local", models=models))
    # A relative output root, as the default "runs": the workers run in another folder (the repository).
    monkeypatch.chdir(tmp_path)
    seen = kill_when_busy(dask_cluster.address, lambda: dask_cluster.kill_worker(0), "worker 0")
    remote = nightly_refresh(shard_night(synthetic_dir, "cluster-runs", dask_cluster.address))
    seen["thread"].join(timeout=30)
    assert seen.get("killed") == "worker 0" and seen["busy"], "the worker was not killed while shards ran"
    assert dask_cluster.workers[0].poll() is not None  # gone for good (its nanny too)
    assert set(remote.published) == set(local.published) and not remote.failed
    for cid, path in local.published.items():
        assert pl.read_parquet(tmp_path / remote.published[cid]).equals(pl.read_parquet(path)), cid


def test_losing_every_worker_fails_the_night_in_time_and_publishes_nothing(
    prefect_and_mlflow, synthetic_dir, tmp_path, dask_cluster
):
    import time

    from flows.nightly_refresh import nightly_refresh
    from lookalike_models.publishing import read_latest
    from tests.test_flows import nightly_config

    models = [ModelSpec(name="item_ridge", model="item_ridge", params={"max_items": 300})]
    before = nightly_refresh(nightly_config(synthetic_dir, tmp_path, models=models))
    live = read_latest(tmp_path / "audiences")
    assert live and before.published

    seen = kill_when_busy(dask_cluster.address, dask_cluster.kill_all_workers, "every worker")
    start = time.monotonic()
    with pytest.raises(Exception, match=f"dask cluster {dask_cluster.address} has had no worker for 5s") as failure:
        nightly_refresh(shard_night(synthetic_dir, tmp_path, dask_cluster.address, no_workers_timeout_s=5))
    assert time.monotonic() - start < 120, "the night waited for workers long after the stated timeout"
    assert seen.get("killed") == "every worker"
    assert "nothing is published" in str(failure.value)
    assert read_latest(tmp_path / "audiences") == live  # LATEST did not move
    complete = sorted(p.parent.name for p in (tmp_path / "audiences").glob("run_id=*/_COMPLETE"))
    assert complete == [f"run_id={live}"]


def test_the_default_champion_publishes_the_same_audiences_on_the_cluster(
    prefect_and_mlflow, synthetic_dir, tmp_path, dask_cluster
):
    """The ensemble blends its members' ranks among a fixed reference of users, not among a shard's users."""
    from flows.nightly_refresh import nightly_refresh
    from lookalike_models.config import PublishConfig
    from tests.test_flows import nightly_config

    encoder = {"max_epochs": 2, "dim": 16, "negatives": 10, "batch_users": 256}
    ensemble = {"encoder": encoder, "embedding_model": "centroid_cosine", "rank_reference_users": 1000}
    models = [
        ModelSpec(name="pinterest_ensemble", model="pinterest_ensemble", params=ensemble),
        ModelSpec(name="popularity", model="popularity"),
    ]
    publish = PublishConfig(model="pinterest_ensemble")
    local = nightly_refresh(nightly_config(synthetic_dir, tmp_path / "local", models=models, publish=publish))
    cluster = ExecutionConfig(backend="dask", dask_address=dask_cluster.address, shards=3)
    remote = nightly_refresh(
        nightly_config(synthetic_dir, tmp_path / "cluster", models=models, publish=publish, execution=cluster)
    )
    assert set(remote.published) == set(local.published) and local.published
    for cid, path in local.published.items():
        assert pl.read_parquet(remote.published[cid]).equals(pl.read_parquet(path)), cid
