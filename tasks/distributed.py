"""Scale-out: score user shards on a Dask cluster.

One Prefect task (``stage_audiences_dask``: its logs and state beside every other stage) hands the user
ranges to Dask as plain function calls: each scores every campaign over its range (a worker loads the
encoded data and the fitted model from the run's work folder once per process: paths travel, not arrays)
and returns each campaign's top list of the range; the task then keeps every campaign's global top,
identical to the single-process audience. Workers run no Prefect code, so they need neither a Prefect
server nor a temporary one of their own (with prefect-dask's task runner each worker process started one:
~50 s before the first shard at 100k users, against ~4 s of local scoring; BENCHMARKS.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from lookalike_models.config import ExecutionConfig, ModelSpec, PublishConfig
from lookalike_models.evaluation import audience_size
from lookalike_models.io import write_parquet_atomic
from lookalike_models.pipeline import merge_shards, score_campaign, shard_ranges
from lookalike_models.publishing import audience_frame
from lookalike_models.reach import load_exclusions
from tasks.caching import stable_hash
from tasks.data import load_data
from tasks.fitted_models import fitted_scorer
from tasks.results import StagedAudiences, TrainedModel


@task
def stage_audiences_dask(trained: TrainedModel, publish: PublishConfig, execution: ExecutionConfig) -> StagedAudiences:
    """Every campaign's audience from user shards scored on Dask (``execution.dask_address``, else a
    LocalCluster), staged in the run's work folder (shards that fail are retried once by Dask)."""
    spec = trained.spec
    key = stable_hash(trained, publish.audience_fraction, publish.exclusions)
    stage = str(Path(trained.data_dir).parent / "staged" / f"{spec.name}-{key}")
    campaigns, shards, size = plan_shards(trained.data_dir, execution.shards, publish.audience_fraction)
    where = execution.dask_address or "a LocalCluster"
    start = time.perf_counter()
    with dask_client(execution) as client:
        futures = client.map(
            score_shard,
            shards,
            spec=spec,
            # Absolute: a worker runs in a folder of its own (on another machine, the same shared path).
            data_dir=absolute(trained.data_dir),
            split_path=absolute(trained.split.path),
            model_dir=absolute(trained.model_dir),
            campaign_ids=campaigns,
            size=size,
            exclusions=[absolute(path) for path in publish.exclusions],
            pure=False,
            retries=1,
        )
        parts = gather_while_workers_live(
            client, futures, where, execution.no_workers_timeout_s, ShardProgress(len(futures), where)
        )
    get_run_logger().info(
        "dask: %d shards x %d campaigns scored in %.1fs on %s",
        len(shards),
        len(campaigns),
        time.perf_counter() - start,
        where,
    )
    staged, failed = merge_and_stage(spec, trained.data_dir, parts, size, stage)
    return StagedAudiences(model=spec.name, staged=staged, failed=failed)


def absolute(path: str) -> str:
    return str(Path(path).resolve())


class NoDaskWorkers(RuntimeError):
    """The cluster had no worker for longer than ``execution.no_workers_timeout_s``: the night fails (nothing
    is published) rather than wait for a worker that may never come."""


class ShardProgress:
    """Shards scored so far: a Prefect progress artifact, and a log line with rate and ETA every ``every`` s."""

    def __init__(self, total: int, where: str, every: float = 10.0):
        self.total, self.where, self.every = total, where, every
        self.artifact = create_progress_artifact(0.0, description=f"dask shards on {where}")
        self.start = self.last_line = time.monotonic()
        self.done = 0

    def __call__(self, done: int) -> None:
        if done == self.done:
            return
        self.done = done
        update_progress_artifact(self.artifact, 100.0 * done / max(self.total, 1))
        now = time.monotonic()
        if now - self.last_line >= self.every or done == self.total:
            self.last_line = now
            per_shard = (now - self.start) / max(done, 1)
            get_run_logger().info(
                "dask: %d/%d shards scored on %s (%.1f s a shard, ETA %.0f s)",
                done,
                self.total,
                self.where,
                per_shard,
                (self.total - done) * per_shard,
            )


def gather_while_workers_live(
    client, futures: list, where: str, no_workers_timeout_s: float, progress=lambda done: None, results=None
) -> list:
    """The futures' results (or only those of ``results``, once every future is done). Dask re-runs the shards
    of a worker that died on the workers left (and errors ``retries`` times); with no worker at all for
    ``no_workers_timeout_s`` seconds, raises ``NoDaskWorkers`` instead of waiting for one (a scheduler waits for
    workers forever). ``progress(done)``: after each poll."""
    from distributed import wait

    idle_since = None
    while True:
        try:
            wait(futures, timeout=min(2.0, no_workers_timeout_s))
        except TimeoutError:
            progress(sum(f.done() for f in futures))
        else:
            progress(len(futures))
            values = results_in_time(futures if results is None else results, no_workers_timeout_s)
            if values is not None:
                return values
        if client.scheduler_info()["workers"]:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= no_workers_timeout_s:
            done = sum(f.done() for f in futures)
            for future in futures:  # let go, not cancel: see tasks/shard_pool.release
                future.release()
            raise NoDaskWorkers(
                f"dask cluster {where} has had no worker for {no_workers_timeout_s:.0f}s "
                f"({done} of {len(futures)} shards scored): the night stops, nothing is published"
            )


