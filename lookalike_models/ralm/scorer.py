"""RALM as audience scorers: ``ralm`` (attention over k-means centroids) and ``ralm_average`` (seed mean).

``fit`` trains the user model (phase 1) on organic behaviour only, embeds every user, trains the
look-alike model (phase 2) on the campaigns' training seeds, then precomputes each campaign's centroids.
``score`` reuses stored centroids while the seed list is unchanged (checked by fingerprint) and
re-clusters otherwise; the population's transformed embeddings are computed once, so a campaign costs
O(users x k). ``recluster_campaigns`` refreshes stored centroids for new seeds without retraining.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.ralm.lookalike import (
    CampaignCentroids,
    LookalikeModel,
    campaign_centroids,
    score_users,
    seeds_fingerprint,
    train_lookalike,
    transform_users,
)
from lookalike_models.ralm.user_model import (
    FieldSpec,
    UserModel,
    embed_users,
    field_spec,
    train_user_model,
    user_inputs,
)
from lookalike_models.scorers import AudienceScorer, register

log = logging.getLogger(__name__)


class RalmConfig(BaseModel):
    user_model: Literal["merge", "concat"] = Field("merge", description="attention merge, or concat (ablation)")
    field_dim: int = Field(32, ge=2, description="per-field embedding size m")
    attention_dim: int = Field(16, ge=1, description="attention merge hidden size k (W1: m x k)")
    hidden: int = Field(64, ge=2, description="user tower MLP hidden width")
    dim: int = Field(32, ge=2, description="universal user embedding size d (paper: 128)")
    item_history: bool = Field(True, description="the user's items as one more multi-valued field")
    max_history: int = Field(50, ge=1)
    drop_fields: list[str] = Field(default_factory=list, description="multi-valued fields left out")
    user_epochs: int = Field(3, ge=0)
    user_batch_size: int = Field(1024, ge=1, description="paper: 256")
    user_lr: float = Field(0.005, gt=0, description="paper: 0.001")
    n_negatives: int = Field(10, ge=1, description="sampled-softmax negatives per positive")
    max_positives_per_user: int = Field(50, ge=1)
    transform: bool = Field(True, description="shared FC+ReLU transform; False compares raw embeddings")
    transform_dim: int = Field(32, ge=2, description="h")
    k: int = Field(20, ge=1, description="k-means centroids per campaign (capped at the seed count)")
    size_prior: bool = Field(True, description="attention logits + log(seeds per centroid); False = paper as printed")
    alpha: float = Field(0.3, description="weight of cos(user, global attention)")
    beta: float = Field(0.7, description="weight of cos(user, local attention)")
    lookalike_epochs: int = Field(15, ge=0, description="0 = no look-alike training")
    lookalike_min_samples: int = Field(40_000, ge=0, description="more epochs on small data, up to this many samples")
    lookalike_batch_size: int = Field(256, ge=1)
    lookalike_lr: float = Field(0.003, gt=0)
    negatives_per_positive: int = Field(3, ge=1)
    negatives_from: Literal["population", "other_seeds"] = Field(
        "population", description="random negatives from all users, or from other campaigns' training seeds")
    target_frac: float = Field(0.3, gt=0, lt=1, description="share of seeds used as targets each epoch")
    max_train_seeds: int = Field(2000, ge=2, description="seeds sampled per campaign and epoch in training")
    seed: int = 0


class RalmScorer(AudienceScorer):
    mode = "attention"
    config_class = RalmConfig

    def _build(self, spec: FieldSpec) -> None:
        c = self.config
        self.spec = spec
        self.user_model = UserModel(spec, c.field_dim, c.attention_dim, c.hidden, c.dim, c.user_model)
        self.lookalike = LookalikeModel(c.dim, c.transform_dim, c.alpha, c.beta, self.mode, c.transform,
                                        c.size_prior)

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        self._build(field_spec(data, c.item_history, c.drop_fields))
        self.inputs = user_inputs(data, self.spec, c.max_history, c.seed, c.drop_fields)
        user_curve = train_user_model(
            self.user_model, self.inputs, data, epochs=c.user_epochs, batch_size=c.user_batch_size, lr=c.user_lr,
            n_negatives=c.n_negatives, max_positives=c.max_positives_per_user, seed=c.seed)
        self.embeddings = embed_users(self.user_model, self.inputs, data.n_users)
        look_curve = train_lookalike(
            self.lookalike, self.embeddings, train_seeds, k=c.k, epochs=c.lookalike_epochs,
            batch_size=c.lookalike_batch_size, lr=c.lookalike_lr, negatives_per_positive=c.negatives_per_positive,
            target_frac=c.target_frac, max_seeds=c.max_train_seeds, seed=c.seed, negatives_from=c.negatives_from,
            min_samples=c.lookalike_min_samples)
        self.history = {"user_loss": user_curve, "lookalike_loss": look_curve}
        self._refresh_population()
        self.centroids = {cid: self.recluster(s) for cid, s in train_seeds.items() if s.positives.size}

    def _refresh_population(self) -> None:
        self.transformed = transform_users(self.lookalike, self.embeddings)

    def recluster(self, seeds: CampaignSeeds) -> CampaignCentroids:
        """Fresh centroids for this seed list (k-means over the transformed seeds)."""
        return campaign_centroids(self.lookalike, self.transformed[seeds.positives], seeds.positives, self.config.k,
                                  self.config.seed)

    def campaign(self, seeds: CampaignSeeds) -> CampaignCentroids:
        """Stored centroids when they describe these seeds, else re-clustered (and kept)."""
        stored = self.centroids.get(seeds.campaign_id)
        if stored is None or stored.fingerprint != seeds_fingerprint(seeds.positives):
            stored = self.centroids[seeds.campaign_id] = self.recluster(seeds)
        return stored

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        if seeds.positives.size == 0:
            return np.zeros(candidates.size, np.float32)
        return score_users(self.lookalike, self.transformed[candidates], self.campaign(seeds))

    def field_attention(self, users: np.ndarray) -> np.ndarray:
        """float32 [n, n_fields]: the attention merge's weight on each user field."""
        with torch.no_grad():
            return self.user_model.tower.field_attention(self.inputs.rows(torch.from_numpy(users))).numpy()

    # ---- persistence: weights by torch.save (state dicts only), arrays by np.savez, no pickle ----
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.user_model.state_dict(), folder / "user_model.pt")
        torch.save(self.lookalike.state_dict(), folder / "lookalike.pt")
        np.savez(folder / "embeddings.npz", embeddings=self.embeddings)
        write_centroids(folder, self.centroids)
        (folder / "ralm.json").write_text(json.dumps({"spec": self.spec.to_dict(), "mode": self.mode,
                                                      "history": self.history}))

    def load(self, folder: Path, data: LookalikeData) -> None:
        folder = Path(folder)
        meta = json.loads((folder / "ralm.json").read_text())
        self._build(FieldSpec(**meta["spec"]))
        self.user_model.load_state_dict(torch.load(folder / "user_model.pt", weights_only=True))
        self.lookalike.load_state_dict(torch.load(folder / "lookalike.pt", weights_only=True))
        self.user_model.eval()
        self.lookalike.eval()
        self.history = meta.get("history", {})
        self.inputs = user_inputs(data, self.spec, self.config.max_history, self.config.seed, self.config.drop_fields)
        with np.load(folder / "embeddings.npz", allow_pickle=False) as npz:
            self.embeddings = npz["embeddings"]
        self._refresh_population()
        self.centroids = read_centroids(folder)


