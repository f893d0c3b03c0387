"""The parent MLflow run's lifecycle: opened for a flow run (tagged so later runs can find it), closed,
abandoned on an error or a signal, and the runs of flow runs that died while RUNNING closed by the next run
on the same output root."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger
from pydantic import BaseModel

from lookalike_models.metric_names import DEFAULT_SELECTION_METRIC
from tasks import tracking
from tasks.results import RunFolder, TrackedSettings


def tracked_settings(config: BaseModel) -> TrackedSettings:
    """What the parent MLflow run records of a flow's config (a nightly or an ad-hoc one): the task then takes
    only these values, not the whole config."""
    params = config.model_dump()
    selection = params.get("selection") or {}
    return TrackedSettings(
        params=tracking.flatten(params),
        selection_metric=selection.get("metric", DEFAULT_SELECTION_METRIC),
        dataset=dataset_label(params["data"]) if "data" in params else "",
    )


@task
def open_mlflow_run(
    experiment: str, run: RunFolder, settings: TrackedSettings, locked_root: str | None = None
) -> RunFolder:
    """The flow run's parent MLflow run (``run`` with its id). ``locked_root``: the output root this flow run
    holds the lock of; RUNNING runs left on it by killed flow runs are marked KILLED (none can be alive: the
    lock is ours)."""
    from prefect.runtime import deployment, flow_run

    tags = {
        "prefect.flow_run_id": str(flow_run.id),
        "prefect.flow_run_name": str(flow_run.name),
        "prefect.deployment": str(deployment.name or "none"),
        "lookalike.run_id": run.run_id,
    }
    if locked_root:
        tags["lookalike.output_root"] = str(Path(locked_root).resolve())
    if settings.dataset:
        tags["lookalike.dataset"] = settings.dataset
    with tracking_store_initialisation():
        mlflow_run = tracking.start_run(experiment, run.run_id, tags)
    tracking.ensure_runs_view(experiment, settings.selection_metric)
    tracking.log_params(mlflow_run, settings.params)
    if locked_root:
        close_stale_runs(experiment, tags["lookalike.output_root"], mlflow_run)
        dead = crash_dead_flow_runs(flow_runs_on_root(tags["lookalike.output_root"]), f"MLflow run {mlflow_run}")
        if dead:  # killed before they opened an MLflow run
            get_run_logger().warning("marked %d Prefect flow runs of dead runs Crashed: %s", len(dead), ", ".join(dead))
    return run.model_copy(update={"mlflow_run": mlflow_run})


@task
def close_mlflow_run(mlflow_run: str, status: str = "FINISHED") -> None:
    tracking.end_run(mlflow_run, status)


def abandon_mlflow_run(mlflow_run: str, exc: BaseException) -> None:
    """A run that stops on ``exc``: its MLflow run KILLED (interrupt, termination) or FAILED, without a
    Prefect task (the flow may be going down on a signal), and any child left RUNNING FAILED with it."""
    status = end_status(exc)
    try:
        client = tracking.client()
        run = client.get_run(mlflow_run)
        client.set_tag(mlflow_run, "lookalike.status", "failed")
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{mlflow_run}'",
        )
        for child in children:
            client.set_terminated(child.info.run_id, "FAILED")
        client.set_terminated(mlflow_run, status)
    except Exception:  # noqa: BLE001 (the store is unreachable: the next run on this root closes it)
        pass


def end_status(exc: BaseException) -> str:
    """MLflow's status for a run ended by ``exc``: KILLED for an interrupt or a termination, else FAILED."""
    from prefect.exceptions import TerminationSignal

    return "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit | TerminationSignal) else "FAILED"


