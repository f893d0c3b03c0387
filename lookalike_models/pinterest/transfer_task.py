"""The paper's transfer task (deWet & Ou, KDD 2019): proxy seed lists built from organic data alone, which early
stopping and the checkpoint choice of the StarSpace encoder read. A set of proxy items is withheld from
training; each proxy item's engagers are split into seeds and held-out targets; the error is ``1 - recall`` of
the targets in the top ``audience`` users by cosine to the seeds' mean embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from lookalike_models.dataset import LookalikeData, distinct

if TYPE_CHECKING:
    from lookalike_models.pinterest.encoder import EncoderConfig


@dataclass
class TransferTask:
    """Proxy seed lists from organic data: per proxy item, seeds and held-out target engagers."""

    items: np.ndarray  # int64 [n_proxy] item_idx withheld from training
    seeds: list[np.ndarray]  # user_idx per proxy item
    targets: list[np.ndarray]
    audience: int


def build_transfer_task(data: LookalikeData, keep: np.ndarray, cfg: EncoderConfig) -> TransferTask:
    """Pick mid-popularity proxy items among organic interactions and split their engagers in halves."""
    rng = np.random.default_rng(cfg.seed)
    users, items = data.user_idx[keep], data.item_idx[keep]
    pairs = distinct(users.astype(np.int64) * data.n_items + items)
    users, items = pairs // data.n_items, pairs % data.n_items
    engagers = np.bincount(items, minlength=data.n_items)
    # Not the head (popularity would solve it) nor the tail (too few users to measure).
    upper = max(cfg.proxy_min_users + 1, int(np.quantile(engagers[engagers > 0], 0.98)))
    eligible = np.flatnonzero((engagers >= cfg.proxy_min_users) & (engagers <= upper))
    chosen = np.sort(rng.choice(eligible, min(cfg.proxy_items, eligible.size), replace=False))
    seeds, targets = [], []
    for item in chosen:
        who = rng.permutation(users[items == item])
        half = who.size // 2
        seeds.append(np.sort(who[:half]))
        targets.append(np.sort(who[half:]))
    audience = max(1, int(round(cfg.transfer_audience * data.n_users)))
    return TransferTask(chosen.astype(np.int64), seeds, targets, audience)


def transfer_error(embeddings: np.ndarray | torch.Tensor, task: TransferTask) -> float:
    """1 - mean recall of the proxy targets in the top ``task.audience`` users by cosine to the seeds'
    centroid (seeds excluded). embeddings: float32 [n_users, d], rows unit-norm or not."""
    emb = F.normalize(torch.as_tensor(embeddings, dtype=torch.float32), dim=1)
    recalls = []
    for seeds, targets in zip(task.seeds, task.targets):
        if seeds.size == 0 or targets.size == 0:
            continue
        scores = emb @ F.normalize(emb[torch.as_tensor(seeds)].mean(0), dim=0)
        scores[torch.as_tensor(seeds)] = -np.inf
        top = torch.topk(scores, min(task.audience, scores.numel())).indices.numpy()
        recalls.append(np.isin(targets, top).mean())
    return float(1.0 - np.mean(recalls)) if recalls else float("nan")
