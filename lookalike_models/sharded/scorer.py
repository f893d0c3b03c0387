"""What a model provides to run on the sharded data plane: a fit that maps over shards and reduces what they
return, a small prepared state for a set of seed lists, and a score of one shard's users from that state.

Nothing a shard returns and nothing sent to a shard grows with the population: sufficient statistics
(counts, an item Gram matrix), the rows of a bounded panel of users (seeds, a seeded sample), top lists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.scorers import check_params
from lookalike_models.sharded.shard_data import ShardData, ShardPool, concat_data, subset_users

SHARDED_SCORERS: dict[str, type[ShardedScorer]] = {}


def register_sharded(cls: type[ShardedScorer]) -> type[ShardedScorer]:
    """Class decorator: a sharded scorer under the name of the single-process scorer it reproduces."""
    SHARDED_SCORERS[cls.name] = cls
    return cls


class ShardedScorer(ABC):
    """The sharded twin of one registered ``AudienceScorer`` (same ``name``, same ``config_class``): its scores
    of every user equal the single-process scorer's (exact models), or come from a fit on a sample drawn shard
    by shard (models that learn from examples)."""

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel | dict[str, Any] | None = None):
        if isinstance(config, BaseModel):
            config = config.model_dump()
        self.config = self.config_class.model_validate(check_params(self.config_class, config or {}, self.name))

    @abstractmethod
    def fit(self, pool: ShardPool, train_seeds: dict[str, CampaignSeeds]) -> None:
        """Learn what is shared across campaigns from every shard (map rounds on ``pool``, reduced here)."""

    @abstractmethod
    def prepare(self, pool: ShardPool, seeds: dict[str, CampaignSeeds]) -> Any:
        """A small picklable state from which ``score_shard`` scores each of these seed lists (e.g. per-campaign
        item weights, the seeds' signatures); it is sent to every shard."""

    @staticmethod
    @abstractmethod
    def score_shard(prepared: Any, shard: ShardData, seeds: CampaignSeeds) -> tuple[np.ndarray, np.ndarray]:
        """(candidates as global user indices, float32 scores) of this shard's users for one seed list."""

    @classmethod
    def score_users(
        cls, prepared: Any, shard: ShardData, seeds: CampaignSeeds, users: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``score_shard`` restricted to the global ``users`` (sorted) of this shard: a sampled evaluation asks
        for a few; a scorer whose cost is per candidate overrides it to score only those."""
        candidates, scores = cls.score_shard(prepared, shard, seeds)
        keep = np.isin(candidates, users)
        return candidates[keep], np.asarray(scores, np.float32)[keep]

    def params(self) -> dict[str, Any]:
        """Facts of the fit a run logs beside the config (e.g. the chosen strength)."""
        return {}

    def save(self, folder: Path) -> None:
        """What ``fit`` learned, as arrays (``np.savez``) or JSON; no pickle."""
        Path(folder).mkdir(parents=True, exist_ok=True)


def users_of_shard(shard: ShardData, users: np.ndarray) -> LookalikeData:
    """The rows (interactions, fields) of the global ``users`` that lie in ``shard``, in sorted order."""
    return subset_users(shard.data, np.unique(shard.local(users)))


def gather_users(pool: ShardPool, users: np.ndarray) -> tuple[np.ndarray, LookalikeData]:
    """(sorted global ids, their data): a bounded panel of users (seeds, a sample) collected from the shards
    into this process, row i of the data being user ``ids[i]``."""
    users = np.unique(np.asarray(users, np.int64))
    parts = pool.map(users_of_shard, users)
    return users, concat_data([p for p in parts if p.n_users] or parts[:1])
