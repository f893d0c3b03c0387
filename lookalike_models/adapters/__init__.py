"""Adapters turning the real public data sets into the data contract.

The data sets' terms forbid republishing, so adapters read them where they lie (``../shared/data`` by
default, or ``$LOOKALIKE_DATA_ROOT``) and write contract folders outside the repository's tracked files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from lookalike_models.adapters.options import CampaignItemOptions
from lookalike_models.contract import ITEM_ID, DataContractError

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path:
    """Where the real data sets are: $LOOKALIKE_DATA_ROOT, else ../shared/data beside the repository."""
    return Path(os.environ.get("LOOKALIKE_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


# The folder each real data set is read from under the data root, and the files its adapter needs there.
DATA_SETS = {
    "movielens": ("movielens-100k", ["u.data", "u.user", "u.item"]),
    "amazon": ("amazon-books-movies-dense", ["Amazon-Books-Dense.inter", "Amazon-Movies-Dense.inter"]),
    "tencent": ("tencent-lookalike-2018", ["derived/simuler_metaheac_train_stage2.csv"]),
}


class DataSourceNotFoundError(DataContractError):
    """A real data set's raw files are not where the configuration says: names the file, ``data.path`` or
    ``$LOOKALIKE_DATA_ROOT``, so the operator knows which setting to fix."""

    def __init__(self, kind: str, missing: Path, path: str | None):
        self.file, self.column, self.example = str(missing), "(file)", None
        if path:
            where = f"data.path is {path}"
        else:
            root = os.environ.get("LOOKALIKE_DATA_ROOT")
            where = (
                f"LOOKALIKE_DATA_ROOT is {root}"
                if root
                else f"LOOKALIKE_DATA_ROOT is not set, so the default {shared_data_root()} is used"
            )
        self.problem = (
            f"data.kind={kind}: {missing} not found ({where}); set LOOKALIKE_DATA_ROOT to the folder holding "
            f"{DATA_SETS[kind][0]}/, or data.path to the {kind} folder itself"
        )
        ValueError.__init__(self, self.problem)


def source_folder(kind: str, path: str | Path | None) -> Path:
    """The raw folder (or file, for tencent) of a real data set: ``path`` if given, else under the data root."""
    return Path(path) if path else shared_data_root() / DATA_SETS[kind][0]


def check_source_files(kind: str, path: str | Path | None) -> None:
    """Raise :class:`DataSourceNotFoundError` naming the first raw file of ``kind`` that is missing."""
    if kind not in DATA_SETS:
        return
    folder = source_folder(kind, path)
    if kind == "tencent" and folder.is_file():  # the adapter also takes one sample file (.csv or .pkl)
        return
    for name in DATA_SETS[kind][1]:
        if not (folder / name).is_file():
            raise DataSourceNotFoundError(kind, folder / name, str(path) if path else None)


def choose_campaign_items(raters: pl.DataFrame, options: CampaignItemOptions) -> tuple[np.ndarray, list]:
    """Items that become campaigns (their raters are the seeds) from ``raters`` (item_id, len): up to
    ``n_campaigns`` with ``min_raters``-``max_raters`` raters, and up to ``n_meta_campaigns`` other items with
    at least ``meta_min_raters`` (MetaHeac's meta-training tasks). Both sorted; one RNG for both draws."""
    eligible = raters.filter(pl.col("len").is_between(options.min_raters, options.max_raters)).sort(ITEM_ID)
    rng = np.random.default_rng(options.seed)
    n_chosen = min(options.n_campaigns, eligible.height)
    chosen = np.sort(rng.choice(eligible[ITEM_ID].to_numpy(), n_chosen, replace=False))
    if not options.n_meta_campaigns:
        return chosen, []
    pool = raters.filter((pl.col("len") >= options.meta_min_raters) & ~pl.col(ITEM_ID).is_in(chosen.tolist()))
    pool_items = pool.sort(ITEM_ID)[ITEM_ID].to_numpy()
    return chosen, list(np.sort(rng.choice(pool_items, min(options.n_meta_campaigns, pool.height), replace=False)))
