"""``ptupcdr_hybrid``: a strong warm look-alike scorer for users with target-domain activity, PTUPCDR bridges
for users with source-domain activity only, one ranking.

The two scores live on different scales (a Jaccard estimate or a logistic-regression logit vs a cosine in
the bridged space), so they are merged by rank: each group is ranked by its own scorer and the two lists
are interleaved at a cold share q, i.e. the warm user of within-group rank r gets the key (r + 1) / (1 - q),
the cold user of rank r the key (r + 1) / q, and the audience is read in key order. Any top-K then holds
about q K cold users, whatever K is.

q is the campaign's own evidence: the (smoothed) share of its seeds with no target activity, times
``cold_share_scale``. Held-out converters are drawn like the seeds, so that share estimates how many
converters sit in the cold group; the scale (< 1 when the bridge ranks its group less precisely than the
warm scorer ranks its own) is chosen on an inner validation cut of the training seeds
(``choose_scale`` in ``bench/ptupcdr_lookalike.py``), never on reported split seeds. ``cold_ranking``
``bridge+warm`` ranks the cold group by the sum of its bridge and warm-scorer percentile ranks, for warm
scorers that see source-domain items too (item_logreg).

Measured (bench/results/ptupcdr.md section 2): level with MinHash as the warm part, below item_logreg alone
with item_logreg (which already reaches source-only users through their source items).

Ranks are computed over the whole candidate population (known seeds left out) whatever subset ``score``
is asked for, so sharded scoring gives the same keys as one process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from scipy.stats import rankdata

from lookalike_models.baselines import PopularityScorer, RandomScorer
from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.item_ridge import ItemRidgeScorer
from lookalike_models.minhash import MinHashScorer
from lookalike_models.ptupcdr.scorer import PTUPCDRBridgeScorer
from lookalike_models.reference import ItemLogRegScorer, SVDCentroidScorer
from lookalike_models.scorers import AudienceScorer, pick_scorer, register, validated_params
from lookalike_models.strict_config import StrictConfig

log = logging.getLogger(__name__)

# What may rank the users with target activity.
WARM_SCORERS = (
    MinHashScorer,
    ItemLogRegScorer,
    ItemRidgeScorer,
    SVDCentroidScorer,
    PTUPCDRBridgeScorer,
    PopularityScorer,
    RandomScorer,
)


class PTUPCDRHybridConfig(StrictConfig):
    warm_model: str = Field(
        "minhash", description="Registered scorer for users with target activity (e.g. minhash, item_logreg)"
    )
    warm_params: dict[str, Any] = Field(default_factory=dict, description="The warm scorer's config")
    bridge_params: dict[str, Any] = Field(
        default_factory=dict, description="ptupcdr_bridge's config (its bridges are always used: no use_bridge: false)"
    )
    cold_share_scale: float = Field(1.0, ge=0, description="q = scale x the smoothed cold share of the seeds")
    cold_ranking: Literal["bridge", "bridge+warm"] = Field(
        "bridge",
        description="How source-only users are ranked: by the bridge alone, or by the sum of their "
        "percentile ranks under the bridge and under the warm scorer (when it can score them, e.g. item_logreg "
        "through their source-domain items)",
    )
    prior_seeds: float = Field(2.0, ge=0, description="Smoothing: q starts from (n_cold + p/2) / (n + p)")

    # The parts fail when the config is read (typos included, named by their key path), not after a long fit
    # of the other part.
    @field_validator("warm_model")
    @classmethod
    def _known_warm_part(cls, model: str) -> str:
        pick_scorer(WARM_SCORERS, model, "the warm part")
        return model

    @field_validator("warm_params")
    @classmethod
    def _warm_part_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "warm_model" not in info.data:  # an unknown warm part: already reported
            return params
        return validated_params(pick_scorer(WARM_SCORERS, info.data["warm_model"], "the warm part"), params)

    @field_validator("bridge_params")
    @classmethod
    def _bridge_part_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        # The hybrid exists to reach source-only users through their bridges: it always turns them on.
        if params.get("use_bridge", True) is False:
            raise ValueError("the hybrid always uses the bridges (its cold part); use_bridge: false has no effect here")
        return validated_params(PTUPCDRBridgeScorer, params)


def interleave_keys(warm_order: np.ndarray, cold_order: np.ndarray, cold_share: float, n_users: int) -> np.ndarray:
    """float64 [n_users]: merged rank keys (lower = better; inf = not ranked) from two best-first user lists.

    The r-th warm user gets (r + 1) / (1 - q), the r-th cold user (r + 1) / q: reading keys in order takes
    cold users at rate q. q = 0 (1) puts the whole cold (warm) list after the other one."""
    q = float(np.clip(cold_share, 0.0, 1.0))
    keys = np.full(n_users, np.inf)
    warm_rank = np.arange(1, warm_order.size + 1, dtype=np.float64)
    cold_rank = np.arange(1, cold_order.size + 1, dtype=np.float64)
    keys[warm_order] = warm_rank / (1 - q) if q < 1 else warm_rank + cold_order.size + 1e6
    keys[cold_order] = cold_rank / q if q > 0 else cold_rank + warm_order.size + 1e6
    return keys


def percentile_ranks(scores: np.ndarray) -> np.ndarray:
    """float64 [n] in (0, 1]: each score's rank among ``scores`` over n (ties share their mean rank)."""
    scores = np.asarray(scores, np.float64)
    return rankdata(scores) / max(scores.size, 1)


