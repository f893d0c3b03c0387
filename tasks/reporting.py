"""Tasks that turn per-campaign metrics into the run's report, and publish the chosen audiences."""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path

import polars as pl
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from lookalike_models.config import EvaluationConfig
from lookalike_models.evaluation import audience_sizes, metric_columns, plot_precision_recall, summarize
from lookalike_models.io import copy_file_atomic, write_parquet_atomic
from lookalike_models.protocol import compare_to_reference
from lookalike_models.publishing import audience_path, mark_latest
from lookalike_models.scorers import REFRESH_STATE
from tasks import tracking
from tasks.caching import file_fingerprint, stable_hash
from tasks.data import load_data
from tasks.results import ChampionDecision, ModelEvaluation, RunFolder, TrainedModel
from tasks.retrying import retry_on_io_error


@task
def evaluate_run(scored: list[ModelEvaluation], data_dir: str, evaluation: EvaluationConfig, run_dir: str) -> dict:
    """Metrics table, summary by seed bucket (each campaign's mean over the splits), every model against
    the reference with a paired 95% bootstrap CI over campaigns, and the precision/recall plot."""
    frames = [pl.read_parquet(s.metrics_path) for s in scored if s.metrics_path]
    if not frames:
        get_run_logger().warning("no campaign could be evaluated")
        return {"summary": [], "comparison": [], "files": []}
    per_campaign = pl.concat(frames, how="diagonal_relaxed")
    summary = summarize(per_campaign)
    reports = Path(run_dir) / "report"
    sizes = audience_sizes(load_data(data_dir).n_users, evaluation.audience_fractions)
    files = [
        write_parquet_atomic(per_campaign, reports / "metrics_per_campaign.parquet"),
        write_parquet_atomic(summary, reports / "metrics_summary.parquet"),
        plot_precision_recall(summary, sizes, reports / "precision_recall_vs_audience_size.png"),
    ]
    (reports / "metrics_summary.csv").write_text(summary.write_csv())
    comparison = pl.DataFrame()
    if evaluation.reference and evaluation.reference in set(per_campaign["model"]):
        comparison = compare_to_reference(per_campaign, evaluation.reference, metric_columns(per_campaign))
        files.append(write_parquet_atomic(comparison, reports / "comparison_to_reference.parquet"))
        (reports / "comparison_to_reference.csv").write_text(comparison.write_csv())
    return {"summary": summary.to_dicts(), "comparison": comparison.to_dicts(), "files": [str(f) for f in files]}


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_on_io_error)
def publish_audiences(staged: dict[str, str], output_root: str, run_id: str) -> dict:
    """Move the staged audiences into the run-keyed, campaign-partitioned layout, then mark LATEST.
    Each file is renamed into place, so readers never see a partial audience."""
    root = Path(output_root) / "audiences"
    published = {}
    for cid, path in sorted(staged.items()):
        published[cid] = str(copy_file_atomic(path, audience_path(root, run_id, cid)))
    if published:
        mark_latest(root, run_id)
    get_run_logger().info("published %d audiences under %s", len(published), root / f"run_id={run_id}")
    return published


# Tags that let a later run find files already in the store instead of logging them again (a cached night).
FIT_TAG, FILES_TAG, FILES_RUN_TAG = "lookalike.fit_id", "lookalike.model_files", "lookalike.model_files_run"
IDS_TAG, IDS_RUN_TAG = "lookalike.id_mapping", "lookalike.id_mapping_run"


