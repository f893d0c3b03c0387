"""Sub-flow of the nightly refresh on the Dask backend: every campaign's user shards scored on Dask workers
(tasks/distributed.py), merged into the same audiences a single process stages."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from lookalike_models.config import PublishConfig
from tasks.caching import stable_hash
from tasks.distributed import merge_and_stage, plan_shards, score_shard
from tasks.results import StagedAudiences, TrainedModel


@flow(name="stage-audiences-dask")
def stage_audiences_dask(trained: TrainedModel, publish: PublishConfig, n_shards: int) -> StagedAudiences:
    """Run with a DaskTaskRunner (``tasks.distributed.dask_runner``): one task per user shard scores every
    campaign, one task merges the shards' top lists."""
    spec, data_dir, split_path = trained.spec, trained.data_dir, trained.split.path
    campaigns, shards, size = plan_shards(data_dir, n_shards, publish.audience_fraction)
    stage = str(
        Path(data_dir).parent
        / "staged"
        / f"{spec.name}-{stable_hash(trained, publish.audience_fraction, publish.exclusions)}"
    )
    futures = [
        score_shard.submit(spec, data_dir, split_path, trained.model_dir, campaigns, shard, size, publish.exclusions)
        for shard in shards
    ]
    staged, failed = merge_and_stage(spec, data_dir, [f.result() for f in futures], size, stage)
    return StagedAudiences(model=spec.name, staged=staged, failed=failed)
