"""An inner validation shaped like the look-alike task, for choosing the user model's epoch.

Held-out interaction recall (``user_model.validation_recall``) measures item prediction; on MovieLens it
keeps rising while centroid cosine on the embeddings falls (tuning splits 100-104, bench/results/
ralm_embeddings.md). Here instead: a few mid-popularity *proxy items* are withheld from every user's
history while training; each proxy's engagers are split in halves, and the score is the recall of one half
in the top ``fraction`` of users by cosine to the other half's mean embedding, i.e. a small campaign.
Campaign seeds are never used, so this can run inside any split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class ProxyTask:
    items: np.ndarray  # int64 [P] item_idx withheld while training
    seeds: list[np.ndarray]  # per proxy, user_idx of the half whose centroid is the query
    targets: list[np.ndarray]  # per proxy, user_idx of the half to find


def build_proxy_task(
    tfidf: sp.csr_matrix, n_proxies: int, min_users: int, max_users: int, rng: np.random.Generator
) -> tuple[sp.csr_matrix, ProxyTask]:
    """(matrix with the proxies' columns zeroed, task): up to ``n_proxies`` items with ``min_users`` to
    ``max_users`` engagers, at random."""
    tfidf = tfidf.tocsc(copy=True)
    engagers = np.diff(tfidf.indptr)
    eligible = np.flatnonzero((engagers >= min_users) & (engagers <= max_users))
    items = np.sort(rng.choice(eligible, min(n_proxies, eligible.size), replace=False)).astype(np.int64)
    seeds, targets = [], []
    for item in items:
        users = rng.permutation(tfidf.indices[tfidf.indptr[item] : tfidf.indptr[item + 1]])
        half = users.size // 2
        seeds.append(np.sort(users[:half]).astype(np.int64))
        targets.append(np.sort(users[half:]).astype(np.int64))
        tfidf.data[tfidf.indptr[item] : tfidf.indptr[item + 1]] = 0.0
    tfidf.eliminate_zeros()
    return tfidf.tocsr(), ProxyTask(items, seeds, targets)


def proxy_recall(embeddings: np.ndarray, task: ProxyTask, fraction: float = 0.05) -> float:
    """Mean over proxies of the share of targets among the top ``fraction`` of users (seeds excluded) by
    cosine to the seeds' mean embedding. ``embeddings`` float32 [n_users, d]."""
    if task.items.size == 0:
        return float("nan")
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    top = max(1, int(round(fraction * embeddings.shape[0])))
    recalls = []
    for seeds, targets in zip(task.seeds, task.targets):
        scores = unit @ unit[seeds].mean(0)
        scores[seeds] = -np.inf
        best = np.argpartition(-scores, top - 1)[:top]
        recalls.append(np.isin(targets, best).mean())
    return float(np.mean(recalls))
