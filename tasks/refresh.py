"""Incremental refresh bookkeeping: what a run leaves for the next one, and what it finds from the last."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from prefect import task
from prefect.logging import get_run_logger

from lookalike_models.io import write_bytes_atomic

REFRESH_FILE = "refresh.json"


@task
def previous_refresh(output_root: str, previous_run: str | None, data_dir: str, incremental: bool) -> dict:
    """The last published run's model folders and staging, when tonight's input differs from its input.

    On the same input there is nothing to refresh: the cached tasks give back last run's results whole, so
    nothing is passed (and the cache keys stay those of the last run)."""
    empty = {"models": {}, "staging": None}
    path = Path(output_root) / "runs" / str(previous_run) / REFRESH_FILE
    if not incremental or not previous_run or not path.exists():
        return empty
    try:
        state = json.loads(path.read_text())
        if state["data_dir"] == data_dir:
            return empty
        mismatch = index_mismatch(state["data_dir"], data_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        mismatch = f"unreadable refresh record {path} ({type(exc).__name__}: {exc})"
    if mismatch:
        # Reusing state that does not fit tonight's data would fail tonight and every night after it.
        get_run_logger().warning("incremental refresh from run %s not possible: %s; full refresh", previous_run,
                                 mismatch)
        return empty
    models = {name: folder for name, folder in state["models"].items() if Path(folder).exists()}
    staging = state["staging"] if state["staging"] and Path(state["staging"]["stage"]).exists() else None
    get_run_logger().info("incremental refresh from run %s: %d model folders, staging %s", previous_run,
                          len(models), "found" if staging else "missing")
    return {"models": models, "staging": staging}


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
def record_refresh(run_dir: str, data_dir: str, trained: dict[str, dict], staged: dict, specs: list) -> str:
    """Leave in the run folder what the next run (and the re-clustering flow) needs: the encoded data,
    each model's folder and spec, and the staging of the published audiences."""
    state = {"data_dir": data_dir, "models": {name: info["model_dir"] for name, info in trained.items()},
             "specs": {spec.name: spec.model_dump(mode="json") for spec in specs},
             "staging": staged.get("refresh_state")}
    return str(write_bytes_atomic(json.dumps(state, indent=1).encode(), Path(run_dir) / REFRESH_FILE))


@task
def live_models(output_root: str) -> dict:
    """The refresh record of the run whose audiences are live (LATEST)."""
    from lookalike_models.publishing import read_latest

    run = read_latest(Path(output_root) / "audiences")
    path = Path(output_root) / "runs" / str(run) / REFRESH_FILE
    if not run or not path.exists():
        raise FileNotFoundError(f"no published nightly run under {output_root}: run the nightly flow first")
    return json.loads(path.read_text()) | {"run_id": run}
