"""The run's evaluation report: every model's per-campaign held-out metrics into one summary, the comparison
with the reference model, and the precision/recall plot, written under the run folder's ``report/``."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import task
from prefect.logging import get_run_logger

from lookalike_models.config import EvaluationConfig
from lookalike_models.evaluation import audience_sizes, metric_columns, plot_precision_recall, summarize
from lookalike_models.io import write_parquet_atomic
from lookalike_models.protocol import compare_to_reference
from tasks.data import campaigns_and_population
from tasks.results import ComparisonRow, ModelEvaluation, RunReport, SplitFile, SummaryRow


@task
def evaluate_run(
    scored: list[ModelEvaluation],
    data_dir: str,
    evaluation: EvaluationConfig,
    run_dir: str,
    split: SplitFile | None = None,
) -> RunReport:
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
        return RunReport(not_evaluated=not_evaluated)
    per_campaign = pl.concat(frames, how="diagonal_relaxed")
    summary = summarize(per_campaign)
    reports = Path(run_dir) / "report"
    sizes = audience_sizes(campaigns_and_population(data_dir)[1], evaluation.audience_fractions)
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
    return RunReport(
        summary=summary_rows(summary),
        comparison=[ComparisonRow(**row) for row in comparison.to_dicts()],
        files=[str(f) for f in files],
        not_evaluated=not_evaluated,
    )


def summary_rows(summary: pl.DataFrame) -> list[SummaryRow]:
    """``evaluation.summarize``'s table as records: every column but the model, bucket and count is a metric."""
    keys = ("model", "seed_bucket", "campaigns")
    return [
        SummaryRow(**{k: row[k] for k in keys}, metrics={k: v for k, v in row.items() if k not in keys})
        for row in summary.to_dicts()
    ]


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
