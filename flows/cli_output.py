"""What `lookalike` prints once a command has run: where a night's audiences and UIs are, the ``compare``
table, the ``recluster`` summary."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def where_to_look(run_id: str, audiences_dir: str | None, mlflow_run_id: str | None, flow_run: str | None) -> str:
    """The run's last lines: where its audiences are, and how to open the MLflow and Prefect UIs."""
    from tasks.tracking import ui_base, ui_command, ui_is_served

    lines = [f"lookalike: run {run_id}"]
    lines.append(f"  audiences: {audiences_dir}" if audiences_dir else "  audiences: none published")
    if mlflow_run_id:
        ui = f"UI: {ui_base()}" if ui_is_served() else f"open it with `{ui_command()}` ({ui_base()})"
        lines.append(f"  MLflow run {mlflow_run_id}: {ui}")
    if flow_run:
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME

        if PREFECT_API_URL.value():
            lines.append(f"  Prefect flow run {flow_run}: on {PREFECT_API_URL.value()}")
        else:
            home = Path(PREFECT_HOME.value())
            # `make prefect-server` serves the project's PREFECT_HOME (.prefect); elsewhere, say which one.
            own = home.resolve() == (PROJECT_ROOT / ".prefect").resolve()
            how = "`make prefect-server` (prefect server start)"
            if not own:
                how = f"`PREFECT_HOME={home} prefect server start`"
            lines.append(f"  Prefect flow run {flow_run}: kept in {home}; open it with {how}, UI http://127.0.0.1:4200")
    return "\n".join(lines)


def compare_table(rows: list[dict], metric: str, experiment: str) -> str:
    """`lookalike compare`'s table: metric to 4 decimals, each model run's start time (UTC) and ids."""
    from datetime import UTC, datetime

    if not rows:
        return f"no model runs with {metric} in experiment {experiment}"
    lines = [f"| model | {metric} | started (UTC) | run | parent run |", "|---|---|---|---|---|"]
    for row in rows:
        value = row.get(metric)
        shown = "-" if value is None else f"{value:.4f}"
        start = row.get("start")
        started = datetime.fromtimestamp(start / 1000, UTC).strftime("%Y-%m-%d %H:%M") if start else "-"
        lines.append(f"| {row['model']} | {shown} | {started} | {row['run_id']} | {row['parent']} |")
    return "\n".join(lines)


def recluster_summary(results: dict, config) -> str:
    """One line per re-clustered model, or why there was nothing to do."""
    from lookalike_models.publishing import read_latest
    from tasks.recluster import recluster_line

    if not results:
        live = read_latest(Path(config.output_root) / "audiences")
        return (
            f"lookalike: nothing to re-cluster: the live run {live} under {config.output_root} has none of the "
            f"models {', '.join(config.models)} (re-clustering refreshes RALM centroids)"
        )
    return "\n".join(f"lookalike: {recluster_line(result)}" for result in results.values())
