"""What a night leaves in MLflow besides its parent run's parameters: one child run per model (its held-out
metrics, comparison with the reference, curves and files) and, on the parent run, the report, id mappings,
published audiences, the champion's metrics and the campaigns that failed or were skipped."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task

from lookalike_models.evaluation import is_activity_column
from lookalike_models.metric_names import CHAMPION_PREFIX, FIT_SECONDS, GAUC, RECALL_AT, VS_REFERENCE
from lookalike_models.scorers import REFRESH_STATE
from tasks import tracking
from tasks.caching import file_fingerprint, stable_hash
from tasks.mlflow_runs import end_status
from tasks.results import ChampionDecision, ComparisonRow, RunReport, TrainedModel
from tasks.run_summary import run_status

# Tags that let a later run find files already in the store instead of logging them again (a cached night).
FIT_TAG, FILES_TAG, FILES_RUN_TAG = "lookalike.fit_id", "lookalike.model_files", "lookalike.model_files_run"
IDS_TAG, IDS_RUN_TAG = "lookalike.id_mapping", "lookalike.id_mapping_run"


@task
def log_models_to_mlflow(
    mlflow_run: str, experiment: str, trained: dict[str, TrainedModel], report: RunReport
) -> dict[str, str]:
    """One child run per model, spanning its fit (the run starts and ends with the training, so its Duration
    is the fit's): held-out metrics (overall and per seed bucket), the difference from the reference with its
    95% CI (``<metric>.vs_ref``, ``_low``, ``_high``), training curves and the model's files, without the next
    night's ``refresh_state/`` caches. A fit an earlier run already logged (a cached night) is not logged again:
    its child run names the run that holds the files (tag ``lookalike.model_files_run``). Returns model name ->
    the run holding its files (what the registry registers)."""
    holders = {}
    for model, info in trained.items():
        fit = stable_hash(info)
        earlier = tracking.find_run(experiment, {FIT_TAG: fit, FILES_TAG: "logged"})
        end = info.fit_started_at + info.fit_seconds if info.fit_started_at else time.time()
        tags = {"model": model, FIT_TAG: fit}
        rows = [r for r in report.comparison if r.model == model and r.seed_bucket == "all"]
        if rows:
            tags["lookalike.reference"] = rows[0].reference
        if earlier:
            tags[FILES_RUN_TAG] = earlier
        start = int((end - info.fit_seconds) * 1000)
        child = tracking.start_run(experiment, model, tags, parent_run_id=mlflow_run, start_time=start)
        try:
            log_model_run(child, model, info, report, rows, earlier)
        except BaseException as exc:  # never leave a child RUNNING (an interrupt, a full disk)
            tracking.end_run(child, end_status(exc))
            raise
        tracking.end_run(child, end_time=max(int(end * 1000), start))
        holders[model] = earlier or child
    return holders


def log_model_run(
    child: str, model: str, info: TrainedModel, report: RunReport, rows: list[ComparisonRow], earlier: str | None
):
    """A model's child run: its params, held-out metrics (overall and per bucket), the comparison with the
    reference, training curves, and its files unless an earlier run (``earlier``) already holds them."""
    tracking.log_params(child, info.params)
    for row in (r for r in report.summary if r.model == model):
        metrics = {k: v for k, v in row.metrics.items() if isinstance(v, float)}
        # MLflow metric names allow no '<' or '>': '<50' -> 'lt50', '>=200' -> 'ge200'.
        bucket = row.seed_bucket.replace(">=", "ge").replace("<", "lt")
        suffix = "" if bucket == "all" else f".bucket_{bucket}"
        tracking.log_metrics(child, {f"{k}{suffix}": v for k, v in metrics.items()})
    for row in rows:  # the paired comparison with the reference: difference of means and its 95% CI
        name = f"{row.metric}{VS_REFERENCE}"
        tracking.log_metrics(child, {name: row.diff, f"{name}_low": row.ci_low, f"{name}_high": row.ci_high})
    tracking.log_metrics(child, {FIT_SECONDS: info.fit_seconds})
    for curve, values in info.history.items():
        tracking.log_curve(child, curve, values)
    if not earlier and Path(info.model_dir).exists():
        log_model_files(child, Path(info.model_dir))
        tracking.client().set_tag(child, FILES_TAG, "logged")


def log_model_files(run_id: str, folder: Path, artifact_path: str = "model") -> None:
    """A model folder's files under ``artifact_path``, without ``refresh_state/`` folders at any depth (the next
    night's cache, e.g. ~100 MB of Gram matrix inside an ensemble's item_ridge member)."""
    for part in sorted(folder.iterdir()):
        if part.name == REFRESH_STATE:
            continue
        if part.is_file():
            tracking.log_artifact(run_id, part, artifact_path)
        elif any(p.name == REFRESH_STATE for p in part.rglob("*")):
            log_model_files(run_id, part, f"{artifact_path}/{part.name}")
        else:
            tracking.log_artifact(run_id, part, f"{artifact_path}/{part.name}")


@task
def log_run_artifacts(
    mlflow_run: str,
    report: RunReport,
    run_dir: str,
    data_dir: str,
    published: dict[str, str],
    decision: ChampionDecision,
    failed: dict[str, str] | None = None,
    skipped: dict[str, str] | None = None,
) -> None:
    """The run's report files, id mappings and published audiences, the champion decision, and every
    campaign that failed or was skipped (counts as metrics, reasons as ``report/campaign_problems.json``)."""
    import json

    from lookalike_models.io import write_bytes_atomic

    failed, skipped = failed or {}, skipped or {}
    for path in report.files:
        tracking.log_artifact(mlflow_run, path, "report")
    for table in ("metrics_summary.csv", "comparison_to_reference.csv"):
        if (Path(run_dir) / "report" / table).exists():
            tracking.log_artifact(mlflow_run, Path(run_dir) / "report" / table, "report")
    client = tracking.client()
    # A sharded night's plan holds no id mappings (the shards' files are the mapping): nothing to log then.
    mappings = [p for name in ("user_index.parquet", "item_index.parquet") if (p := Path(data_dir) / name).exists()]
    ids = stable_hash(file_fingerprint(mappings))
    experiment = client.get_run(mlflow_run).info.experiment_id
    earlier = tracking.find_run(experiment, {IDS_TAG: ids}, by_id=True)
    if earlier:  # the same encoded data as an earlier run's: its mappings are there already
        client.set_tag(mlflow_run, IDS_RUN_TAG, earlier)
    else:
        for path in mappings:
            tracking.log_artifact(mlflow_run, path, "id_mapping")
        client.set_tag(mlflow_run, IDS_TAG, ids)
    for cid, path in published.items():
        tracking.log_artifact(mlflow_run, path, f"audiences/campaign_id={cid}")
    problems = write_bytes_atomic(
        json.dumps({"failed": failed, "skipped": skipped}, indent=1).encode(),
        Path(run_dir) / "report" / "campaign_problems.json",
    )
    tracking.log_artifact(mlflow_run, problems, "report")
    tracking.log_metrics(
        mlflow_run,
        {
            "campaigns_published": float(len(published)),
            "campaigns_failed": float(len(failed)),
            "campaigns_skipped": float(len(skipped)),
        }
        | champion_metrics(report, decision.champion),
    )
    client.set_tag(mlflow_run, "lookalike.status", run_status(published, failed, skipped))
    client.set_tag(mlflow_run, "lookalike.champion", decision.champion)
    client.set_tag(mlflow_run, "lookalike.champion_decision", decision.reason)
    if decision.champion in decision.versions:
        version = f"{decision.registered_model} v{decision.versions[decision.champion]}"
        client.set_tag(mlflow_run, "lookalike.champion_version", version)


def champion_metrics(report: RunReport, champion: str) -> dict[str, float]:
    """The champion's held-out recall at every audience size and GAUC as ``champion.<metric>``: one point per
    night on the parent run, so the experiment's charts follow the published model's quality over nights."""
    overall = next((r.metrics for r in report.overall() if r.model == champion), {})
    return {
        f"{CHAMPION_PREFIX}{k}": v
        for k, v in overall.items()
        if isinstance(v, float) and (k.startswith(RECALL_AT) or k == GAUC) and not is_activity_column(k)
    }
