"""``pinterest_ensemble`` on the sharded data plane: fitted on a panel drawn shard by shard, scored where each
shard lies.

Fit: the panel is every campaign's training seeds (positives and labelled negatives) plus a seeded uniform
sample of ``panel_users`` other users (everyone when the population is not larger), gathered into one process
(``gather_users``). The ordinary single-process ``PinterestEnsembleScorer`` (its members, blend validation and
stacker unchanged) is fitted on it, the seeds re-indexed to panel positions. A ``UserFeaturizer`` keeps the
panel's population constants (idf, largest activity) with the fitted encoder (``rebind.py``).

Prepare: per seed list, what a shard needs to score it without the seeds' rows: the seed vector (embedding
members), the fitted logistic regression (classifier), the item weights (item_ridge), the blend chosen for it,
and each blended member's sorted scores of the rank reference: the panel's uniform-sample part only (seeds
would bias it upward), capped at ``rank_reference_users``; everyone when the panel is the population.

Score: a shard's users' state from their own rows and the fitted constants, each member's score from the
campaign's parameters, ranks among the reference, the blend: a user's score depends on the user and the
prepared state only, so any split of users into shards gives the same audience.

Approximate against the single-process ensemble fitted on everyone: the encoder, MLP, classifier and ridge
learn from the panel (its SVD warm start, negatives and Gram matrix from the sample), idf and activity scale are
the panel's, and percentile ranks come from a sample of at most ``rank_reference_users`` panel users.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from pydantic import Field

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.item_ridge import ItemRidgeScorer
from lookalike_models.pinterest.affinity import AffinityMLP, AffinityMLPScorer
from lookalike_models.pinterest.classifier import PinterestClassifierScorer
from lookalike_models.pinterest.embedding import EmbeddingScorer, unit_centroid
from lookalike_models.pinterest.ensemble import PinterestEnsembleScorer, _finite_or_lowest, ranks_in_sorted
from lookalike_models.pinterest.ensemble_config import EnsembleConfig
from lookalike_models.pinterest.stacker import ActivityStacker
from lookalike_models.progress import Progress
from lookalike_models.scorers import AudienceScorer
from lookalike_models.sharded.exact_models import shard_memo
from lookalike_models.sharded.rebind import UserFeaturizer, UserState, rebind
from lookalike_models.sharded.scorer import ShardedScorer, gather_users, register_sharded
from lookalike_models.sharded.shard_data import ShardData, ShardPool

log = logging.getLogger(__name__)
AFFINITY_BLOCK = 100_000  # users through the MLP at once, as the single-process member


class SampledEnsembleConfig(EnsembleConfig):
    panel_users: int = Field(
        200_000,
        ge=1,
        description="Users sampled uniformly (beyond the campaigns' seeds) into the panel the ensemble is fitted "
        "on; everyone when the population is not larger",
    )


@dataclass
class CampaignPlan:
    """One seed list's part of the prepared state."""

    params: list[Any]  # per member: seed vector, fitted LogisticRegression or item weights
    weights: np.ndarray | None  # the blend, None: the stacker
    references: dict[int, np.ndarray] = field(default_factory=dict)  # member -> sorted float32 reference scores


@dataclass
class PreparedEnsemble:
    """Everything ``score_shard`` reads: the featurizer, the members' shared parameters, one plan per seed list."""

    token: str  # names this state in a worker's per-shard cache
    reference_size: int  # users whose scores the ranks are taken among
    featurizer: UserFeaturizer
    kinds: list[str]  # per member: affinity, cosine, classifier, ridge
    mlp: AffinityMLP | None
    stacker: ActivityStacker | None
    plans: dict[str, CampaignPlan]


def member_kind(member: AudienceScorer) -> str:
    if isinstance(member, AffinityMLPScorer):
        return "affinity" if getattr(member, "trained", True) else "cosine"
    if isinstance(member, EmbeddingScorer) and not isinstance(member, PinterestClassifierScorer):
        return "cosine"
    if isinstance(member, PinterestClassifierScorer):
        return "classifier"
    if isinstance(member, ItemRidgeScorer):
        return "ridge"
    raise NotImplementedError(f"sharded pinterest_ensemble: member {member.name} is not supported")


