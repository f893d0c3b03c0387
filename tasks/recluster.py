"""Tasks of the re-clustering flow: current seeds into the live model's index, RALM centroids refreshed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.logging import get_run_logger

from lookalike_models.config import ModelSpec
from lookalike_models.contract import CAMPAIGN_ID, LABEL, SEEDS, USER_ID, read_table, validate_seeds
from lookalike_models.dataset import CampaignSeeds
from tasks.data import load_data
from tasks.results import ReclusterResult
from tasks.retrying import retry_on_io_error


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_on_io_error)
def current_seeds(seeds_path: str, data_dir: str) -> dict[str, CampaignSeeds]:
    """Converters per campaign, in the live model's user index. Users the model has never seen are left
    for the next nightly run (they have no embedding yet); how many is logged."""
    logger = get_run_logger()
    seeds = validate_seeds(read_table(seeds_path), Path(seeds_path))
    if LABEL in seeds.columns:
        seeds = seeds.filter(pl.col(LABEL).fill_null(1) == 1)
    data = load_data(data_dir)
    campaigns, unknown = {}, 0
    for (cid,), group in seeds.group_by([CAMPAIGN_ID], maintain_order=True):
        idx = data.index_of(group[USER_ID].to_list())
        unknown += int((idx < 0).sum())
        if (idx >= 0).any():
            campaigns[str(cid)] = CampaignSeeds(str(cid), np.unique(idx[idx >= 0]))
    logger.info(
        "%s: %d campaigns, %d seeds unknown to the live model (wait for the nightly refit)",
        SEEDS,
        len(campaigns),
        unknown,
    )
    return campaigns


@task
def recluster_model(
    model_dir: str, data_dir: str, spec: ModelSpec, campaigns: dict[str, CampaignSeeds]
) -> ReclusterResult:
    """Refresh the centroids of campaigns whose seeds changed; the others keep theirs."""
    from lookalike_models.ralm.scorer import read_centroids, recluster_campaigns

    before = {cid: c.fingerprint for cid, c in read_centroids(model_dir).items()}
    after = recluster_campaigns(model_dir, load_data(data_dir), campaigns, spec.model, spec.params)
    changed = sorted(cid for cid, c in after.items() if before.get(cid) != c.fingerprint)
    why = None
    if not campaigns:
        why = "no campaign of the seed file has a seed (label 1) that the live model knows"
    elif not changed:
        why = "every campaign's seeds are unchanged since its centroids were computed"
    result = ReclusterResult(model=spec.name, reclustered=changed, campaigns=len(after), why=why)
    get_run_logger().info("%s", recluster_line(result))
    return result


def recluster_line(result: ReclusterResult) -> str:
    """'ralm: 2 of 8 campaigns re-clustered (c001, c003)', or why none was."""
    done = result.reclustered
    line = f"{result.model}: {len(done)} of {result.campaigns} campaigns re-clustered"
    if done:
        return line + f" ({', '.join(done[:10])}{' ...' if len(done) > 10 else ''})"
    return line + (f": {result.why}" if result.why else "")
