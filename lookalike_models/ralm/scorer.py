"""RALM as audience scorers: ``ralm`` (attention over k-means centroids) and ``ralm_average`` (seed mean).

``fit`` trains the user model (phase 1) on organic behaviour only, embeds every user, trains the
look-alike model (phase 2) on the campaigns' training seeds, then precomputes each campaign's centroids.
``score`` reuses stored centroids while the seed list is unchanged (checked by fingerprint) and
re-clusters otherwise; the population's transformed embeddings are computed once, so a campaign costs
O(users x k). ``recluster_campaigns`` refreshes stored centroids for new seeds without retraining.

Defaults (issue 10, chosen on tuning splits 100-104, bench/results/ralm_embeddings.md): the user model starts
from the TruncatedSVD factors of the TF-IDF user x item matrix and keeps a trained epoch only when it
raises look-alike recall on withheld proxy items; embeddings are centred; the shared transform uses a
LeakyReLU (with ReLU, most units died and scores collapsed to a few dimensions).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.ralm.config import RalmConfig
from lookalike_models.ralm.lookalike import (
    CampaignCentroids,
    campaign_centroids,
    score_users,
    seeds_fingerprint,
    train_lookalike,
    transform_users,
)
from lookalike_models.ralm.model import FieldSpec, LookalikeModel, UserModel
from lookalike_models.ralm.proxy_task import build_proxy_task, proxy_recall
from lookalike_models.ralm.user_model import (
    embed_users,
    field_spec,
    init_from_svd,
    interaction_recall,
    split_validation,
    train_user_model,
    user_inputs,
)
from lookalike_models.ralm.warm_start import organic_tfidf, svd_item_factors, weighted_history
from lookalike_models.scorers import AudienceScorer, register

log = logging.getLogger(__name__)


class RalmScorer(AudienceScorer):
    mode = "attention"
    config_class = RalmConfig

    def _build(self, spec: FieldSpec) -> None:
        c = self.config
        self.spec = spec
        self.user_model = UserModel(spec, c.user_model_shape())
        self.lookalike = LookalikeModel(c.dim, c.transform_dim, c.lookalike_head(self.mode))

    def _final_inputs(self, data: LookalikeData) -> None:
        """Every user's fields with the full history (held-out interactions put back) for embedding."""
        c = self.config
        history = weighted_history(organic_tfidf(data), c.max_history, np.random.default_rng(c.seed))
        self.inputs = user_inputs(
            data, self.spec, history, c.history_weighting == "tfidf", c.drop_fields, c.history_only
        )

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        self._build(field_spec(data, c.item_history, c.drop_fields, c.history_only))
        rng = np.random.default_rng(c.seed)
        tfidf = organic_tfidf(data)
        validation = task = None
        if c.early_stopping == "interactions":
            tfidf, val_users, val_items = split_validation(tfidf, c.user_val_frac, rng)
            validation = (val_users, val_items)
        elif c.early_stopping == "proxy_items":
            tfidf, task = build_proxy_task(tfidf, c.n_proxy_items, 20, max(40, int(0.3 * data.n_users)), rng)
        train_inputs = user_inputs(
            data,
            self.spec,
            weighted_history(tfidf, c.max_history, rng),
            c.history_weighting == "tfidf",
            c.drop_fields,
            c.history_only,
        )
        if c.init == "svd" and c.item_history:
            # Proxy items stay in the SVD (as StarSpace does): their rows are then real factors in the final
            # embedding, while the proxies are out of every history and every target during training.
            svd_source = organic_tfidf(data) if task is not None else tfidf
            init_from_svd(self.user_model, svd_item_factors(svd_source, max(c.field_dim, c.dim), c.seed))

        def proxy_score(model: UserModel) -> float:
            return proxy_recall(embed_users(model, train_inputs, data.n_users, center=c.center_embeddings), task)

        validate = proxy_score if task is not None else None
        if validation is not None:
            validate = interaction_recall(train_inputs, validation, tfidf)
        user_curve = train_user_model(self.user_model, train_inputs, tfidf, c, validate)
        self._final_inputs(data)
        self.embeddings = embed_users(self.user_model, self.inputs, data.n_users, center=c.center_embeddings)
        look_curve = train_lookalike(self.lookalike, self.embeddings, train_seeds, c)
        # Lists of floats per key (the tracking task logs them): the user model's loss per epoch, its
        # early-stopping score from the start (epoch 0) on, and the look-alike loss per epoch.
        self.history = {"user_loss": [e["loss"] for e in user_curve[1:]], "lookalike_loss": look_curve}
        if c.early_stopping != "none":
            self.history["user_validation"] = [e["val_recall"] for e in user_curve]
        self._refresh_population()
        self.centroids = {cid: self.recluster(s) for cid, s in train_seeds.items() if s.positives.size}

    def _refresh_population(self) -> None:
        self.transformed = transform_users(self.lookalike, self.embeddings)

    def recluster(self, seeds: CampaignSeeds) -> CampaignCentroids:
        """Fresh centroids for this seed list (k-means over the transformed seeds)."""
        return campaign_centroids(
            self.lookalike, self.transformed[seeds.positives], seeds.positives, self.config.k, self.config.seed
        )

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
        (folder / "ralm.json").write_text(
            json.dumps({"spec": self.spec.to_dict(), "mode": self.mode, "history": self.history})
        )

    def load(self, folder: Path, data: LookalikeData) -> None:
        folder = Path(folder)
        meta = json.loads((folder / "ralm.json").read_text())
        self._build(FieldSpec(**meta["spec"]))
        self.user_model.load_state_dict(torch.load(folder / "user_model.pt", weights_only=True))
        self.lookalike.load_state_dict(torch.load(folder / "lookalike.pt", weights_only=True))
        self.user_model.eval()
        self.lookalike.eval()
        self.history = meta.get("history", {})
        self._final_inputs(data)
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


