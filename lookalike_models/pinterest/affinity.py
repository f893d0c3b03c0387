"""``affinity_mlp``: an MLP on (seed-set vector, user vector) pair features over StarSpace embeddings; labels
are the campaigns' training seeds vs non-seeds (never any model's ranking)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.evaluation import campaign_rng
from lookalike_models.pinterest.embedding import EmbeddingScorer, EmbeddingScorerConfig, unit_centroid
from lookalike_models.scorers import register

log = logging.getLogger(__name__)


def pair_features(users: torch.Tensor, seed_vector: torch.Tensor) -> torch.Tensor:
    """users float32 [B, d], seed_vector float32 [B, d] or [d] -> [B, 4d + 1]:
    [u*v, u-v, |u-v|, u+v, cos(u, v)]."""
    v = seed_vector.expand_as(users)
    return torch.cat([users * v, users - v, (users - v).abs(), users + v, (users * v).sum(1, keepdim=True)], 1)


class AffinityMLP(nn.Module):
    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4 * dim + 1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, users: torch.Tensor, seed_vector: torch.Tensor) -> torch.Tensor:
        """-> logits float32 [B] that the user belongs with the seed set."""
        return self.net(pair_features(users, seed_vector)).squeeze(1)


class AffinityConfig(EmbeddingScorerConfig):
    hidden: int = Field(64, ge=4)
    splits_per_campaign: int = Field(8, ge=1, description="Random context/target splits of each seed list")
    context_share: float = Field(0.5, gt=0, lt=1, description="Share of a split's seeds forming the seed vector")
    negatives_per_positive: int = Field(3, ge=1)
    epochs: int = Field(8, ge=1)
    lr: float = Field(0.005, gt=0)
    batch: int = Field(512, ge=16)
    seed: int = 0


@register("affinity_mlp")
class AffinityMLPScorer(EmbeddingScorer):
    """MLP over (seed-set, user) pair features. Each campaign's training seeds are split at random into a
    context (its mean is the seed vector) and targets (label 1); non-seeds (labelled negatives first,
    then random users) are label 0. So no user is scored against a vector that contains it."""

    config_class = AffinityConfig

    def _examples(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]):
        cfg, emb = self.config, self.embeddings
        users, vectors, labels = [], [], []
        for cid, seeds in train_seeds.items():
            if seeds.size < 4:
                continue
            rng = campaign_rng(cfg.seed, cid)
            for _ in range(cfg.splits_per_campaign):
                perm = rng.permutation(seeds.positives)
                n_ctx = int(np.clip(round(cfg.context_share * perm.size), 2, perm.size - 1))
                context, targets = perm[:n_ctx], perm[n_ctx:]
                n_neg = cfg.negatives_per_positive * targets.size
                labelled = rng.permutation(seeds.negatives)[: n_neg // 2]
                random = rng.integers(0, data.n_users, n_neg - labelled.size)
                random = random[~np.isin(random, seeds.positives)]
                negatives = np.concatenate([labelled, random])
                vector = unit_centroid(emb, context)
                batch_users = np.concatenate([targets, negatives])
                users.append(batch_users)
                vectors.append(np.repeat(vector[None, :], batch_users.size, 0))
                labels.append(np.concatenate([np.ones(targets.size), np.zeros(negatives.size)]))
        if not users:
            return None
        return (
            torch.as_tensor(emb[np.concatenate(users)]),
            torch.as_tensor(np.concatenate(vectors)),
            torch.as_tensor(np.concatenate(labels), dtype=torch.float32),
        )

    def fit_campaigns(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.mlp = AffinityMLP(self.embeddings.shape[1], cfg.hidden)
        examples = self._examples(data, train_seeds)
        self.trained = examples is not None
        if not self.trained:
            log.warning("affinity_mlp: no campaign with 4+ training seeds; scoring falls back to centroid cosine")
            return
        users, vectors, labels = examples
        pos_weight = torch.tensor((labels == 0).sum().item() / max((labels == 1).sum().item(), 1))
        opt = torch.optim.Adam(self.mlp.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        for _ in range(cfg.epochs):
            for idx in torch.randperm(labels.numel(), generator=gen).split(cfg.batch):
                loss = F.binary_cross_entropy_with_logits(
                    self.mlp(users[idx], vectors[idx]), labels[idx], pos_weight=pos_weight
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.mlp.eval()

    @torch.no_grad()
    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        vector = torch.as_tensor(unit_centroid(self.embeddings, seeds.positives))
        if not getattr(self, "trained", True):
            return (self.embeddings[candidates] @ vector.numpy()).astype(np.float32)
        return self.mlp(torch.as_tensor(self.embeddings[candidates]), vector).numpy().astype(np.float32)

    def save(self, folder: Path) -> None:
        super().save(folder)
        torch.save(self.mlp.state_dict(), Path(folder) / "affinity_mlp.pt")

    def load(self, folder: Path, data: LookalikeData) -> None:
        super().load(folder, data)
        self.mlp = AffinityMLP(self.embeddings.shape[1], self.config.hidden)
        self.mlp.load_state_dict(torch.load(Path(folder) / "affinity_mlp.pt", weights_only=True))
        self.mlp.eval()
