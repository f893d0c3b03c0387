"""What makes RALM's user model learn on small data: a TF-IDF-weighted item-history field and a start from
the TruncatedSVD factors of the same matrix (issue 10, item 4; the fix that made StarSpace learn).

With the history field pooled as sum_j w_uj v_j (w_u = the user's L2-normalised TF-IDF row) and the item
table v = the SVD item factors V, the pooled field *is* the user's SVD factor (X V = U S): training starts
from the ``svd_centroid`` reference's geometry instead of from noise, and the sampled softmax refines it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD

from lookalike_models.dataset import LookalikeData
from lookalike_models.reference import user_item_tfidf


def organic_tfidf(data: LookalikeData) -> sp.csr_matrix:
    """float32 CSR [n_users, n_items]: TF-IDF rows of the interactions with items that are not a campaign's
    own item (those are labels; the loaders usually removed them already)."""
    keep = None
    if data.campaign_items:
        keep = ~np.isin(data.item_idx, np.fromiter(data.campaign_items.values(), np.int64))
    return user_item_tfidf(data, keep)


def weighted_history(tfidf: sp.csr_matrix, max_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(codes int64 [n_users, L], weights float32 [n_users, L]): up to ``max_len`` of each user's items as
    item_idx + 1 (0 = padding, weight 0) with their TF-IDF weights; the heaviest items are kept when a user
    has more. L = min(max_len, longest history), so short-history data stays small."""
    tfidf = tfidf.tocsr()
    lengths = np.diff(tfidf.indptr)
    n_users = tfidf.shape[0]
    width = max(1, min(max_len, int(lengths.max()) if lengths.size else 1))
    users = np.repeat(np.arange(n_users), lengths)
    # Heaviest first within a user; ties in random order.
    order = np.lexsort((rng.random(tfidf.data.size), -tfidf.data, users))
    pos = np.arange(tfidf.data.size) - np.repeat(tfidf.indptr[:-1], lengths)
    keep = pos < width
    codes = np.zeros((n_users, width), np.int64)
    weights = np.zeros((n_users, width), np.float32)
    codes[users[keep], pos[keep]] = tfidf.indices[order][keep].astype(np.int64) + 1
    weights[users[keep], pos[keep]] = tfidf.data[order][keep]
    return codes, weights


def svd_item_factors(tfidf: sp.csr_matrix, k: int, seed: int = 0) -> np.ndarray:
    """float32 [n_items, k]: TruncatedSVD item factors (orthonormal columns), zero-padded when the matrix
    has fewer than k usable components."""
    usable = max(1, min(k, min(tfidf.shape) - 1))
    factors = TruncatedSVD(usable, random_state=seed).fit(tfidf).components_.T.astype(np.float32)
    out = np.zeros((tfidf.shape[1], k), np.float32)
    out[:, :usable] = factors
    return out
