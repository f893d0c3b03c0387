"""Sharded twins of the two reference peers (``reference.py``): ``item_logreg`` and ``svd_centroid``.

Both read the same TF-IDF user x item rows. A row depends on its user's counts and on the idf, and the idf on
the population's per-item user counts, which are sums over shards: every shard computes its users' rows
exactly as the single-process matrix has them (``shard_tfidf``), bit for bit.

- ``item_logreg``: a campaign's labelled rows (``campaign_labels``: seeds, a seeded sample of non-seeds drawn
  from global indices, labelled negatives) are gathered from the shards, a few campaigns at a time, and fitted
  in the order the single-process fit sees them: same input, same liblinear model.
- ``svd_centroid``: TruncatedSVD fitted on a bounded panel (a seeded sample of users plus every training seed),
  every user's factors folded in where its shard lies (row @ components.T). With the panel = everyone, the
  factors differ from ``fit_transform``'s only by the randomized SVD's reconstruction.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.progress import Progress
from lookalike_models.reference import (
    ItemLogRegConfig,
    SVDCentroidConfig,
    campaign_labels,
    fitted_logreg,
    seeds_key,
    user_item_matrix,
)
from lookalike_models.sharded.exact_models import shard_memo
from lookalike_models.sharded.scorer import ShardedScorer, gather_users, register_sharded
from lookalike_models.sharded.shard_data import ShardData, ShardPool, subset_users

# Labelled rows gathered into the driver per round of campaign fits: at 10M users a campaign has ~200k rows
# (``max_negatives`` + seeds), so a round holds ~5 campaigns (~1M users' rows, well under a GB).
GATHER_ROWS = 1_000_000


def item_user_counts(shard: ShardData) -> np.ndarray:
    """int64 [n_items]: how many of this shard's users touched each item (a document frequency)."""
    counts = user_item_matrix(shard.data)
    return np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.int64)


def global_idf(pool: ShardPool) -> np.ndarray:
    """float32 [n_items]: the smoothed idf of ``TfidfTransformer`` on the whole population, from the shards'
    per-item user counts (exact: every user lies in one shard)."""
    df = np.sum(pool.map(item_user_counts), axis=0).astype(np.float32)
    # Same operations, order and dtype as TfidfTransformer.fit (smooth_idf=True): the idf is bit for bit its.
    df += 1.0
    idf = np.full_like(df, fill_value=pool.n_users + 1, dtype=np.float32)
    idf /= df
    np.log(idf, out=idf)
    idf += 1.0
    return idf


def tfidf_rows(data: LookalikeData, idf: np.ndarray) -> sp.csr_matrix:
    """float32 CSR [data.n_users, n_items]: ``user_item_tfidf``'s rows of these users under the global idf."""
    matrix = user_item_matrix(data)
    # TfidfTransformer.transform's steps (sublinear tf, idf, L2 rows), so the rows equal the whole matrix's.
    np.log(matrix.data, matrix.data)
    matrix.data += 1.0
    matrix.data *= idf[matrix.indices]
    return normalize(matrix, norm="l2", copy=False).astype(np.float32).tocsr()


def shard_tfidf(shard: ShardData, idf: np.ndarray) -> sp.csr_matrix:
    """The TF-IDF rows of a shard's users (local order), built once per shard and idf: every campaign reads them.
    Kept on the worker's disk too: a gathering round then reads 0.25 s of rows instead of the shard (~1 s) and
    building them (0.18 s) at 250k users a shard."""
    return shard_memo(shard, "tfidf", array_key(idf), lambda: tfidf_rows(shard.data, idf), spill=True)


def array_key(*arrays: np.ndarray) -> str:
    digest = hashlib.sha1()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def panel_rows(ids: np.ndarray, features: sp.csr_matrix, users: np.ndarray) -> sp.csr_matrix:
    """Rows of the global ``users`` (any order, repeats allowed) out of a gathered panel (sorted ``ids``)."""
    return features[np.searchsorted(ids, users)]


def campaign_batches(seeds: list[CampaignSeeds], n_users: int, max_negatives: int) -> list[list[CampaignSeeds]]:
    """Campaigns grouped so one gathering round holds about ``GATHER_ROWS`` labelled rows (at least one each)."""
    batches: list[list[CampaignSeeds]] = [[]]
    rows = 0
    for one in seeds:
        size = min(n_users, one.size + max_negatives + one.negatives.size)
        if batches[-1] and rows + size > GATHER_ROWS:
            batches.append([])
            rows = 0
        batches[-1].append(one)
        rows += size
    return [b for b in batches if b]


