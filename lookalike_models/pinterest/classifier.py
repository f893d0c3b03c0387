"""Per-campaign classifier: the per-advertiser logistic regression of deWet & Ou (KDD 2019, sec. 4.3),
the ensemble's partner for large seed lists.

The paper's recipe as first built here (seeds vs an equal number of random users, on the StarSpace
embedding plus one-hot user fields and an unweighted multi-hot of items) lost to a plain TF-IDF logistic
regression (``reference.item_logreg``) by 0.07 recall@5% on MovieLens (issue 10). The ablation on tuning
splits 100-104 (bench/results/classifier_ensemble.md) says why: the TF-IDF weighting (sublinear tf, idf,
unit rows) and using every non-seed user as a negative; one-hot user fields and the StarSpace block beside
unit TF-IDF rows lowered recall. So the classifier fits on the reference's TF-IDF rows and labels and adds
what the reference fixes by hand: its L2 strength is chosen on inner validation cuts of the campaigns'
training seeds (``evaluation.inner_validation_cut``), once over all campaigns by default; per campaign the
cut is too small and the choice overfits it (tuning splits). The embedding block stays available
(``embedding_weight``), as do the old recipe's switches (``weighting``, ``negatives``) for the ablation.

Scales like the reference: features are one sparse matrix; a campaign's negatives are capped by a uniform
sample (``max_negatives``); the validation recall is read off a bounded sample of non-seed scores.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from sklearn.linear_model import LogisticRegression

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.evaluation import campaign_rng, inner_validation_cut
from lookalike_models.inner_validation import ScopedChoice, competing_users, validation_recall
from lookalike_models.pinterest.embedding import EmbeddingScorer, EmbeddingScorerConfig
from lookalike_models.progress import Progress
from lookalike_models.reference import campaign_labels, seeds_key, user_item_matrix, user_item_tfidf
from lookalike_models.scorers import register
from lookalike_models.threads import free_cores

log = logging.getLogger(__name__)


class ClassifierConfig(EmbeddingScorerConfig):
    C_grid: list[float] = Field(
        [0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
        min_length=1,
        description="Inverse L2 strengths tried on the campaigns' inner validation cuts",
    )
    C: float = Field(4.0, gt=0, description="Inverse L2 strength for tuning=fixed")
    tuning: Literal["all", "bucket", "campaign", "fixed"] = Field(
        "all",
        description="Where C is chosen on the inner cuts: once over all campaigns (mean validation "
        "recall), per seed-list bucket, per campaign; fixed: always C",
    )
    bucket_edges: list[int] = Field([50, 200], description="Seed-list size buckets for tuning=bucket")
    validation_share: float = Field(0.2, gt=0, lt=1, description="Share of the training seeds held out to choose C")
    validation_audience: float = Field(0.05, gt=0, lt=1, description="Audience share at which the cut's recall counts")
    embedding_weight: float = Field(
        0.0,
        ge=0,
        description="Scale of the StarSpace embedding block appended to the "
        "unit TF-IDF rows; 0: no embedding, no encoder trained",
    )
    weighting: Literal["tfidf", "binary"] = Field(
        "tfidf", description="Item rows: TF-IDF (sublinear tf, idf, unit rows) or the old unweighted multi-hot"
    )
    negatives: Literal["all", "equal"] = Field(
        "all", description="Every non-seed user (capped) or, as the paper, as many random non-seeds as seeds"
    )
    max_negatives: int = Field(
        50_000,
        ge=1,
        description="Non-seed users sampled as negatives at most (every fit's cost grows with it; the "
        "C search and the blend validation fit each campaign several times)",
    )
    # 20,000: a 5% cutoff then has 1,000 sampled users above it (its place off by ~3% of itself), and every
    # member scores a fifth of what 100,000 cost at millions of users; data sets this small use everyone.
    max_validation_users: int = Field(20_000, ge=100, description="Non-seed users scored to place the cut's cutoff")
    max_tuning_campaigns: int = Field(
        32, ge=1, description="With tuning=all, campaigns sampled to choose C (each costs len(C_grid) fits)"
    )
    max_iter: int = Field(200, ge=10)
    seed: int = 0


def fit_campaign(features: sp.csr_matrix, seeds: CampaignSeeds, C: float, cfg: ClassifierConfig) -> LogisticRegression:
    """L2 logistic regression of the seeds against every other user (capped sample) or, with
    ``negatives="equal"``, against as many random non-seeds as seeds, on ``features`` rows."""
    max_negatives = seeds.size if cfg.negatives == "equal" else cfg.max_negatives
    rows, labels = campaign_labels(features.shape[0], seeds, max_negatives, cfg.seed)
    return LogisticRegression(C=C, solver="liblinear", max_iter=cfg.max_iter).fit(features[rows], labels)


@register("pinterest_classifier")
class PinterestClassifierScorer(EmbeddingScorer):
    """Per-campaign L2 logistic regression on TF-IDF user x item rows (plus, optionally, the StarSpace
    embedding), seeds against all non-seed users, its C chosen on an inner validation cut of the seeds.
    Fitted from the campaign's seeds when it is scored; ``fit`` only builds the features."""

    config_class = ClassifierConfig

    @property
    def needs_encoder(self) -> bool:
        return self.config.embedding_weight > 0

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        if self.needs_encoder:
            super().fit(data, train_seeds)  # trains (or reuses) the shared encoder, then fit_campaigns
        else:
            self.fit_campaigns(data, train_seeds)

    def fit_campaigns(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        self.features = self._features(data)
        self.chosen_C: dict[str, float] = {}
        self.models: dict[tuple[str, float], LogisticRegression] = {}  # (seeds_key, C) -> fitted model
        self.choice = self.choose_C(train_seeds) if self.config.tuning != "fixed" else None

    def _features(self, data: LookalikeData) -> sp.csr_matrix:
        if self.config.weighting == "tfidf":
            tfidf = user_item_tfidf(data)
        else:
            tfidf = user_item_matrix(data)
            tfidf.data[:] = 1.0
        if self.config.embedding_weight <= 0:
            return tfidf
        emb = sp.csr_matrix(self.config.embedding_weight * self.embeddings)
        return sp.hstack([tfidf, emb], format="csr", dtype=np.float32)

    def validation_results(self, seeds: CampaignSeeds) -> np.ndarray | None:
        """float [len(C_grid)]: validation recall of each C, fitted on the campaign's training seeds less an
        inner cut and measured on the cut; None when the seed list is too small to cut."""
        cfg = self.config
        cut = inner_validation_cut(seeds, cfg.validation_share, cfg.seed)
        if cut is None:
            return None
        fit_seeds, val = cut
        others = competing_users(
            self.features.shape[0],
            fit_seeds,
            val,
            cfg.max_validation_users,
            campaign_rng(cfg.seed + 1, seeds.campaign_id),
        )
        x_val, x_others = self.features[val], self.features[others]
        results = []
        for C in cfg.C_grid:
            model = self.fitted_model(fit_seeds, C)
            results.append(
                validation_recall(
                    model.decision_function(x_val), model.decision_function(x_others), cfg.validation_audience
                )
            )
        return np.array(results)

    def choose_C(self, train_seeds: dict[str, CampaignSeeds]) -> ScopedChoice:
        cfg = self.config
        tuned = sorted(train_seeds)
        if cfg.tuning == "all" and len(tuned) > cfg.max_tuning_campaigns:
            # One C for all campaigns: a sample of them measures it; the search is len(C_grid) fits per campaign.
            tuned = sorted(np.random.default_rng(cfg.seed).choice(tuned, cfg.max_tuning_campaigns, replace=False))
        results = {}
        # liblinear releases the GIL: campaigns side by side on the free cores, each fit single-threaded.
        with (
            Progress("pinterest_classifier C search", len(tuned), "campaigns") as progress,
            ThreadPoolExecutor(free_cores()) as pool,
        ):
            for cid, r in zip(tuned, pool.map(lambda cid: self.validation_results(train_seeds[cid]), tuned)):
                if r is not None:
                    results[cid] = r
                progress.advance()
        choice = ScopedChoice.from_results(
            results, {cid: s.size for cid, s in train_seeds.items()}, len(cfg.C_grid), cfg.bucket_edges
        )
        if cfg.tuning == "all":  # the other Cs' fits are never asked for again
            chosen = cfg.C_grid[choice.overall]
            self.models = {key: model for key, model in self.models.items() if key[1] == chosen}
        log.info(
            "pinterest_classifier: C %s over all campaigns (validation recall by C %s, %d campaigns)",
            cfg.C_grid[choice.overall],
            np.nanmean(np.array(list(results.values())), 0).round(3).tolist() if results else [],
            len(results),
        )
        return choice

    def campaign_C(self, seeds: CampaignSeeds) -> float:
        cfg = self.config
        if self.choice is None:
            return cfg.C
        if cfg.tuning == "campaign" and seeds.campaign_id not in self.choice.by_campaign:
            results = self.validation_results(seeds)  # a seed list the fit did not see (ad-hoc expansion)
            if results is not None:
                return float(cfg.C_grid[int(np.nanargmax(results))])
        return float(cfg.C_grid[self.choice.pick(cfg.tuning, seeds)])

    def campaign_model(self, data: LookalikeData, seeds: CampaignSeeds) -> LogisticRegression:
        """The campaign's model at its C, fitted once per (seed list, C): the ensemble's blend validation,
        the held-out evaluation and staging ask for the same fits the C search already made."""
        C = self.campaign_C(seeds)
        self.chosen_C[seeds.campaign_id] = C
        return self.fitted_model(seeds, C)

    def fitted_model(self, seeds: CampaignSeeds, C: float) -> LogisticRegression:
        key = (seeds_key(seeds), C)
        if key not in self.models:
            self.models[key] = fit_campaign(self.features, seeds, C, self.config)
        return self.models[key]

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        return self.campaign_model(data, seeds).decision_function(self.features[candidates]).astype(np.float32)

    def params(self) -> dict[str, float]:
        chosen = np.array(list(getattr(self, "chosen_C", {}).values()))
        if chosen.size:
            return {"chosen_C_median": float(np.median(chosen))}
        choice = getattr(self, "choice", None)
        return {"chosen_C": float(self.config.C_grid[choice.overall])} if choice is not None else {}

    def user_embeddings(self) -> np.ndarray | None:
        return self.embeddings if self.fitted is not None else None

    def serving_module(self, data: LookalikeData):
        return super().serving_module(data) if self.fitted is not None else None

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.fitted is not None:
            super().save(folder)
        # Per-campaign fits are redone from the data with the C chosen in fit.
        (folder / "classifier.json").write_text(
            json.dumps({"choice": self.choice.to_json() if self.choice else None, "chosen_C": self.chosen_C}, indent=1)
        )

    def load(self, folder: Path, data: LookalikeData) -> None:
        if self.config.embedding_weight > 0:
            super().load(folder, data)
        self.features = self._features(data)
        self.chosen_C, self.models = {}, {}
        saved = json.loads((Path(folder) / "classifier.json").read_text())["choice"]
        self.choice = ScopedChoice(**saved) if saved else None
