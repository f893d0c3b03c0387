"""MLflow model registry: one registered model per output root, whose alias ``champion`` marks the version whose
audiences that output root publishes (``challenger``: the best other model). Tonight's models are compared with
the champion on tonight's held-out split; only once the audiences are published do the champion and the
challenger get a version (an unchanged fit keeps its version: a cached night registers nothing) and the aliases
move, so ``champion`` never names a model whose audiences are not live. At most ``selection.keep_versions``
versions are kept (never one an alias points at)."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

from mlflow.exceptions import MlflowException
from prefect import task
from prefect.logging import get_run_logger

from lookalike_models.config import SelectionConfig
from lookalike_models.metric_names import higher_is_better
from lookalike_models.selection import best_model, choose_champion
from tasks import tracking
from tasks.results import ChampionDecision, RunReport, TrainedModel

OUTPUT_ROOT_TAG = "lookalike.output_root"


def registered_model_name(selection: SelectionConfig, output_root: str, data_set: str = "") -> str:
    """``selection.registered_model`` when set, else one name per output root and data set:
    ``lookalike-audience-<folder>-<hash of its absolute path>[-<data kind>-<hash of the data set>]``, so two
    output roots on one tracking store never share a ``champion`` alias, and neither do two data sets
    (``sources.data_set_key``) published under one output root."""
    if selection.registered_model:
        return selection.registered_model
    root = Path(output_root).resolve()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", root.name).strip("-") or "root"
    name = f"lookalike-audience-{slug}-{hashlib.sha256(str(root).encode()).hexdigest()[:6]}"
    if data_set:
        kind = re.sub(r"[^A-Za-z0-9_-]+", "-", data_set.split(":", 1)[0]).strip("-") or "data"
        name += f"-{kind}-{hashlib.sha256(data_set.encode()).hexdigest()[:4]}"
    return name


@task
def claim_registered_model(selection: SelectionConfig, output_root: str, data_set: str = "") -> str:
    """The output root's registered model for ``data_set`` (created on first use), checked before anything
    trains: a name set by hand that already holds another output root's champion is refused, with the way out."""
    client = tracking.client()
    name, root = registered_model_name(selection, output_root, data_set), str(Path(output_root).resolve())
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(
            name,
            tags={OUTPUT_ROOT_TAG: root},
            description=f"Look-alike audience models of output root {root}; alias 'champion' publishes",
        )
        return name
    owner = registered.tags.get(OUTPUT_ROOT_TAG)
    if owner is None:  # registered before output roots were recorded: it becomes this one's
        client.set_registered_model_tag(name, OUTPUT_ROOT_TAG, root)
    elif owner != root:
        raise ValueError(
            f"registered model {name} holds the champion of output root {owner}, not of {root}: set "
            "selection.registered_model to another name, or leave it empty (one registered model per output root)"
        )
    return name


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
def decide_champion(
    model_runs: dict[str, str],
    report: RunReport,
    selection: SelectionConfig,
    trained: dict[str, TrainedModel],
    registered_model: str,
    publish_model: str = "champion",
) -> ChampionDecision:
    """Compare tonight's eligible models (never the reference models; only models that left files, so the
    champion can be registered) with the champion on tonight's held-out split. ``model_runs``: model name -> the
    MLflow run holding its files. Nothing is registered and no alias moves here: ``promote_champion`` does it
    once the champion's audiences are published.

    A night where no campaign has enough seeds to hold any out (``report.not_evaluated``) has nothing to
    compare: it publishes with ``publish_model`` when one is pinned, else with the current champion (when it
    is configured tonight), and says why; with neither it is refused in one line naming the campaigns."""
    logger = get_run_logger()
    name = registered_model
    overall = {r.model: r.metrics for r in report.overall()}
    eligible = {m for m in model_runs if m not in selection.not_eligible and m in trained and has_artifacts(trained[m])}
    for model in sorted(set(model_runs) - eligible - set(selection.not_eligible)):
        logger.warning("registry %s: %s left no model files and cannot be registered or promoted", name, model)
    before = current_champion(name)
    if not overall and report.not_evaluated:
        return unevaluated_night(report.not_evaluated, before, publish_model, eligible, trained, name)
    tonight = {m: float(overall[m][selection.metric]) for m in overall if overall[m].get(selection.metric) is not None}
    higher = higher_is_better(selection.metric)
    try:
        decision = choose_champion(tonight, before, selection.min_improvement, eligible, higher)
    except ValueError:
        raise ValueError(
            f"no eligible model ({', '.join(sorted(eligible)) or 'none with model files'}) has a held-out "
            f"{selection.metric}: no campaign could be evaluated, or every evaluation failed"
        ) from None
    others = {m: v for m, v in tonight.items() if m in eligible and m != decision.champion and not math.isnan(v)}
    challenger = best_model(others, higher) if others else None
    reason = decision.reason
    if not decision.promoted:  # choose_champion's text may name the champion itself as "best challenger"
        reason = f"champion {decision.champion} ({tonight[decision.champion]:.4f}) kept" + (
            f"; best challenger {challenger} ({others[challenger]:.4f})" if challenger else ""
        )
    logger.info("registry %s: %s", name, reason)
    return ChampionDecision(
        champion=decision.champion,
        promoted=decision.promoted,
        reason=reason,
        previous_champion=before,
        challenger=challenger,
        registered_model=name,
        model_runs={m: model_runs[m] for m in sorted(eligible)},
    )


