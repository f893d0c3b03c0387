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
from lookalike_models.evaluation import campaign_rng, inner_validation_cut
from lookalike_models.inner_validation import competing_users, validation_recall
from lookalike_models.nn.early_stopping import EarlyStopping
from lookalike_models.nn.training import EpochPlan, train_epochs
from lookalike_models.pinterest.embedding import EmbeddingScorer, EmbeddingScorerConfig, unit_centroid
from lookalike_models.progress import Progress
from lookalike_models.scorers import register
from lookalike_models.threads import torch_threads

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
    examples_per_epoch: int = Field(
        100_000, ge=100, description="Examples sampled per epoch at most (bounds an epoch at many campaigns)"
    )
    max_epochs: int = Field(16, ge=1, description="Most passes over the examples; the epoch kept is chosen per run")
    patience: int = Field(3, ge=1, description="Epochs without a better inner-cut recall before stopping")
    validation_share: float = Field(0.2, gt=0, lt=1, description="Share of each campaign's seeds held out")
    validation_audience: float = Field(0.05, gt=0, lt=1, description="Audience share at which the cut's recall counts")
    max_validation_campaigns: int = Field(32, ge=1, description="Campaigns sampled to measure each epoch")
    max_validation_users: int = Field(5_000, ge=100, description="Non-seed users scored per campaign and epoch")
    lr: float = Field(0.005, gt=0)
    batch: int = Field(512, ge=16)
    seed: int = 0


