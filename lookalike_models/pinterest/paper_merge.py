"""The paper's ensemble merge (deWet & Ou, KDD 2019, sec. 4.3), kept as the ensemble's ``paper`` mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lookalike_models.pinterest.ensemble import EnsembleConfig


def embedding_share(n_seeds: int, cfg: EnsembleConfig) -> float:
    """Embedding member's share of the round-robin fill: log-linear between the small and large settings."""
    lo, hi = np.log(cfg.small_seeds), np.log(max(cfg.large_seeds, cfg.small_seeds + 1))
    t = float(np.clip((np.log(max(n_seeds, 1)) - lo) / (hi - lo), 0.0, 1.0))
    return (1 - t) * cfg.embedding_share_small + t * cfg.embedding_share_large


def merge_rankings(scores_a: np.ndarray, scores_b: np.ndarray, top: int, share_a: float) -> np.ndarray:
    """float32 [n] merged scores (higher first) of two score vectors over the same candidates.

    Users in both top-``top`` lists come first (by summed rank); then the two rankings are interleaved
    round-robin, list A taking ``share_a`` of the slots, each user kept at its first appearance."""
    n = scores_a.size
    if n == 0:
        return np.empty(0, np.float32)
    order_a = np.lexsort((np.arange(n), -scores_a))
    order_b = np.lexsort((np.arange(n), -scores_b))
    rank_a, rank_b = np.empty(n, np.int64), np.empty(n, np.int64)
    rank_a[order_a], rank_b[order_b] = np.arange(n), np.arange(n)
    top = min(top, n)
    both = np.flatnonzero((rank_a < top) & (rank_b < top))
    both = both[np.lexsort((both, rank_a[both] + rank_b[both]))]
    share_a = float(np.clip(share_a, 1e-6, 1 - 1e-6))
    rest_a, rest_b = order_a[~np.isin(order_a, both)], order_b[~np.isin(order_b, both)]
    # Slot times: A's i-th user at (i + .5) / share, B's j-th at (j + .5) / (1 - share); earliest wins.
    times = np.concatenate([(np.arange(rest_a.size) + 0.5) / share_a, (np.arange(rest_b.size) + 0.5) / (1 - share_a)])
    users = np.concatenate([rest_a, rest_b])
    by_time = np.argsort(times, kind="stable")
    users = users[by_time]
    _, first = np.unique(users, return_index=True)
    fill = users[np.sort(first)]
    final = np.concatenate([both, fill])
    merged = np.empty(n, np.float32)
    merged[final] = (n - np.arange(n)).astype(np.float32)
    return merged
