"""Tasks that fit a model once per run and score every campaign with it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from lookalike_models.config import ModelSpec
from lookalike_models.evaluation import audience_sizes, campaign_metrics, load_split, seed_bucket
from lookalike_models.io import write_parquet_atomic
from lookalike_models.pipeline import score_campaign
from lookalike_models.publishing import audience_frame
from lookalike_models.reach import load_exclusions
from lookalike_models.scorers import AudienceScorer, build_scorer
from tasks.caching import CACHED, stable_hash
from tasks.data import load_data

_FITTED: dict[str, AudienceScorer] = {}  # model_dir -> scorer, for scorers that cannot be saved


def fitted_scorer(spec: ModelSpec, data_dir: str, model_dir: str, split_path: str) -> AudienceScorer:
    """The scorer ``train_model`` fitted: from memory, else restored from ``model_dir``, else refitted."""
    if model_dir in _FITTED:
        return _FITTED[model_dir]
    scorer = build_scorer(spec.model, spec.params)
    try:
        scorer.load(Path(model_dir), load_data(data_dir))
    except (NotImplementedError, FileNotFoundError):
        scorer.fit(load_data(data_dir), load_split(split_path)[0])
    return scorer


@task(**CACHED)
def train_model(spec: ModelSpec, data_dir: str, split_path: str, work_root: str) -> dict:
    """Fit on the training seeds of all campaigns; persist the model where the scorer supports it."""
    logger = get_run_logger()
    data = load_data(data_dir)
    train, _ = load_split(split_path)
    scorer = build_scorer(spec.model, spec.params)
    start = time.perf_counter()
    scorer.fit(data, train)
    seconds = time.perf_counter() - start
    model_dir = Path(data_dir).parent / "models" / f"{spec.name}-{stable_hash(spec, split_path)}"
    try:
        scorer.save(model_dir)
    except NotImplementedError:
        logger.info("%s keeps its fitted state in memory only", spec.name)
    _FITTED[str(model_dir)] = scorer
    logger.info("trained %s (%s) in %.1fs on %d users (%.0f users/s)", spec.name, spec.model, seconds,
                data.n_users, data.n_users / max(seconds, 1e-9))
    history = getattr(scorer, "history", {}) or {}
    return {"model_dir": str(model_dir), "fit_seconds": seconds,
            "history": {k: [float(x) for x in v] for k, v in history.items()}}


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
            rate = done / (time.perf_counter() - start)
            logger.info("%s: %d/%d campaigns (%.1f campaigns/s)", label, done, len(campaign_ids), rate)
    return failed


@task(**CACHED)
def evaluate_model(spec: ModelSpec, data_dir: str, split_path: str, trained: dict, work_root: str,
                   fractions: list[float], bucket_edges: list[int]) -> dict:
    """Rank every eligible user from each campaign's training seeds; measure the held-out seeds."""
    data = load_data(data_dir)
    train, heldout = load_split(split_path)
    scorer = fitted_scorer(spec, data_dir, trained["model_dir"], split_path)
    sizes = audience_sizes(data.n_users, fractions)
    rows = []

    def evaluate(cid: str) -> None:
        scored = score_campaign(scorer, data, train[cid], max(sizes.values()))
        row = campaign_metrics(scored.users, scored.candidates, scored.candidate_scores, heldout[cid], sizes)
        rows.append(row | {"model": spec.name, "campaign_id": cid, "n_train_seeds": train[cid].size,
                           "seed_bucket": seed_bucket(train[cid].size, bucket_edges),
                           "n_candidates": scored.candidates.size})

    failed = for_each_campaign(list(heldout), f"held-out evaluation of {spec.name}", evaluate)
    out = Path(data_dir).parent / "scored" / f"{spec.name}-{stable_hash(spec, split_path, trained, fractions)}"
    metrics_path = write_parquet_atomic(pl.DataFrame(rows), out / "metrics.parquet") if rows else None
    return {"model": spec.name, "metrics_path": str(metrics_path) if metrics_path else None, "failed": failed}


@task(**CACHED)
def stage_audiences(spec: ModelSpec, data_dir: str, split_path: str, trained: dict, work_root: str,
                    audience_fraction: float, exclusions: list[str]) -> dict:
    """Score every campaign from all of its seeds and stage its audience for publishing. Exclusion lists
    are applied before the top is taken, so audiences keep their size."""
    data = load_data(data_dir)
    scorer = fitted_scorer(spec, data_dir, trained["model_dir"], split_path)
    everywhere, by_campaign = load_exclusions(exclusions, data)
    if exclusions:
        get_run_logger().info("exclusion lists: %d users for every campaign, %d campaign-specific lists",
                              everywhere.size, len(by_campaign))
    size = max(1, int(round(audience_fraction * data.n_users)))
    key = stable_hash(spec, split_path, trained, audience_fraction, exclusions)
    stage = Path(data_dir).parent / "staged" / f"{spec.name}-{key}"
    staged = {}

    def stage_one(cid: str) -> None:
        excluded = np.concatenate([everywhere, by_campaign.get(cid, everywhere[:0])])
        scored = score_campaign(scorer, data, data.campaigns[cid], size, excluded)
        frame = audience_frame(data, scored.users, scored.scores, spec.name)
        staged[cid] = str(write_parquet_atomic(frame, stage / f"{cid}.parquet"))

    failed = for_each_campaign(list(data.campaigns), f"audiences of {spec.name}", stage_one)
    return {"model": spec.name, "staged": staged, "failed": failed}


@task
def expand_one(spec: ModelSpec, data_dir: str, campaign_id: str | None, seed_user_ids: list[str], name: str,
               audience_fraction: float, run_dir: str) -> dict:
    """Ad-hoc: fit on every campaign's seeds, then score one seed list and stage its audience."""
    from lookalike_models.pipeline import resolve_seeds

    logger = get_run_logger()
    data = load_data(data_dir)
    seeds = resolve_seeds(data, campaign_id, seed_user_ids, name)
    scorer = build_scorer(spec.model, spec.params)
    scorer.fit(data, {**data.campaigns, seeds.campaign_id: seeds})
    size = max(1, int(round(audience_fraction * data.n_users)))
    scored = score_campaign(scorer, data, seeds, size)
    frame = audience_frame(data, scored.users, scored.scores, spec.name)
    path = write_parquet_atomic(frame, Path(run_dir) / "audiences" / spec.name / f"{seeds.campaign_id}.parquet")
    logger.info("expanded %s: %d seeds -> %d users with %s", seeds.campaign_id, seeds.size, frame.height, spec.name)
    return {seeds.campaign_id: str(path)}
