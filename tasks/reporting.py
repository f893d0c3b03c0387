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
from lookalike_models.publishing import audience_path, mark_complete, mark_latest
from lookalike_models.scorers import REFRESH_STATE
from tasks import tracking
from tasks.caching import file_fingerprint, stable_hash
from tasks.data import load_data
from tasks.results import ChampionDecision, ModelEvaluation, RunFolder, SplitFile, TrainedModel
from tasks.retrying import retry_on_io_error


@task
def evaluate_run(
    scored: list[ModelEvaluation],
    data_dir: str,
    evaluation: EvaluationConfig,
    run_dir: str,
    split: SplitFile | None = None,
) -> dict:
    """Metrics table, summary by seed bucket (each campaign's mean over the splits), every model against
    the reference with a paired 95% bootstrap CI over campaigns, and the precision/recall plot.
    ``not_evaluated``: campaigns of ``split`` with too few seeds to hold any out (campaign -> seeds); they
    are trained on and published from all their seeds, and the summary says they were not evaluated."""
    not_evaluated = unevaluated_campaigns(split.path) if split else {}
    if not_evaluated:
        get_run_logger().warning(
            "%d campaigns have too few seeds to hold any out: published from all their seeds, not evaluated (%s)",
            len(not_evaluated),
            seed_counts(not_evaluated),
        )
    frames = [pl.read_parquet(s.metrics_path) for s in scored if s.metrics_path]
    if not frames:
        get_run_logger().warning("no campaign could be evaluated")
        return {"summary": [], "comparison": [], "files": [], "not_evaluated": not_evaluated}
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
    return {
        "summary": summary.to_dicts(),
        "comparison": comparison.to_dicts(),
        "files": [str(f) for f in files],
        "not_evaluated": not_evaluated,
    }


def unevaluated_campaigns(split_path: str) -> dict[str, int]:
    """Campaigns of a split that hold nothing out (too few seeds), with their seed counts."""
    from lookalike_models.evaluation import load_split

    train, heldout = load_split(split_path)
    return {cid: seeds.size for cid, seeds in sorted(train.items()) if cid not in heldout}


def seed_counts(campaigns: dict[str, int], limit: int = 10) -> str:
    """'c1: 1 seed, c2: 3 seeds' (the first ``limit``, then how many more)."""
    items = sorted(campaigns.items())
    text = ", ".join(f"{cid}: {n} seed{'' if n == 1 else 's'}" for cid, n in items[:limit])
    return text + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_on_io_error)
def publish_audiences(staged: dict[str, str], output_root: str, run_id: str) -> dict:
    """Move the staged audiences into the run-keyed, campaign-partitioned layout, then mark LATEST.
    Each file is renamed into place, so readers never see a partial audience."""
    root = Path(output_root) / "audiences"
    published = {}
    for cid, path in sorted(staged.items()):
        published[cid] = str(copy_file_atomic(path, audience_path(root, run_id, cid)))
    if published:
        mark_complete(root, run_id)  # the run folder is whole: a later clean-up never takes it for a leftover
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
        try:
            log_model_run(child, model, info, report, rows, earlier)
        except BaseException as exc:  # never leave a child RUNNING (an interrupt, a full disk)
            tracking.end_run(child, end_status(exc))
            raise
        tracking.end_run(child, end_time=max(int(end * 1000), start))
        holders[model] = earlier or child
    return holders


def log_model_run(child: str, model: str, info: TrainedModel, report: dict, rows: list[dict], earlier: str | None):
    """A model's child run: its params, held-out metrics (overall and per bucket), the comparison with the
    reference, training curves, and its files unless an earlier run (``earlier``) already holds them."""
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


def end_status(exc: BaseException) -> str:
    """MLflow's status for a run ended by ``exc``: KILLED for an interrupt or a termination, else FAILED."""
    from prefect.exceptions import TerminationSignal

    return "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit | TerminationSignal) else "FAILED"


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
    audiences_dir: str | None = None,
) -> str:
    """``mlflow_url``: a link to the run in a UI that is up (http...), or a text naming the run (a local
    store has no UI until ``make mlflow-ui`` starts one, so it gets no link)."""
    skipped = skipped or {}
    status = run_status(published, failed, skipped)
    mlflow_line = f"MLflow run: [{mlflow_url}]({mlflow_url})" if mlflow_url.startswith("http") else mlflow_url
    where = f" under `{audiences_dir}`" if audiences_dir and published else ""
    lines = [
        f"# Look-alike run `{run_id}`: {status}",
        "",
        mlflow_line,
        "",
        f"Published audiences: {len(published)}{where} (model `{decision.champion}`: {decision.reason}); "
        f"failed campaigns: {len(failed)}; skipped campaigns (invalid input): {len(skipped)}",
        "",
    ]
    not_evaluated = report.get("not_evaluated") or {}
    if not_evaluated:
        lines += [
            f"Not evaluated (too few seeds to hold any out; published from all their seeds): "
            f"{seed_counts(not_evaluated)}",
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
    audiences_dir: str | None = None,
) -> str:
    """The run at a glance in the Prefect UI: metrics table plus a markdown summary with the MLflow run,
    where the audiences are, the run's status and every failed or skipped campaign with its reason."""
    overall = [r for r in report["summary"] if r["seed_bucket"] == "all"]
    if overall:
        create_table_artifact(rounded(overall), key="audience-metrics", description=f"Held-out metrics of run {run_id}")
    text = summary_markdown(run_id, mlflow_url, report, published, failed, decision, skipped, audiences_dir)
    create_markdown_artifact(text, key="audience-run-summary", description=f"Run {run_id}")
    return text


