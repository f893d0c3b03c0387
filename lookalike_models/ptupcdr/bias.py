"""The bias baseline for cold-start users: how generously a user rates carries over between domains.

    r_hat(u, i) = mu_tgt + b_i^tgt + alpha * o_u^src

``o_u^src`` is the user's source-domain rating offset after source item biases, a shrunk mean
``sum_j (r_uj - mu_src - b_j^src) / (n_u + user_shrink)``; ``b_i^tgt`` are target item biases with the
training users' own offsets taken out (a few alternating rounds of shrunk means, Koren's baseline predictor).
``alpha`` and the shrinkages are chosen on validation users' target ratings. No embeddings, no training loop:
it is the floor any cross-domain bridge must clear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike_models.ptupcdr.domains import Ratings
from lookalike_models.ptupcdr.training import mae_rmse


def shrunk_biases(
    ratings: Ratings, n_users: int, n_items: int, user_shrink: float, item_shrink: float, rounds: int = 3
) -> tuple[float, np.ndarray, np.ndarray]:
    """(mean, b_user float64 [n_users], b_item float64 [n_items]) of r ~ mean + b_user + b_item.

    Item biases first, then user offsets, alternated ``rounds`` times; each a sum of residuals over
    (count + shrink), so a user or item with few ratings keeps an offset near 0 (none: 0)."""
    r = ratings.ratings.astype(np.float64)
    mean = float(r.mean())
    # Denominators floored so that a user or item with no rating (and shrink 0) gets 0, not NaN.
    user_denominator = np.maximum(np.bincount(ratings.users, minlength=n_users) + user_shrink, 1e-9)
    item_denominator = np.maximum(np.bincount(ratings.items, minlength=n_items) + item_shrink, 1e-9)
    b_user, b_item = np.zeros(n_users), np.zeros(n_items)
    for _ in range(rounds):
        b_item = np.bincount(ratings.items, r - mean - b_user[ratings.users], n_items) / item_denominator
        b_user = np.bincount(ratings.users, r - mean - b_item[ratings.items], n_users) / user_denominator
    return mean, b_user, b_item


@dataclass
class BiasBaseline:
    """mean + item_bias[i] + alpha * source_offset[u]; item_bias float64 [n_items], source_offset [n_users]."""

    mean: float
    item_bias: np.ndarray
    source_offset: np.ndarray
    alpha: float
    user_shrink: float
    item_shrink: float

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mean + self.item_bias[items] + self.alpha * self.source_offset[users]


def fit_bias_baseline(
    source: Ratings,
    target_train: Ratings,
    val: Ratings,
    n_users: int,
    n_items: int,
    alphas: np.ndarray | None = None,
    user_shrinks: tuple[float, ...] = (0, 2, 5, 10, 25),
    item_shrinks: tuple[float, ...] = (2, 5, 10, 25),
) -> BiasBaseline:
    """Grid search of alpha x source user shrinkage x item shrinkage (both domains) on ``val``'s MAE.

    ``val``: target ratings of validation users, who are cold (absent from ``target_train``)."""
    alphas = np.linspace(0.0, 1.5, 31) if alphas is None else np.asarray(alphas, np.float64)
    best: tuple[float, BiasBaseline] | None = None
    for item_shrink in item_shrinks:
        mean, _, item_bias = shrunk_biases(target_train, n_users, n_items, user_shrink=5.0, item_shrink=item_shrink)
        base = mean + item_bias[val.items]
        for user_shrink in user_shrinks:
            _, offset, _ = shrunk_biases(source, n_users, n_items, user_shrink, item_shrink)
            # MAE of every alpha at once: [n_alphas, n_val].
            errors = np.abs(base[None] + alphas[:, None] * offset[val.users][None] - val.ratings[None]).mean(1)
            k = int(np.argmin(errors))
            if best is None or errors[k] < best[0]:
                best = (
                    float(errors[k]),
                    BiasBaseline(mean, item_bias, offset, float(alphas[k]), user_shrink, item_shrink),
                )
    assert best is not None
    return best[1]


def bias_baseline_scores(model: BiasBaseline, ratings: Ratings) -> tuple[float, float]:
    """(MAE, RMSE) of the baseline on ``ratings``."""
    return mae_rmse(model.predict(ratings.users, ratings.items), ratings.ratings)
