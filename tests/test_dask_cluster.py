"""The Dask backend on a real cluster: a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1,
reached through ``execution.dask_address``, publish exactly the local backend's audiences."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from lookalike_models.config import ExecutionConfig, ModelSpec

ROOT = Path(__file__).resolve().parents[1]
# The `dask scheduler` / `dask worker` commands, run with this interpreter.
DASK_SCHEDULER = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
DASK_WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]
pytestmark = pytest.mark.slow  # whole flows on Prefect's temporary server, plus a cluster start-up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """tcp address of a scheduler with two single-threaded worker processes; all stopped afterwards."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    # Workers import the project's tasks by name; one BLAS/torch thread each so two workers fill two cores.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    scheduler = [*DASK_SCHEDULER, "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"]
    procs = [subprocess.Popen(scheduler, env=env, stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    try:
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        *DASK_WORKER,
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--local-directory",
                        str(tmp_path / f"worker-{i}"),
                    ],
                    env=env,
                    stdout=open(logs / f"worker-{i}.log", "w"),
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 60
        with Client(address, timeout=60) as client:
            while len(client.scheduler_info()["workers"]) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("dask workers did not start: " + (logs / "worker-0.log").read_text()[-2000:])
                time.sleep(0.2)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


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
