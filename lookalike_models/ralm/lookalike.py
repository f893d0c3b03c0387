"""RALM phase 2's training and serving: the real-time attention look-alike model (Liu et al., KDD 2019,
sec. 4.3-4.4); the modules (shared transform, local and global attention) are ``model.py``.

A campaign's transformed seeds are compressed by k-means into k centroids E_s [k, h] (re-clustered every
epoch while training, and once per seed refresh when serving), so scoring costs O(k) per user whatever the
seed count.

With ``size_prior`` (default) both attentions add log(cluster size) to their logits. k-means drops how
many seeds each centroid stands for, and tanh bounds the logits to [-1, 1], so the paper's attention is
close to a plain mean of the centroids: a centroid of 3 noise seeds weighs as much as one of 300 seeds.
With the prior, a flat attention gives back the seed mean and the learned part re-weights from there.
``size_prior=False`` is the paper's formula as printed.

``s`` (> 0) and ``b`` are a learned scale and bias: a raw cosine mix lives in [-1, 1], so without them
the probability could never leave [0.27, 0.73] and the log loss would stay flat. They are monotone, so
the ranking is the paper's. The "RALM with average" ablation replaces both attentions by the seed mean.

While training, k-means only assigns seeds to clusters; the centroids used in a batch are the means of
their members' *current* transformed embeddings, so the transform also learns through the seed side.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from lookalike_models.dataset import CampaignSeeds
from lookalike_models.progress import Progress
from lookalike_models.ralm.model import LookalikeModel

if TYPE_CHECKING:
    from lookalike_models.ralm.config import RalmConfig

log = logging.getLogger(__name__)


def kmeans(
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    iters: int = 10,
    init: np.ndarray | None = None,
    sample: int = 100_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means: (centroids float32 [k', h], assignment int64 [n]) with k' = min(k, n).

    Centroid positions are fitted on at most ``sample`` rows (so a 1M-seed refresh stays cheap); every row
    is then assigned, and centroids are the means of their members. Empty clusters take a random row.
    ``init`` warm-starts from earlier centroids (used between training epochs)."""
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    k = max(1, min(k, n))
    fit_rows = x if n <= sample else x[rng.choice(n, sample, replace=False)]
    if init is not None and init.shape[0] == k:
        centroids = init.astype(np.float32, copy=True)
    else:
        centroids = fit_rows[rng.choice(fit_rows.shape[0], k, replace=False)].copy()

    def assign(rows: np.ndarray) -> np.ndarray:
        d2 = (rows**2).sum(1, keepdims=True) - 2 * rows @ centroids.T + (centroids**2).sum(1)
        return d2.argmin(1)

    def update(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, rows)
        counts = np.bincount(labels, minlength=k)
        empty = counts == 0
        out = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if empty.any():
            out[empty] = rows[rng.choice(rows.shape[0], int(empty.sum()))]
        return out

    for _ in range(iters):
        centroids = update(fit_rows, assign(fit_rows))
    labels = assign(x)
    return update(x, labels), labels


def seeds_fingerprint(positives: np.ndarray) -> int:
    """crc32 of the sorted seed ids: tells whether stored centroids still describe a seed list."""
    return zlib.crc32(np.sort(np.asarray(positives, np.int64)).tobytes())


@dataclass
class CampaignCentroids:
    """The serving artifact of one campaign: centroids in the transformed space, and what they summarise."""

    centroids: np.ndarray  # float32 [k, h]
    sizes: np.ndarray  # int64 [k]: seeds in each cluster
    fingerprint: int  # seeds_fingerprint of the seed list they were computed from
    n_seeds: int


