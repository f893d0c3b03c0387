"""Tasks of the sharded night (``flows/sharded_refresh.py``): data that never sits in one process.

The flow's process holds the plan (ids counts, seeds, the split), each model's reduced fit and, per round,
what every shard returns: bounded by seeds, samples and audience sizes, never by the population. Shards are
read, fitted on, scored and evaluated by Dask workers (``tasks/shard_pool.py``).

A fitted sharded model stays in this process (``_FITTED``) until its audiences are staged: its state is the
reduced statistics, which a re-run recomputes from the shards (these tasks are not cached).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.logging import get_run_logger

from lookalike_models.config import DataSource, EvaluationConfig, ExecutionConfig, ModelSpec, PublishConfig
from lookalike_models.evaluation import audience_size, audience_sizes, load_split
from lookalike_models.io import write_bytes_atomic, write_parquet_atomic
from lookalike_models.sharded.audience_cut import cut_samples, lower_cut, reduce_campaign, write_candidates
from lookalike_models.sharded.catalog import sharded_scorer
from lookalike_models.sharded.scorer import ShardedScorer
from lookalike_models.sharded.scoring import evaluate_sharded
from lookalike_models.sharded.store import load_campaigns, read_manifest
from tasks.caching import stable_hash
from tasks.dask_session import shard_pool
from tasks.data import PLAN_FILE, plan_campaigns, read_plan
from tasks.modeling import save_model_spec
from tasks.results import ModelEvaluation, SplitFile, StagedAudiences, TrainedModel

_FITTED: dict[str, ShardedScorer] = {}
NOTHING_TO_RANK = "ValueError: nothing left to rank: every candidate is a seed, a known non-converter or excluded"


@task
def plan_sharded_data(source: DataSource, work_root: str) -> str:
    """The night's plan of a sharded folder: its population, shard count and every campaign's seeds in global
    user indices (``<work>/sharded-<key>/plan``). Reads the manifest and the shards' user ids, no interaction."""
    folder = str(Path(source.path).resolve())
    manifest = read_manifest(folder)
    version = hashlib.sha256((Path(folder) / "manifest.json").read_bytes()).hexdigest()[:16]
    plan_dir = Path(work_root) / f"sharded-{stable_hash(folder, version, source.min_seed_match_rate)}" / "plan"
    campaigns, problems = load_campaigns(folder, source.min_seed_match_rate)
    n_users = sum(s.users for s in manifest.shards)
    rows = [
        (cid, np.concatenate([s.positives, s.negatives]), np.repeat([1, 0], [s.positives.size, s.negatives.size]))
        for cid, s in campaigns.items()
    ]
    seeds = pl.DataFrame(
        {
            "campaign_id": [cid for cid, users, _ in rows for _ in range(users.size)],
            "user_idx": np.concatenate([u for _, u, _ in rows]) if rows else np.empty(0, np.int64),
            "label": np.concatenate([lab for _, _, lab in rows]).astype(np.int8) if rows else np.empty(0, np.int8),
        }
    )
    write_parquet_atomic(seeds, plan_dir / "seeds.parquet")
    plan = {"folder": folder, "version": version, "n_users": n_users, "n_shards": manifest.n_shards}
    write_bytes_atomic(json.dumps({**plan, "problems": problems}, indent=1).encode(), plan_dir / PLAN_FILE)
    get_run_logger().info(
        "sharded data %s: %d users in %d shards, %d interactions, %d campaigns (%d with problems)",
        folder,
        n_users,
        manifest.n_shards,
        sum(s.interactions for s in manifest.shards),
        len(campaigns),
        len(problems),
    )
    return str(plan_dir)


@task
def train_sharded_model(spec: ModelSpec, plan_dir: str, split: SplitFile, execution: ExecutionConfig) -> TrainedModel:
    """Fit one model's sharded twin on every shard (map rounds on the cluster, reduced here)."""
    train, _ = load_split(split.path)
    scorer = sharded_scorer(spec.model)(spec.params)
    model_dir = Path(plan_dir).parent / "models" / f"{spec.name}-{stable_hash(spec, split.path)}"
    started_at, start = time.time(), time.perf_counter()
    with shard_pool(plan_dir, execution, f"fit {spec.name}") as pool:
        scorer.fit(pool, train)
    seconds = time.perf_counter() - start
    scorer.save(model_dir)
    params = {k: v for k, v in scorer.params().items() if isinstance(v, (str, int, float, bool))}
    save_model_spec(spec, params, model_dir)
    _FITTED[str(model_dir)] = scorer
    n_users = read_plan(plan_dir)["n_users"]
    get_run_logger().info("trained %s on %d users' shards in %.1fs", spec.name, n_users, seconds)
    return TrainedModel(
        spec=spec,
        data_dir=plan_dir,
        split=split,
        model_dir=str(model_dir),
        fit_seconds=seconds,
        fit_started_at=started_at,
        users_embedded=n_users,
        params=params,
    )


