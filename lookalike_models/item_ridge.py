"""``item_ridge``: per campaign, a ridge regression of "is a seed" on the user's item set, solved for every
campaign from one Cholesky factorisation of the regularised item Gram matrix.

The look-alike reading of EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019):
EASE regresses each item's column on all other items with a closed-form ridge; here the regressed column
is the campaign's seed indicator (its own item's interactions are already removed as labels). With
``G + lam I = Rᵀ R`` factored once, a campaign's weights ``w = (G + lam I)⁻¹ Xᵀ y`` cost two triangular
solves. ``lam`` is ``strength`` times the mean item count (the mean of diag G). The strength is chosen each
run on the run's own inner validation cut of the training seeds from a wide log grid of such multiples
(``ridge_strength.py``): the constant 7 chosen on MovieLens/Amazon tuning splits fell 0.12 recall@5% short
on an unseen long-tailed catalogue. One strength for every campaign is what lets a Cholesky factor (n³/3
flops) stand in for an eigendecomposition (~10x the flops).

Cost: the factorisation is O(n_items³) once per fit, so the items are capped at the ``max_items`` most
active ones (the long tail says little about a user and has few co-occurrences to regress on). The Gram
matrix is built in column blocks so the sparse product never holds more than a block of it. On a night
after a fit whose state was saved, the Gram matrix is last night's with only the changed users' rows
applied (``item_gram.py``): the same matrix, so the same audiences as a cold fit, for a fraction of the work.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from pydantic import Field

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.item_gram import item_gram, load_state, save_state, state_of, updated_gram
from lookalike_models.reference import is_everyone
from lookalike_models.ridge_strength import choose_strength
from lookalike_models.scorers import REFRESH_STATE, AudienceScorer, register
from lookalike_models.strict_config import StrictConfig
from lookalike_models.threads import one_blas_thread

log = logging.getLogger(__name__)


class ItemRidgeConfig(StrictConfig):
    strength: float | None = Field(
        None,
        gt=0,
        description="Ridge strength in units of the mean item count; None: chosen each run on the inner cut "
        "of the training seeds from strength_grid (ridge_strength.py)",
    )
    strength_grid: list[float] = Field(
        [1 / 16, 1 / 4, 1.0, 4.0, 16.0, 64.0, 256.0],
        min_length=1,
        description="Strengths tried per run, in units of the mean item count (a wide log range)",
    )
    validation_share: float = Field(0.2, gt=0, lt=1, description="Share of each campaign's seeds held out to choose")
    max_validation_users: int = Field(100_000, ge=100, description="Non-seed users scored to place the cut's cutoff")
    max_items: int = Field(8000, ge=1, description="Most active items kept as features (O(n_items³) fit)")


@register("item_ridge")
class ItemRidgeScorer(AudienceScorer):
    """Ridge regression of the seed indicator on binary user x item rows, one strength for every campaign."""

    config_class = ItemRidgeConfig

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        self.refit(data, train_seeds, None)

    def refit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds], previous: Path | None) -> int:
        """The Gram matrix from the previous night's (``item_gram.updated_gram``: only the rows of users whose
        activity changed are applied) when its state is in ``previous``, else from scratch. Either way the
        same matrix bit for bit, hence the same factor and weights. Returns the users whose rows were applied."""
        keep = kept_items(data, self.config.max_items)
        features = binary_features(data, keep)
        state = load_state(Path(previous) / REFRESH_STATE) if previous else None
        updated = updated_gram(state, data, keep, features) if state else None
        gram, applied = updated if updated else (item_gram(features), data.n_users)
        self.strength = self.config.strength
        if self.strength is None:
            self.strength = chosen_strength(features, gram, train_seeds, self.config)
        self.factorise(data, keep, features, gram, None)
        self.solve_all([seeds.positives for seeds in train_seeds.values()])
        log.info(
            "item_ridge: Gram of %d items from %s (%d user rows applied)",
            keep.size,
            "the previous night's" if updated else "scratch",
            applied,
        )
        return applied

    def factorise(
        self, data: LookalikeData, keep: np.ndarray, features: sp.csr_matrix, gram: np.ndarray, lam: float | None
    ) -> None:
        """``lam`` (from the Gram diagonal unless given) and the upper Cholesky factor of G + lam I; the
        integer Gram is kept for the next night (``save``)."""
        self.keep, self.features = keep, features
        self.state = state_of(data, keep, features, gram)
        self.lam = self.strength * max(float(np.diag(gram).mean()), 1e-12) if lam is None else lam
        key = (features_key(features), self.lam)
        if key not in _FACTORS:  # a second item_ridge on the same data in this process (the ensemble's member)
            gram[np.diag_indices_from(gram)] += self.lam
            with one_blas_thread():  # one thread: the same factor to the last bit in every process
                _FACTORS[key] = scipy.linalg.cho_factor(gram, overwrite_a=True, check_finite=False)[0]  # upper R
            while len(_FACTORS) > 1:
                _FACTORS.popitem(last=False)
        self.factor = _FACTORS[key]  # shared read-only
        self.solved: dict[bytes, np.ndarray] = {}  # seed list -> its weights

    def solve_all(self, seed_lists: list[np.ndarray]) -> None:
        """Weights of many seed lists from one pair of triangular solves with a matrix right-hand side: the
        n_kept² factor is read twice in all, not twice per campaign (a memory-bound vector solve each)."""
        todo = {positives_key(p): p for p in seed_lists if positives_key(p) not in self.solved}
        if not todo:
            return
        counts = np.stack([self.seed_item_counts(p) for p in todo.values()], axis=1)  # [n_kept, n_lists]
        with one_blas_thread():  # one thread: bit-identical weights in every process
            solved = scipy.linalg.cho_solve((self.factor, False), counts, check_finite=False)
        self.solved.update(zip(todo, solved.T.copy()))

    def seed_item_counts(self, positives: np.ndarray) -> np.ndarray:
        """float64 [n_kept]: Xᵀ y for the 0/1 seed indicator y, i.e. how many seeds touched each kept item."""
        return np.asarray(self.features[positives].sum(0), np.float64).ravel()

    def weights(self, positives: np.ndarray) -> np.ndarray:
        """float64 [n_kept]: item weights of the ridge fit to the seed indicator of ``positives``."""
        key = positives_key(positives)
        if key not in getattr(self, "solved", {}):
            with one_blas_thread():
                return scipy.linalg.cho_solve(
                    (self.factor, False), self.seed_item_counts(positives), check_finite=False
                )
        return self.solved[key]

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        if positives_key(seeds.positives) not in self.solved:
            # Scoring a campaign's full seed list (staging): solve every campaign of the data at once, always
            # as the same batch, so any process (a Dask worker too) gets the same weights.
            self.solve_all([one.positives for one in data.campaigns.values()])
        weights = self.weights(seeds.positives)
        rows = self.features if is_everyone(candidates, self.features.shape[0]) else self.features[candidates]
        return (rows @ weights).astype(np.float32)

    def params(self) -> dict[str, float]:
        return {"chosen_strength": float(self.strength)} if getattr(self, "strength", None) is not None else {}

    def save(self, folder: Path) -> None:
        # The tracked model is the kept items and the strength (kilobytes, not an n_kept² factor); the integer
        # Gram and the users' rows go to refresh_state/ for the next night's fit and for load, which then only
        # refactors (one BLAS thread, so bit-identical in any process, Dask workers included).
        Path(folder).mkdir(parents=True, exist_ok=True)
        np.savez(Path(folder) / "item_ridge.npz", keep=self.keep, lam=np.array(self.lam))
        save_state(Path(folder) / REFRESH_STATE, self.state)

    def load(self, folder: Path, data: LookalikeData) -> None:
        with np.load(Path(folder) / "item_ridge.npz", allow_pickle=False) as saved:
            keep, lam = saved["keep"], float(saved["lam"])
        features = binary_features(data, keep)
        state = load_state(Path(folder) / REFRESH_STATE)
        updated = updated_gram(state, data, keep, features) if state else None  # no rows to apply: same data
        self.factorise(data, keep, features, updated[0] if updated else item_gram(features), lam)


# Process-level memos: the default night fits item_ridge alone and as an ensemble member on the same data and
# seeds, and the tasks reload fitted models; one factor (n_kept² floats) and a few strength choices are kept.
_FACTORS: OrderedDict[tuple[bytes, float], np.ndarray] = OrderedDict()
_STRENGTHS: OrderedDict[bytes, float] = OrderedDict()


def chosen_strength(
    features: sp.csr_matrix, gram: np.ndarray, train_seeds: dict[str, CampaignSeeds], cfg: ItemRidgeConfig
) -> float:
    """``ridge_strength.choose_strength`` for these rows, seeds and settings, once per process."""
    digest = hashlib.sha256(features_key(features) + cfg.model_dump_json().encode())
    for cid in sorted(train_seeds):
        digest.update(
            cid.encode() + positives_key(train_seeds[cid].positives) + positives_key(train_seeds[cid].negatives)
        )
    key = digest.digest()
    if key not in _STRENGTHS:
        _STRENGTHS[key] = choose_strength(
            features, gram, train_seeds, cfg.strength_grid, cfg.validation_share, max_users=cfg.max_validation_users
        )[0]
        while len(_STRENGTHS) > 4:
            _STRENGTHS.popitem(last=False)
    return _STRENGTHS[key]


def features_key(features: sp.csr_matrix) -> bytes:
    digest = hashlib.sha256(np.asarray(features.shape, np.int64).tobytes())
    digest.update(np.ascontiguousarray(features.indptr).tobytes())
    digest.update(np.ascontiguousarray(features.indices).tobytes())
    return digest.digest()


def positives_key(positives: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(positives, np.int64).tobytes()).digest()


def kept_items(data: LookalikeData, max_items: int) -> np.ndarray:
    """int64 [n_kept], sorted: the ``max_items`` items with the most distinct users (ties: lower index)."""
    counts = np.bincount(data.user_items[1], minlength=data.n_items)
    return np.sort(np.argsort(-counts, kind="stable")[:max_items]).astype(np.int64)


def binary_features(data: LookalikeData, keep: np.ndarray) -> sp.csr_matrix:
    """float64 CSR [n_users, n_kept]: 1 where the user touched the kept item. Built from the users' distinct
    items (``data.user_items``) by one pass over them, not by column-slicing a sparse matrix."""
    indptr, items = data.user_items
    position = np.full(data.n_items, -1, np.int64)
    position[keep] = np.arange(keep.size)
    column = position[items]
    kept = column >= 0
    kept_before = np.concatenate([[0], np.cumsum(kept)])
    return sp.csr_matrix(
        (np.ones(int(kept.sum())), column[kept].astype(np.int32), kept_before[indptr]),
        shape=(data.n_users, keep.size),
    )
