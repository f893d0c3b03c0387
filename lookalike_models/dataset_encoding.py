"""How the contract's columns become codes: categorical and multi-valued fields, and which campaigns' seed
lists cannot run (and why). ``dataset.encode`` applies them to a whole ``RawDataset``."""

from __future__ import annotations

import numpy as np
import polars as pl

from lookalike_models.contract import CAMPAIGN_ID, SEEDS, USER_ID, DataContractError, check_campaign_id


def encode_categorical(values: pl.Series) -> tuple[np.ndarray, int]:
    """Codes 1..V by sorted distinct value (stable across runs); null -> 0."""
    as_str = values.cast(pl.String)
    vocab = as_str.drop_nulls().unique().sort()
    mapping = pl.DataFrame({"v": vocab, "code": np.arange(1, len(vocab) + 1, dtype=np.int64)})
    codes = pl.DataFrame({"v": as_str}).join(mapping, on="v", how="left", maintain_order="left")["code"]
    return codes.fill_null(0).to_numpy().astype(np.int64), len(vocab) + 1


def encode_multi(values: pl.Series, max_len: int) -> tuple[np.ndarray, int]:
    """Pad each list to ``max_len`` with 0; values get codes 1..V."""
    n = len(values)
    exploded = pl.DataFrame({"row": np.arange(n), "v": values}).explode("v").drop_nulls("v")
    exploded = exploded.with_columns(pl.col("v").cast(pl.String))
    vocab = exploded["v"].unique().sort()
    mapping = pl.DataFrame({"v": vocab, "code": np.arange(1, len(vocab) + 1, dtype=np.int64)})
    exploded = (
        exploded.join(mapping, on="v", how="left")
        .with_columns(pl.int_range(pl.len()).over("row").alias("pos"))
        .filter(pl.col("pos") < max_len)
    )
    width = max(1, min(max_len, int(exploded["pos"].max() + 1) if exploded.height else 1))
    out = np.zeros((n, width), np.int64)
    out[exploded["row"].to_numpy(), exploded["pos"].to_numpy()] = exploded["code"].to_numpy()
    return out, len(vocab) + 1


def seed_list_problems(seeds: pl.DataFrame, known: pl.DataFrame, min_match_rate: float) -> dict[str, str]:
    problems: dict[str, str] = {}
    stats = (
        seeds.join(known.select(USER_ID, pl.lit(True).alias("known")), on=USER_ID, how="left")
        .group_by(CAMPAIGN_ID)
        .agg(
            pl.len().alias("rows"),
            (pl.col("label") == 1).sum().alias("pos"),
            ((pl.col("label") == 1) & pl.col("known").is_not_null()).sum().alias("pos_known"),
            pl.col("known").is_not_null().sum().alias("known"),
            pl.col(USER_ID).filter(pl.col("known").is_null()).first().alias("unknown_example"),
        )
    )
    for row in stats.iter_rows(named=True):
        cid = row[CAMPAIGN_ID]
        try:
            check_campaign_id(cid)
        except DataContractError as err:
            problems[cid] = str(err)
            continue
        if row["pos"] == 0:
            problems[cid] = str(DataContractError(SEEDS, "label", f"campaign '{cid}' has no seed (label 1) rows", cid))
        elif row["pos_known"] < max(1, min_match_rate * row["pos"]):
            problems[cid] = str(
                DataContractError(
                    SEEDS,
                    USER_ID,
                    f"campaign '{cid}': only {row['pos_known']} of {row['pos']} seeds are known users "
                    f"(need {min_match_rate:.0%})",
                    row["unknown_example"],
                )
            )
        elif row["known"] >= known.height:
            # Every user is a seed or a known non-converter: an empty audience with a perfect precision.
            problems[cid] = str(
                DataContractError(
                    SEEDS,
                    USER_ID,
                    f"campaign '{cid}': its seeds and non-converters are all {known.height} users, "
                    "nothing is left to rank",
                    cid,
                )
            )
    return problems