@register("affinity_mlp")
class AffinityMLPScorer(EmbeddingScorer):
    """MLP over (seed-set, user) pair features. Each campaign's training seeds are split at random into a
    context (its mean is the seed vector) and targets (label 1); non-seeds (labelled negatives first,
    then random users) are label 0. So no user is scored against a vector that contains it."""

    config_class = AffinityConfig
    labels_in_fit = True

    def _examples(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]):
        """(user_idx [n], vector index [n], seed vectors [n_splits, d], labels [n]) of every training example."""
        cfg, emb = self.config, self.embeddings
        users, vector_of, vectors, labels = [], [], [], []
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
                batch_users = np.concatenate([targets, negatives])
                users.append(batch_users)
                # Each example points at its split's seed vector: one row per split, not per example.
                vector_of.append(np.full(batch_users.size, len(vectors), np.int64))
                vectors.append(unit_centroid(emb, context))
                labels.append(np.concatenate([np.ones(targets.size), np.zeros(negatives.size)]))
        if not users:
            return None
        return (
            torch.as_tensor(np.concatenate(users)),
            torch.as_tensor(np.concatenate(vector_of)),
            torch.as_tensor(np.stack(vectors)),
            torch.as_tensor(np.concatenate(labels), dtype=torch.float32),
        )

    def fit_campaigns(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        """Train on each campaign's seeds less an inner validation cut; after every epoch the cut's seeds are
        ranked among non-seed users from the fit seeds' vector, and the best epoch's weights are kept (the
        epoch count is chosen per run, on the run's own seeds)."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.mlp = AffinityMLP(self.embeddings.shape[1], cfg.hidden)
        cuts = {cid: inner_validation_cut(s, cfg.validation_share, cfg.seed) for cid, s in train_seeds.items()}
        fit_seeds = {cid: (cut[0] if cut else train_seeds[cid]) for cid, cut in cuts.items()}
        examples = self._examples(data, fit_seeds)
        self.trained = examples is not None
        if not self.trained:
            log.warning("affinity_mlp: no campaign with 4+ training seeds; scoring falls back to centroid cosine")
            return
        with torch_threads(1):
            self._train(examples, self._validation_sets(data, cuts))

    def _train(self, examples, validation) -> None:
        cfg = self.config
        users, vector_of, vectors, labels = examples
        emb = torch.as_tensor(self.embeddings)
        pos_weight = torch.tensor((labels == 0).sum().item() / max((labels == 1).sum().item(), 1))
        opt = torch.optim.Adam(self.mlp.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        per_epoch = min(labels.numel(), cfg.examples_per_epoch)

        def run_epoch(epoch: int, progress: Progress) -> float:
            total, steps = 0.0, 0
            for idx in torch.randperm(labels.numel(), generator=gen)[:per_epoch].split(cfg.batch):
                logits = self.mlp(emb[users[idx]], vectors[vector_of[idx]])
                loss = F.binary_cross_entropy_with_logits(logits, labels[idx], pos_weight=pos_weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, steps = total + loss.item(), steps + 1
                progress.advance()
            return total / max(steps, 1)

        stopper = EarlyStopping(self.mlp, cfg.patience, "max", min_delta=0.0)
        plan = EpochPlan("affinity_mlp", cfg.max_epochs, -(-per_epoch // cfg.batch), "steps", "inner_cut_recall")
        curve = train_epochs(self.mlp, plan, run_epoch, lambda: self._validation_recall(validation), stopper)
        self.best_epoch = curve.best_epoch
        log.info("affinity_mlp: epoch %d kept (inner-cut recall %.3f)", self.best_epoch, stopper.best)

    def _validation_sets(self, data: LookalikeData, cuts) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per campaign with a cut: (fit seeds' unit vector [d], validation users' rows, competing users' rows)."""
        cfg, emb = self.config, self.embeddings
        sets = []
        measured = sorted(cid for cid, cut in cuts.items() if cut is not None)
        if len(measured) > cfg.max_validation_campaigns:  # a sample measures an epoch as well, for less work
            measured = sorted(
                np.random.default_rng(cfg.seed).choice(measured, cfg.max_validation_campaigns, replace=False)
            )
        for cid in measured:
            cut = cuts[cid]
            fit, val = cut
            others = competing_users(data.n_users, fit, val, cfg.max_validation_users, campaign_rng(cfg.seed + 3, cid))
            sets.append(
                (
                    torch.as_tensor(unit_centroid(emb, fit.positives)),
                    torch.as_tensor(emb[val]),
                    torch.as_tensor(emb[others]),
                )
            )
        return sets

    @torch.no_grad()
    def _validation_recall(self, sets) -> float:
        """Mean inner-cut recall (``validation_recall``) of the current MLP; 0 when no campaign has a cut (every
        epoch then ties epoch 0 and training stops after ``patience`` epochs)."""
        if not sets:
            return 0.0
        self.mlp.eval()
        share = self.config.validation_audience
        return float(
            np.mean([validation_recall(self.mlp(v, c).numpy(), self.mlp(o, c).numpy(), share) for c, v, o in sets])
        )

    @torch.no_grad()
    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        vector = torch.as_tensor(unit_centroid(self.embeddings, seeds.positives))
        if not getattr(self, "trained", True):
            return (self.embeddings[candidates] @ vector.numpy()).astype(np.float32)
        # In blocks: the pair features are 4d+1 floats a user, too many to hold for millions at once.
        return np.concatenate(
            [
                self.mlp(torch.as_tensor(self.embeddings[block]), vector).numpy()
                for block in np.array_split(candidates, max(1, -(-candidates.size // 100_000)))
            ]
        ).astype(np.float32)

    def params(self) -> dict[str, int]:
        return {"chosen_epochs": self.best_epoch} if hasattr(self, "best_epoch") else {}

    def save(self, folder: Path) -> None:
        super().save(folder)
        torch.save(self.mlp.state_dict(), Path(folder) / "affinity_mlp.pt")

    def load(self, folder: Path, data: LookalikeData) -> None:
        super().load(folder, data)
        self.mlp = AffinityMLP(self.embeddings.shape[1], self.config.hidden)
        self.mlp.load_state_dict(torch.load(Path(folder) / "affinity_mlp.pt", weights_only=True))
        self.mlp.eval()
