"""MLflow bookkeeping through an explicit client: thread-safe (tasks may run in threads) and never
depending on a global "active run". One parent run per flow run, one child run per model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypedDict

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from lookalike_models.metric_names import CHAMPION_PREFIX, FIT_SECONDS, GAUC, VS_REFERENCE

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI if set (a server, Databricks...), else a local SQLite store in the project."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def client() -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient(tracking_uri())


# MLflow 3 tells model-training experiments from GenAI ones by this tag; without it an experiment may open on an
# empty Traces page. The UI's own GenAI / machine-learning switch is per browser: links add WORKFLOW_QUERY.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
WORKFLOW_QUERY = "workflowType=machine_learning"
# The runs table's view (MLflow's "share view" feature: an experiment tag named by a key the link carries).
SHARED_VIEW_TAG, RUNS_VIEW = "mlflow.sharedViewState.", "lookalike-runs"


def experiment_id(name: str) -> str:
    c = client()
    found = c.get_experiment_by_name(name)
    if found:
        kind = found.tags.get(EXPERIMENT_KIND_TAG, "")
        if not kind or kind.endswith("_inferred") or kind == "no_inferred_type":  # never override a user's choice
            c.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return found.experiment_id
    # Keep artifacts beside the SQLite store rather than wherever the process happens to start.
    location = None if os.environ.get("MLFLOW_TRACKING_URI") else (PROJECT_ROOT / "mlruns").as_uri()
    return c.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})


class RunsViewState(TypedDict):
    """The state of MLflow's runs table (its saved views' JSON)."""

    selectedColumns: list[str]
    columnOrder: list[str]
    columnWidths: dict[str, int]
    orderByKey: str
    orderByAsc: bool


def runs_view(metric: str) -> RunsViewState:
    """The runs table as an operator reads it: the published champion's held-out ``metric`` and GAUC per night
    (parent runs), each model's own (child runs: expand a night), its difference from the reference and its fit
    time; columns wide enough to read their names."""
    champion = [f"{CHAMPION_PREFIX}{metric}", f"{CHAMPION_PREFIX}{GAUC}"]
    metrics = [*champion, metric, GAUC, f"{metric}{VS_REFERENCE}", FIT_SECONDS]
    tags = ["lookalike.status", "lookalike.champion", "lookalike.dataset"]
    columns = [f"metrics.`{m}`" for m in metrics] + [f"tags.`{t}`" for t in tags]
    return {
        "selectedColumns": columns,
        "columnOrder": ["duration", *columns],  # the Duration column keeps its place before them
        "columnWidths": {c: max(100, 8 * len(c.split("`")[1]) + 24) for c in columns},
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
    }


def ensure_runs_view(experiment: str, metric: str) -> None:
    """Save ``runs_view`` on the experiment as MLflow's saved view "Operator view" (its Views list; the tag holds
    ``{name, createdAt, updatedAt, state}``, the state as JSON text), rewritten only when it changes."""
    import json
    import time

    c = client()
    exp = experiment_id(experiment)
    state = json.dumps(runs_view(metric), sort_keys=True)
    current = c.get_experiment(exp).tags.get(SHARED_VIEW_TAG + RUNS_VIEW)
    try:
        saved = json.loads(current) if current else {}
    except ValueError:
        saved = {}
    if saved.get("state") == state:
        return
    now = int(time.time() * 1000)
    envelope = {"name": "Operator view", "createdAt": saved.get("createdAt", now), "updatedAt": now, "state": state}
    c.set_experiment_tag(exp, SHARED_VIEW_TAG + RUNS_VIEW, json.dumps(envelope))


def find_run(experiment: str, tags: dict[str, str], by_id: bool = False) -> str | None:
    """The oldest live run of the experiment (its name, or its id with ``by_id``) carrying every tag of ``tags``;
    None when there is none."""
    c = client()
    if not by_id:
        found = c.get_experiment_by_name(experiment)
        if found is None:
            return None
        experiment = found.experiment_id
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    runs = c.search_runs([experiment], filter_string=query, max_results=1, order_by=["attributes.start_time ASC"])
    return runs[0].info.run_id if runs else None


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value)[:6000]
    return flat


def start_run(
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    start_time: int | None = None,
) -> str:
    """A run; ``start_time`` (ms since the epoch) when the work it tracks began earlier than now."""
    if parent_run_id:
        tags = {**tags, "mlflow.parentRunId": parent_run_id}
    run = client().create_run(experiment_id(experiment), start_time=start_time, run_name=run_name, tags=tags)
    return run.info.run_id


def log_params(run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, v) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client().log_batch(run_id, params=items[i : i + 100])


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    import math
    import time

    now = int(time.time() * 1000)
    # Six significant digits: what a table of metrics can show (0.917794, not 0.9177944862155388).
    kept = {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(v)}
    items = [Metric(k, float(f"{v:.6g}"), now, step) for k, v in kept.items()]
    for i in range(0, len(items), 1000):
        client().log_batch(run_id, metrics=items[i : i + 1000])


def log_curve(run_id: str, name: str, values: list[float]) -> None:
    """A per-epoch (or per-step) curve, e.g. training loss, as one metric with steps."""
    for step, value in enumerate(values):
        log_metrics(run_id, {name: value}, step)


def log_artifact(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    path = Path(path)
    if path.is_dir():
        client().log_artifacts(run_id, str(path), artifact_path)
    else:
        client().log_artifact(run_id, str(path), artifact_path)


def end_run(run_id: str, status: str = "FINISHED", end_time: int | None = None) -> None:
    client().set_terminated(run_id, status, end_time=end_time)


def ui_base() -> str:
    """The MLflow UI for this tracking store: ``$LOOKALIKE_MLFLOW_UI`` if set, else the tracking server itself
    (an http(s) tracking URI serves the UI), else ``make mlflow-ui``'s address for the local SQLite store."""
    explicit = os.environ.get("LOOKALIKE_MLFLOW_UI")
    if explicit:
        return explicit.rstrip("/")
    uri = tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def run_url(run_id: str, experiment: str) -> str:
    """Where the run opens in the MLflow UI (as a model-training run, not in the GenAI view)."""
    return f"{ui_base()}/#/experiments/{experiment_id(experiment)}/runs/{run_id}?{WORKFLOW_QUERY}"


