"""A flow run's own folder and id, and the Prefect flow run it belongs to."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from prefect import task

from tasks.results import RunFolder


@task
def start_run_folder(output_root: str) -> RunFolder:
    """A run id that sorts by time and names the Prefect flow run, and its folder (its MLflow run is opened
    next: ``mlflow_runs.open_mlflow_run``)."""
    from datetime import datetime

    from prefect.runtime import flow_run

    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{str(flow_run.id or 'local')[:8]}"
    run_dir = Path(output_root) / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunFolder(run_id=run_id, run_dir=str(run_dir), output_root=output_root)


def current_flow_run() -> str | None:
    """'<name> (<id>)' of the Prefect flow run this code runs in (None outside one)."""
    from prefect.runtime import flow_run

    return f"{flow_run.name} ({flow_run.id})" if flow_run.id else None
