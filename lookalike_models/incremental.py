"""Incremental refresh: between two nightly runs most users did nothing new and most campaigns kept
their seeds, so only what changed is recomputed.

- **Users.** Each user's activity gets a fingerprint (an order-free 64-bit hash of the ids of the
  items they touched). A scorer that keeps per-user state (MinHash signatures) re-embeds only users
  whose fingerprint changed or who are new, and copies the rest from the previous run's model.
- **Campaigns.** For a *pointwise* scorer (a user's score depends only on that user's state and the
  seeds' state) a campaign whose seeds, seeds' state, exclusions and audience size are unchanged keeps
  its previous top list: only changed users are rescored and merged in. The result equals a full
  rescore, because no unchanged user's score moved.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.scorers import AudienceScorer, top_k

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
    return pl.DataFrame({"user_id": data.user_ids, "fingerprint": user_fingerprints(data)})


def state_mismatch(data: LookalikeData, previous: pl.DataFrame) -> str | None:
    """Why the previous run's user state cannot be matched to today's users (None when it can). A night
    whose ids changed type (strings yesterday, integers today) must start afresh, not crash every night."""
    if set(previous.columns) != {"user_id", "fingerprint"}:
        return f"previous user state has columns {previous.columns}"
    if previous.schema["user_id"] != data.user_ids.dtype:
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
    joined = current.join(previous.with_row_index("previous_row").rename({"fingerprint": "previous_fp"}),
                          on="user_id", how="left").sort("row")
    previous_row = joined["previous_row"].fill_null(-1).cast(pl.Int64).to_numpy()
    unchanged = (joined["fingerprint"] == joined["previous_fp"]).fill_null(False).to_numpy()
    return previous_row, unchanged


def load_user_state(folder: Path) -> pl.DataFrame | None:
    path = Path(folder) / USER_STATE
    return pl.read_parquet(path) if path.exists() else None


def ids_key(data: LookalikeData, user_idx: np.ndarray) -> str:
    """Order-free key of a set of users by their ids (not their run-specific user_idx)."""
    ids = data.user_ids.gather(np.unique(user_idx)).cast(pl.String).sort()
    return hashlib.sha256("\x1f".join(ids.to_list()).encode()).hexdigest()[:16]


@dataclass
class PreviousTop:
    """What a run keeps per campaign so that the next run can refresh it: its top list, deeper than the
    published audience, and the conditions under which that list is still valid."""

    user_ids: pl.Series  # best first
    scores: np.ndarray
    size: int  # published audience size
    key: str  # seeds, exclusions and scoring regime it was computed under


def campaign_key(data: LookalikeData, seeds: CampaignSeeds, excluded: np.ndarray, scored_everyone: bool) -> str:
    return ids_key(data, seeds.positives) + ids_key(data, np.concatenate([seeds.negatives, excluded])) + \
        str(int(scored_everyone))


def refresh_campaign(scorer: AudienceScorer, data: LookalikeData, seeds: CampaignSeeds, size: int, depth: int,
                     excluded: np.ndarray, changed: np.ndarray, previous: PreviousTop | None):
    """The campaign's top ``depth`` list (its first ``size`` users are the audience), rescoring only changed
    users when ``previous`` is still valid. Returns (users, scores, key, reused).

    Reuse is exact (up to ties at the cut) for a pointwise scorer: unchanged users kept their scores, and
    as long as at least ``size`` unchanged users remain in yesterday's deeper list, no unchanged user
    outside it can reach today's top ``size``."""
    candidates = scorer.candidates(data, seeds)
    everyone = candidates.size == data.n_users
    key = campaign_key(data, seeds, excluded, everyone)
    exclude = np.concatenate([seeds.positives, seeds.negatives, excluded])
    if (previous is not None and scorer.pointwise and previous.key == key and previous.size == size
            and not changed[seeds.positives].any()):
        kept = data.index_of(previous.user_ids)
        valid = kept >= 0
        kept, kept_scores = kept[valid], previous.scores[valid]
        unchanged = ~changed[kept]
        if unchanged.sum() >= size:  # enough of yesterday's list survives to hold today's audience
            rescored = candidates[changed[candidates]]
            scores = np.asarray(scorer.score(data, seeds, rescored), np.float32)
            users = np.concatenate([kept[unchanged], rescored])
            all_scores = np.concatenate([kept_scores[unchanged], scores])
            top, top_scores = top_k(users, all_scores, depth, exclude)
            # Past the last unchanged user of yesterday's list, users we never rescored could rank: cut there.
            exact = top_scores >= kept_scores[unchanged].min()
            return top[exact], top_scores[exact], key, True
    scores = np.asarray(scorer.score(data, seeds, candidates), np.float32)
    top, top_scores = top_k(candidates, scores, depth, exclude)
    return top, top_scores, key, False


def changed_since(data: LookalikeData, previous_stage: Path | None) -> np.ndarray:
    """bool [n_users]: activity differs from the previous run's staging (everyone, without one)."""
    state = load_user_state(previous_stage) if previous_stage else None
    if state is None:
        return np.ones(data.n_users, bool)
    _, unchanged = match_previous(data, state)
    return ~unchanged


def load_previous_top(previous: dict | None, campaign_id: str, size: int) -> PreviousTop | None:
    """Yesterday's deep top list of a campaign from the previous run's staging record
    (``{"stage": folder, "size": int, "keys": {campaign_id: key}}``), if it can serve today's size."""
    if not previous or campaign_id not in previous["keys"] or previous["size"] != size:
        return None
    path = Path(previous["stage"]) / "tops" / f"{campaign_id}.parquet"
    if not path.exists():
        return None
    top = pl.read_parquet(path)
    return PreviousTop(top["user_id"], top["score"].to_numpy(), size, previous["keys"][campaign_id])
