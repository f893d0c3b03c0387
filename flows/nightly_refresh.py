"""Nightly audience refresh: prepare data -> train -> evaluate on held-out seeds -> choose the champion
-> score every campaign with it -> publish -> promote the champion -> track. One run per output root at a
time (a lock file; a second run stops with a message naming the first).

Incremental: models and audiences start from the last published run's, recomputing only users whose
activity changed and campaigns whose seeds did (lookalike_models/incremental.py).

Tasks up to scoring are cached on inputs and code (tasks/caching.py): a re-run after a failure resumes
at the first task that did not complete.
"""

from __future__ import annotations

from prefect import flow

from flows.sharded_refresh import refresh_sharded
from lookalike_models.config import NightlyConfig, load_config, with_file_defaults
from lookalike_models.locking import exclusive_run
from lookalike_models.sources import data_set_key
from tasks.data import fingerprint_inputs, prepare_data, skipped_campaigns, split_campaigns
from tasks.distributed import stage_audiences_dask
from tasks.mlflow_logging import log_models_to_mlflow, log_run_artifacts
from tasks.mlflow_runs import abandon_mlflow_run, close_mlflow_run, open_mlflow_run, tracked_settings
from tasks.modeling import evaluate_model, stage_audiences, train_model
from tasks.publishing import previous_published_run, publish_audiences, remove_run_leftovers, run_audiences_dir
from tasks.reach_and_drift import report_reach_and_drift
from tasks.refresh import previous_refresh, prune_refresh_state, record_refresh
from tasks.registry import claim_registered_model, decide_champion, promote_champion
from tasks.results import NightlyResult
from tasks.run_folders import current_flow_run, start_run_folder
from tasks.run_report import evaluate_run
from tasks.run_summary import post_summary, run_status
from tasks.tracking import run_reference


@flow(name="nightly-refresh")
def nightly_refresh(config: NightlyConfig = load_config()) -> NightlyResult:  # noqa: B008 (a form default for the UI)
    config = with_file_defaults(config)  # a run given partial parameters takes the rest from conf/nightly.yaml
    with exclusive_run(config.output_root, "nightly-refresh"):  # one run per output root; a second one stops here
        if config.data.kind == "sharded" and config.execution.backend == "dask":
            return refresh_sharded(config)  # no process holds the whole data (flows/sharded_refresh.py)
        return refresh(config)


def refresh(config: NightlyConfig) -> NightlyResult:
    remove_run_leftovers(f"{config.output_root}/audiences")  # of runs killed while publishing (we hold the lock)
    run = open_mlflow_run(
        config.experiment, start_run_folder(config.output_root), tracked_settings(config), config.output_root
    )
    run_id, run_dir, mlflow_run = run.run_id, run.run_dir, run.mlflow_run
    work, evaluation, publishing = f"{config.output_root}/work", config.evaluation, config.publish
    data_set = data_set_key(config.data)
    try:
        # Before anything trains; one registered model (and champion) per output root and data set.
        registered_model = claim_registered_model(config.selection, config.output_root, data_set)
        fingerprint = fingerprint_inputs(config.data, publishing.exclusions)
        data_dir = prepare_data(config.data, fingerprint, work)
        skipped = skipped_campaigns(data_dir)
        splits = split_campaigns(data_dir, evaluation, work)  # one per evaluation.split_seeds
        split = splits[0]  # the first split's models are the ones registered and published
        previous_run = previous_published_run(config.output_root)
        previous = previous_refresh(config.output_root, previous_run, data_dir, publishing.incremental, data_set)
        trained, evaluated = {}, []
        for m in config.models:  # each model is evaluated before the next one trains: fits never share memory
            trained[m.name] = train_model(m, data_dir, split, work, previous.models.get(m.name))
            evaluated.append(evaluate_model(trained[m.name], work, evaluation))
        evaluated += [
            evaluate_model(train_model(m, data_dir, s, work), work, evaluation)
            for s in splits[1:]
            for m in config.models
        ]
        report = evaluate_run(evaluated, data_dir, evaluation, run_dir, split)
        model_runs = log_models_to_mlflow(mlflow_run, config.experiment, trained, report)
        decision = decide_champion(model_runs, report, config.selection, trained, registered_model, publishing.model)
        publisher = trained[decision.champion if publishing.model == "champion" else publishing.model]
        if config.execution.backend == "dask":
            staged = stage_audiences_dask(publisher, publishing, config.execution)
        else:
            staged = stage_audiences(publisher, work, publishing, previous.staging)
        record_refresh(run_dir, data_dir, trained, staged, config.models, data_set)
        published = publish_audiences(staged.staged, config.output_root, run_id)
        decision = promote_champion(decision, config.selection, published)  # only once its audiences are live
        prune_refresh_state(work, published, [model.model_dir for model in trained.values()])
        drift_from = None if previous.other_data_set else previous_run  # never compare two data sets
        drift = report_reach_and_drift(evaluated, publisher.name, data_dir, evaluation, run, drift_from)
        failed = {f"{s.model}/{cid}": why for s in [*evaluated, staged] for cid, why in s.failed.items()}
        log_run_artifacts(mlflow_run, report, run_dir, data_dir, published, decision, failed, skipped)
        summary = post_summary(
            run_id,
            run_reference(mlflow_run, config.experiment),
            report,
            published,
            failed,
            decision,
            skipped,
            run_audiences_dir(config.output_root, run_id),
        )
    except BaseException as exc:  # an error, Ctrl-C or SIGTERM: MLflow FAILED or KILLED, no Prefect call needed
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
        drift=drift,
        data_dir=data_dir,
        champion=decision,
        users_embedded={name: model.users_embedded for name, model in trained.items()},
        campaigns_refreshed=staged.incremental_campaigns,
        audiences_dir=run_audiences_dir(config.output_root, run_id) if published else None,
        flow_run=current_flow_run(),
    )


if __name__ == "__main__":
    nightly_refresh()
