"""Reference peers a practitioner would write in twenty lines instead of using this project.

  - ``item_logreg``: per campaign, an L2 logistic regression on TF-IDF-weighted user x item rows, the
    seeds against every other user (capped by a uniform sample at scale);
  - ``svd_centroid``: TruncatedSVD user factors of the same matrix, cosine to the seeds' centroid.

Every learned model is measured against them (BENCHMARKS.md); they are eligible champions too, since
users want the best audience whatever produced it.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.evaluation import campaign_rng
from lookalike_models.progress import Progress
from lookalike_models.scorers import AudienceScorer, register
from lookalike_models.strict_config import StrictConfig


def user_item_matrix(data: LookalikeData, keep: np.ndarray | None = None) -> sp.csr_matrix:
    """float32 CSR [n_users, n_items]: interaction counts per (user, item), every domain; only the
    interactions where ``keep`` is True when given (e.g. organic activity)."""
    users, items = (data.user_idx, data.item_idx) if keep is None else (data.user_idx[keep], data.item_idx[keep])
    counts = np.ones(users.size, np.float32)
    matrix = sp.csr_matrix((counts, (users, items)), shape=(data.n_users, data.n_items))
    matrix.sum_duplicates()
    return matrix


def user_item_tfidf(data: LookalikeData, keep: np.ndarray | None = None) -> sp.csr_matrix:
    """float32 CSR [n_users, n_items]: TF-IDF rows (sublinear tf, smoothed idf), L2-normalised.

    Rare items say more about a user's taste than blockbusters everyone touched: idf weights them up."""
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(user_item_matrix(data, keep))
    return tfidf.astype(np.float32).tocsr()


def campaign_labels(n_users: int, seeds: CampaignSeeds, max_negatives: int, seed: int = 0):
    """(rows, labels): the seeds as 1 and every other user as 0, non-seeds sampled uniformly down to
    ``max_negatives`` so a campaign's fit stays bounded at millions of users. Labelled non-converters
    are always kept."""
    is_seed = np.zeros(n_users, bool)
    is_seed[seeds.positives] = True
    others = np.flatnonzero(~is_seed)
    if others.size > max_negatives:
        sampled = campaign_rng(seed, seeds.campaign_id).choice(others, max_negatives, replace=False)
        others = np.union1d(sampled, seeds.negatives)
    rows = np.concatenate([seeds.positives, others])
    labels = np.concatenate([np.ones(seeds.positives.size, np.int8), np.zeros(others.size, np.int8)])
    return rows, labels


class ItemLogRegConfig(StrictConfig):
    C: float = Field(4.0, gt=0, description="Inverse L2 strength (chosen on tuning splits 100-104, BENCHMARKS.md)")
    max_negatives: int = Field(200_000, ge=1, description="Non-seed users sampled as negatives at most")
    seed: int = 0
    n_jobs: int = Field(
        2,
        ge=1,
        description="Threads fitting the campaigns' models at fit time (liblinear "
        "releases the GIL); the models are the same whatever the count",
    )


