"""PTUPCDR's data records: the ratings of a source and a target domain, the examples drawn from them and the
users' liked-item histories the characteristic encoder reads.

Histories are padded with ``pad_id = n_items``, a row that is not a real item and is masked out of the
attention (the official code pads with 0, a real item id).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike_models.dataset import LookalikeData


@dataclass
class Ratings:
    """Explicit ratings of one domain (or several): user_idx, item_idx int64 [n], rating float32 [n]."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray

    def subset(self, keep: np.ndarray) -> Ratings:
        return Ratings(self.users[keep], self.items[keep], self.ratings[keep])

    def of_users(self, users: np.ndarray) -> Ratings:
        return self.subset(np.isin(self.users, users))

    @staticmethod
    def concat(*parts: Ratings) -> Ratings:
        return Ratings(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("users", "items", "ratings")))

    def __len__(self) -> int:
        return int(self.users.size)


@dataclass
class TwoDomains:
    """Ratings of one source and one target domain in the data's shared user/item index space."""

    source: Ratings
    target: Ratings
    n_users: int
    n_items: int

    @classmethod
    def from_data(cls, data: LookalikeData, source: str | None = None, target: str | None = None) -> TwoDomains:
        """``source``/``target`` name domains of ``data.domains``; by default the first and second."""
        if len(data.domains) < 2 and (source is None or target is None):
            raise ValueError(f"cross-domain transfer needs two domains, the data has {data.domains}")
        codes = [data.domains.index(name) if name else default for name, default in ((source, 0), (target, 1))]

        def ratings_of(code: int) -> Ratings:
            keep = data.domain == code
            return Ratings(
                data.user_idx[keep].astype(np.int64),
                data.item_idx[keep].astype(np.int64),
                data.weight[keep].astype(np.float32),
            )

        return cls(ratings_of(codes[0]), ratings_of(codes[1]), data.n_users, data.n_items)

    def overlapping_users(self) -> np.ndarray:
        return np.intersect1d(np.unique(self.source.users), np.unique(self.target.users))


def with_negatives(positives: Ratings, item_pool: np.ndarray, n_neg: int, rng: np.random.Generator) -> Ratings:
    """Implicit-feedback examples: every observed pair labelled 1, plus ``n_neg`` uniformly sampled items of
    ``item_pool`` per observed pair labelled 0 (unobserved pairs; a rare sampled positive is tolerated)."""
    neg_users = np.repeat(positives.users, n_neg)
    negatives = Ratings(neg_users, rng.choice(item_pool, neg_users.size), np.zeros(neg_users.size, np.float32))
    return Ratings.concat(Ratings(positives.users, positives.items, np.ones(len(positives), np.float32)), negatives)


def liked_histories(
    source: Ratings, n_users: int, pad_id: int, history_len: int = 20, like_threshold: float = 3.0
) -> np.ndarray:
    """int64 [n_users, history_len]: each user's source items rated above ``like_threshold``, best rated
    first, padded with ``pad_id``. A user who liked nothing falls back to their best-rated items."""
    out = np.full((n_users, history_len), pad_id, np.int64)
    liked = source.ratings > like_threshold
    # Liked items first, then by rating, then by item id: a stable, reproducible history.
    order = np.lexsort((source.items, -source.ratings, ~liked, source.users))
    users, items, liked = source.users[order], source.items[order], liked[order]
    likes_any = np.bincount(users[liked], minlength=n_users) > 0
    starts = np.searchsorted(users, np.arange(n_users))
    rank = np.arange(users.size) - starts[users]
    keep = (rank < history_len) & (liked | ~likes_any[users])
    out[users[keep], rank[keep]] = items[keep]
    return out
