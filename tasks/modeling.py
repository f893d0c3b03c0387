"""Tasks that fit a model once per run and score every campaign with it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from lookalike_models.catalog import build_scorer
from lookalike_models.config import EvaluationConfig, ModelSpec, PublishConfig
from lookalike_models.evaluation import audience_size, audience_sizes, load_split
from lookalike_models.incremental import changed_since, load_previous_top, refresh_campaign
from lookalike_models.io import write_parquet_atomic
from lookalike_models.pipeline import score_campaign
from lookalike_models.progress import report_progress_to
from lookalike_models.protocol import evaluate_campaigns
from lookalike_models.publishing import audience_frame, write_embeddings
from lookalike_models.reach import load_exclusions
from lookalike_models.scorers import AudienceScorer
from lookalike_models.user_state import USER_STATE, user_state
from tasks import tracking
from tasks.caching import CACHED, stable_hash
from tasks.data import load_data
from tasks.fitted_models import make_room_for_fit, remember_fitted, scorer_of
from tasks.results import (
    ExpandStaged,
    ModelEvaluation,
    SplitFile,
    StagedAudiences,
    StagingRecord,
    TrainedModel,
)


@task(**CACHED)
def train_model(
    spec: ModelSpec, data_dir: str, split: SplitFile, work_root: str, previous_model_dir: str | None = None
) -> TrainedModel:
    """Fit on the training seeds of all campaigns; persist the model where the scorer supports it. With the
    previous run's model folder, users whose activity did not change keep their state (incremental)."""
    logger = get_run_logger()
    data = load_data(data_dir)
    train, _ = load_split(split.path)
    scorer = build_scorer(spec.model, spec.params)
    model_dir = Path(data_dir).parent / "models" / f"{spec.name}-{stable_hash(spec, split.path)}"
    if previous_model_dir and Path(previous_model_dir).resolve() == model_dir.resolve():
        previous_model_dir = None  # same data as last run: nothing to reuse that a full fit would not give
    make_room_for_fit()
    started_at, start = time.time(), time.perf_counter()
    progress = TrainingProgress(spec.name)
    with report_progress_to(progress), progress_lines_in(logger):
        try:
            embedded = scorer.refit(data, train, Path(previous_model_dir) if previous_model_dir else None)
        except Exception as exc:
            if not previous_model_dir:
                raise
            # Yesterday's state must never wedge tonight: a full fit gives the same model, only slower.
            logger.warning(
                "%s: previous model %s unusable (%s: %s); full fit",
                spec.name,
                previous_model_dir,
                type(exc).__name__,
                exc,
            )
            scorer = build_scorer(spec.model, spec.params)
            embedded = scorer.refit(data, train, None)
    progress.finish()
    seconds = time.perf_counter() - start
    try:
        scorer.save(model_dir)
    except NotImplementedError:
        logger.info("%s keeps its fitted state in memory only", spec.name)
    params = loggable_params(spec, scorer)
    save_model_spec(spec, params, model_dir)
    export_user_encoder(scorer, data, model_dir)
    remember_fitted(str(model_dir), scorer)
    logger.info(
        "trained %s (%s) in %.1fs on %d users%s, %d users (re-)embedded",
        spec.name,
        spec.model,
        seconds,
        data.n_users,
        rate_note(data.n_users, seconds, "users"),
        embedded,
    )
    history = getattr(scorer, "history", {}) or {}
    return TrainedModel(
        spec=spec,
        data_dir=data_dir,
        split=split,
        model_dir=str(model_dir),
        fit_seconds=seconds,
        fit_started_at=started_at,
        users_embedded=embedded,
        params=params,
        history={k: [float(x) for x in v] for k, v in history.items()},
    )


