"""``item_ridge``: per campaign, a ridge regression of "is a seed" on the user's item set, solved for every
campaign at once from one eigendecomposition of the item Gram matrix.

The look-alike reading of EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019):
EASE regresses each item's column on all other items with a closed-form ridge; here the regressed column
is the campaign's seed indicator (its own item's interactions are already removed as labels). With
``G = XᵀX = Q diag(l) Qᵀ`` computed once, a campaign's weights ``w = Q diag(1/(l + lam)) Qᵀ Xᵀ y`` cost a
few matrix-vector products. ``lam`` is ``strength`` times the mean item count (the mean of diag G), so
one strength carries across data sets of different sizes; it was chosen on tuning splits 100-104, where
choosing it per campaign on an inner validation cut did worse (BENCHMARKS.md).

Cost: the decomposition is O(n_items³) once per fit, so the items are capped at the ``max_items`` most
active ones (the long tail says little about a user and has few co-occurrences to regress on).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.reference import user_item_matrix
from lookalike_models.scorers import AudienceScorer, register


class ItemRidgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strength: float = Field(3.5, gt=0, description="Ridge strength in units of the mean item count "
                            "(chosen on tuning splits 100-104)")
    max_items: int = Field(8000, ge=1, description="Most active items kept as features (O(n_items³) fit)")


@register("item_ridge")
class ItemRidgeScorer(AudienceScorer):
    """Ridge regression of the seed indicator on binary user x item rows, strength chosen per campaign."""

    config_class = ItemRidgeConfig

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        presence = user_item_matrix(data)
        presence.data[:] = 1.0
        counts = np.asarray(presence.sum(0)).ravel()
        keep = np.sort(np.argsort(-counts, kind="stable")[: self.config.max_items])
        self.features = presence[:, keep].astype(np.float64).tocsr()  # [n_users, n_kept]
        gram = (self.features.T @ self.features).toarray()
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(gram)  # G = Q diag(l) Qᵀ
        self.eigenvalues = np.clip(self.eigenvalues, 0.0, None)
        self.lam = self.config.strength * max(float(np.diag(gram).mean()), 1e-12)

    def weights(self, positives: np.ndarray) -> np.ndarray:
        """float64 [n_kept]: item weights of the ridge fit to the seed indicator of ``positives``."""
        target = np.zeros(self.features.shape[0])
        target[positives] = 1.0
        projected = self.eigenvectors.T @ (self.features.T @ target)  # Qᵀ Xᵀ y
        return self.eigenvectors @ (projected / (self.eigenvalues + self.lam))

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        return (self.features[candidates] @ self.weights(seeds.positives)).astype(np.float32)

    def save(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        np.savez(Path(folder) / "item_ridge.npz", eigenvalues=self.eigenvalues, eigenvectors=self.eigenvectors,
                 lam=np.array(self.lam))
        sp.save_npz(Path(folder) / "item_ridge_features.npz", self.features)

    def load(self, folder: Path, data: LookalikeData) -> None:
        with np.load(Path(folder) / "item_ridge.npz", allow_pickle=False) as saved:
            self.eigenvalues, self.eigenvectors = saved["eigenvalues"], saved["eigenvectors"]
            self.lam = float(saved["lam"])
        self.features = sp.load_npz(Path(folder) / "item_ridge_features.npz").tocsr()
