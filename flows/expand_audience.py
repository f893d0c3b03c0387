"""Ad-hoc expansion of one campaign, or of a seed list typed into the Prefect UI."""

from __future__ import annotations

from prefect import flow

from lookalike_models.config import ExpandConfig, load_config, with_file_defaults
from lookalike_models.locking import exclusive_run
from tasks.data import fingerprint_inputs, prepare_data
from tasks.mlflow_runs import abandon_mlflow_run, close_mlflow_run, open_mlflow_run, tracked_settings
from tasks.modeling import expand_one
from tasks.publishing import publish_audiences, remove_run_leftovers
from tasks.results import ExpandResult
from tasks.run_folders import current_flow_run, start_run_folder


@flow(name="expand-audience")
def expand_audience(config: ExpandConfig = load_config(None, ExpandConfig, "expand.yaml")) -> ExpandResult:  # noqa: B008
    config = with_file_defaults(config, "expand.yaml")  # partial parameters take the rest from conf/expand.yaml
    adhoc_root = f"{config.output_root}/adhoc"
    with exclusive_run(adhoc_root, "expand-audience"):  # one ad-hoc run at a time per output root
        remove_run_leftovers(f"{adhoc_root}/audiences")  # of ad-hoc runs killed while publishing
        run = open_mlflow_run(
            config.experiment, start_run_folder(config.output_root), tracked_settings(config), adhoc_root
        )
        run_id, mlflow_run = run.run_id, run.mlflow_run
        try:
            data_dir = prepare_data(config.data, fingerprint_inputs(config.data, []), f"{config.output_root}/work")
            staged = expand_one(
                config.model,
                data_dir,
                config.campaign_id,
                config.seed_user_ids,
                config.name,
                config.audience_fraction,
                run.run_dir,
                config.data.min_seed_match_rate,
            )
            published = publish_audiences(staged.staged, adhoc_root, run_id)
        except BaseException as exc:  # an error, Ctrl-C or SIGTERM
            abandon_mlflow_run(mlflow_run, exc)
            raise
        close_mlflow_run(mlflow_run)
    return ExpandResult(
        run_id=run_id, published=published, mlflow_run_id=mlflow_run, flow_run=current_flow_run(), notes=staged.notes
    )


if __name__ == "__main__":
    expand_audience()