class TrainingProgress:
    """The sink of one training's library progress (``lookalike_models.progress``): one Prefect progress
    artifact, "training <model>: <label> <done>/<total>", updated at most every ``min_seconds`` and whenever a
    piece of work ends. Nested work (an encoder inside an ensemble) shows whichever reported last."""

    def __init__(self, model_name: str, min_seconds: float = 2.0, clock=time.monotonic):
        self.model_name, self.min_seconds, self.clock = model_name, min_seconds, clock
        self.artifact_id = None
        self.last_update = float("-inf")
        self.percent = 0.0

    def __call__(self, label: str, done: int, total: int | None) -> None:
        finished = total is not None and done >= total
        now = self.clock()
        if self.artifact_id is not None and not finished and now - self.last_update < self.min_seconds:
            return
        self.last_update = now
        if total:
            self.percent = min(100.0, 100.0 * done / total)
        counts = f"{done}/{total}" if total is not None else f"{done}"
        self.show(f"training {self.model_name}: {label} {counts}")

    def finish(self) -> None:
        self.percent = 100.0
        self.show(f"training {self.model_name}: done")

    def show(self, description: str) -> None:
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(self.percent, description=description)
        else:
            update_progress_artifact(self.artifact_id, self.percent, description=description)


# Prefect shows library loggers from WARNING up, on the console only. While a task trains, the library's
# progress lines (INFO) go to that task's run logger instead: console and UI, with the task's name.
_PROGRESS_LOGGER = logging.getLogger("lookalike_models.progress")
_RUN_LOGGER: ContextVar = ContextVar("training_run_logger", default=None)
_forwarding = {"count": 0, "saved": (logging.NOTSET, True)}
_forwarding_lock = threading.Lock()


class _ToRunLogger(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        run_logger = _RUN_LOGGER.get()
        if run_logger is not None:
            run_logger.log(record.levelno, "%s", record.getMessage())
            return
        parent = _PROGRESS_LOGGER.parent  # progress outside a training task (another thread): as without us
        if parent is not None and record.levelno >= parent.getEffectiveLevel():
            parent.handle(record)


_TO_RUN_LOGGER = _ToRunLogger()


@contextmanager
def progress_lines_in(run_logger) -> Iterator[None]:
    """Within this context (this task), ``lookalike_models.progress`` lines go to ``run_logger``."""
    token = _RUN_LOGGER.set(run_logger)
    with _forwarding_lock:
        if _forwarding["count"] == 0:
            _forwarding["saved"] = (_PROGRESS_LOGGER.level, _PROGRESS_LOGGER.propagate)
            _PROGRESS_LOGGER.addHandler(_TO_RUN_LOGGER)
            _PROGRESS_LOGGER.setLevel(logging.INFO)
            _PROGRESS_LOGGER.propagate = False  # else the console shows each line twice
        _forwarding["count"] += 1
    try:
        yield
    finally:
        _RUN_LOGGER.reset(token)
        with _forwarding_lock:
            _forwarding["count"] -= 1
            if _forwarding["count"] == 0:
                _PROGRESS_LOGGER.removeHandler(_TO_RUN_LOGGER)
                level, propagate = _forwarding["saved"]
                _PROGRESS_LOGGER.setLevel(level)
                _PROGRESS_LOGGER.propagate = propagate


MODEL_SPEC = "model_spec.json"


def save_model_spec(spec: ModelSpec, params: dict, model_dir: Path) -> Path:
    """``model_spec.json`` in every model folder: the scorer, its config and the values the fit chose. With the
    run's data it reproduces the model, so a model whose state is refitted from the data (``item_logreg``,
    ``popularity``) still leaves files to register and can be champion."""
    import json

    from lookalike_models.io import write_bytes_atomic

    doc = {"name": spec.name, "model": spec.model, "params": spec.params, "fitted": params}
    return write_bytes_atomic(json.dumps(doc, indent=1, sort_keys=True, default=str).encode(), model_dir / MODEL_SPEC)


def loggable_params(spec: ModelSpec, scorer: AudienceScorer) -> dict[str, str | int | float | bool]:
    """The config and the fit's own facts, as plain values (a JSON-cached result; nested values as text)."""
    return {
        k: v if isinstance(v, str | int | float | bool) else str(v)
        for k, v in {"model": spec.model, **spec.params, **scorer.params()}.items()
    }


def rate_note(count: int, seconds: float, unit: str) -> str:
    """' (N units/s)' over a measurable time; nothing for an instant step, where a rate is noise."""
    return f" ({count / seconds:.0f} {unit}/s)" if seconds >= 1.0 else ""


def export_user_encoder(scorer: AudienceScorer, data, model_dir: Path) -> None:
    """Models that embed users leave ``embeddings.parquet`` (user_id, embedding) and an MLflow pytorch model
    with a signature (``user_encoder/``) in their folder; the folder is logged to MLflow as the model."""
    embeddings = scorer.user_embeddings()
    if embeddings is None:
        return
    write_embeddings(data, embeddings, model_dir / "embeddings.parquet")
    serving = scorer.serving_module(data)
    if serving is not None:
        tracking.save_torch_model(*serving, model_dir / "user_encoder")


def for_each_campaign(campaign_ids: list[str], label: str, work) -> dict[str, str]:
    """Run ``work(cid)`` for every campaign with a progress artifact and rate logs; a campaign that
    fails is reported (returned) and the others go on."""
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, description=label)
    failed, start = {}, time.perf_counter()
    for done, cid in enumerate(campaign_ids, 1):
        try:
            work(cid)
        except Exception as exc:  # one bad campaign must not sink the run
            failed[cid] = f"{type(exc).__name__}: {exc}"
            logger.error("%s: campaign %s failed: %s", label, cid, failed[cid])
        update_progress_artifact(progress, 100.0 * done / len(campaign_ids))
        if done % 10 == 0 or done == len(campaign_ids):
            logger.info(
                "%s: %d/%d campaigns%s",
                label,
                done,
                len(campaign_ids),
                rate_note(done, time.perf_counter() - start, "campaigns"),
            )
    return failed


