"""MLflow model registry: every trained model becomes a version of one registered model; the alias
``champion`` marks the version whose audiences are published, ``challenger`` the best other one."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from lookalike_models.config import SelectionConfig
from lookalike_models.selection import choose_champion
from tasks import tracking


def current_champion(registered_model: str) -> str | None:
    client = tracking.client()
    try:
        return client.get_model_version_by_alias(registered_model, "champion").tags.get("model_name")
    except Exception:  # no registered model or no alias yet
        return None


@task
def register_and_promote(children: dict[str, str], report: dict, selection: SelectionConfig) -> dict:
    """Register tonight's models, compare them with the champion on tonight's held-out split, and move
    the aliases. The champion's newest version always carries the alias: its audiences come from tonight's
    training; 'promoted' says whether another model took the title."""
    logger = get_run_logger()
    client = tracking.client()
    name = selection.registered_model
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name, description="Look-alike audience models; alias 'champion' publishes")
    overall = {r["model"]: r for r in report["summary"] if r["seed_bucket"] == "all"}
    versions = {}
    for model, child in children.items():
        tags = {"model_name": model} | {k: str(v) for k, v in overall.get(model, {}).items() if isinstance(v, float)}
        versions[model] = client.create_model_version(name, f"runs:/{child}/model", child, tags=tags).version
    before = current_champion(name)
    eligible = set(children) - set(selection.not_eligible)
    tonight = {m: float(overall[m][selection.metric]) for m in overall if overall[m].get(selection.metric) is not None}
    decision = choose_champion(tonight, before, selection.min_improvement, eligible)
    client.set_registered_model_alias(name, "champion", versions[decision.champion])
    others = {m: v for m, v in tonight.items() if m in eligible and m != decision.champion}
    if others:
        client.set_registered_model_alias(name, "challenger", versions[max(sorted(others), key=others.__getitem__)])
    logger.info("registry %s: %s", name, decision.reason)
    return {"champion": decision.champion, "promoted": decision.promoted, "reason": decision.reason,
            "previous_champion": before, "versions": versions}


def rank_runs(experiment: str, metric: str, top: int = 10) -> list[dict]:
    """Per-model child runs of an experiment, best ``metric`` first (the `lookalike compare` table)."""
    client = tracking.client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], filter_string="tags.model != ''",
                              order_by=[f"metrics.`{metric}` DESC"], max_results=top)
    return [{"model": r.data.tags.get("model"), "run_id": r.info.run_id,
             "parent": r.data.tags.get("mlflow.parentRunId"), metric: r.data.metrics.get(metric),
             "start": r.info.start_time} for r in runs]