def unevaluated_night(
    not_evaluated: dict[str, int],
    before: str | None,
    publish_model: str,
    eligible: set[str],
    trained: dict[str, TrainedModel],
    registered_model: str,
) -> ChampionDecision:
    """The decision of a night with no held-out evaluation at all (every campaign too small to hold out)."""
    from lookalike_models.contract import CAMPAIGN_ID, SEEDS, DataContractError
    from tasks.run_report import seed_counts

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
        champion=model,
        promoted=False,
        reason=reason,
        previous_champion=before,
        evaluated=False,
        registered_model=registered_model,
    )


def has_artifacts(trained: TrainedModel) -> bool:
    folder = Path(trained.model_dir)
    return folder.is_dir() and any(folder.iterdir())


def model_version(client, name: str, model: str, run_id: str) -> int:
    """The version of ``model`` whose files are ``run_id``'s: the existing one (an unchanged fit, e.g. a cached
    night, reuses the run that logged its files) or a new one."""
    for version in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        if version.tags.get("model_name") == model:
            return int(version.version)
    return int(client.create_model_version(name, f"runs:/{run_id}/model", run_id, tags={"model_name": model}).version)


def prune_versions(client, name: str, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` versions, never one an alias points at; returns the deleted ones."""
    aliased = {int(v) for v in client.get_registered_model(name).aliases.values()}
    versions = sorted((int(v.version) for v in client.search_model_versions(f"name = '{name}'")), reverse=True)
    deleted = [v for v in versions[keep:] if v not in aliased]
    for version in deleted:
        client.delete_model_version(name, str(version))
    return deleted


@task
def promote_champion(
    decision: ChampionDecision, selection: SelectionConfig, published: dict[str, str]
) -> ChampionDecision:
    """Register tonight's champion and challenger (or find their versions) and point ``champion`` and
    ``challenger`` at them; only once audiences are published, so the alias never names a model whose
    audiences are not live."""
    logger = get_run_logger()
    name = decision.registered_model
    if not published:
        logger.warning("registry %s: nothing was published; aliases stay where they are", name)
        return decision
    if not decision.evaluated or decision.champion not in decision.model_runs:
        why = "nothing was evaluated tonight" if not decision.evaluated else f"{decision.champion} left no model files"
        logger.warning("registry %s: %s; aliases stay where they are", name, why)
        return decision
    client = tracking.client()
    champion, challenger = decision.champion, decision.challenger
    versions = {m: model_version(client, name, m, decision.model_runs[m]) for m in filter(None, (champion, challenger))}
    client.set_registered_model_alias(name, "champion", versions[champion])
    moved = f"champion -> {champion} v{versions[champion]}"
    if challenger:
        client.set_registered_model_alias(name, "challenger", versions[challenger])
        moved += f", challenger -> {challenger} v{versions[challenger]}"
    deleted = prune_versions(client, name, selection.keep_versions)
    logger.info("registry %s: %s%s", name, moved, f"; deleted old versions {deleted}" if deleted else "")
    return decision.model_copy(update={"aliases_moved": True, "versions": versions})


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
