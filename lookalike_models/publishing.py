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
COMPLETE_FILE = "_COMPLETE"  # in a run's folder once every audience of the run is in place
RUN_PREFIX = "run_id="


def audience_frame(data: LookalikeData, users: np.ndarray, scores: np.ndarray, source: str) -> pl.DataFrame:
    return ranked_audience(data.user_ids.gather(users) if users.size else data.user_ids.head(0), scores, source)


def ranked_audience(user_ids: pl.Series, scores: np.ndarray, source: str) -> pl.DataFrame:
    """The published audience's columns for ``user_ids`` in rank order (best first)."""
    return pl.DataFrame(
        {
            USER_ID: user_ids,
            "score": scores.astype(np.float32),
            "rank": np.arange(1, len(user_ids) + 1, dtype=np.int32),
            "source": pl.Series([source] * len(user_ids), dtype=pl.String),
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


def mark_complete(root: str | Path, run_id: str) -> Path:
    """Mark ``<root>/run_id=<run>/`` complete (every audience in place), just before LATEST moves to it."""
    check_campaign_id(run_id, "run_id")
    return write_bytes_atomic(run_id.encode(), Path(root) / f"{RUN_PREFIX}{run_id}" / COMPLETE_FILE)


def leftovers(root: str | Path) -> list[Path]:
    """What a run killed while publishing under ``root`` left: temporary files of unfinished atomic writes
    (``.audience.parquet.tmp-*``, ``.LATEST.tmp-*``) and partial run folders. A run folder is partial when it
    has no completion marker and LATEST never pointed to it: it is not LATEST and its run id (which sorts by
    start time) is later than LATEST's. Folders older than LATEST without a marker were published before
    markers existed, and are kept. Only call this while holding the output root's run lock."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.rglob(".*.tmp-*") if p.is_file()]
    latest = read_latest(root)
    for folder in sorted(root.glob(f"{RUN_PREFIX}*")):
        run_id = folder.name.removeprefix(RUN_PREFIX)
        if not folder.is_dir() or (folder / COMPLETE_FILE).exists() or run_id == latest:
            continue
        if latest is None or run_id > latest:
            found.append(folder)
    return found


def remove_leftovers(root: str | Path) -> list[Path]:
    """Delete :func:`leftovers` of killed runs under ``root``; returns what was removed."""
    import shutil

    removed = leftovers(root)
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed
