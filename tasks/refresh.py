"""Incremental refresh bookkeeping: what a run leaves for the next one, and what it finds from the last."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
from prefect import task
from prefect.logging import get_run_logger

from lookalike_models.config import ModelSpec
from lookalike_models.io import write_bytes_atomic
from lookalike_models.scorers import REFRESH_STATE
from tasks.results import PreviousRefresh, RefreshRecord, StagedAudiences, TrainedModel

REFRESH_FILE = "refresh.json"


# Below this share of tonight's users known to the previous run's data, the previous run read another data set.
MIN_USER_OVERLAP = 0.5


@task
def previous_refresh(
    output_root: str, previous_run: str | None, data_dir: str, incremental: bool, data_set: str | None = None
) -> PreviousRefresh:
    """The last published run's model folders and staging, when tonight's input differs from its input.

    On the same input there is nothing to refresh: the cached tasks give back last run's results whole, so
    nothing is passed (and the cache keys stay those of the last run). A previous run of another data set
    (``data_set``: ``sources.data_set_key``; or too few of tonight's users in its data) is never started
    from: the night starts cold, and says so (``other_data_set``, which also turns off the drift report)."""
    empty = PreviousRefresh()
    path = Path(output_root) / "runs" / str(previous_run) / REFRESH_FILE
    if not previous_run or not path.exists():
        return empty
    logger = get_run_logger()
    try:
        state = RefreshRecord.model_validate_json(path.read_text())
        if state.data_dir == data_dir:
            return empty
        other = other_data_set(state, data_set, data_dir)
        mismatch = None if other or not incremental else index_mismatch(state.data_dir, data_dir)
    except (OSError, ValueError, KeyError) as exc:  # a pydantic ValidationError is a ValueError
        other, mismatch = None, f"unreadable refresh record {path} ({type(exc).__name__}: {exc})"
    if other:
        logger.warning(
            "previous run %s read another data set (%s): cold start, no incremental refresh and no drift report",
            previous_run,
            other,
        )
        return PreviousRefresh(other_data_set=other)
    if not incremental:
        return empty
    if mismatch:
        # Reusing state that does not fit tonight's data would fail tonight and every night after it.
        logger.warning("incremental refresh from run %s not possible: %s; full refresh", previous_run, mismatch)
        return empty
    models = {name: folder for name, folder in state.models.items() if Path(folder).exists()}
    staging = state.staging if state.staging and Path(state.staging.stage).exists() else None
    logger.info(
        "incremental refresh from run %s (same data set, %s): %d model folders, staging %s",
        previous_run,
        data_set or "unnamed",
        len(models),
        "found" if staging else "missing",
    )
    return PreviousRefresh(models=models, staging=staging)


def other_data_set(state: RefreshRecord, data_set: str | None, data_dir: str) -> str | None:
    """Why the previous run's data is another data set than tonight's (None when it is the same one)."""
    if data_set is not None and state.data_set != data_set:
        before = state.data_set or "not recorded (a run of an older version)"
        return f"its data set {before}, tonight's {data_set}"
    before, now = Path(state.data_dir) / "user_index.parquet", Path(data_dir) / "user_index.parquet"
    if not before.exists() or not now.exists():
        return None  # nothing to compare: index_mismatch reports a missing index
    old, new = pl.read_parquet(before, columns=["user_id"]), pl.read_parquet(now, columns=["user_id"])
    if old.schema["user_id"] != new.schema["user_id"] or new.height == 0:
        return None  # a change of id type is index_mismatch's case: the same data set, re-keyed
    share = new.join(old, on="user_id", how="semi").height / new.height
    if share < MIN_USER_OVERLAP:
        return f"only {share:.0%} of tonight's {new.height} users are in its data (need {MIN_USER_OVERLAP:.0%})"
    return None


def index_mismatch(previous_data_dir: str, data_dir: str) -> str | None:
    """Why the previous run's encoded ids cannot be matched to tonight's (None when they can)."""
    for name in ("user_index.parquet", "item_index.parquet"):
        before, now = Path(previous_data_dir) / name, Path(data_dir) / name
        if not before.exists():
            return f"previous {name} is gone"
        column = name.split("_")[0] + "_id"
        old_type, new_type = pl.read_parquet_schema(before)[column], pl.read_parquet_schema(now)[column]
        if old_type != new_type:
            return f"{column} type changed from {old_type} to {new_type}"
    return None


@task
def record_refresh(
    run_dir: str,
    data_dir: str,
    trained: dict[str, TrainedModel],
    staged: StagedAudiences,
    specs: list[ModelSpec],
    data_set: str | None = None,
) -> str:
    """Leave in the run folder what the next run (and the re-clustering flow) needs: the data set and its
    encoded data, each model's folder and spec, and the staging of the published audiences."""
    record = RefreshRecord(
        data_dir=data_dir,
        data_set=data_set,
        models={name: model.model_dir for name, model in trained.items()},
        specs={spec.name: spec for spec in specs},
        staging=staged.refresh_state,
    )
    return str(
        write_bytes_atomic(
            record.model_dump_json(indent=1, by_alias=True, exclude={"run_id"}).encode(), Path(run_dir) / REFRESH_FILE
        )
    )


@task
def prune_refresh_state(work_root: str, published: dict[str, str], keep: list[str]) -> int:
    """Once tonight's audiences are live, the next night starts from tonight's model folders (``keep``):
    every other ``refresh_state/`` under the work folder (last night's, and that of the models of the extra
    evaluation splits, never reused) is dead weight, ~330 MB per model at 1M users. Deletes them; returns
    the bytes freed. Nothing is deleted on a night that published nothing (the next one starts from the
    last published run, whose state must stay)."""
    if not published:
        return 0
    kept = {Path(folder).resolve() for folder in keep}
    freed = 0
    for state in Path(work_root).glob(f"*/models/*/{REFRESH_STATE}"):
        if state.parent.resolve() not in kept:
            freed += sum(f.stat().st_size for f in state.rglob("*") if f.is_file())
            shutil.rmtree(state, ignore_errors=True)
    if freed:
        get_run_logger().info("removed %.0f MB of refresh state no later night will read", freed / 1e6)
    return freed


@task
def live_models(output_root: str) -> RefreshRecord:
    """The refresh record of the run whose audiences are live (LATEST)."""
    from lookalike_models.publishing import read_latest

    run = read_latest(Path(output_root) / "audiences")
    path = Path(output_root) / "runs" / str(run) / REFRESH_FILE
    if not run or not path.exists():
        raise FileNotFoundError(f"no published nightly run under {output_root}: run the nightly flow first")
    return RefreshRecord.model_validate_json(path.read_text()).model_copy(update={"run_id": run})
