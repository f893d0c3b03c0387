"""Reference audiences every model must beat: random users and the most active users."""

from __future__ import annotations

import numpy as np

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.evaluation import campaign_rng
from lookalike_models.scorers import AudienceScorer, register
from lookalike_models.strict_config import StrictConfig


class RandomConfig(StrictConfig):
    seed: int = 0


@register("random")
class RandomScorer(AudienceScorer):
    """A random audience: what a model's precision is worth nothing above."""

    config_class = RandomConfig

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        pass

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        # Seeded per campaign so a re-run publishes the same audience; one draw per user of the population,
        # so a user's score does not depend on which other users are scored with it (user shards).
        rng = campaign_rng(self.config.seed, seeds.campaign_id)
        return rng.random(data.n_users)[candidates].astype(np.float32)

    def save(self, folder) -> None:
        pass

    def load(self, folder, data: LookalikeData) -> None:
        pass


class PopularityConfig(StrictConfig):
    pass


@register("popularity")
class PopularityScorer(AudienceScorer):
    """The most active users, whatever the seeds: a strong naive audience on long-tailed data."""

    config_class = PopularityConfig

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        self.activity = data.activity().astype(np.float32)

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        return self.activity[candidates]

    def save(self, folder) -> None:
        pass  # nothing learned beyond counts, which load() recomputes from the data

    def load(self, folder, data: LookalikeData) -> None:
        self.fit(data, {})
