"""``item_ridge`` on shards, equal bit for bit to ``item_ridge.ItemRidgeScorer``.

Map-reduce: round 1 sums each shard's distinct-user item counts (the kept items, ``kept_items``'s rule);
round 2 sums each shard's Gram of the kept binary rows (integer counts: exact in float64 in any order, so
the very matrix of a single-process fit). The strength search sees the same rows as single-process: the
seeded sample and the seeds' rows are gathered (a bounded panel) into a CSR of the population's shape with
only those rows filled. The factor is made on one BLAS thread and the weights solved in the same batches as
the single-process scorer (the training lists in fit, then the lists not yet solved, in the order given), so
they are the same bits; a shard scores its users as its binary rows times the campaign's weights.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import inner_validation_cut
from lookalike_models.item_gram import item_gram
from lookalike_models.item_ridge import ItemRidgeConfig, binary_features, positives_key
from lookalike_models.ridge_strength import choose_strength
from lookalike_models.sharded.exact_models import everyone_in, shard_memo
from lookalike_models.sharded.scorer import ShardedScorer, gather_users, register_sharded
from lookalike_models.sharded.shard_data import ShardData, ShardPool
from lookalike_models.threads import one_blas_thread

log = logging.getLogger(__name__)


@dataclass
class RidgePrepared:
    """What a shard needs to score: the kept items and each campaign's weights (float64 [n_kept])."""

    keep: np.ndarray
    weights: dict[str, np.ndarray]


def shard_features(shard: ShardData, keep: np.ndarray) -> sp.csr_matrix:
    """The shard's binary user x kept-item rows (memoised on the shard for these kept items)."""
    key = hashlib.sha256(np.ascontiguousarray(keep, np.int64).tobytes()).digest()
    return shard_memo(shard, "item_ridge_features", key, lambda: binary_features(shard.data, keep))


def item_user_counts(shard: ShardData) -> np.ndarray:
    """int64 [n_items]: the shard's distinct users per item."""
    return np.bincount(shard.data.user_items[1], minlength=shard.data.n_items)


def shard_gram(shard: ShardData, keep: np.ndarray) -> np.ndarray:
    """int32 [n_kept, n_kept]: the shard's co-occurrence counts (int32: half the transfer; exact)."""
    return item_gram(shard_features(shard, keep)).astype(np.int32)


def seed_item_counts(shard: ShardData, keep: np.ndarray, seed_lists: list[np.ndarray]) -> np.ndarray:
    """float64 [n_kept, n_lists]: per seed list, how many of its seeds in this shard touched each kept item
    (a seed listed twice counts twice, as ``features[positives].sum(0)`` does)."""
    features = shard_features(shard, keep)
    return np.stack([np.asarray(features[shard.local(p)].sum(0), np.float64).ravel() for p in seed_lists], 1)


def panel_features(pool: ShardPool, keep: np.ndarray, users: np.ndarray) -> sp.csr_matrix:
    """float64 CSR [n_users, n_kept]: the binary rows of the gathered ``users``, every other row empty."""
    ids, panel = gather_users(pool, users)
    rows = binary_features(panel, keep)
    lengths = np.zeros(pool.n_users, np.int64)
    lengths[ids] = np.diff(rows.indptr)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix((rows.data, rows.indices, indptr), shape=(pool.n_users, keep.size))


def strength_panel(n_users: int, train_seeds: dict[str, CampaignSeeds], cfg: ItemRidgeConfig) -> np.ndarray:
    """The users whose rows ``choose_strength`` reads: its seeded sample (``default_rng(seed + 11)``, seed 0 as
    ``item_ridge.chosen_strength`` calls it), each cut's validation seeds and fit seeds."""
    rng = np.random.default_rng(0 + 11)
    sample = rng.choice(n_users, min(cfg.max_validation_users, n_users), replace=False)
    cuts = [inner_validation_cut(s, cfg.validation_share, 0) for s in train_seeds.values()]
    return np.unique(np.concatenate([sample] + [np.concatenate([f.positives, v]) for f, v in filter(None, cuts)]))


@register_sharded
class ShardedItemRidge(ShardedScorer):
    """``item_ridge`` from map rounds over the shards; the n_kept² factor stays in the fitting process."""

    name = "item_ridge"
    config_class = ItemRidgeConfig

    def fit(self, pool: ShardPool, train_seeds: dict[str, CampaignSeeds]) -> None:
        cfg = self.config
        counts = pool.map_sum(item_user_counts)
        self.keep = np.sort(np.argsort(-counts, kind="stable")[: cfg.max_items]).astype(np.int64)  # kept_items
        gram = pool.map_sum(shard_gram, self.keep).astype(np.float64)  # added up on the workers: one matrix here
        self.strength = cfg.strength
        if self.strength is None:
            panel = panel_features(pool, self.keep, strength_panel(pool.n_users, train_seeds, cfg))
            self.strength = choose_strength(
                panel, gram, train_seeds, cfg.strength_grid, cfg.validation_share, max_users=cfg.max_validation_users
            )[0]
        self.lam = self.strength * max(float(np.diag(gram).mean()), 1e-12)
        gram[np.diag_indices_from(gram)] += self.lam
        with one_blas_thread():  # one thread: the single-process factor to the last bit
            self.factor = scipy.linalg.cho_factor(gram, overwrite_a=True, check_finite=False)[0]
        self.solved: dict[bytes, np.ndarray] = {}
        self.solve_all(pool, [seeds.positives for seeds in train_seeds.values()])
        log.info("item_ridge (sharded): %d kept items, strength %.3g", self.keep.size, self.strength)

    def solve_all(self, pool: ShardPool, seed_lists: list[np.ndarray]) -> None:
        """``ItemRidgeScorer.solve_all``: the lists not yet solved, as one matrix right-hand side, in order."""
        todo = {positives_key(p): p for p in seed_lists if positives_key(p) not in self.solved}
        if not todo:
            return
        counts = pool.map_sum(seed_item_counts, self.keep, list(todo.values()))  # integer counts: exact in any order
        with one_blas_thread():
            solved = scipy.linalg.cho_solve((self.factor, False), counts, check_finite=False)
        self.solved.update(zip(todo, solved.T.copy()))

    def prepare(self, pool: ShardPool, seeds: dict[str, CampaignSeeds]) -> RidgePrepared:
        """Each campaign's weights. For staging pass every campaign of the data in its order (the batch the
        single-process scorer solves when it scores a full seed list)."""
        self.solve_all(pool, [s.positives for s in seeds.values()])
        return RidgePrepared(self.keep, {cid: self.solved[positives_key(s.positives)] for cid, s in seeds.items()})

    @staticmethod
    def score_shard(prepared: RidgePrepared, shard: ShardData, seeds: CampaignSeeds) -> tuple[np.ndarray, np.ndarray]:
        rows = shard_features(shard, prepared.keep)
        return everyone_in(shard), (rows @ prepared.weights[seeds.campaign_id]).astype(np.float32)

    def params(self) -> dict[str, float]:
        return {"chosen_strength": float(self.strength)} if getattr(self, "strength", None) is not None else {}