@register("ptupcdr_hybrid")
class PTUPCDRHybridScorer(AudienceScorer):
    """Warm scorer's ranking for users with target activity, bridge ranking for source-only users, merged by
    rank interleaving at the campaign's cold share."""

    config_class = PTUPCDRHybridConfig

    @classmethod
    def from_fitted(
        cls, config: dict[str, Any], bridge: PTUPCDRBridgeScorer, warm: AudienceScorer
    ) -> PTUPCDRHybridScorer:
        """A hybrid over already fitted parts (benchmarks share one bridge fit between hybrids)."""
        hybrid = cls(config)
        hybrid.bridge, hybrid.warm = bridge, warm
        return hybrid

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        self.bridge = PTUPCDRBridgeScorer({**self.config.bridge_params, "use_bridge": True})
        self.bridge.fit(data, train_seeds)
        self.warm = pick_scorer(WARM_SCORERS, self.config.warm_model, "the warm part")(self.config.warm_params)
        self.warm.fit(data, train_seeds)
        log.info(
            "ptupcdr_hybrid: %d warm users (%s), %d cold users (bridge)",
            self.is_warm.sum(),
            self.config.warm_model,
            self.is_cold.sum(),
        )

    @property
    def is_warm(self) -> np.ndarray:
        """bool [n_users]: users with target-domain activity."""
        return self.bridge.has_target

    @property
    def is_cold(self) -> np.ndarray:
        """bool [n_users]: users with source-domain activity only (reached through their bridges)."""
        return self.bridge.has_source & ~self.bridge.has_target

    def cold_share(self, seeds: CampaignSeeds) -> float:
        """q: the smoothed share of the seeds with no target activity, times ``cold_share_scale``."""
        n_cold = float(self.is_cold[seeds.positives].sum())
        prior = self.config.prior_seeds
        base = (n_cold + prior / 2) / (seeds.positives.size + prior) if seeds.positives.size + prior > 0 else 0.0
        return min(1.0, self.config.cold_share_scale * base)

    def candidates(self, data: LookalikeData, seeds: CampaignSeeds) -> np.ndarray:
        warm = self.warm.candidates(data, seeds)
        return np.union1d(warm[self.is_warm[warm]], np.flatnonzero(self.is_cold))

    def group_orders(self, data: LookalikeData, seeds: CampaignSeeds) -> tuple[np.ndarray, np.ndarray]:
        """(warm users best first, cold users best first) among all candidates, known seeds left out."""
        known = np.zeros(data.n_users, bool)
        known[np.concatenate([seeds.positives, seeds.negatives])] = True
        warm = self.warm.candidates(data, seeds)
        warm = warm[self.is_warm[warm] & ~known[warm]]
        cold = np.flatnonzero(self.is_cold & ~known)
        # Stable sorts on -score keep ties in user order: the same ranking in every process.
        warm_order = warm[np.argsort(-np.asarray(self.warm.score(data, seeds, warm), np.float64), kind="stable")]
        cold_scores = percentile_ranks(self.bridge.score(data, seeds, cold))
        if self.config.cold_ranking == "bridge+warm":
            scorable = np.isin(cold, self.warm.candidates(data, seeds))
            warm_view = np.full(cold.size, -np.inf)
            warm_view[scorable] = self.warm.score(data, seeds, cold[scorable])
            cold_scores = cold_scores + percentile_ranks(warm_view)
        cold_order = cold[np.argsort(-cold_scores, kind="stable")]
        return warm_order, cold_order

    def merged_keys(self, data: LookalikeData, seeds: CampaignSeeds) -> np.ndarray:
        """float64 [n_users] rank keys over all candidates (lower = better; inf: known seeds, non-candidates)."""
        return interleave_keys(*self.group_orders(data, seeds), self.cold_share(seeds), data.n_users)

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        keys = self.merged_keys(data, seeds)[candidates]
        # Higher = better; unranked (known seeds) last.
        return np.where(np.isfinite(keys), -keys, -np.finfo(np.float32).max).astype(np.float32)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        self.bridge.save(folder / "bridge")
        self.warm.save(folder / "warm")

    def load(self, folder: Path, data: LookalikeData) -> None:
        folder = Path(folder)
        self.bridge = PTUPCDRBridgeScorer({**self.config.bridge_params, "use_bridge": True})
        self.bridge.load(folder / "bridge", data)
        self.warm = pick_scorer(WARM_SCORERS, self.config.warm_model, "the warm part")(self.config.warm_params)
        self.warm.load(folder / "warm", data)