@task
def evaluate_sharded_model(
    trained: TrainedModel, evaluation: EvaluationConfig, execution: ExecutionConfig
) -> ModelEvaluation:
    """Held-out metrics of the model from shard-wise scores (``sharded.scoring.evaluate_sharded``): the rows
    ``protocol.evaluate_campaigns`` gives on the whole data."""
    name, seed = trained.name, trained.split.seed
    train, heldout = load_split(trained.split.path)
    scorer = fitted(trained)
    sizes = audience_sizes(read_plan(trained.data_dir)["n_users"], evaluation.audience_fractions)
    with shard_pool(trained.data_dir, execution, f"evaluate {name}") as pool:
        prepared = scorer.prepare(pool, train)
        rows = evaluate_sharded(
            pool, scorer, prepared, train, heldout, sizes, evaluation.seed_buckets, evaluation.max_scored_users or None
        )
    out = Path(trained.data_dir).parent / "scored" / f"{name}-{stable_hash(trained, evaluation)}"
    metrics = pl.DataFrame(rows).with_columns(pl.lit(name).alias("model"), pl.lit(seed).alias("split_seed"))
    metrics_path = write_parquet_atomic(metrics, out / "metrics.parquet") if rows else None
    return ModelEvaluation(model=name, split_seed=seed, metrics_path=str(metrics_path) if metrics_path else None)


@task
def stage_sharded_audiences(
    trained: TrainedModel, publish: PublishConfig, execution: ExecutionConfig
) -> StagedAudiences:
    """Every campaign's audience from all its seeds, cut from the shards in two passes and reduced per
    campaign (``sharded.audience_cut``), staged as Parquet for publishing."""
    spec, plan_dir = trained.spec, trained.data_dir
    campaigns = plan_campaigns(plan_dir)
    size = audience_size(read_plan(plan_dir)["n_users"], publish.audience_fraction)
    stage = Path(plan_dir).parent / "staged" / f"{spec.name}-{stable_hash(trained, publish.audience_fraction)}"
    exclusions = [str(Path(p).resolve()) for p in publish.exclusions]
    scorer = fitted(trained)
    step = max(1, size // 512)  # ~512 sampled scores a campaign a shard; each shard writes < step extra rows
    with shard_pool(plan_dir, execution, f"stage {spec.name}") as pool:
        prepared = scorer.prepare(pool, campaigns)
        samples = pool.map(cut_samples, spec.model, prepared, campaigns, size, step, exclusions)
        failed = {cid: part for shard in samples for cid, part in shard.items() if isinstance(part, str)}
        cuts = {cid: lower_cut([shard[cid] for shard in samples], size) for cid in campaigns if cid not in failed}
        written = pool.map(
            write_candidates, spec.model, prepared, campaigns, cuts, str(stage / "candidates"), exclusions
        )
    failed |= {cid: part for shard in written for cid, part in shard.items() if isinstance(part, str)}
    staged = {}
    for cid in cuts:
        if cid in failed:
            continue
        audience = reduce_campaign(stage / "candidates" / cid, size, spec.name)
        if audience.height == 0:  # as single-process staging: an empty audience fails its campaign
            failed[cid] = (
                "ValueError: nothing left to rank: every candidate is a seed, a known non-converter or excluded"
            )
            continue
        staged[cid] = str(write_parquet_atomic(audience, stage / f"{cid}.parquet"))
    get_run_logger().info(
        "staged %d audiences of %d users from %d shards (%d failed)", len(staged), size, len(samples), len(failed)
    )
    return StagedAudiences(model=spec.name, staged=staged, failed=failed)


def fitted(trained: TrainedModel) -> ShardedScorer:
    """The fitted sharded model of ``trained`` in this process."""
    if trained.model_dir not in _FITTED:
        raise RuntimeError(f"{trained.name}: its sharded fit is not in this process; re-run the night")
    return _FITTED[trained.model_dir]


def forget_fitted(keep: list[str]) -> None:
    """Drop every fitted sharded model but the ``keep`` model folders (after the champion is chosen)."""
    for model_dir in [d for d in _FITTED if d not in keep]:
        del _FITTED[model_dir]