@torch.no_grad()
def transform_users(model: LookalikeModel, embeddings: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
    """float32 [n, h]: the shared transform applied to user embeddings [n, d]."""
    parts = [
        model.transform(torch.from_numpy(embeddings[s : s + batch_size])).numpy()
        for s in range(0, embeddings.shape[0], batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, embeddings.shape[1]), np.float32)


def campaign_centroids(
    model: LookalikeModel, transformed_seeds: np.ndarray, positives: np.ndarray, k: int, seed: int = 0, iters: int = 10
) -> CampaignCentroids:
    """k-means of a campaign's transformed seeds (one mean for the average ablation)."""
    if model.mode == "average":
        centroids = transformed_seeds.mean(0, keepdims=True).astype(np.float32)
        sizes = np.array([positives.size], np.int64)
    else:
        rng = np.random.default_rng([seed, seeds_fingerprint(positives) & 0xFFFFFFFF])
        centroids, labels = kmeans(transformed_seeds, k, rng, iters)
        sizes = np.bincount(labels, minlength=centroids.shape[0]).astype(np.int64)
    return CampaignCentroids(centroids, sizes, seeds_fingerprint(positives), int(positives.size))


@torch.no_grad()
def score_users(
    model: LookalikeModel, transformed_users: np.ndarray, campaign: CampaignCentroids, batch_size: int = 65_536
) -> np.ndarray:
    """float32 [n]: click probability of each (already transformed) user for one campaign. O(n k h)."""
    model.eval()
    es = torch.from_numpy(np.ascontiguousarray(campaign.centroids, np.float32))
    sizes = torch.from_numpy(campaign.sizes)
    out = [
        torch.sigmoid(model.logit(torch.from_numpy(transformed_users[s : s + batch_size]), es, sizes)).numpy()
        for s in range(0, transformed_users.shape[0], batch_size)
    ]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def _membership(labels: np.ndarray, k: int) -> torch.Tensor:
    """[k, n] row-normalised membership: M @ X gives each cluster's mean of X's rows."""
    m = torch.zeros(k, labels.size)
    m[torch.from_numpy(labels), torch.arange(labels.size)] = 1.0
    return m / m.sum(1, keepdim=True).clamp(min=1.0)


def _n_targets(n_seeds: int, target_frac: float) -> int:
    """Seeds used as positive targets in one epoch; the rest (at least one) are the context."""
    return min(max(1, int(round(target_frac * n_seeds))), n_seeds - 1)


def train_lookalike(
    model: LookalikeModel,
    embeddings: np.ndarray,
    campaigns: dict[str, CampaignSeeds],
    cfg: RalmConfig,
    centroid_log: dict[str, list[np.ndarray]] | None = None,
) -> list[float]:
    """Train on (campaign seeds, target user, label) samples drawn from training seeds only.

    Each epoch, every campaign's training seeds (``max_train_seeds`` sampled at most) are split at random:
    ``target_frac`` become positive targets, the rest the context the target is compared with (so a target is
    never its own seed), and the context is re-clustered (``k`` centroids) with the current transform.
    ``negatives_per_positive``: the campaign's labelled non-converters when it has some (half of them), and
    random users outside its seeds: from the whole population (``negatives_from='population'``) or from the
    other campaigns' training seeds (``'other_seeds'``: users known to convert elsewhere, so activity alone
    does not separate the classes). At least ``lookalike_min_samples`` samples are seen in all: small data
    gets more than ``lookalike_epochs`` epochs, so that a few campaigns with few seeds still train the
    transform and attention (an epoch is a pass over every campaign). ``centroid_log`` (campaign_id -> list)
    receives each epoch's k-means centroids (for tests). Returns the mean log loss of each epoch."""
    seed, k, epochs, batch_size = cfg.seed, cfg.k, cfg.lookalike_epochs, cfg.lookalike_batch_size
    max_seeds, target_frac, negatives_per_positive = cfg.max_train_seeds, cfg.target_frac, cfg.negatives_per_positive
    negatives_from, min_samples = cfg.negatives_from, cfg.lookalike_min_samples
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n_users = embeddings.shape[0]
    emb = torch.from_numpy(embeddings)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lookalike_lr)
    usable = {cid: s for cid, s in campaigns.items() if s.positives.size >= 2}
    if negatives_from not in ("population", "other_seeds"):
        raise ValueError(f"negatives_from must be 'population' or 'other_seeds', not {negatives_from!r}")
    all_seeds = np.unique(np.concatenate([s.positives for s in usable.values()])) if usable else np.zeros(0, np.int64)
    per_epoch = sum(
        _n_targets(min(s.positives.size, max_seeds), target_frac) * (1 + negatives_per_positive)
        for s in usable.values()
    )
    if per_epoch and epochs:
        epochs = max(epochs, -(-min_samples // per_epoch))
    warm: dict[str, np.ndarray] = {}
    curve = []
    # Batches per epoch, at most: random negatives that hit a seed are dropped, so an epoch can be shorter.
    per_epoch_batches = sum(
        -(-_n_targets(min(s.positives.size, max_seeds), target_frac) * (1 + negatives_per_positive) // batch_size)
        for s in usable.values()
    )
    with Progress("ralm look-alike", epochs * per_epoch_batches, "batches") as progress:
        for epoch in range(epochs):
            batches = []  # (campaign_id, context seeds, cluster labels, target users, labels)
            for cid, s in usable.items():
                pos = rng.permutation(s.positives)[:max_seeds]
                n_target = _n_targets(pos.size, target_frac)
                targets, context = pos[:n_target], pos[n_target:]
                if model.mode == "attention":
                    with torch.no_grad():
                        tc = model.transform(emb[torch.from_numpy(context)]).numpy()
                    centroids, labels = kmeans(tc, k, rng, iters=5, init=warm.get(cid))
                    warm[cid] = centroids
                    if centroid_log is not None:
                        centroid_log.setdefault(cid, []).append(centroids.copy())
                else:
                    labels = np.zeros(context.size, np.int64)
                n_neg = negatives_per_positive * targets.size
                n_labelled = min(s.negatives.size, n_neg // 2)
                negs = [rng.choice(s.negatives, n_labelled, replace=False)] if n_labelled else []
                if negatives_from == "other_seeds" and all_seeds.size > s.positives.size:
                    randoms = rng.choice(all_seeds, n_neg - n_labelled)
                else:
                    randoms = rng.integers(0, n_users, n_neg - n_labelled)
                negs.append(randoms[~np.isin(randoms, s.positives)])
                negs = np.concatenate(negs)
                users = np.concatenate([targets, negs])
                y = np.concatenate([np.ones(targets.size, np.float32), np.zeros(negs.size, np.float32)])
                order = rng.permutation(users.size)
                for start in range(0, order.size, batch_size):
                    b = order[start : start + batch_size]
                    batches.append((context, labels, users[b], y[b]))
            total, count = 0.0, 0
            model.train()
            for i in rng.permutation(len(batches)):
                context, labels, users, y = batches[i]
                seeds_t = model.transform(emb[torch.from_numpy(context)])
                k_used = int(labels.max()) + 1
                es = _membership(labels, k_used) @ seeds_t
                sizes = torch.bincount(torch.from_numpy(labels), minlength=k_used)
                logit = model.logit(model.transform(emb[torch.from_numpy(users)]), es, sizes)
                loss = nn.functional.binary_cross_entropy_with_logits(logit, torch.from_numpy(y))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, count = total + loss.item() * users.size, count + users.size
                progress.advance()
            curve.append(total / max(count, 1))
            log.info("ralm look-alike epoch %d: log loss %.4f", epoch, curve[-1])
    model.eval()
    return curve
