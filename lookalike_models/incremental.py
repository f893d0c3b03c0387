"""Incremental refresh: between two nightly runs most users did nothing new and most campaigns kept
their seeds, so only what changed is recomputed.

- **Users.** Each user's activity gets a fingerprint (``user_state.py``). A scorer that keeps per-user
  state (MinHash signatures) re-embeds only users whose fingerprint changed or who are new, and copies
  the rest from the previous run's model.
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

from lookalike_models.contract import USER_ID
from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.scorers import AudienceScorer, top_k
from lookalike_models.user_state import load_user_state, match_previous


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
    return (
        ids_key(data, seeds.positives)
        + ids_key(data, np.concatenate([seeds.negatives, excluded]))
        + str(int(scored_everyone))
    )


def refresh_campaign(
    scorer: AudienceScorer,
    data: LookalikeData,
    seeds: CampaignSeeds,
    size: int,
    depth: int,
    excluded: np.ndarray,
    changed: np.ndarray,
    previous: PreviousTop | None,
):
    """The campaign's top ``depth`` list (its first ``size`` users are the audience), rescoring only changed
    users when ``previous`` is still valid. Returns (users, scores, key, reused).

    Reuse is exact (up to ties at the cut) for a pointwise scorer: unchanged users kept their scores, and
    as long as at least ``size`` unchanged users remain in yesterday's deeper list, no unchanged user
    outside it can reach today's top ``size``."""
    candidates = scorer.candidates(data, seeds)
    everyone = candidates.size == data.n_users
    key = campaign_key(data, seeds, excluded, everyone)
    exclude = np.concatenate([seeds.positives, seeds.negatives, excluded])
    if (
        previous is not None
        and scorer.pointwise
        and previous.key == key
        and previous.size == size
        and not changed[seeds.positives].any()
    ):
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
    return PreviousTop(top[USER_ID], top["score"].to_numpy(), size, previous["keys"][campaign_id])
