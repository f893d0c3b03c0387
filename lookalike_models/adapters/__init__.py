"""Adapters turning the real public data sets into the data contract.

The data sets' terms forbid republishing, so adapters read them where they lie (``../shared/data`` by
default, or ``$LOOKALIKE_DATA_ROOT``) and write contract folders outside the repository's tracked files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from lookalike_models.contract import ITEM_ID

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path:
    """Where the real data sets are: $LOOKALIKE_DATA_ROOT, else ../shared/data beside the repository."""
    return Path(os.environ.get("LOOKALIKE_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


def choose_campaign_items(
    raters: pl.DataFrame,
    n_campaigns: int,
    min_raters: int,
    max_raters: int,
    n_meta_campaigns: int,
    meta_min_raters: int,
    seed: int,
) -> tuple[np.ndarray, list]:
    """Items that become campaigns (their raters are the seeds) from ``raters`` (item_id, len): up to
    ``n_campaigns`` with ``min_raters``-``max_raters`` raters, and up to ``n_meta_campaigns`` other items with
    at least ``meta_min_raters`` (MetaHeac's meta-training tasks). Both sorted; one RNG for both draws."""
    eligible = raters.filter(pl.col("len").is_between(min_raters, max_raters)).sort(ITEM_ID)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible[ITEM_ID].to_numpy(), min(n_campaigns, eligible.height), replace=False))
    if not n_meta_campaigns:
        return chosen, []
    pool = raters.filter((pl.col("len") >= meta_min_raters) & ~pl.col(ITEM_ID).is_in(chosen.tolist()))
    pool_items = pool.sort(ITEM_ID)[ITEM_ID].to_numpy()
    return chosen, list(np.sort(rng.choice(pool_items, min(n_meta_campaigns, pool.height), replace=False)))