@register("item_logreg")
class ItemLogRegScorer(AudienceScorer):
    """Per-campaign logistic regression on TF-IDF user x item rows: the strong simple peer.

    ``fit`` already fits every campaign of the training seeds, ``n_jobs`` at a time, and ``score`` reuses
    that model when asked about the same seeds (held-out evaluation); other seed lists are fitted on demand.
    """

    config_class = ItemLogRegConfig

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        self.features = user_item_tfidf(data)
        self.models: dict[str, tuple[str, LogisticRegression]] = {}
        seeds = list(train_seeds.values())
        with (
            Progress("item_logreg campaign fits", len(seeds), "campaigns") as progress,
            ThreadPoolExecutor(self.config.n_jobs) as pool,
        ):
            for one, model in zip(seeds, pool.map(self.campaign_model, seeds)):
                self.models[one.campaign_id] = (seeds_key(one), model)
                progress.advance()

    def campaign_model(self, seeds: CampaignSeeds) -> LogisticRegression:
        known = getattr(self, "models", {}).get(seeds.campaign_id)
        if known is not None and known[0] == seeds_key(seeds):
            return known[1]
        rows, labels = campaign_labels(self.features.shape[0], seeds, self.config.max_negatives, self.config.seed)
        model = LogisticRegression(C=self.config.C, solver="liblinear", max_iter=200)
        return model.fit(self.features[rows], labels)

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        model = self.campaign_model(seeds)
        rows = self.features if is_everyone(candidates, self.features.shape[0]) else self.features[candidates]
        return model.decision_function(rows).astype(np.float32)

    def save(self, folder: Path) -> None:
        """The per-campaign coefficients, each with the identity of the seed list it was fitted on: a reload
        (evaluation or staging after the model left memory) scores without refitting every campaign."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        campaigns = sorted(self.models)
        fits = [self.models[cid][1] for cid in campaigns]
        n_items = self.features.shape[1]
        np.savez(
            Path(folder) / LOGREG_FILE,
            campaign_ids=np.array(campaigns, dtype=str),
            seeds_keys=np.array([self.models[cid][0] for cid in campaigns], dtype=str),
            coef=np.stack([m.coef_[0] for m in fits]) if fits else np.zeros((0, n_items)),
            intercept=np.array([m.intercept_[0] for m in fits], np.float64),
        )

    def load(self, folder: Path, data: LookalikeData) -> None:
        self.features = user_item_tfidf(data)
        self.models = {}
        path = Path(folder) / LOGREG_FILE
        if not path.exists():  # saved before the coefficients were kept: refit on demand, as then
            return
        with np.load(path, allow_pickle=False) as saved:
            for cid, key, coef, intercept in zip(
                saved["campaign_ids"], saved["seeds_keys"], saved["coef"], saved["intercept"], strict=True
            ):
                self.models[str(cid)] = (str(key), fitted_logreg(coef, intercept, self.config.C))


LOGREG_FILE = "item_logreg.npz"


def fitted_logreg(coef: np.ndarray, intercept: float, C: float) -> LogisticRegression:
    """A binary ``LogisticRegression`` restored from its coefficients; it scores like the one saved."""
    model = LogisticRegression(C=C, solver="liblinear", max_iter=200)
    model.classes_ = np.array([0, 1], np.int8)
    model.coef_, model.intercept_ = coef[None, :].astype(np.float64), np.array([intercept], np.float64)
    return model


def seeds_key(seeds: CampaignSeeds) -> str:
    """Identity of a seed list (positives and labelled negatives) for reusing a campaign's fitted model."""
    digest = hashlib.sha256(np.ascontiguousarray(seeds.positives, np.int64).tobytes())
    digest.update(b"|" + np.ascontiguousarray(seeds.negatives, np.int64).tobytes())
    return digest.hexdigest()


def is_everyone(candidates: np.ndarray, n_users: int) -> bool:
    """True when ``candidates`` is 0..n_users-1 in order: score the rows as they are, without a copy."""
    return candidates.size == n_users and bool(np.array_equal(candidates, np.arange(n_users)))


class SVDCentroidConfig(StrictConfig):
    n_components: int = Field(128, ge=1, description="User factor dimension (chosen on tuning splits 100-104)")
    seed: int = 0


@register("svd_centroid")
class SVDCentroidScorer(AudienceScorer):
    """Cosine of each user's TruncatedSVD factors to the seeds' mean factor vector."""

    config_class = SVDCentroidConfig

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        # One SVD call does the work: the progress says when it started and how long it took.
        with Progress("svd_centroid fit (TF-IDF, SVD)", 2, "steps") as progress:
            tfidf = user_item_tfidf(data)
            progress.advance()
            k = max(1, min(self.config.n_components, min(tfidf.shape) - 1))
            factors = TruncatedSVD(k, random_state=self.config.seed).fit_transform(tfidf)
            self.factors = normalize(factors).astype(np.float32)  # [n_users, k], unit rows
            progress.advance()

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        centroid = self.factors[seeds.positives].mean(0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        return self.factors[candidates] @ centroid

    def user_embeddings(self) -> np.ndarray:
        return self.factors

    def save(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        np.savez(Path(folder) / "svd_factors.npz", factors=self.factors)

    def load(self, folder: Path, data: LookalikeData) -> None:
        with np.load(Path(folder) / "svd_factors.npz", allow_pickle=False) as saved:
            self.factors = saved["factors"]