@torch.no_grad()
def member_scores(kind: str, param: Any, state: UserState, rows: np.ndarray | None, mlp: AffinityMLP | None):
    """float32 [n]: one member's scores of ``state``'s users (``rows`` of them, or all) from its campaign
    parameter; the single-process member's formula. The embedding members compute in float64 (``mlp`` is a
    float64 copy) and round to float32: float32 matmuls round differently with the batch's size, and a user of
    the rank reference would then meet its own reference score one ulp off in another shard split."""
    if kind in ("affinity", "cosine"):
        emb = state.embeddings if rows is None else state.embeddings[rows]
        vector = torch.as_tensor(param, dtype=torch.float64)
        blocks = np.array_split(np.arange(emb.shape[0]), max(1, -(-emb.shape[0] // AFFINITY_BLOCK)))
        parts = []
        for block in blocks:
            users = torch.as_tensor(emb[block], dtype=torch.float64)
            parts.append((users @ vector if kind == "cosine" else mlp(users, vector)).numpy())
        return np.concatenate(parts).astype(np.float32)
    if kind == "classifier":  # sparse row products: each row's sum in its own order, whatever the batch
        x = state.classifier_rows if rows is None else state.classifier_rows[rows]
        return param.decision_function(x).astype(np.float32)
    x = state.ridge_rows if rows is None else state.ridge_rows[rows]
    return (x @ param).astype(np.float32)


def blended(prepared: PreparedEnsemble, plan: CampaignPlan, state: UserState) -> np.ndarray:
    """float32 [n]: ``PinterestEnsembleScorer.score`` of ``state``'s users with the plan's blend."""

    def ranks(i: int) -> np.ndarray:
        scores = member_scores(prepared.kinds[i], plan.params[i], state, None, prepared.mlp)
        return ranks_in_sorted(plan.references[i], np.float32(scores))

    if plan.weights is None:
        stacked = np.stack([ranks(i) for i in range(len(prepared.kinds))], 1)
        return prepared.stacker.decision(stacked, state.activity).astype(np.float32)
    used = np.flatnonzero(plan.weights > 0)
    if used.size == 1:  # one member: its own scores, nothing to blend
        i = int(used[0])
        return member_scores(prepared.kinds[i], plan.params[i], state, None, prepared.mlp)
    return np.sum([plan.weights[i] * ranks(i) for i in used], 0).astype(np.float32)


def shard_state(prepared: PreparedEnsemble, shard: ShardData) -> UserState:
    """The shard's users' state for this prepared ensemble, kept on the shard while it stays loaded: every seed
    list, and the next round on the same shard (staging's two passes), reads it."""

    def compute() -> tuple:  # a tuple of arrays and CSR matrices: what a worker's disk keeps (``spill.py``)
        state = prepared.featurizer.state(shard.data)
        return tuple(getattr(state, f.name) for f in fields(UserState))

    return UserState(*shard_memo(shard, "ensemble_state", prepared.token, compute, spill=True))


def panel_members(
    n_users: int, train_seeds: dict[str, CampaignSeeds], panel_users: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(panel users, its uniform-sample part), global and sorted: the seeds' users plus ``panel_users`` others
    drawn uniformly (fixed by ``seed``), or everyone (both) when that would be most of the population."""
    seeded = np.unique(
        np.concatenate([np.zeros(0, np.int64)] + [np.r_[s.positives, s.negatives] for s in train_seeds.values()])
    )
    if n_users <= seeded.size + panel_users:
        everyone = np.arange(n_users)
        return everyone, everyone
    others = np.setdiff1d(np.arange(n_users), seeded, assume_unique=True)
    sample = np.sort(np.random.default_rng([seed, n_users]).choice(others, panel_users, replace=False))
    return np.union1d(seeded, sample), sample


def to_positions(ids: np.ndarray, seeds: CampaignSeeds) -> CampaignSeeds:
    """``seeds`` (global) as positions in the sorted ``ids`` (every seed must be among them)."""
    return CampaignSeeds(
        seeds.campaign_id, np.searchsorted(ids, seeds.positives), np.searchsorted(ids, seeds.negatives)
    )


@register_sharded
class SampledPinterestEnsemble(ShardedScorer):
    """``pinterest_ensemble`` fitted on a panel of the seeds and a uniform sample, scored shard by shard."""

    name = "pinterest_ensemble"
    config_class = SampledEnsembleConfig

    def ensemble_config(self) -> EnsembleConfig:
        return EnsembleConfig.model_validate(self.config.model_dump(exclude={"panel_users"}))

    def fit(self, pool: ShardPool, train_seeds: dict[str, CampaignSeeds]) -> None:
        """Gather the panel, fit the single-process ensemble on it, keep its population constants."""
        start = time.perf_counter()
        ids, sample = panel_members(pool.n_users, train_seeds, self.config.panel_users, self.config.seed)
        self.panel_ids, panel = gather_users(pool, ids)
        self.sample = sample
        log.info(
            "sharded pinterest_ensemble: panel of %d users (%d sampled) of %d", ids.size, sample.size, pool.n_users
        )
        self.ensemble = PinterestEnsembleScorer(self.ensemble_config())
        self.ensemble.fit(panel, {cid: to_positions(ids, s) for cid, s in train_seeds.items()})
        if self.ensemble.config.mode != "validated":
            raise NotImplementedError("sharded pinterest_ensemble: only mode=validated")
        self.featurizer = UserFeaturizer.from_fit(self.ensemble.members, panel)
        # Names the featurizer's per-shard state on the workers: every prepare of this fit (evaluation, staging)
        # reads the same state, from memory or the worker's disk.
        self.state_token = uuid.uuid4().hex
        self.kinds = [member_kind(m) for m in self.ensemble.members]
        self.panel = panel
        self.fit_seconds = time.perf_counter() - start

    def rank_reference(self, ids: np.ndarray) -> np.ndarray:
        """Positions in ``ids`` of the reference users: the panel's uniform sample (everyone, when the panel is
        the population), a seeded sample of ``rank_reference_users`` of them when there are more."""
        sample, cap = self.sample, self.ensemble.config.rank_reference_users
        if sample.size > cap:
            sample = np.sort(np.random.default_rng([self.config.seed, sample.size]).choice(sample, cap, replace=False))
        return np.searchsorted(ids, sample)

    def prepare(self, pool: ShardPool, seeds: dict[str, CampaignSeeds]) -> PreparedEnsemble:
        """Per seed list its members' parameters, its blend and its reference scores, from the panel (plus the
        rows of seeds outside it, gathered now) with every user's state recomputed by the featurizer."""
        wanted = np.concatenate([self.panel_ids] + [np.r_[s.positives, s.negatives] for s in seeds.values()])
        ids, data = (
            (self.panel_ids, self.panel) if np.isin(wanted, self.panel_ids).all() else gather_users(pool, wanted)
        )
        state = self.featurizer.state(data)
        members = self.ensemble.members
        rebind(members, state)
        reference = self.rank_reference(ids)
        ridge = [m for m in members if isinstance(m, ItemRidgeScorer)]
        local = {cid: to_positions(ids, s) for cid, s in seeds.items()}
        for m in ridge:  # every list's weights from one batch solve, as the single-process scorer
            m.solve_all([s.positives for s in local.values()])
        plans = {}
        with Progress("sharded pinterest_ensemble prepare", len(seeds), "seed lists") as progress:
            for cid, s in local.items():
                plans[cid] = self.plan(members, data, s, state, reference)
                progress.advance()
        mlp = self.mlp64()
        return PreparedEnsemble(
            self.state_token, reference.size, self.featurizer, self.kinds, mlp, self.ensemble.stacker, plans
        )

    def plan(
        self, members: list[AudienceScorer], data: LookalikeData, seeds: CampaignSeeds, state: UserState, reference
    ) -> CampaignPlan:
        params: list[Any] = []
        for member, kind in zip(members, self.kinds):
            if kind in ("affinity", "cosine"):
                params.append(unit_centroid(state.embeddings, seeds.positives))
            elif kind == "classifier":
                params.append(member.campaign_model(data, seeds))
            else:
                params.append(member.weights(seeds.positives))
        weights = self.ensemble.weights_for(seeds)
        plan = CampaignPlan(params, weights)
        used = range(len(members)) if weights is None else np.flatnonzero(weights > 0)
        if len(used) > 1 or weights is None:  # one member alone is scored raw: no reference needed
            mlp = self.mlp64()
            for i in used:
                scores = member_scores(self.kinds[i], params[i], state, reference, mlp)
                plan.references[int(i)] = np.sort(_finite_or_lowest(scores).astype(np.float32))
        return plan

    def mlp64(self) -> AffinityMLP | None:
        """A float64 copy of the affinity member's MLP (``member_scores``)."""
        mlp = next((m.mlp for m, k in zip(self.ensemble.members, self.kinds) if k == "affinity"), None)
        return None if mlp is None else copy.deepcopy(mlp).double().eval()

    @staticmethod
    def score_shard(
        prepared: PreparedEnsemble, shard: ShardData, seeds: CampaignSeeds
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every user of the shard (global ids) and their blended score for this seed list."""
        scores = blended(prepared, prepared.plans[seeds.campaign_id], shard_state(prepared, shard))
        return shard.global_index(np.arange(shard.n_users)), scores

    def params(self) -> dict[str, Any]:
        return {**self.ensemble.params(), "panel_users": int(self.panel_ids.size)}


def score_on_shard(shard: ShardData, prepared: PreparedEnsemble, seeds: CampaignSeeds) -> tuple[np.ndarray, np.ndarray]:
    """``SampledPinterestEnsemble.score_shard`` in ``ShardPool.map``'s argument order (shard first)."""
    return SampledPinterestEnsemble.score_shard(prepared, shard, seeds)
