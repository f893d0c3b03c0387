"""Nightly audience refresh: prepare data -> train -> candidates & scores -> evaluate -> publish."""

from __future__ import annotations

from prefect import flow

from lookalike_models.config import NightlyConfig, load_config
from tasks.data import prepare_data, split_campaigns
from tasks.modeling import score_model, train_model
from tasks.reporting import (
    close_mlflow_run,
    evaluate_run,
    log_run_to_mlflow,
    open_mlflow_run,
    post_summary,
    previous_published_run,
    publish_audiences,
    report_reach_and_drift,
    start_run_folder,
)
from tasks.tracking import run_url


@flow(name="nightly-refresh")
def nightly_refresh(config: NightlyConfig = load_config()) -> dict:  # noqa: B008 (a form default for the UI)
    run_id, run_dir = start_run_folder(config.output_root)
    mlflow_run = open_mlflow_run(config.experiment, run_id, config.model_dump())
    try:
        data_dir = prepare_data(config.data, run_dir)
        split = split_campaigns(data_dir, config.evaluation, run_dir)
        trained = {m.name: train_model(m, data_dir, split, run_dir) for m in config.models}
        publishing = config.publish
        scored = [score_model(m, data_dir, split, trained[m.name], run_dir, config.evaluation.audience_fractions,
                              config.evaluation.seed_buckets,
                              publishing.audience_fraction if m.name == publishing.model else None,
                              publishing.exclusions)
                  for m in config.models]
        report = evaluate_run(scored, data_dir, config.evaluation.audience_fractions, run_dir)
        previous_run = previous_published_run(config.output_root)
        staged = next(s["staged"] for s in scored if s["model"] == publishing.model)
        published = publish_audiences(staged, config.output_root, run_id)
        drift = report_reach_and_drift(scored, publishing.model, data_dir, config.evaluation.seed_buckets,
                               config.output_root, run_id, previous_run, run_dir, mlflow_run)
        log_run_to_mlflow(mlflow_run, config.experiment, trained, report, run_dir, data_dir)
        failed = {f"{s['model']}/{cid}": why for s in scored for cid, why in s["failed"].items()}
        summary = post_summary(run_id, run_url(mlflow_run, config.experiment), report, published, failed)
    except BaseException:
        close_mlflow_run(mlflow_run, "FAILED")
        raise
    close_mlflow_run(mlflow_run)
    print(summary)
    return {"run_id": run_id, "mlflow_run_id": mlflow_run, "published": published, "failed": failed,
            "summary": report["summary"], "drift": drift}


if __name__ == "__main__":
    nightly_refresh()