def flow_runs_on_root(output_root: str) -> list[str]:
    """Ids of this flow's runs that are not final (RUNNING, PENDING) and whose parameters name the output
    root ``output_root`` holds the lock of (its own or its ``adhoc/``): runs killed before they opened an
    MLflow run. Relative roots are read from this process's folder."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.runtime import flow_run

    if not flow_run.id or not flow_run.flow_name:
        return []
    states = FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_run.flow_name])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=states)),
        )
    found = []
    for run in runs:
        config = (run.parameters or {}).get("config") or {}
        root = Path(config.get("output_root", "runs") if isinstance(config, dict) else "runs")
        if str(run.id) != str(flow_run.id) and output_root in (str(root.resolve()), str((root / "adhoc").resolve())):
            found.append(str(run.id))
    return found


def dataset_label(data: dict) -> str:
    """The data set a run read, in a few words (tag ``lookalike.dataset``): e.g. ``synthetic n_users=20000
    seed=7``, ``movielens``, ``folder /data/x``, with its shape when it has one."""
    kind, path = data.get("kind", "?"), data.get("path") or ""
    if kind == "synthetic":
        knobs = data.get("synthetic") or {}
        label = f"synthetic n_users={knobs.get('n_users')} seed={knobs.get('seed')}"
    else:
        label = f"{kind} {path}".strip()
    shape = {k: v for k, v in (data.get("shape") or {}).items() if k != "seed" and v}
    return label + "".join(f" {k}={v}" for k, v in shape.items())


def tracking_store_initialisation():
    """Two runs started together on a fresh checkout race to create the local SQLite store's tables
    (``table ... already exists``): the first contact with a local store is serialised."""
    import contextlib

    from lookalike_models.locking import serialized

    uri = tracking.tracking_uri()
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return serialized(f"{uri.removeprefix('sqlite:///')}.init.lock")


def close_stale_runs(experiment: str, output_root: str, current: str) -> list[str]:
    """Mark RUNNING parent runs of ``output_root`` other than ``current`` as KILLED, their RUNNING child runs
    (one per model) FAILED, and the Prefect flow runs they belong to Crashed where still running; returns
    the parent runs' ids. None of them can be alive: the caller holds the output root's lock."""
    client = tracking.client()
    found = client.get_experiment_by_name(experiment)
    if not found:
        return []
    running = client.search_runs([found.experiment_id], filter_string="attributes.status = 'RUNNING'")
    stale = [
        r.info.run_id
        for r in running
        if r.info.run_id != current and r.data.tags.get("lookalike.output_root") == output_root
    ]
    for run in stale:
        client.set_tag(run, "lookalike.closed_by", f"run {current}: its flow run died while it was RUNNING")
        client.set_terminated(run, "KILLED")
    children = [r.info.run_id for r in running if r.data.tags.get("mlflow.parentRunId") in stale]
    for run in children:
        client.set_tag(run, "lookalike.closed_by", f"run {current}: its parent run's flow run died")
        client.set_terminated(run, "FAILED")
    logger = get_run_logger()
    if stale:
        logger.warning(
            "marked %d MLflow runs of dead flow runs KILLED (%s) and %d of their model runs FAILED",
            len(stale),
            ", ".join(stale),
            len(children),
        )
    flow_runs = [r.data.tags.get("prefect.flow_run_id") for r in running if r.info.run_id in stale]
    crashed = crash_dead_flow_runs([f for f in flow_runs if f], f"MLflow run {current}")
    if crashed:
        logger.warning("marked %d Prefect flow runs of dead runs Crashed: %s", len(crashed), ", ".join(crashed))
    return stale


def crash_dead_flow_runs(flow_run_ids: list[str], by: str) -> list[str]:
    """Set Prefect flow runs that are not final (a killed process left them RUNNING) to Crashed; returns
    their ids. Ids this Prefect server does not know (another server, a test harness) are skipped."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Crashed

    current = str(flow_run.id)
    crashed: list[str] = []
    if not [f for f in flow_run_ids if f != current]:
        return crashed
    with get_client(sync_client=True) as client:
        for flow_run_id in flow_run_ids:
            if flow_run_id == current:
                continue
            try:
                found = client.read_flow_run(UUID(flow_run_id))
            except Exception:  # noqa: BLE001 (not a UUID, or unknown to this server: nothing to mark)
                continue
            if found.state is None or found.state.is_final():
                continue
            message = f"its process died while the flow run was {found.state.type.value}; found by {by}"
            client.set_flow_run_state(found.id, Crashed(message=message), force=True)
            crashed.append(flow_run_id)
    return crashed
