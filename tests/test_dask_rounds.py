"""A round of futures on Dask ends, whatever happens to the workers: results lost with the last worker after
they finished fail the night in time (a plain ``client.gather`` waits for ever there), and a round's futures are
let go of without tripping the scheduler (a ``client.cancel`` of the scattered arguments once did, dropping the
flow's connection mid-night)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("distributed")

from distributed import Client, LocalCluster, wait  # noqa: E402

from tasks.distributed import NoDaskWorkers, gather_while_workers_live, results_in_time  # noqa: E402


@pytest.fixture
def cluster():
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield cluster, client


def lose_every_worker(cluster, client) -> None:
    cluster.scale(0)
    deadline = time.monotonic() + 30
    while client.scheduler_info()["workers"]:
        assert time.monotonic() < deadline, "the worker did not leave"
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_results_lost_with_the_last_worker_after_they_finished_fail_the_round_in_time(cluster):
    cluster, client = cluster
    futures = client.map(lambda x: x * 2, range(3), pure=False)
    wait(futures)
    assert [f.status for f in futures] == ["finished"] * 3
    lose_every_worker(cluster, client)  # the results went with it

    start = time.monotonic()
    assert results_in_time(futures, 1.0) is None
    with pytest.raises(NoDaskWorkers, match="has had no worker for 2s"):
        gather_while_workers_live(client, futures, "the test cluster", 2.0)
    assert time.monotonic() - start < 30


@pytest.mark.timeout(60)  # taken for a lost result, it would be waited on for ever
def test_a_task_s_own_timeout_error_is_raised_not_waited_on(cluster):
    _, client = cluster

    def times_out():
        raise TimeoutError("the shard's storage timed out")

    future = client.submit(times_out, pure=False)
    with pytest.raises(TimeoutError, match="storage timed out"):
        gather_while_workers_live(client, [future], "the test cluster", 5.0)


def count_users_times(shard, k: int) -> int:
    return shard.n_users * k


def test_a_map_sum_round_lets_go_of_everything_and_the_client_stays_connected(cluster, tmp_path):
    """Scattered arguments, shard futures and the pairwise sums are released at the end of each round, and the
    client runs the next one (the cancel that tripped the scheduler dropped it)."""
    from lookalike_models.sharded.store import read_manifest
    from lookalike_models.sharded.synthetic_shards import write_synthetic_shards
    from lookalike_models.synthetic import SyntheticConfig
    from tasks.shard_pool import DaskShardPool

    _, client = cluster
    config = SyntheticConfig(n_users=600, n_items=50, n_campaigns=2, min_seeds=20, max_seeds=40, seed=5)
    folder = write_synthetic_shards(config, 5, tmp_path / "shards")
    per_shard = [counts.users for counts in read_manifest(folder).shards]
    pool = DaskShardPool(client, str(folder), "v1", (5, sum(per_shard)), "the test cluster", 30.0)
    pool.progress = lambda fn, total: lambda done: None  # its Prefect artifact needs a flow run
    for _ in range(3):
        assert pool.map_sum(count_users_times, 2) == 2 * sum(per_shard)
        assert pool.map(count_users_times, 1) == per_shard
    deadline = time.monotonic() + 10
    while client.who_has():  # nothing of the rounds stays on the cluster
        assert time.monotonic() < deadline, client.who_has()
        time.sleep(0.05)
