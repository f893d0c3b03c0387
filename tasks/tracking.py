"""MLflow bookkeeping through an explicit client: thread-safe (tasks may run in threads) and never
depending on a global "active run". One parent run per flow run, one child run per model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI if set (a server, Databricks...), else a local SQLite store in the project."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def client() -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient(tracking_uri())


def experiment_id(name: str) -> str:
    c = client()
    found = c.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    # Keep artifacts beside the SQLite store rather than wherever the process happens to start.
    location = None if os.environ.get("MLFLOW_TRACKING_URI") else (PROJECT_ROOT / "mlruns").as_uri()
    return c.create_experiment(name, artifact_location=location)


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value)[:6000]
    return flat


def start_run(experiment: str, run_name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str:
    if parent_run_id:
        tags = {**tags, "mlflow.parentRunId": parent_run_id}
    run = client().create_run(experiment_id(experiment), run_name=run_name, tags=tags)
    return run.info.run_id


def log_params(run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, v) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client().log_batch(run_id, params=items[i : i + 100])


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    import math
    import time

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and not math.isnan(v)]
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


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status)


def ui_base() -> str:
    """The MLflow UI for this tracking store: ``$LOOKALIKE_MLFLOW_UI`` if set, else the tracking server itself
    (an http(s) tracking URI serves the UI), else ``make mlflow-ui``'s address for the local SQLite store."""
    explicit = os.environ.get("LOOKALIKE_MLFLOW_UI")
    if explicit:
        return explicit.rstrip("/")
    uri = tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def run_url(run_id: str, experiment: str) -> str:
    """Where the run opens in the MLflow UI."""
    return f"{ui_base()}/#/experiments/{experiment_id(experiment)}/runs/{run_id}"


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

    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    folder = Path(folder)
    with torch.no_grad():
        output = module(torch.as_tensor(example)).numpy()
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-")) / "model"
    mlflow.pytorch.save_model(module, tmp, signature=infer_signature(example, output), input_example=example)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    shutil.rmtree(tmp.parent, ignore_errors=True)
    return folder