@task(**CACHED)
def evaluate_model(trained: TrainedModel, work_root: str, evaluation: EvaluationConfig) -> ModelEvaluation:
    """Rank every eligible user from each campaign's training seeds; measure the held-out seeds
    (``protocol.evaluate_campaigns``, the protocol the benchmarks and tests use)."""
    name, seed = trained.name, trained.split.seed
    data = load_data(trained.data_dir)
    train, heldout = load_split(trained.split.path)
    scorer = scorer_of(trained)
    sizes = audience_sizes(data.n_users, evaluation.audience_fractions)
    rows = []

    def evaluate(cid: str) -> None:
        rows.extend(
            evaluate_campaigns(
                scorer,
                data,
                train,
                {cid: heldout[cid]},
                sizes,
                evaluation.seed_buckets,
                evaluation.max_scored_users or None,
            )
        )

    failed = for_each_campaign(list(heldout), f"held-out evaluation of {name} (split {seed})", evaluate)
    out = Path(trained.data_dir).parent / "scored" / f"{name}-{stable_hash(trained, evaluation)}"
    metrics = pl.DataFrame(rows).with_columns(pl.lit(name).alias("model"), pl.lit(seed).alias("split_seed"))
    metrics_path = write_parquet_atomic(metrics, out / "metrics.parquet") if rows else None
    return ModelEvaluation(
        model=name, split_seed=seed, metrics_path=str(metrics_path) if metrics_path else None, failed=failed
    )