def results_in_time(futures: list, timeout_s: float) -> list | None:
    """The done futures' results, each fetched under a timeout (not ``client.gather``, which has none: a result
    whose worker died after ``wait`` returned is recomputed, and with no worker left a gather waits for ever);
    None when one timed out. A task's own error is raised, a ``TimeoutError`` it raised included."""
    values = []
    for future in futures:
        try:
            values.append(future.result(timeout=timeout_s))
        except TimeoutError:
            if future.status == "error":
                raise
            return None
    return values


def plan_shards(data_dir: str, n_shards: int, audience_fraction: float) -> tuple[list[str], list, int]:
    """Campaigns, user ranges and the audience size of a distributed scoring pass."""
    data = load_data(data_dir)
    size = audience_size(data.n_users, audience_fraction)
    return list(data.campaigns), shard_ranges(data.n_users, n_shards), size


def limit_threads_to_worker() -> None:
    """On a Dask worker, torch and BLAS use the worker's own thread count (``dask worker --nthreads``), so
    two single-threaded worker processes on a 2-core machine do not each start two compute threads."""
    import multiprocessing

    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a worker (local backend, tests calling the task directly)
        return
    if not worker.nanny and multiprocessing.current_process().name == "MainProcess":
        return  # a thread of the flow's own process (LocalCluster of threads): leave its settings alone
    threads = max(1, int(getattr(worker, "nthreads", 0) or worker.state.nthreads))
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


# A shard's top lists: campaign_id -> (user_idx, scores) of its best users in the shard's range, or the error.
ShardTops = dict[str, tuple[np.ndarray, np.ndarray] | str]


def score_shard(
    user_range: tuple[int, int],
    spec: ModelSpec,
    data_dir: str,
    split_path: str,
    model_dir: str,
    campaign_ids: list[str],
    size: int,
    exclusions: list[str],
) -> ShardTops:
    """campaign_id -> (users, scores) top ``size`` of this user range, or the error that campaign raised."""
    limit_threads_to_worker()
    data = load_data(data_dir)
    scorer = fitted_scorer(spec, data_dir, model_dir, split_path)
    everywhere, by_campaign = load_exclusions(exclusions, data)
    tops: ShardTops = {}
    for cid in campaign_ids:
        try:
            excluded = np.concatenate([everywhere, by_campaign.get(cid, everywhere[:0])])
            scored = score_campaign(scorer, data, data.campaigns[cid], size, excluded, tuple(user_range))
            tops[cid] = (scored.users, scored.scores)
        except Exception as exc:  # one bad campaign must not sink the shard
            tops[cid] = f"{type(exc).__name__}: {exc}"
    return tops


def merge_and_stage(
    spec: ModelSpec, data_dir: str, shards: list[ShardTops], size: int, stage: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Every campaign's global top from its shards' top lists, staged as Parquet: (staged, failed)."""
    data = load_data(data_dir)
    staged, failed = {}, {}
    for cid in shards[0] if shards else []:
        parts = [shard[cid] for shard in shards]
        errors = [part for part in parts if isinstance(part, str)]
        if errors:
            failed[cid] = errors[0]
            continue
        users, scores = merge_shards(parts, size)
        if users.size == 0:  # as in stage_audiences: an empty audience fails its campaign, it is not published
            failed[cid] = (
                "ValueError: nothing left to rank: every candidate is a seed, a known non-converter or excluded"
            )
            continue
        frame = audience_frame(data, users, scores, spec.name)
        staged[cid] = str(write_parquet_atomic(frame, Path(stage) / f"{cid}.parquet"))
    return staged, failed


@contextmanager
def dask_client(execution: ExecutionConfig) -> Iterator:
    """A client of the cluster at ``execution.dask_address``, else of a LocalCluster started here."""
    from distributed import Client, LocalCluster

    if execution.dask_address:
        try:
            client = Client(execution.dask_address, timeout=60)
        except OSError as exc:  # distributed's connect timeout is an OSError too
            address = execution.dask_address
            raise OSError(f"execution.dask_address {address}: no Dask scheduler answered ({exc})") from exc
        with client:
            yield client
        return
    # Worker processes listen on 127.0.0.1 only; thread workers talk in-process (no host to bind).
    bind = {"host": "127.0.0.1"} if execution.processes else {}
    cluster = LocalCluster(
        n_workers=execution.n_workers,
        threads_per_worker=1,
        processes=execution.processes,
        dashboard_address=None,
        **bind,
    )
    with cluster, Client(cluster) as client:
        yield client
