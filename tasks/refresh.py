"""Incremental refresh bookkeeping: what a run leaves for the next one, and what it finds from the last."""

from __future__ import annotations

import json
from pathlib import Path

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
    state = json.loads(path.read_text())
    if state["data_dir"] == data_dir:
        return empty
    models = {name: folder for name, folder in state["models"].items() if Path(folder).exists()}
    staging = state["staging"] if state["staging"] and Path(state["staging"]["stage"]).exists() else None
    get_run_logger().info("incremental refresh from run %s: %d model folders, staging %s", previous_run,
                          len(models), "found" if staging else "missing")
    return {"models": models, "staging": staging}


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