@task(**CACHED)
def stage_audiences(
    trained: TrainedModel, work_root: str, publish: PublishConfig, previous: StagingRecord | None = None
) -> StagedAudiences:
    """Score every campaign from all of its seeds and stage its audience for publishing. Exclusion lists
    are applied before the top is taken, so audiences keep their size. With the previous run's staging
    (``previous``), campaigns whose seeds did not change only rescore the users whose activity did."""
    logger = get_run_logger()
    spec = trained.spec
    data = load_data(trained.data_dir)
    scorer = scorer_of(trained)
    everywhere, by_campaign = load_exclusions(publish.exclusions, data)
    if publish.exclusions:
        logger.info(
            "exclusion lists: %d users for every campaign, %d campaign-specific lists",
            everywhere.size,
            len(by_campaign),
        )
    size = audience_size(data.n_users, publish.audience_fraction)
    depth = int(size * publish.keep_depth)
    stage = Path(trained.data_dir).parent / "staged" / f"{spec.name}-{stable_hash(trained, publish)}"
    usable = previous if publish.incremental and previous and previous.model == spec.model_dump_json() else None
    try:
        changed = changed_since(data, Path(usable.stage) if usable else None)
    except Exception as exc:  # unreadable previous staging: rescore everything rather than fail the night
        logger.warning(
            "previous staging %s unusable (%s: %s); full rescore", usable and usable.stage, type(exc).__name__, exc
        )
        usable, changed = None, changed_since(data, None)
    previous_tops = usable.model_dump(by_alias=True) if usable else None
    tops, staged, reused = {}, {}, []

    def stage_one(cid: str) -> None:
        excluded = np.concatenate([everywhere, by_campaign.get(cid, everywhere[:0])])
        users, scores, key, was_reused = refresh_campaign(
            scorer,
            data,
            data.campaigns[cid],
            size,
            depth,
            excluded,
            changed,
            load_previous_top(previous_tops, cid, size),
        )
        if users.size == 0:  # an empty audience is not a success: fail this campaign with the reason
            raise ValueError(
                f"nothing left to rank: every candidate is a seed, a known non-converter or excluded "
                f"({excluded.size} excluded)"
            )
        write_parquet_atomic(audience_frame(data, users, scores, spec.name), stage / "tops" / f"{cid}.parquet")
        tops[cid] = key
        staged[cid] = str(
            write_parquet_atomic(audience_frame(data, users[:size], scores[:size], spec.name), stage / f"{cid}.parquet")
        )
        if was_reused:
            reused.append(cid)

    failed = for_each_campaign(list(data.campaigns), f"audiences of {spec.name}", stage_one)
    user_state(data).write_parquet(stage / USER_STATE)
    if usable:
        logger.info(
            "incremental: %d of %d users changed since the last run; %d of %d campaigns refreshed from "
            "their previous top list",
            int(changed.sum()),
            data.n_users,
            len(reused),
            len(staged),
        )
    state = StagingRecord(model=spec.model_dump_json(), stage=str(stage), size=size, campaign_keys=tops)
    return StagedAudiences(
        model=spec.name, staged=staged, failed=failed, refresh_state=state, incremental_campaigns=reused
    )


@task
def expand_one(
    spec: ModelSpec,
    data_dir: str,
    campaign_id: str | None,
    seed_user_ids: list[str],
    name: str,
    audience_fraction: float,
    run_dir: str,
    min_seed_match_rate: float = 0.5,
) -> ExpandStaged:
    """Ad-hoc: fit on every campaign's seeds, then score one seed list and stage its audience. An inline
    seed list follows the campaigns' rule (``data.min_seed_match_rate``): too few known ids is refused,
    naming the unknown ones; a few unknown ids are ignored, and the result's notes say which."""
    from lookalike_models.pipeline import resolve_seeds

    logger = get_run_logger()
    data = load_data(data_dir)
    seeds, unknown = resolve_seeds(data, campaign_id, seed_user_ids, name, min_seed_match_rate)
    notes = []
    if unknown:
        notes.append(
            f"{len(unknown)} of {len(seed_user_ids)} seed ids are not users of the data and were ignored: "
            f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}"
        )
        logger.warning("expand %s: %s", seeds.campaign_id, notes[-1])
    scorer = build_scorer(spec.model, spec.params)
    progress = TrainingProgress(spec.name)
    with report_progress_to(progress), progress_lines_in(logger):
        scorer.fit(data, {**data.campaigns, seeds.campaign_id: seeds})
    progress.finish()
    size = audience_size(data.n_users, audience_fraction)
    scored = score_campaign(scorer, data, seeds, size)
    frame = audience_frame(data, scored.users, scored.scores, spec.name)
    path = write_parquet_atomic(frame, Path(run_dir) / "audiences" / spec.name / f"{seeds.campaign_id}.parquet")
    logger.info("expanded %s: %d seeds -> %d users with %s", seeds.campaign_id, seeds.size, frame.height, spec.name)
    return ExpandStaged(staged={seeds.campaign_id: str(path)}, notes=notes)