def runs_table_url(experiment: str) -> str:
    """The experiment's runs table with the columns of ``runs_view``."""
    return f"{ui_base()}/#/experiments/{experiment_id(experiment)}/runs?viewStateShareKey={RUNS_VIEW}&{WORKFLOW_QUERY}"


def ui_is_served() -> bool:
    """Whether a UI for this store is known to be up: a tracking server, or ``$LOOKALIKE_MLFLOW_UI``. The
    local SQLite store has none until ``make mlflow-ui`` starts one."""
    return bool(os.environ.get("LOOKALIKE_MLFLOW_UI")) or tracking_uri().startswith(("http://", "https://"))


def ui_command() -> str:
    """The command that serves a UI for this (local) store: ``make mlflow-ui`` for the project's own."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return "make mlflow-ui"
    return f"mlflow ui --backend-store-uri {tracking_uri()} --host 127.0.0.1 --port 5000"


def run_reference(run_id: str, experiment: str) -> str:
    """The run for a summary: its UI link where a UI is up, else its id and how to open it (no dead link)."""
    if ui_is_served():
        return run_url(run_id, experiment)
    return (
        f"MLflow run `{run_id}` (experiment `{experiment}`, local store {tracking_uri()}): "
        f"`{ui_command()}` serves it at {ui_base()}"
    )


def save_torch_model(module, example, folder: str | Path) -> Path:
    """An MLflow pytorch model folder with its input/output signature, replaced atomically.

    MLflow's pytorch flavour stores the whole module object (pickle): it is our own model, written here and
    read only by MLflow serving; the pipeline itself reloads state dicts with ``weights_only=True``."""
    import shutil
    import tempfile
    from importlib.metadata import version

    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    folder = Path(folder)
    with torch.no_grad():
        output = module(torch.as_tensor(example)).numpy()
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-")) / "model"
    # Requirements given, not inferred: MLflow would warn (twice per model) that the CPU wheel's local version
    # label (2.13.0+cpu) is dropped; this is the same pin without the warning.
    requirements = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"cloudpickle=={version('cloudpickle')}",
        f"numpy=={np.__version__}",
    ]
    mlflow.pytorch.save_model(
        module, tmp, signature=infer_signature(example, output), input_example=example, pip_requirements=requirements
    )
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    shutil.rmtree(tmp.parent, ignore_errors=True)
    return folder