@register("ralm")
class Ralm(RalmScorer):
    """RALM: local + global attention over k-means centroids of the campaign's seeds."""

    mode = "attention"


@register("ralm_average")
class RalmAverage(RalmScorer):
    """The paper's "RALM with average" ablation: cosine to the mean of the transformed seeds."""

    mode = "average"


def write_centroids(folder: Path, centroids: dict[str, CampaignCentroids]) -> Path:
    """``centroids.npz``: per campaign ``c::<id>`` float32 [k, h], ``s::<id>`` cluster sizes [k] and
    ``m::<id>`` [fingerprint, n_seeds]."""
    arrays = {}
    for cid, cc in centroids.items():
        arrays[f"c::{cid}"] = cc.centroids
        arrays[f"s::{cid}"] = cc.sizes
        arrays[f"m::{cid}"] = np.array([cc.fingerprint, cc.n_seeds], np.int64)
    path = Path(folder) / "centroids.npz"
    tmp = path.with_name("centroids.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)  # a reader never sees half a file
    return path


def read_centroids(folder: Path) -> dict[str, CampaignCentroids]:
    with np.load(Path(folder) / "centroids.npz", allow_pickle=False) as npz:
        out = {}
        for key in npz.files:
            if key.startswith("c::"):
                cid = key[3:]
                fingerprint, n_seeds = npz[f"m::{cid}"].tolist()
                out[cid] = CampaignCentroids(npz[key], npz[f"s::{cid}"], int(fingerprint), int(n_seeds))
    return out


def recluster_campaign(folder: str | Path, data: LookalikeData, seeds: CampaignSeeds,
                       model: Literal["ralm", "ralm_average"] = "ralm", params: dict | None = None,
                       force: bool = False) -> CampaignCentroids:
    """Refresh one campaign's stored centroids in a saved RALM model folder (the paper's 5-minute update).

    Loads only what scoring needs (look-alike weights, user embeddings), re-clusters the campaign's seeds
    when they changed (or ``force``), and rewrites ``centroids.npz`` atomically. No retraining: cost is
    one transform + k-means over the seeds. ``params`` must be the scorer's config (k, transform size)."""
    return recluster_campaigns(folder, data, {seeds.campaign_id: seeds}, model, params, force)[seeds.campaign_id]


def recluster_campaigns(folder: str | Path, data: LookalikeData, campaigns: dict[str, CampaignSeeds],
                        model: Literal["ralm", "ralm_average"] = "ralm", params: dict | None = None,
                        force: bool = False) -> dict[str, CampaignCentroids]:
    """``recluster_campaign`` for several campaigns with one load and one write."""
    folder = Path(folder)
    scorer = (Ralm if model == "ralm" else RalmAverage)(params)
    meta = json.loads((folder / "ralm.json").read_text())
    scorer._build(FieldSpec(**meta["spec"]))
    scorer.lookalike.load_state_dict(torch.load(folder / "lookalike.pt", weights_only=True))
    scorer.lookalike.eval()
    with np.load(folder / "embeddings.npz", allow_pickle=False) as npz:
        embeddings = npz["embeddings"]
    stored = read_centroids(folder)
    refreshed = {}
    for cid, seeds in campaigns.items():
        if seeds.positives.size == 0 or seeds.positives.min() < 0 or seeds.positives.max() >= embeddings.shape[0]:
            raise ValueError(f"campaign {cid!r}: seeds must be known users of the model's index "
                             f"(0..{embeddings.shape[0] - 1}); users new since training need a refit first")
        current = stored.get(cid)
        if not force and current is not None and current.fingerprint == seeds_fingerprint(seeds.positives):
            refreshed[cid] = current
            continue
        transformed = transform_users(scorer.lookalike, embeddings[seeds.positives])
        refreshed[cid] = stored[cid] = campaign_centroids(scorer.lookalike, transformed, seeds.positives,
                                                          scorer.config.k, scorer.config.seed)
        log.info("ralm: re-clustered %s (%d seeds -> %d centroids)", cid, seeds.positives.size,
                 refreshed[cid].centroids.shape[0])
    write_centroids(folder, stored)
    return refreshed
