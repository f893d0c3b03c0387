"""``lsh_density`` / ``lsh_voting``: the paper's hyperplane-LSH region scores on StarSpace embeddings (deWet &
Ou, KDD 2019; the index is ``lsh.py``). A campaign is a {region -> score} table; a user's score is a lookup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.pinterest.embedding import EmbeddingScorer, EmbeddingScorerConfig, unit_centroid
from lookalike_models.pinterest.lsh import HyperplaneLSH, RegionTable, default_bits
from lookalike_models.scorers import register


class LSHConfig(EmbeddingScorerConfig):
    kind: str = Field("density", pattern="^(density|voting)$", description="Region score: density or voting")
    n_partitions: int = Field(16, ge=1, le=256, description="Independent hyperplane partitions averaged")
    n_bits: int | None = Field(None, ge=1, le=30, description="Hyperplanes per partition; None: from users_per_region")
    users_per_region: float = Field(16.0, gt=0, description="Target mean region population when n_bits is None")
    min_region_seeds: int = Field(1, ge=1, description="Drop regions with fewer seeds")
    min_region_users: int = Field(3, ge=1, description="Drop regions with fewer users")
    min_candidate_share: float = Field(0.1, ge=0, le=1, description="Below this share covered, score everyone")
    tiebreak_cosine: float = Field(1e-3, ge=0, description="Weight of centroid cosine to order equal region scores")
    seed: int = 0


@register("lsh_density")
class LSHDensityScorer(EmbeddingScorer):
    """The paper's scorer: a campaign is a {region -> score} table; a user's score is a lookup."""

    config_class = LSHConfig
    default_kind = "density"

    def __init__(self, config: BaseModel | dict[str, Any] | None = None):
        if not isinstance(config, BaseModel):
            config = {"kind": self.default_kind, **(config or {})}
        super().__init__(config)

    def fit_campaigns(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        cfg = self.config
        bits = cfg.n_bits or default_bits(data.n_users, cfg.users_per_region)
        self.lsh = HyperplaneLSH(self.embeddings, cfg.n_partitions, bits, cfg.seed)

    def table(self, seeds: CampaignSeeds) -> RegionTable:
        """The campaign's {region -> score} table, built from its seeds whenever asked (cheap)."""
        cfg = self.config
        return self.lsh.region_table(seeds.positives, cfg.kind, cfg.min_region_seeds, cfg.min_region_users)

    def candidates(self, data: LookalikeData, seeds: CampaignSeeds) -> np.ndarray:
        covered = np.flatnonzero(self.table(seeds).covered(self.lsh.codes))
        return covered if covered.size >= self.config.min_candidate_share * data.n_users else np.arange(data.n_users)

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        table = self.table(seeds)  # cheap; a cached table could belong to another seed list
        scores = self.lsh.score(table, candidates)
        if self.config.tiebreak_cosine:
            # The best score of the whole population, not of these candidates: a shard of users must add the
            # same tie-break as the whole (uncovered users score 0, so this is the covered users' best too).
            best = self.population_best(table, seeds, scores if candidates.size == data.n_users else None)
            scale = best if best > 0 else 1.0
            cosine = self.embeddings[candidates] @ unit_centroid(self.embeddings, seeds.positives)
            scores = scores + self.config.tiebreak_cosine * scale * cosine
        return scores.astype(np.float32)

    def population_best(self, table, seeds: CampaignSeeds, everyone: np.ndarray | None) -> float:
        """The best table score over every user (``everyone``: those scores when already computed), kept per
        seed list: a worker scoring many shards of a campaign looks the population up once."""
        kept = self.__dict__.setdefault("_population_best", {})
        key = seeds.positives.tobytes()
        if key not in kept:
            if len(kept) >= 4096:
                kept.clear()
            scores = self.lsh.score(table) if everyone is None else everyone
            kept[key] = float(scores.max()) if scores.size else 0.0
        return kept[key]

    def save(self, folder: Path) -> None:
        super().save(folder)
        np.savez(Path(folder) / "lsh.npz", planes=self.lsh.planes)

    def load(self, folder: Path, data: LookalikeData) -> None:
        super().load(folder, data)
        with np.load(Path(folder) / "lsh.npz", allow_pickle=False) as npz:
            self.lsh = HyperplaneLSH.from_planes(self.embeddings, npz["planes"])


@register("lsh_voting")
class LSHVotingScorer(LSHDensityScorer):
    """Same tables scored by seed counts: crowded regions win whatever the campaign (the paper's foil)."""

    default_kind = "voting"
