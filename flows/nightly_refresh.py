"""Nightly audience refresh: prepare data -> train -> evaluate on held-out seeds -> choose the champion
-> score every campaign with it -> publish -> track.

Incremental: models and audiences start from the last published run's, recomputing only users whose
activity changed and campaigns whose seeds did (lookalike_models/incremental.py).

Tasks up to scoring are cached on inputs and code (tasks/caching.py): a re-run after a failure resumes
at the first task that did not complete.
"""

from __future__ import annotations

from prefect import flow

from lookalike_models.config import NightlyConfig, load_config
from tasks.data import fingerprint_inputs, prepare_data, split_campaigns
from tasks.distributed import dask_runner, stage_audiences_dask
from tasks.modeling import evaluate_model, stage_audiences, train_model
from tasks.refresh import previous_refresh, record_refresh
from tasks.registry import register_and_promote
from tasks.reporting import (
    close_mlflow_run,
    evaluate_run,
    log_models_to_mlflow,
    log_run_artifacts,
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
    work, evaluation, publishing = f"{config.output_root}/work", config.evaluation, config.publish
    mlflow_run = open_mlflow_run(config.experiment, run_id, config.model_dump())
    try:
        fingerprint = fingerprint_inputs(config.data, publishing.exclusions)
        data_dir = prepare_data(config.data, fingerprint, work)
        splits = split_campaigns(data_dir, evaluation, work)  # one per evaluation.split_seeds
        split = splits[0]  # the first split's models are the ones registered and published
        previous_run = previous_published_run(config.output_root)
        previous = previous_refresh(config.output_root, previous_run, data_dir, publishing.incremental)
        trained = {m.name: train_model(m, data_dir, split, work, previous["models"].get(m.name))
                   for m in config.models}
        evaluated = [evaluate_model(m, data_dir, path, seed, trained[m.name] if path == split
                                    else train_model(m, data_dir, path, work), work, evaluation)
                     for seed, path in zip(evaluation.split_seeds, splits) for m in config.models]
        report = evaluate_run(evaluated, data_dir, evaluation, run_dir)
        children = log_models_to_mlflow(mlflow_run, config.experiment, trained, report)
        decision = register_and_promote(children, report, config.selection)
        publisher = decision["champion"] if publishing.model == "champion" else publishing.model
        spec = next(m for m in config.models if m.name == publisher)
        if config.execution.backend == "dask":
            staged = stage_audiences_dask.with_options(task_runner=dask_runner(config.execution))(
                spec, data_dir, split, trained[publisher], publishing.audience_fraction, publishing.exclusions,
                config.execution.shards)
        else:
            staged = stage_audiences(spec, data_dir, split, trained[publisher], work, publishing, previous["staging"])
        record_refresh(run_dir, data_dir, trained, staged, config.models)
        published = publish_audiences(staged["staged"], config.output_root, run_id)
        drift = report_reach_and_drift(evaluated, publisher, data_dir, evaluation.seed_buckets,
                                       config.output_root, run_id, previous_run, run_dir, mlflow_run)
        log_run_artifacts(mlflow_run, report, run_dir, data_dir, published, decision)
        failed = {f"{s['model']}/{cid}": why for s in [*evaluated, staged] for cid, why in s["failed"].items()}
        summary = post_summary(run_id, run_url(mlflow_run, config.experiment), report, published, failed, decision)
    except BaseException:
        close_mlflow_run(mlflow_run, "FAILED")
        raise
    close_mlflow_run(mlflow_run)
    print(summary)
    return {"run_id": run_id, "mlflow_run_id": mlflow_run, "published": published, "failed": failed,
            "summary": report["summary"], "drift": drift, "data_dir": data_dir, "champion": decision,
            "users_embedded": {name: info.get("users_embedded") for name, info in trained.items()},
            "campaigns_refreshed": staged.get("incremental_campaigns", [])}


if __name__ == "__main__":
    nightly_refresh()
