"""The run at a glance in the Prefect UI: its status, the held-out metrics table, the comparison with the
reference, and every campaign that failed or was skipped."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lookalike_models.metric_names import AUC, GAUC, RECALL_AT, is_size_metric
from tasks.results import ChampionDecision, ComparisonRow, RunReport
from tasks.run_report import seed_counts


def run_status(published: dict[str, str], failed: dict[str, str], skipped: dict[str, str]) -> str:
    """'complete' (every campaign published), 'partial' (some published, some failed or skipped) or 'failed'."""
    if not published:
        return "failed"
    return "partial" if failed or skipped else "complete"


def summary_markdown(
    run_id: str,
    mlflow_url: str,
    report: RunReport,
    published: dict[str, str],
    failed: dict[str, str],
    decision: ChampionDecision,
    skipped: dict[str, str] | None = None,
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
    if report.not_evaluated:
        lines += [
            f"Not evaluated (too few seeds to hold any out; published from all their seeds): "
            f"{seed_counts(report.not_evaluated)}",
            "",
        ]
    overall = report.overall()
    if overall:
        keys = [k for k in overall[0].metrics if is_size_metric(k)] + [GAUC]
        lines += ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for r in overall:
            cells = [f"{r.metrics[k]:.4f}" if r.metrics[k] is not None else "-" for k in keys]
            lines.append(f"| {r.model} | " + " | ".join(cells) + " |")
    lines += comparison_markdown(report.comparison)
    if failed or skipped:
        lines.append("")
    for key, why in sorted(failed.items()):
        lines.append(f"- failed `{key}`: {why}")
    for cid, why in sorted(skipped.items()):
        lines.append(f"- skipped `{cid}`: {why}")
    return "\n".join(lines)


def comparison_markdown(comparison: list[ComparisonRow]) -> list[str]:
    """Each model minus the reference, overall, with the paired 95% bootstrap CI over campaigns."""
    rows = [r for r in comparison if r.seed_bucket == "all"]
    if not rows:
        return []
    metrics = list(dict.fromkeys(r.metric for r in rows if r.metric.startswith((RECALL_AT, AUC))))
    lines = [
        "",
        f"Minus `{rows[0].reference}` on the same campaigns, paired 95% CI "
        f"({rows[0].campaigns} campaigns, each averaged over the splits):",
        "",
        "| model | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for model in dict.fromkeys(r.model for r in rows):
        cells = {r.metric: f"{r.diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]" for r in rows if r.model == model}
        lines.append(f"| {model} | " + " | ".join(cells.get(m, "-") for m in metrics) + " |")
    return lines


def rounded(rows: list[dict], digits: int = 4) -> list[dict]:
    """Table rows as people read them: 0.0175, not 0.017499999999999998."""
    return [{k: round(v, digits) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


@task
def post_summary(
    run_id: str,
    mlflow_url: str,
    report: RunReport,
    published: dict[str, str],
    failed: dict[str, str],
    decision: ChampionDecision,
    skipped: dict[str, str] | None = None,
    audiences_dir: str | None = None,
) -> str:
    """The run at a glance in the Prefect UI: metrics table plus a markdown summary with the MLflow run,
    where the audiences are, the run's status and every failed or skipped campaign with its reason."""
    overall = [row.table_row() for row in report.overall()]
    if overall:
        create_table_artifact(rounded(overall), key="audience-metrics", description=f"Held-out metrics of run {run_id}")
    text = summary_markdown(run_id, mlflow_url, report, published, failed, decision, skipped, audiences_dir)
    create_markdown_artifact(text, key="audience-run-summary", description=f"Run {run_id}")
    return text
