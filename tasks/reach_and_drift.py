"""After publishing: the expected precision per audience size for each campaign (reach), and how much the
published audiences moved since the previous run (drift)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from lookalike_models.config import EvaluationConfig
from lookalike_models.io import write_parquet_atomic
from tasks import tracking
from tasks.data import load_data
from tasks.results import ModelEvaluation, RunFolder
from tasks.run_summary import rounded


@task
def report_reach_and_drift(
    scored: list[ModelEvaluation],
    publish_model: str,
    data_dir: str,
    evaluation: EvaluationConfig,
    run: RunFolder,
    previous_run: str | None,
) -> dict[str, float | int]:
    """Expected precision per audience size for each campaign, and drift since the previous run. Returns
    ``reach_rows`` (rows of ``report/reach.parquet``) and the mean ``drift.<measure>`` over campaigns, each
    where there was something to measure."""
    from lookalike_models.reach import drift_between_runs, reach_table

    logger = get_run_logger()
    data = load_data(data_dir)
    reports = Path(run.run_dir) / "report"
    frames = [pl.read_parquet(s.metrics_path) for s in scored if s.model == publish_model and s.metrics_path]
    result: dict[str, float | int] = {}
    if frames:
        reach = reach_table(
            frames[0],
            publish_model,
            {c: s.size for c, s in data.campaigns.items()},
            evaluation.seed_buckets,
            data.n_users,
        )
        tracking.log_artifact(run.mlflow_run, write_parquet_atomic(reach, reports / "reach.parquet"), "report")
        result["reach_rows"] = reach.height
    if previous_run and previous_run != run.run_id:
        drift = drift_between_runs(Path(run.output_root) / "audiences", previous_run, run.run_id)
        if drift.height:
            write_parquet_atomic(drift, reports / "drift.parquet")
            means = {f"drift.{k}": float(drift[k].mean()) for k in ("overlap_jaccard", "churn_in", "churn_out")}
            tracking.log_metrics(run.mlflow_run, means)
            create_table_artifact(
                rounded(drift.to_dicts()),
                key="audience-drift",
                description=f"Audience drift {previous_run} -> {run.run_id}",
            )
            logger.info(
                "drift vs %s over %d campaigns: overlap %.3f, churn in %.3f",
                previous_run,
                drift.height,
                means["drift.overlap_jaccard"],
                means["drift.churn_in"],
            )
            result |= means
    return result
