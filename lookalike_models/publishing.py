"""Published audiences: per campaign ``user_id, score, rank, source``, in a run-keyed, campaign-partitioned
folder, written atomically so a consumer never reads a half-written audience."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lookalike_models.contract import USER_ID, check_campaign_id
from lookalike_models.dataset import LookalikeData
from lookalike_models.io import write_bytes_atomic, write_parquet_atomic

AUDIENCE_FILE = "audience.parquet"


def audience_frame(data: LookalikeData, users: np.ndarray, scores: np.ndarray, source: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            USER_ID: data.user_ids.gather(users) if users.size else data.user_ids.head(0),
            "score": scores.astype(np.float32),
            "rank": np.arange(1, users.size + 1, dtype=np.int32),
            "source": pl.Series([source] * users.size, dtype=pl.String),
        }
    )


def write_embeddings(data: LookalikeData, embeddings: np.ndarray, path: str | Path) -> Path:
    """User embeddings as Parquet: user_id, user_idx, embedding (list[float32])."""
    frame = pl.DataFrame(
        {
            USER_ID: data.user_ids,
            "user_idx": np.arange(data.n_users),
            "embedding": pl.Series(embeddings.astype(np.float32)).cast(pl.List(pl.Float32)),
        }
    )
    return write_parquet_atomic(frame, path)


def audience_path(root: str | Path, run_id: str, campaign_id: str) -> Path:
    """``<root>/run_id=<run>/campaign_id=<cid>/audience.parquet``; ids are checked, so no '../' escapes."""
    check_campaign_id(run_id, "run_id")
    check_campaign_id(campaign_id)
    return Path(root) / f"run_id={run_id}" / f"campaign_id={campaign_id}" / AUDIENCE_FILE


def mark_latest(root: str | Path, run_id: str) -> Path:
    """Point ``<root>/LATEST`` at a run once all its audiences are in place."""
    return write_bytes_atomic(run_id.encode(), Path(root) / "LATEST")


def read_latest(root: str | Path) -> str | None:
    path = Path(root) / "LATEST"
    return path.read_text().strip() if path.exists() else None
