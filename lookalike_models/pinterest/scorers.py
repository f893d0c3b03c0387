"""Pinterest act-alike audience scorers (deWet & Ou, KDD 2019) on StarSpace user embeddings.

  - ``centroid_cosine``: cosine to the seeds' mean embedding (the simple reference);
  - ``lsh_density`` / ``lsh_voting``: the paper's hyperplane-LSH region scores (see ``lsh.py``);
  - ``affinity_mlp``: MLP on (seed-set vector, user vector) pair features, labels = campaigns' training
    seeds vs non-seeds (never any model's ranking);

The per-campaign classifier (``pinterest_classifier``) is in ``classifier.py``, the ensemble
(``pinterest_ensemble``) in ``ensemble.py``.

All of them share one trained encoder per data set within a process (``shared_encoder``), so an
evaluation of several of them trains StarSpace once.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.evaluation import campaign_rng
from lookalike_models.pinterest.encoder import (
    EncoderConfig,
    FittedEncoder,
    TransferTask,
    make_encoder,
    organic_inputs,
    train_encoder,
)
from lookalike_models.pinterest.lsh import HyperplaneLSH, RegionTable, default_bits
from lookalike_models.pinterest.serving import pack_inputs, packed_encoder
from lookalike_models.scorers import AudienceScorer, register

log = logging.getLogger(__name__)

# (data.content_key, encoder config json) -> fitted encoder, newest last. Keyed by content, so two copies of
# one data set share an encoder and different data never does; small, so a long process does not pile up models.
_ENCODERS: OrderedDict[tuple[str, str], FittedEncoder] = OrderedDict()
_MAX_CACHED = 2


def shared_encoder(data: LookalikeData, cfg: EncoderConfig) -> FittedEncoder:
    """Train the StarSpace encoder on ``data``'s organic interactions, once per (data, config) per process."""
    key = (data.content_key, cfg.model_dump_json())
    if key in _ENCODERS:
        _ENCODERS.move_to_end(key)
        return _ENCODERS[key]
    fitted = train_encoder(data, cfg)
    log.info("starspace: trained, transfer error %.4f -> %.4f, %.0f users/s", fitted.history[0]["transfer_error"],
             min(h["transfer_error"] for h in fitted.history), fitted.users_per_second)
    _ENCODERS[key] = fitted
    while len(_ENCODERS) > _MAX_CACHED:
        _ENCODERS.popitem(last=False)
    return fitted


def encoder_curves(fitted: FittedEncoder | None) -> dict[str, list[float]]:
    if fitted is None:
        return {}
    return {"encoder_transfer_error": [h["transfer_error"] for h in fitted.history],
            "encoder_loss": [h["loss"] for h in fitted.history if h["epoch"] > 0]}


def embed_users(data: LookalikeData, cfg: EncoderConfig | None = None) -> np.ndarray:
    """float32 [n_users, d]: every user's unit-norm StarSpace embedding (trained on organic data)."""
    return shared_encoder(data, cfg or EncoderConfig()).embeddings


def _unit_centroid(embeddings: np.ndarray, users: np.ndarray) -> np.ndarray:
    c = embeddings[users].mean(0)
    return c / max(float(np.linalg.norm(c)), 1e-12)


class EmbeddingScorerConfig(BaseModel):
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)


class EmbeddingScorer(AudienceScorer):
    """Base: fits (or is handed) the shared encoder; saves/loads it with the embeddings."""

    config_class = EmbeddingScorerConfig
    fitted: FittedEncoder | None = None

    def use_encoder(self, fitted: FittedEncoder) -> None:
        """Share an already trained encoder (the ensemble hands its one to its members)."""
        self.fitted = fitted

    @property
    def embeddings(self) -> np.ndarray:
        return self.fitted.embeddings

    @property
    def history(self) -> dict[str, list[float]]:
        """Training curves for tracking: transfer error from the untrained model on, loss per epoch."""
        return encoder_curves(self.fitted)

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        if self.fitted is None or self.fitted.embeddings.shape[0] != data.n_users:
            self.fitted = shared_encoder(data, self.config.encoder)
        self.fit_campaigns(data, train_seeds)

    def fit_campaigns(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        """What the scorer learns on top of the embeddings (nothing by default)."""

    def user_embeddings(self) -> np.ndarray:
        return self.embeddings

    def serving_module(self, data: LookalikeData):
        """The encoder as one packed float32 tensor in, unit vectors out, with a few example rows."""
        inputs = organic_inputs(data, self.config.encoder, self.fitted.transfer_task)
        return packed_encoder(self.fitted.model, inputs), pack_inputs(inputs, np.arange(min(5, data.n_users)))

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.fitted.model.state_dict(), folder / "encoder.pt")
        task = self.fitted.transfer_task
        np.savez(folder / "embeddings.npz", embeddings=self.fitted.embeddings, proxy_items=task.items,
                 audience=np.array(task.audience))
        (folder / "encoder_history.json").write_text(json.dumps(
            {"history": self.fitted.history, "users_per_second": self.fitted.users_per_second}, indent=1))

    def load(self, folder: Path, data: LookalikeData) -> None:
        folder = Path(folder)
        model = make_encoder(data, self.config.encoder)
        model.load_state_dict(torch.load(folder / "encoder.pt", weights_only=True))
        with np.load(folder / "embeddings.npz", allow_pickle=False) as npz:
            embeddings, proxy, audience = npz["embeddings"], npz["proxy_items"], int(npz["audience"])
        meta = json.loads((folder / "encoder_history.json").read_text())
        self.fitted = FittedEncoder(model, embeddings, meta["history"], TransferTask(proxy, [], [], audience),
                                    meta["users_per_second"])