@task
def log_models_to_mlflow(
    mlflow_run: str, experiment: str, trained: dict[str, TrainedModel], report: dict
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
        rows = [r for r in report.get("comparison", []) if r["model"] == model and r["seed_bucket"] == "all"]
        if rows:
            tags["lookalike.reference"] = rows[0]["reference"]
        if earlier:
            tags[FILES_RUN_TAG] = earlier
        start = int((end - info.fit_seconds) * 1000)
        child = tracking.start_run(experiment, model, tags, parent_run_id=mlflow_run, start_time=start)
        tracking.log_params(child, info.params)
        for row in (r for r in report["summary"] if r["model"] == model):
            metrics = {k: v for k, v in row.items() if isinstance(v, float)}
            # MLflow metric names allow no '<' or '>': '<50' -> 'lt50', '>=200' -> 'ge200'.
            bucket = row["seed_bucket"].replace(">=", "ge").replace("<", "lt")
            suffix = "" if bucket == "all" else f".bucket_{bucket}"
            tracking.log_metrics(child, {f"{k}{suffix}": v for k, v in metrics.items()})
        for row in rows:  # the paired comparison with the reference: difference of means and its 95% CI
            name = row["metric"]
            diff = {f"{name}.vs_ref": row["diff"], f"{name}.vs_ref_low": row["ci_low"]}
            tracking.log_metrics(child, diff | {f"{name}.vs_ref_high": row["ci_high"]})
        tracking.log_metrics(child, {"fit_seconds": info.fit_seconds})
        for curve, values in info.history.items():
            tracking.log_curve(child, curve, values)
        if not earlier and Path(info.model_dir).exists():
            log_model_files(child, Path(info.model_dir))
            tracking.client().set_tag(child, FILES_TAG, "logged")
        tracking.end_run(child, end_time=max(int(end * 1000), start))
        holders[model] = earlier or child
    return holders


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
    report: dict,
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
    for path in report["files"]:
        tracking.log_artifact(mlflow_run, path, "report")
    for table in ("metrics_summary.csv", "comparison_to_reference.csv"):
        if (Path(run_dir) / "report" / table).exists():
            tracking.log_artifact(mlflow_run, Path(run_dir) / "report" / table, "report")
    client = tracking.client()
    mappings = [Path(data_dir) / name for name in ("user_index.parquet", "item_index.parquet")]
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


def champion_metrics(report: dict, champion: str) -> dict[str, float]:
    """The champion's held-out recall at every audience size and GAUC as ``champion.<metric>``: one point per
    night on the parent run, so the experiment's charts follow the published model's quality over nights."""
    overall = next((r for r in report.get("summary", []) if r["model"] == champion and r["seed_bucket"] == "all"), {})
    return {
        f"champion.{k}": v
        for k, v in overall.items()
        if isinstance(v, float) and (k.startswith("recall_at_") or k == "gauc") and "_act_" not in k
    }


def run_status(published: dict, failed: dict, skipped: dict) -> str:
    """'complete' (every campaign published), 'partial' (some published, some failed or skipped) or 'failed'."""
    if not published:
        return "failed"
    return "partial" if failed or skipped else "complete"


def summary_markdown(
    run_id: str,
    mlflow_url: str,
    report: dict,
    published: dict,
    failed: dict,
    decision: ChampionDecision,
    skipped: dict | None = None,
) -> str:
    skipped = skipped or {}
    status = run_status(published, failed, skipped)
    lines = [
        f"# Look-alike run `{run_id}`: {status}",
        "",
        f"MLflow run: [{mlflow_url}]({mlflow_url})",
        "",
        f"Published audiences: {len(published)} (model `{decision.champion}`: {decision.reason}); "
        f"failed campaigns: {len(failed)}; skipped campaigns (invalid input): {len(skipped)}",
        "",
    ]
    overall = [r for r in report["summary"] if r["seed_bucket"] == "all"]
    if overall:
        keys = [k for k in overall[0] if k.startswith(("precision_at_", "recall_at_"))] + ["gauc"]
        lines += ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for r in overall:
            cells = [f"{r[k]:.4f}" if r[k] is not None else "-" for k in keys]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    lines += comparison_markdown(report.get("comparison", []))
    if failed or skipped:
        lines.append("")
    for key, why in sorted(failed.items()):
        lines.append(f"- failed `{key}`: {why}")
    for cid, why in sorted(skipped.items()):
        lines.append(f"- skipped `{cid}`: {why}")
    return "\n".join(lines)


def comparison_markdown(comparison: list[dict]) -> list[str]:
    """Each model minus the reference, overall, with the paired 95% bootstrap CI over campaigns."""
    rows = [r for r in comparison if r["seed_bucket"] == "all"]
    if not rows:
        return []
    metrics = list(dict.fromkeys(r["metric"] for r in rows if r["metric"].startswith(("recall_at_", "auc"))))
    lines = [
        "",
        f"Minus `{rows[0]['reference']}` on the same campaigns, paired 95% CI "
        f"({rows[0]['campaigns']} campaigns, each averaged over the splits):",
        "",
        "| model | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        cells = {
            r["metric"]: f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
            for r in rows
            if r["model"] == model
        }
        lines.append(f"| {model} | " + " | ".join(cells.get(m, "-") for m in metrics) + " |")
    return lines


def rounded(rows: list[dict], digits: int = 4) -> list[dict]:
    """Table rows as people read them: 0.0175, not 0.017499999999999998."""
    return [{k: round(v, digits) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


@task
def post_summary(
    run_id: str,
    mlflow_url: str,
    report: dict,
    published: dict,
    failed: dict,
    decision: ChampionDecision,
    skipped: dict | None = None,
) -> str:
    """The run at a glance in the Prefect UI: metrics table plus a markdown summary with the MLflow link,
    the run's status and every failed or skipped campaign with its reason."""
    overall = [r for r in report["summary"] if r["seed_bucket"] == "all"]
    if overall:
        create_table_artifact(rounded(overall), key="audience-metrics", description=f"Held-out metrics of run {run_id}")
    text = summary_markdown(run_id, mlflow_url, report, published, failed, decision, skipped)
    create_markdown_artifact(text, key="audience-run-summary", description=f"Run {run_id}")
    return text


@task
def start_run_folder(output_root: str) -> tuple[str, str]:
    """A run id that sorts by time and names the Prefect flow run, and its folder."""
    from datetime import datetime

    from prefect.runtime import flow_run

    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{str(flow_run.id or 'local')[:8]}"
    run_dir = Path(output_root) / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_id, str(run_dir)


@task
def open_mlflow_run(experiment: str, run_id: str, config: dict, locked_root: str | None = None) -> str:
    """The flow run's parent MLflow run. ``locked_root``: the output root this flow run holds the lock of;
    RUNNING runs left on it by killed flow runs are marked KILLED (none can be alive: the lock is ours)."""
    from prefect.runtime import deployment, flow_run

    tags = {
        "prefect.flow_run_id": str(flow_run.id),
        "prefect.flow_run_name": str(flow_run.name),
        "prefect.deployment": str(deployment.name or "none"),
        "lookalike.run_id": run_id,
    }
    if locked_root:
        tags["lookalike.output_root"] = str(Path(locked_root).resolve())
    if "data" in config:
        tags["lookalike.dataset"] = dataset_label(config["data"])
    with tracking_store_initialisation():
        mlflow_run = tracking.start_run(experiment, run_id, tags)
    metric = config.get("selection", {}).get("metric", "recall_at_5pct")
    tracking.ensure_runs_view(experiment, metric)
    tracking.log_params(mlflow_run, config)
    if locked_root:
        close_stale_runs(experiment, tags["lookalike.output_root"], mlflow_run)
    return mlflow_run


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
    """Mark RUNNING parent runs of ``output_root`` other than ``current`` as KILLED; returns their ids."""
    client = tracking.client()
    found = client.get_experiment_by_name(experiment)
    runs = (
        client.search_runs(
            [found.experiment_id],
            filter_string=(f"attributes.status = 'RUNNING' and tags.`lookalike.output_root` = '{output_root}'"),
        )
        if found
        else []
    )
    stale = [r.info.run_id for r in runs if r.info.run_id != current]
    for run in stale:
        client.set_tag(run, "lookalike.closed_by", f"run {current}: its flow run died while it was RUNNING")
        client.set_terminated(run, "KILLED")
    if stale:
        get_run_logger().warning("marked %d MLflow runs of dead flow runs KILLED: %s", len(stale), ", ".join(stale))
    return stale


@task
def close_mlflow_run(mlflow_run: str, status: str = "FINISHED") -> None:
    tracking.end_run(mlflow_run, status)


@task
def previous_published_run(output_root: str) -> str | None:
    """The run whose audiences are live now (read before this run moves LATEST)."""
    from lookalike_models.publishing import read_latest

    return read_latest(Path(output_root) / "audiences")


@task
def report_reach_and_drift(
    scored: list[ModelEvaluation],
    publish_model: str,
    data_dir: str,
    evaluation: EvaluationConfig,
    run: RunFolder,
    previous_run: str | None,
) -> dict:
    """Expected precision per audience size for each campaign, and drift since the previous run."""
    from lookalike_models.reach import drift_between_runs, reach_table

    logger = get_run_logger()
    data = load_data(data_dir)
    reports = Path(run.run_dir) / "report"
    frames = [pl.read_parquet(s.metrics_path) for s in scored if s.model == publish_model and s.metrics_path]
    result: dict = {}
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
