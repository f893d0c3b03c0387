"""Scale-out: score user shards on Dask workers through prefect-dask.

One task per user range scores every campaign over that range (a worker loads the encoded data and the
fitted model from the run's work folder once per process: paths travel, not arrays) and returns each
campaign's top list of the range; one merge task keeps every campaign's global top, identical to the
single-process audience. Tasks = shards, not campaigns x shards: Prefect's per-task cost stays small
beside the scoring. The sub-flow that wires them is ``flows/dask_staging.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from prefect import task

from lookalike_models.config import ExecutionConfig, ModelSpec
from lookalike_models.evaluation import audience_size
from lookalike_models.io import write_parquet_atomic
from lookalike_models.pipeline import merge_shards, score_campaign, shard_ranges
from lookalike_models.publishing import audience_frame
from lookalike_models.reach import load_exclusions
from tasks.data import load_data
from tasks.modeling import fitted_scorer


@task
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


@task
def score_shard(
    spec: ModelSpec,
    data_dir: str,
    split_path: str,
    model_dir: str,
    campaign_ids: list[str],
    user_range: tuple[int, int],
    size: int,
    exclusions: list[str],
) -> dict[str, tuple | str]:
    """campaign_id -> (users, scores) top ``size`` of this user range, or the error that campaign raised."""
    limit_threads_to_worker()
    data = load_data(data_dir)
    scorer = fitted_scorer(spec, data_dir, model_dir, split_path)
    everywhere, by_campaign = load_exclusions(exclusions, data)
    tops: dict[str, tuple | str] = {}
    for cid in campaign_ids:
        try:
            excluded = np.concatenate([everywhere, by_campaign.get(cid, everywhere[:0])])
            scored = score_campaign(scorer, data, data.campaigns[cid], size, excluded, tuple(user_range))
            tops[cid] = (scored.users, scored.scores)
        except Exception as exc:  # one bad campaign must not sink the shard
            tops[cid] = f"{type(exc).__name__}: {exc}"
    return tops


@task
def merge_and_stage(
    spec: ModelSpec, data_dir: str, shards: list[dict], size: int, stage: str
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


def dask_runner(execution: ExecutionConfig):
    from prefect_dask import DaskTaskRunner

    if execution.dask_address:
        return DaskTaskRunner(address=execution.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": execution.n_workers,
            "threads_per_worker": 1,
            "processes": execution.processes,
            "dashboard_address": None,
        }
    )
