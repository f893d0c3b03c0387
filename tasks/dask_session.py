"""One Dask client per process for the sharded night's tasks, and the shard pool each task maps with.

Every task of a night talks to the same cluster: a client of ``execution.dask_address``, else a LocalCluster
started on first use and closed when the process exits. Reusing it keeps workers' loaded shards warm between
rounds and tasks (starting a LocalCluster of processes costs seconds each time).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from lookalike_models.config import ExecutionConfig
from tasks.data import read_plan
from tasks.distributed import dask_client
from tasks.shard_pool import DaskShardPool

_SESSIONS: dict[str, tuple[object, object]] = {}  # execution settings (JSON) -> (context manager, client)
_LOCK = threading.Lock()


def client_for(execution: ExecutionConfig):
    key = execution.model_dump_json()
    with _LOCK:
        if key not in _SESSIONS:
            context = dask_client(execution)
            _SESSIONS[key] = (context, context.__enter__())
        return _SESSIONS[key][1]


@contextmanager
def cluster_session(execution: ExecutionConfig) -> Iterator[None]:
    """The night's tasks share one client (and LocalCluster) while the block runs; closed at its end, so a
    client never outlives the night it served (nor tries to reach a cluster that was stopped)."""
    try:
        yield
    finally:
        close_sessions()


@atexit.register
def close_sessions() -> None:
    with _LOCK:
        for context, _ in _SESSIONS.values():
            with suppress(Exception):
                context.__exit__(None, None, None)
        _SESSIONS.clear()


@contextmanager
def shard_pool(plan_dir: str, execution: ExecutionConfig, label: str) -> Iterator[DaskShardPool]:
    """A pool over the shards of the plan's folder on this process's cluster; ``label`` names its rounds."""
    plan = read_plan(plan_dir)
    where = execution.dask_address or "a LocalCluster"
    pool = DaskShardPool(
        client_for(execution),
        plan["folder"],
        plan["version"],
        (plan["n_shards"], plan["n_users"]),
        where,
        execution.no_workers_timeout_s,
    )
    pool.label = label
    yield pool
