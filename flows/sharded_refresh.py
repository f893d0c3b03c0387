"""The nightly refresh on the sharded data plane (``data.kind: sharded`` with ``execution.backend: dask``):
plan -> split -> per model: fit on the shards, evaluate on the shards -> choose the champion -> stage its
audiences from the shards -> publish -> promote -> track. The same registry, MLflow runs, report and
publishing as ``nightly_refresh``; no process holds the whole data. Not (yet) on this path: the incremental
refresh and the reach/drift report (both read every user's rows).
"""

from __future__ import annotations

from lookalike_models.config import NightlyConfig
from lookalike_models.sources import data_set_key
from tasks.dask_session import cluster_session
from tasks.data import skipped_campaigns, split_campaigns
from tasks.mlflow_logging import log_models_to_mlflow, log_run_artifacts
from tasks.mlflow_runs import abandon_mlflow_run, close_mlflow_run, open_mlflow_run, tracked_settings
from tasks.publishing import publish_audiences, remove_run_leftovers, run_audiences_dir
from tasks.registry import claim_registered_model, decide_champion, promote_champion
from tasks.results import NightlyResult
from tasks.run_folders import current_flow_run, start_run_folder
from tasks.run_report import evaluate_run
from tasks.run_summary import post_summary, run_status
from tasks.sharded_night import (
    evaluate_sharded_model,
    forget_fitted,
    plan_sharded_data,
    stage_sharded_audiences,
    train_sharded_model,
)
from tasks.tracking import run_reference


def refresh_sharded(config: NightlyConfig) -> NightlyResult:
    with cluster_session(config.execution):  # every task below reaches the same cluster through one client
        return sharded_night(config)


def sharded_night(config: NightlyConfig) -> NightlyResult:
    remove_run_leftovers(f"{config.output_root}/audiences")
    run = open_mlflow_run(
        config.experiment, start_run_folder(config.output_root), tracked_settings(config), config.output_root
    )
    run_id, run_dir, mlflow_run = run.run_id, run.run_dir, run.mlflow_run
    work, evaluation, publishing, execution = (
        f"{config.output_root}/work",
        config.evaluation,
        config.publish,
        config.execution,
    )
    try:
        registered_model = claim_registered_model(config.selection, config.output_root, data_set_key(config.data))
        plan = plan_sharded_data(config.data, work)
        skipped = skipped_campaigns(plan)
        splits = split_campaigns(plan, evaluation, work)
        trained, evaluated = {}, []
        for split in splits:  # the first split's models are the ones registered and published
            for m in config.models:
                model = train_sharded_model(m, plan, split, execution)
                evaluated.append(evaluate_sharded_model(model, evaluation, execution))
                trained.setdefault(m.name, model)
            if split is not splits[0]:
                forget_fitted([model.model_dir for model in trained.values()])
        report = evaluate_run(evaluated, plan, evaluation, run_dir, splits[0])
        model_runs = log_models_to_mlflow(mlflow_run, config.experiment, trained, report)
        decision = decide_champion(model_runs, report, config.selection, trained, registered_model, publishing.model)
        publisher = trained[decision.champion if publishing.model == "champion" else publishing.model]
        forget_fitted([publisher.model_dir])  # the other models' reduced state is no longer needed
        staged = stage_sharded_audiences(publisher, publishing, execution)
        published = publish_audiences(staged.staged, config.output_root, run_id)
        decision = promote_champion(decision, config.selection, published)
        failed = {f"{s.model}/{cid}": why for s in [*evaluated, staged] for cid, why in s.failed.items()}
        log_run_artifacts(mlflow_run, report, run_dir, plan, published, decision, failed, skipped)
        audiences_dir = run_audiences_dir(config.output_root, run_id)
        summary = post_summary(
            run_id,
            run_reference(mlflow_run, config.experiment),
            report,
            published,
            failed,
            decision,
            skipped,
            audiences_dir,
        )
    except BaseException as exc:
        abandon_mlflow_run(mlflow_run, exc)
        raise
    close_mlflow_run(mlflow_run)
    print(summary)
    return NightlyResult(
        run_id=run_id,
        mlflow_run_id=mlflow_run,
        published=published,
        failed=failed,
        skipped=skipped,
        status=run_status(published, failed, skipped),
        summary=report.summary,
        drift={},
        data_dir=plan,
        champion=decision,
        users_embedded={name: model.users_embedded for name, model in trained.items()},
        campaigns_refreshed=[],
        audiences_dir=audiences_dir if published else None,
        flow_run=current_flow_run(),
    )