def current_flow_run() -> str | None:
    """'<name> (<id>)' of the Prefect flow run this code runs in (None outside one)."""
    from prefect.runtime import flow_run

    return f"{flow_run.name} ({flow_run.id})" if flow_run.id else None


def run_audiences_dir(output_root: str, run_id: str) -> str:
    """The absolute folder of a run's published audiences."""
    return str((Path(output_root) / "audiences" / f"run_id={run_id}").resolve())


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
        dead = crash_dead_flow_runs(flow_runs_on_root(tags["lookalike.output_root"]), f"MLflow run {mlflow_run}")
        if dead:  # killed before they opened an MLflow run
            get_run_logger().warning("marked %d Prefect flow runs of dead runs Crashed: %s", len(dead), ", ".join(dead))
    return mlflow_run


def flow_runs_on_root(output_root: str) -> list[str]:
    """Ids of this flow's runs that are not final (RUNNING, PENDING) and whose parameters name the output
    root ``output_root`` holds the lock of (its own or its ``adhoc/``): runs killed before they opened an
    MLflow run. Relative roots are read from this process's folder."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.runtime import flow_run

    if not flow_run.id or not flow_run.flow_name:
        return []
    states = FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_run.flow_name])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=states)),
        )
    found = []
    for run in runs:
        config = (run.parameters or {}).get("config") or {}
        root = Path(config.get("output_root", "runs") if isinstance(config, dict) else "runs")
        if str(run.id) != str(flow_run.id) and output_root in (str(root.resolve()), str((root / "adhoc").resolve())):
            found.append(str(run.id))
    return found


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
    """Mark RUNNING parent runs of ``output_root`` other than ``current`` as KILLED, their RUNNING child runs
    (one per model) FAILED, and the Prefect flow runs they belong to Crashed where still running; returns
    the parent runs' ids. None of them can be alive: the caller holds the output root's lock."""
    client = tracking.client()
    found = client.get_experiment_by_name(experiment)
    if not found:
        return []
    running = client.search_runs([found.experiment_id], filter_string="attributes.status = 'RUNNING'")
    stale = [
        r.info.run_id
        for r in running
        if r.info.run_id != current and r.data.tags.get("lookalike.output_root") == output_root
    ]
    for run in stale:
        client.set_tag(run, "lookalike.closed_by", f"run {current}: its flow run died while it was RUNNING")
        client.set_terminated(run, "KILLED")
    children = [r.info.run_id for r in running if r.data.tags.get("mlflow.parentRunId") in stale]
    for run in children:
        client.set_tag(run, "lookalike.closed_by", f"run {current}: its parent run's flow run died")
        client.set_terminated(run, "FAILED")
    logger = get_run_logger()
    if stale:
        logger.warning(
            "marked %d MLflow runs of dead flow runs KILLED (%s) and %d of their model runs FAILED",
            len(stale),
            ", ".join(stale),
            len(children),
        )
    flow_runs = [r.data.tags.get("prefect.flow_run_id") for r in running if r.info.run_id in stale]
    crashed = crash_dead_flow_runs([f for f in flow_runs if f], f"MLflow run {current}")
    if crashed:
        logger.warning("marked %d Prefect flow runs of dead runs Crashed: %s", len(crashed), ", ".join(crashed))
    return stale


def crash_dead_flow_runs(flow_run_ids: list[str], by: str) -> list[str]:
    """Set Prefect flow runs that are not final (a killed process left them RUNNING) to Crashed; returns
    their ids. Ids this Prefect server does not know (another server, a test harness) are skipped."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Crashed

    current = str(flow_run.id)
    crashed: list[str] = []
    if not [f for f in flow_run_ids if f != current]:
        return crashed
    with get_client(sync_client=True) as client:
        for flow_run_id in flow_run_ids:
            if flow_run_id == current:
                continue
            try:
                found = client.read_flow_run(UUID(flow_run_id))
            except Exception:  # noqa: BLE001 (not a UUID, or unknown to this server: nothing to mark)
                continue
            if found.state is None or found.state.is_final():
                continue
            message = f"its process died while the flow run was {found.state.type.value}; found by {by}"
            client.set_flow_run_state(found.id, Crashed(message=message), force=True)
            crashed.append(flow_run_id)
    return crashed


@task
def remove_run_leftovers(audiences_root: str) -> list[str]:
    """Under the output root's lock: delete what runs killed while publishing left under ``audiences_root``
    (temporary files, run folders LATEST never pointed to); see ``publishing.leftovers``."""
    from lookalike_models.publishing import remove_leftovers

    removed = [str(p) for p in remove_leftovers(audiences_root)]
    if removed:
        get_run_logger().warning(
            "removed %d leftovers of killed runs under %s: %s",
            len(removed),
            audiences_root,
            ", ".join(Path(p).name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""),
        )
    return removed


def abandon_mlflow_run(mlflow_run: str, exc: BaseException) -> None:
    """A run that stops on ``exc``: its MLflow run KILLED (interrupt, termination) or FAILED, without a
    Prefect task (the flow may be going down on a signal), and any child left RUNNING FAILED with it."""
    status = end_status(exc)
    try:
        client = tracking.client()
        run = client.get_run(mlflow_run)
        client.set_tag(mlflow_run, "lookalike.status", "failed")
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{mlflow_run}'",
        )
        for child in children:
            client.set_terminated(child.info.run_id, "FAILED")
        client.set_terminated(mlflow_run, status)
    except Exception:  # noqa: BLE001 (the store is unreachable: the next run on this root closes it)
        pass


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