def recluster_campaign(
    folder: str | Path,
    data: LookalikeData,
    seeds: CampaignSeeds,
    model: Literal["ralm", "ralm_average"] = "ralm",
    params: dict | None = None,
    force: bool = False,
) -> CampaignCentroids:
    """Refresh one campaign's stored centroids in a saved RALM model folder (the paper's 5-minute update).

    Loads only what scoring needs (look-alike weights, user embeddings), re-clusters the campaign's seeds
    when they changed (or ``force``), and rewrites ``centroids.npz`` atomically. No retraining: cost is
    one transform + k-means over the seeds. ``params`` must be the scorer's config (k, transform size)."""
    return recluster_campaigns(folder, data, {seeds.campaign_id: seeds}, model, params, force)[seeds.campaign_id]


def recluster_campaigns(
    folder: str | Path,
    data: LookalikeData,
    campaigns: dict[str, CampaignSeeds],
    model: Literal["ralm", "ralm_average"] = "ralm",
    params: dict | None = None,
    force: bool = False,
) -> dict[str, CampaignCentroids]:
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
            raise ValueError(
                f"campaign {cid!r}: seeds must be known users of the model's index "
                f"(0..{embeddings.shape[0] - 1}); users new since training need a refit first"
            )
        current = stored.get(cid)
        if not force and current is not None and current.fingerprint == seeds_fingerprint(seeds.positives):
            refreshed[cid] = current
            continue
        transformed = transform_users(scorer.lookalike, embeddings[seeds.positives])
        refreshed[cid] = stored[cid] = campaign_centroids(
            scorer.lookalike, transformed, seeds.positives, scorer.config.k, scorer.config.seed
        )
        log.info(
            "ralm: re-clustered %s (%d seeds -> %d centroids)",
            cid,
            seeds.positives.size,
            refreshed[cid].centroids.shape[0],
        )
    write_centroids(folder, stored)
    return refreshed
