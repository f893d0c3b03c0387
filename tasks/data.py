"""Tasks that turn the configured source into encoded data and a train/held-out split."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from lookalike_models.config import DataSource, EvaluationConfig
from lookalike_models.dataset import CampaignSeeds, LookalikeData, feature_only_users, require_runnable_campaigns
from lookalike_models.evaluation import holdout_split, save_split
from lookalike_models.sources import load_encoded
from tasks.caching import CACHED, file_fingerprint, stable_hash
from tasks.results import SplitFile
from tasks.retrying import retry_on_io_error


@lru_cache(maxsize=2)
def load_data(data_dir: str) -> LookalikeData:
    """Encoded data is read once per process, however many tasks use it."""
    return LookalikeData.load(data_dir)


# A sharded night's "data folder" is its plan (``tasks/sharded_night.plan_sharded_data``): no user's rows.
PLAN_FILE = "plan.json"


def read_plan(data_dir: str) -> dict | None:
    """The sharded plan in ``data_dir`` (folder, version, n_users, n_shards, problems), None for encoded data."""
    path = Path(data_dir) / PLAN_FILE
    return json.loads(path.read_text()) if path.exists() else None


def plan_campaigns(plan_dir: str) -> dict[str, CampaignSeeds]:
    """Every runnable campaign's seeds of a sharded plan, in global user indices."""
    seeds = pl.read_parquet(Path(plan_dir) / "seeds.parquet")
    campaigns = {}
    for (cid,), group in seeds.group_by(["campaign_id"], maintain_order=True):
        users, labels = group["user_idx"].to_numpy().astype(np.int64), group["label"].to_numpy()
        campaigns[cid] = CampaignSeeds(cid, np.sort(users[labels == 1]), np.sort(users[labels == 0]))
    return campaigns


def campaigns_and_population(data_dir: str) -> tuple[dict[str, CampaignSeeds], int, dict[str, str]]:
    """(campaigns, users, campaign problems) of encoded data or of a sharded plan."""
    plan = read_plan(data_dir)
    if plan is not None:
        return plan_campaigns(data_dir), plan["n_users"], plan["problems"]
    data = load_data(data_dir)
    return data.campaigns, data.n_users, data.campaign_problems


@task
def fingerprint_inputs(source: DataSource, exclusions: list[str]) -> str:
    """What the input files look like now; part of the cache key of everything downstream."""
    paths = [Path(p) for p in exclusions]
    if source.path:
        paths.append(Path(source.path))
    return file_fingerprint(paths)


@task(
    retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_condition_fn=retry_on_io_error, **CACHED
)
def prepare_data(source: DataSource, input_fingerprint: str, work_root: str) -> str:
    """Read, validate and encode the input; the id mappings land in ``<work>/data-<key>/encoded``."""
    logger = get_run_logger()
    folder = Path(work_root) / f"data-{stable_hash(source, input_fingerprint)}"
    data = load_encoded(source, folder / "input")
    require_runnable_campaigns(data)
    out = data.save(folder / "encoded")
    logger.info(
        "encoded %d users, %d items, %d interactions, %d campaigns",
        data.n_users,
        data.n_items,
        data.user_idx.size,
        len(data.campaigns),
    )
    feature_only = feature_only_users(data)
    if feature_only:
        logger.warning(
            "%d of %d users appear only in user_features (no interactions): they are part of the "
            "population that audience sizes are shares of",
            feature_only,
            data.n_users,
        )
    return str(out)


@task
def skipped_campaigns(data_dir: str) -> dict[str, str]:
    """Campaigns the input made impossible to run (bad id, no seeds, unknown seeds, nothing left to rank),
    with the reason. Read on every run, cached or not, so a re-run reports them too."""
    problems = campaigns_and_population(data_dir)[2]
    for cid, problem in sorted(problems.items()):
        get_run_logger().warning("campaign %s skipped: %s", cid, problem)
    return dict(problems)


@task(**CACHED)
def split_campaigns(data_dir: str, evaluation: EvaluationConfig, work_root: str) -> list[SplitFile]:
    """Hold out a share of every campaign's seeds (plus as many non-seeds), once per split seed. Returns one
    split per ``evaluation.split_seeds``, in that order."""
    campaigns, n_users, _ = campaigns_and_population(data_dir)
    splits = []
    for seed in evaluation.split_seeds:
        train, heldout = holdout_split(campaigns, n_users, evaluation.holdout_frac, seed)
        sampled = sum(h.negatives_sampled for h in heldout.values())
        get_run_logger().info(
            "split %d: %d campaigns, %d evaluable (%d with sampled non-seeds)", seed, len(train), len(heldout), sampled
        )
        path = Path(data_dir).parent / f"split-{seed}-{stable_hash(evaluation.holdout_frac, seed)}.parquet"
        splits.append(SplitFile(seed=seed, path=str(save_split(train, heldout, path))))
    return splits
