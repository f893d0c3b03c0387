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

    with local_dask_cluster(tmp_path, n_workers=2) as address:
        yield address


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
            execution=ExecutionConfig(backend="dask", dask_address=dask_cluster, shards=2),
        )
    )
    assert local.champion.champion == remote.champion.champion == "item_ridge"
    assert set(remote.published) == set(local.published) and local.published
    for cid, path in local.published.items():
        assert pl.read_parquet(remote.published[cid]).equals(pl.read_parquet(path)), cid