@register("centroid_cosine")
class CentroidCosineScorer(EmbeddingScorer):
    """Cosine of each user to the seeds' mean embedding."""

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        return (self.embeddings[candidates] @ _unit_centroid(self.embeddings, seeds.positives)).astype(np.float32)


class LSHConfig(EmbeddingScorerConfig):
    kind: str = Field("density", pattern="^(density|voting)$", description="Region score: density or voting")
    n_partitions: int = Field(16, ge=1, le=256, description="Independent hyperplane partitions averaged")
    n_bits: int | None = Field(None, ge=1, le=30, description="Hyperplanes per partition; None: from users_per_region")
    users_per_region: float = Field(16.0, gt=0, description="Target mean region population when n_bits is None")
    min_region_seeds: int = Field(1, ge=1, description="Drop regions with fewer seeds")
    min_region_users: int = Field(3, ge=1, description="Drop regions with fewer users")
    min_candidate_share: float = Field(0.1, ge=0, le=1, description="Below this share covered, score everyone")
    tiebreak_cosine: float = Field(1e-3, ge=0, description="Weight of centroid cosine to order equal region scores")
    seed: int = 0


@register("lsh_density")
class LSHDensityScorer(EmbeddingScorer):
    """The paper's scorer: a campaign is a {region -> score} table; a user's score is a lookup."""

    config_class = LSHConfig
    default_kind = "density"

    def __init__(self, config: BaseModel | dict[str, Any] | None = None):
        if not isinstance(config, BaseModel):
            config = {"kind": self.default_kind, **(config or {})}
        super().__init__(config)

    def fit_campaigns(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        cfg = self.config
        bits = cfg.n_bits or default_bits(data.n_users, cfg.users_per_region)
        self.lsh = HyperplaneLSH(self.embeddings, cfg.n_partitions, bits, cfg.seed)

    def table(self, seeds: CampaignSeeds) -> RegionTable:
        """The campaign's {region -> score} table, built from its seeds whenever asked (cheap)."""
        cfg = self.config
        return self.lsh.region_table(seeds.positives, cfg.kind, cfg.min_region_seeds, cfg.min_region_users)

    def candidates(self, data: LookalikeData, seeds: CampaignSeeds) -> np.ndarray:
        covered = np.flatnonzero(self.table(seeds).covered(self.lsh.codes))
        return covered if covered.size >= self.config.min_candidate_share * data.n_users else np.arange(data.n_users)

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        table = self.table(seeds)  # cheap; a cached table could belong to another seed list
        scores = self.lsh.score(table, candidates)
        if self.config.tiebreak_cosine:
            scale = float(scores.max()) if scores.size and scores.max() > 0 else 1.0
            cosine = self.embeddings[candidates] @ _unit_centroid(self.embeddings, seeds.positives)
            scores = scores + self.config.tiebreak_cosine * scale * cosine
        return scores.astype(np.float32)

    def save(self, folder: Path) -> None:
        super().save(folder)
        np.savez(Path(folder) / "lsh.npz", planes=self.lsh.planes)

    def load(self, folder: Path, data: LookalikeData) -> None:
        super().load(folder, data)
        with np.load(Path(folder) / "lsh.npz", allow_pickle=False) as npz:
            self.lsh = HyperplaneLSH.from_planes(self.embeddings, npz["planes"])


@register("lsh_voting")
class LSHVotingScorer(LSHDensityScorer):
    """Same tables scored by seed counts: crowded regions win whatever the campaign (the paper's foil)."""

    default_kind = "voting"


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
                vector = _unit_centroid(emb, context)
                batch_users = np.concatenate([targets, negatives])
                users.append(batch_users)
                vectors.append(np.repeat(vector[None, :], batch_users.size, 0))
                labels.append(np.concatenate([np.ones(targets.size), np.zeros(negatives.size)]))
        if not users:
            return None
        return (torch.as_tensor(emb[np.concatenate(users)]), torch.as_tensor(np.concatenate(vectors)),
                torch.as_tensor(np.concatenate(labels), dtype=torch.float32))

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
                loss = F.binary_cross_entropy_with_logits(self.mlp(users[idx], vectors[idx]), labels[idx],
                                                          pos_weight=pos_weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.mlp.eval()

    @torch.no_grad()
    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        vector = torch.as_tensor(_unit_centroid(self.embeddings, seeds.positives))
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
