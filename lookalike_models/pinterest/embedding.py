"""The StarSpace embedding every Pinterest scorer (deWet & Ou, KDD 2019) reads, and their shared base.

One trained encoder per data set and config within a process (``shared_encoder``), so an evaluation of
several embedding scorers trains StarSpace once. ``centroid_cosine`` (cosine to the seeds' mean embedding)
is the simple reference. The others: ``lsh_scorers.py`` (the paper's region scores), ``affinity.py``
(pair-feature MLP), ``classifier.py`` (per-campaign classifier), ``ensemble.py``.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.pinterest.encoder import (
    EncoderConfig,
    FittedEncoder,
    TransferTask,
    make_encoder,
    train_encoder,
)
from lookalike_models.pinterest.encoder_inputs import organic_inputs
from lookalike_models.pinterest.serving import pack_inputs, packed_encoder
from lookalike_models.scorers import AudienceScorer, register
from lookalike_models.strict_config import StrictConfig

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
    log.info(
        "starspace: trained, transfer error %.4f -> %.4f, %.0f users/s",
        fitted.history[0]["transfer_error"],
        min(h["transfer_error"] for h in fitted.history),
        fitted.users_per_second,
    )
    _ENCODERS[key] = fitted
    while len(_ENCODERS) > _MAX_CACHED:
        _ENCODERS.popitem(last=False)
    return fitted


def encoder_curves(fitted: FittedEncoder | None) -> dict[str, list[float]]:
    if fitted is None:
        return {}
    return {
        "encoder_transfer_error": [h["transfer_error"] for h in fitted.history],
        "encoder_loss": [h["loss"] for h in fitted.history if h["epoch"] > 0],
    }


def embed_users(data: LookalikeData, cfg: EncoderConfig | None = None) -> np.ndarray:
    """float32 [n_users, d]: every user's unit-norm StarSpace embedding (trained on organic data)."""
    return shared_encoder(data, cfg or EncoderConfig()).embeddings


def unit_centroid(embeddings: np.ndarray, users: np.ndarray) -> np.ndarray:
    c = embeddings[users].mean(0)
    return c / max(float(np.linalg.norm(c)), 1e-12)


class EmbeddingScorerConfig(StrictConfig):
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
        np.savez(
            folder / "embeddings.npz",
            embeddings=self.fitted.embeddings,
            proxy_items=task.items,
            audience=np.array(task.audience),
        )
        (folder / "encoder_history.json").write_text(
            json.dumps({"history": self.fitted.history, "users_per_second": self.fitted.users_per_second}, indent=1)
        )

    def load(self, folder: Path, data: LookalikeData) -> None:
        folder = Path(folder)
        model = make_encoder(data, self.config.encoder)
        model.load_state_dict(torch.load(folder / "encoder.pt", weights_only=True))
        with np.load(folder / "embeddings.npz", allow_pickle=False) as npz:
            embeddings, proxy, audience = npz["embeddings"], npz["proxy_items"], int(npz["audience"])
        meta = json.loads((folder / "encoder_history.json").read_text())
        self.fitted = FittedEncoder(
            model, embeddings, meta["history"], TransferTask(proxy, [], [], audience), meta["users_per_second"]
        )


@register("centroid_cosine")
class CentroidCosineScorer(EmbeddingScorer):
    """Cosine of each user to the seeds' mean embedding."""

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        return (self.embeddings[candidates] @ unit_centroid(self.embeddings, seeds.positives)).astype(np.float32)
