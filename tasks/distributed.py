"""Scale-out: score every campaign's user shards on Dask workers through prefect-dask.

Each shard task loads the encoded data and the fitted model from disk once per worker (paths travel,
not arrays), scores the candidates of its user range and returns its top list; a merge task keeps the
global top, identical to the single-process audience. The sub-flow that wires them is
``flows/dask_staging.py``.
"""

from __future__ import annotations

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


@task
def score_shard(spec: ModelSpec, data_dir: str, split_path: str, model_dir: str, campaign_id: str,
                user_range: tuple[int, int], size: int, exclusions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    data = load_data(data_dir)
    scorer = fitted_scorer(spec, data_dir, model_dir, split_path)
    everywhere, by_campaign = load_exclusions(exclusions, data)
    excluded = np.concatenate([everywhere, by_campaign.get(campaign_id, everywhere[:0])])
    scored = score_campaign(scorer, data, data.campaigns[campaign_id], size, excluded, tuple(user_range))
    return scored.users, scored.scores


@task
def merge_and_stage(spec: ModelSpec, data_dir: str, campaign_id: str, parts: list, size: int, stage: str) -> str:
    users, scores = merge_shards(parts, size)
    if users.size == 0:  # as in stage_audiences: an empty audience fails its campaign, it is not published
        raise ValueError("nothing left to rank: every candidate is a seed, a known non-converter or excluded")
    frame = audience_frame(load_data(data_dir), users, scores, spec.name)
    return str(write_parquet_atomic(frame, Path(stage) / f"{campaign_id}.parquet"))


def dask_runner(execution: ExecutionConfig):
    from prefect_dask import DaskTaskRunner

    if execution.dask_address:
        return DaskTaskRunner(address=execution.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": execution.n_workers, "threads_per_worker": 1,
                                          "processes": execution.processes, "dashboard_address": None})