def fit_logreg(job: tuple[sp.csr_matrix, np.ndarray], C: float) -> LogisticRegression:
    """``ItemLogRegScorer.campaign_model``'s fit on one campaign's (rows, labels)."""
    return LogisticRegression(C=C, solver="liblinear", max_iter=200).fit(*job)


def fit_labelled(
    job: tuple[np.ndarray, np.ndarray], ids: np.ndarray, features: sp.csr_matrix, C: float
) -> LogisticRegression:
    """``fit_logreg`` on (rows as global ids, labels): the rows are copied out of the gathered ones in the fitting
    thread, so only ``n_jobs`` campaigns' copies exist at a time."""
    rows, labels = job
    return fit_logreg((panel_rows(ids, features, rows), labels), C)


def tfidf_rows_of(shard: ShardData, idf: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
    """(sorted global ids, their TF-IDF rows) of the distinct ``users`` in this shard: only the rows a fit needs
    travel, not the users' whole data (a row is a function of the user's items and the idf alone)."""
    local = np.unique(shard.local(users))
    return shard.global_index(local), shard_tfidf(shard, idf)[local]


def gather_tfidf(pool: ShardPool, idf: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
    parts = pool.map(tfidf_rows_of, idf, np.unique(users))
    return np.concatenate([ids for ids, _ in parts]), sp.vstack([rows for _, rows in parts], format="csr")


@register_sharded
class ShardedItemLogReg(ShardedScorer):
    """``item_logreg`` on shards: the global idf, then per campaign the single-process logistic regression fitted
    on the same rows in the same order (gathered from the shards); shards score with its coefficients."""

    name = "item_logreg"
    config_class = ItemLogRegConfig

    def fit(self, pool: ShardPool, train_seeds: dict[str, CampaignSeeds]) -> None:
        self.n_users = pool.n_users
        self.idf = global_idf(pool)
        self.models: dict[str, tuple[str, np.ndarray, float]] = {}
        self.fit_campaigns(pool, list(train_seeds.values()))

    def fit_campaigns(self, pool: ShardPool, seeds: list[CampaignSeeds]) -> None:
        """Fit (or keep, when fitted on the same seed list) every campaign of ``seeds``, a batch at a time."""
        todo = [s for s in seeds if self.models.get(s.campaign_id, ("",))[0] != seeds_key(s)]
        cfg = self.config
        with (
            Progress("sharded item_logreg campaign fits", len(todo), "campaigns") as progress,
            ThreadPoolExecutor(cfg.n_jobs) as threads,
        ):
            for batch in campaign_batches(todo, pool.n_users, cfg.max_negatives):
                labelled = [campaign_labels(pool.n_users, s, cfg.max_negatives, cfg.seed) for s in batch]
                ids, features = gather_tfidf(pool, self.idf, np.concatenate([rows for rows, _ in labelled]))
                fit = partial(fit_labelled, ids=ids, features=features, C=cfg.C)
                for one, model in zip(batch, threads.map(fit, labelled)):
                    self.models[one.campaign_id] = (seeds_key(one), model.coef_[0], float(model.intercept_[0]))
                    progress.advance()

    def prepare(self, pool: ShardPool, seeds: dict[str, CampaignSeeds]) -> dict[str, Any]:
        self.fit_campaigns(pool, list(seeds.values()))
        return {
            "idf": self.idf,
            "C": self.config.C,
            "models": {cid: self.models[cid][1:] for cid in seeds},
        }

    @staticmethod
    def score_shard(prepared: dict[str, Any], shard: ShardData, seeds: CampaignSeeds) -> tuple[np.ndarray, np.ndarray]:
        coef, intercept = prepared["models"][seeds.campaign_id]
        # The restored single-process model computes the decision, so its arithmetic (float64 dot) is the same.
        model = fitted_logreg(coef, intercept, prepared["C"])
        scores = model.decision_function(shard_tfidf(shard, prepared["idf"])).astype(np.float32)
        return shard.global_index(np.arange(shard.n_users)), scores

    def params(self) -> dict[str, Any]:
        return {"negatives_sampled": bool(self.n_users - 1 > self.config.max_negatives)}

    def save(self, folder: Path) -> None:
        """The idf and the per-campaign coefficients with the identity of the seed list each was fitted on."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        campaigns = sorted(self.models)
        np.savez(
            Path(folder) / "sharded_item_logreg.npz",
            idf=self.idf,
            campaign_ids=np.array(campaigns, dtype=str),
            seeds_keys=np.array([self.models[c][0] for c in campaigns], dtype=str),
            coef=np.stack([self.models[c][1] for c in campaigns]) if campaigns else np.zeros((0, self.idf.size)),
            intercept=np.array([self.models[c][2] for c in campaigns], np.float64),
        )


class ShardedSVDCentroidConfig(SVDCentroidConfig):
    panel_users: int = Field(
        200_000,
        ge=1,
        description="Users sampled (uniformly, seeded) to fit the SVD on, besides every training seed; everyone "
        "when the population is smaller. Every user's factors are folded in from the fitted components.",
    )


def svd_panel(n_users: int, panel_users: int, seed: int, train_seeds: dict[str, CampaignSeeds]) -> np.ndarray:
    """Sorted global ids of the SVD's fitting panel: a seeded uniform sample of users plus every training seed."""
    if panel_users >= n_users:
        return np.arange(n_users)
    sample = np.random.default_rng(seed).choice(n_users, panel_users, replace=False)
    positives = [s.positives for s in train_seeds.values()]
    return np.unique(np.concatenate([sample, *positives]).astype(np.int64))


def fold_in(features: sp.csr_matrix, components: np.ndarray) -> np.ndarray:
    """float32 [n, k] unit rows: users' TF-IDF rows projected on the SVD components."""
    return normalize(np.asarray(features @ components.T)).astype(np.float32)


def seed_factor_sums(
    shard: ShardData, idf: np.ndarray, components: np.ndarray, positives: list[np.ndarray]
) -> list[tuple[np.ndarray, int]]:
    """Per seed list: (float64 sum of its seeds' unit factors that lie in this shard, how many lie here)."""
    out = []
    for users in positives:
        local = np.unique(shard.local(users))
        if local.size == 0:
            out.append((np.zeros(components.shape[0]), 0))
            continue
        factors = fold_in(tfidf_rows(subset_users(shard.data, local), idf), components)
        out.append((factors.sum(0, dtype=np.float64), int(local.size)))
    return out


@register_sharded
class ShardedSVDCentroid(ShardedScorer):
    """``svd_centroid`` on shards: TruncatedSVD fitted on a sampled panel's TF-IDF rows, every user's factors
    folded in on its shard, cosine to the seeds' mean (folded-in) factor."""

    name = "svd_centroid"
    config_class = ShardedSVDCentroidConfig

    def fit(self, pool: ShardPool, train_seeds: dict[str, CampaignSeeds]) -> None:
        with Progress("sharded svd_centroid fit (idf, panel, SVD)", 3, "steps") as progress:
            self.idf = global_idf(pool)
            progress.advance()
            panel = svd_panel(pool.n_users, self.config.panel_users, self.config.seed, train_seeds)
            self.panel_size = int(panel.size)
            _, data = gather_users(pool, panel)
            features = tfidf_rows(data, self.idf)
            del data
            progress.advance()
            k = max(1, min(self.config.n_components, min(features.shape) - 1))
            svd = TruncatedSVD(k, random_state=self.config.seed).fit(features)
            self.components = svd.components_.astype(np.float32)  # [k, n_items]
            progress.advance()

    def prepare(self, pool: ShardPool, seeds: dict[str, CampaignSeeds]) -> dict[str, Any]:
        campaigns = list(seeds)
        parts = pool.map(seed_factor_sums, self.idf, self.components, [seeds[c].positives for c in campaigns])
        centroids = {}
        for j, cid in enumerate(campaigns):
            total = np.sum([p[j][0] for p in parts], axis=0)
            count = sum(p[j][1] for p in parts)
            centroid = total / max(count, 1)
            centroids[cid] = (centroid / max(float(np.linalg.norm(centroid)), 1e-12)).astype(np.float32)
        return {"idf": self.idf, "components": self.components, "centroids": centroids}

    @staticmethod
    def score_shard(prepared: dict[str, Any], shard: ShardData, seeds: CampaignSeeds) -> tuple[np.ndarray, np.ndarray]:
        idf, components = prepared["idf"], prepared["components"]
        key = array_key(idf, components)
        factors = shard_memo(
            shard, "svd_factors", key, lambda: fold_in(shard_tfidf(shard, idf), components), spill=True
        )
        scores = factors @ prepared["centroids"][seeds.campaign_id]
        return shard.global_index(np.arange(shard.n_users)), scores.astype(np.float32)

    def params(self) -> dict[str, Any]:
        return {"panel_users": self.panel_size}

    def save(self, folder: Path) -> None:
        """The idf and the SVD components: every user's factors follow from its rows."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        np.savez(Path(folder) / "sharded_svd.npz", idf=self.idf, components=self.components)
