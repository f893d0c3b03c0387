"""Per-user activity fingerprints: an order-free 64-bit hash of the ids of the items a user touched,
comparable between runs (independent of interaction order and of the run's item index). A scorer that keeps
per-user state saves them beside its arrays, so the next run knows whose activity changed
(incremental refresh, ``incremental.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lookalike_models.contract import USER_ID
from lookalike_models.dataset import LookalikeData

USER_STATE = "user_state.parquet"
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64) + _MIX
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def item_id_hashes(data: LookalikeData) -> np.ndarray:
    """uint64 [n_items], stable across runs: the same item id hashes the same whatever its item_idx."""
    ids = data.item_ids.cast(pl.String)
    return _splitmix64(ids.hash(seed=0).to_numpy())


def user_fingerprints(data: LookalikeData) -> np.ndarray:
    """uint64 [n_users]: the sum of the user's distinct items' hashes (mod 2^64), mixed with their count.
    Independent of interaction order and of the item index, so comparable between runs."""
    indptr, items = data.user_items
    counts = np.diff(indptr)
    sums = np.zeros(data.n_users, np.uint64)
    nonempty = np.flatnonzero(counts)
    if nonempty.size:
        with np.errstate(over="ignore"):
            sums[nonempty] = np.add.reduceat(item_id_hashes(data)[items], indptr[nonempty])
    return _splitmix64(sums ^ counts.astype(np.uint64))


def user_state(data: LookalikeData) -> pl.DataFrame:
    """What a scorer saves beside its per-user arrays: row i of those arrays belongs to this user_id."""
    return pl.DataFrame({USER_ID: data.user_ids, "fingerprint": user_fingerprints(data)})


def state_mismatch(data: LookalikeData, previous: pl.DataFrame) -> str | None:
    """Why the previous run's user state cannot be matched to today's users (None when it can). A night
    whose ids changed type (strings yesterday, integers today) must start afresh, not crash every night."""
    if set(previous.columns) != {USER_ID, "fingerprint"}:
        return f"previous user state has columns {previous.columns}"
    if previous.schema[USER_ID] != data.user_ids.dtype:
        return f"user_id type changed from {previous.schema['user_id']} to {data.user_ids.dtype}"
    if previous.schema["fingerprint"] != pl.UInt64:
        return f"previous fingerprints are {previous.schema['fingerprint']}, not UInt64"
    return None


def match_previous(data: LookalikeData, previous: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each current user: its row in the previous run's arrays (-1 if new) and whether its activity
    is unchanged. Returns (previous_row int64 [n_users], unchanged bool [n_users]). Previous state that does
    not match (see :func:`state_mismatch`) makes every user new: a full refresh."""
    if state_mismatch(data, previous):
        return np.full(data.n_users, -1, np.int64), np.zeros(data.n_users, bool)
    current = user_state(data).with_row_index("row")
    joined = current.join(
        previous.with_row_index("previous_row").rename({"fingerprint": "previous_fp"}), on=USER_ID, how="left"
    ).sort("row")
    previous_row = joined["previous_row"].fill_null(-1).cast(pl.Int64).to_numpy()
    unchanged = (joined["fingerprint"] == joined["previous_fp"]).fill_null(False).to_numpy()
    return previous_row, unchanged


def load_user_state(folder: Path) -> pl.DataFrame | None:
    path = Path(folder) / USER_STATE
    return pl.read_parquet(path) if path.exists() else None
