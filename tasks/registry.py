"""MLflow model registry: every eligible trained model with files becomes a version of one registered model;
the alias ``champion`` marks the version whose audiences are published, ``challenger`` the best other one.
Aliases move only after publishing, so ``champion`` never names a model whose audiences are not live."""

from __future__ import annotations

import math
from pathlib import Path

from mlflow.exceptions import MlflowException
from prefect import task
from prefect.logging import get_run_logger

from lookalike_models.config import SelectionConfig
from lookalike_models.selection import choose_champion
from tasks import tracking
from tasks.results import ChampionDecision, TrainedModel


def current_champion(registered_model: str) -> str | None:
    """The model name behind the ``champion`` alias; None before the first registration or promotion. Any
    other failure (store unreachable, permissions) is raised: a night must not mistake it for "no champion"."""
    client = tracking.client()
    try:
        registered = client.get_registered_model(registered_model)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    version = registered.aliases.get("champion")
    if version is None:
        return None
    return client.get_model_version(registered_model, str(version)).tags.get("model_name")


@task
def register_and_choose(
    children: dict[str, str],
    report: dict,
    selection: SelectionConfig,
    trained: dict[str, TrainedModel],
    publish_model: str = "champion",
) -> ChampionDecision:
    """Register tonight's eligible models that left files (never the reference models, never a version with
    no artifacts) and compare them with the champion on tonight's held-out split. No alias moves here:
    ``promote_champion`` moves them once the champion's audiences are published.

    A night where no campaign has enough seeds to hold any out (``report["not_evaluated"]``) has nothing to
    compare: it publishes with ``publish_model`` when one is pinned, else with the current champion (when it
    is configured tonight), and says why; with neither it is refused in one line naming the campaigns."""
    logger = get_run_logger()
    client = tracking.client()
    name = selection.registered_model
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name, description="Look-alike audience models; alias 'champion' publishes")
    overall = {r["model"]: r for r in report["summary"] if r["seed_bucket"] == "all"}
    eligible = {m for m in children if m not in selection.not_eligible and m in trained and has_artifacts(trained[m])}
    for model in sorted(set(children) - eligible - set(selection.not_eligible)):
        logger.warning("registry %s: %s left no model files and cannot be registered or promoted", name, model)
    versions = {}
    for model in sorted(eligible):
        tags = {"model_name": model} | {k: str(v) for k, v in overall.get(model, {}).items() if isinstance(v, float)}
        versions[model] = int(
            client.create_model_version(name, f"runs:/{children[model]}/model", children[model], tags=tags).version
        )
    before = current_champion(name)
    tonight = {m: float(overall[m][selection.metric]) for m in overall if overall[m].get(selection.metric) is not None}
    if not overall and report.get("not_evaluated"):
        return unevaluated_night(report["not_evaluated"], before, publish_model, eligible, trained, versions, name)
    try:
        decision = choose_champion(tonight, before, selection.min_improvement, eligible)
    except ValueError:
        raise ValueError(
            f"no eligible model ({', '.join(sorted(eligible)) or 'none registered'}) has a held-out "
            f"{selection.metric}: no campaign could be evaluated, or every evaluation failed"
        ) from None
    others = {m: v for m, v in tonight.items() if m in eligible and m != decision.champion and not math.isnan(v)}
    challenger = max(sorted(others), key=others.__getitem__) if others else None
    reason = decision.reason
    if not decision.promoted:  # choose_champion's text may name the champion itself as "best challenger"
        reason = f"champion {decision.champion} ({tonight[decision.champion]:.4f}) kept" + (
            f"; best challenger {challenger} ({others[challenger]:.4f})" if challenger else ""
        )
    logger.info(
        "registry %s: registered %s; %s", name, ", ".join(f"{m} v{v}" for m, v in sorted(versions.items())), reason
    )
    return ChampionDecision(
        champion=decision.champion,
        promoted=decision.promoted,
        reason=reason,
        previous_champion=before,
        versions=versions,
        challenger=challenger,
    )


def unevaluated_night(
    not_evaluated: dict[str, int],
    before: str | None,
    publish_model: str,
    eligible: set[str],
    trained: dict[str, TrainedModel],
    versions: dict[str, int],
    registered_model: str,
) -> ChampionDecision:
    """The decision of a night with no held-out evaluation at all (every campaign too small to hold out)."""
    from lookalike_models.contract import CAMPAIGN_ID, SEEDS, DataContractError
    from tasks.reporting import seed_counts

    why = f"no campaign has enough seeds to hold any out ({seed_counts(not_evaluated, 5)})"
    if publish_model != "champion":
        model, how = publish_model, "publish.model"
    elif before is not None and before in trained and before in eligible:
        model, how = before, "the current champion"
    else:
        champion = f"champion {before} is not among tonight's models" if before else "there is no champion yet"
        raise DataContractError(
            SEEDS,
            CAMPAIGN_ID,
            f"{why} and {champion} in {registered_model}: set publish.model to one of "
            f"{', '.join(sorted(trained))} to publish without evaluation",
        )
    reason = f"not evaluated: {why}; published with {how} {model}"
    get_run_logger().warning("registry %s: %s", registered_model, reason)
    return ChampionDecision(
        champion=model, promoted=False, reason=reason, previous_champion=before, versions=versions, evaluated=False
    )


def has_artifacts(trained: TrainedModel) -> bool:
    folder = Path(trained.model_dir)
    return folder.is_dir() and any(folder.iterdir())


@task
def promote_champion(
    decision: ChampionDecision, selection: SelectionConfig, published: dict[str, str]
) -> ChampionDecision:
    """Point ``champion`` at tonight's version of the chosen model, and ``challenger`` at the best other one;
    only once audiences are published, so the alias never names a model whose audiences are not live."""
    logger = get_run_logger()
    name, versions = selection.registered_model, decision.versions
    if not published:
        logger.warning("registry %s: nothing was published; aliases stay where they are", name)
        return decision
    if not decision.evaluated or decision.champion not in versions:
        why = "nothing was evaluated tonight" if not decision.evaluated else f"{decision.champion} is not registered"
        logger.warning("registry %s: %s; aliases stay where they are", name, why)
        return decision
    client = tracking.client()
    champion, challenger = decision.champion, decision.challenger
    client.set_registered_model_alias(name, "champion", versions[champion])
    moved = f"champion -> {champion} v{versions[champion]}" + ("" if decision.promoted else " (tonight's version)")
    if challenger:
        client.set_registered_model_alias(name, "challenger", versions[challenger])
        moved += f", challenger -> {challenger} v{versions[challenger]}"
    logger.info("registry %s: %s", name, moved)
    return decision.model_copy(update={"aliases_moved": True})


def rank_runs(experiment: str, metric: str, top: int = 10) -> list[dict]:
    """Per-model child runs of an experiment, best ``metric`` first (the `lookalike compare` table)."""
    client = tracking.client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id], filter_string="tags.model != ''", order_by=[f"metrics.`{metric}` DESC"], max_results=top
    )
    return [
        {
            "model": r.data.tags.get("model"),
            "run_id": r.info.run_id,
            "parent": r.data.tags.get("mlflow.parentRunId"),
            metric: r.data.metrics.get(metric),
            "start": r.info.start_time,
        }
        for r in runs
    ]
