"""RALM's configuration (Liu et al., KDD 2019): the user model (phase 1), the look-alike model (phase 2) and
their training; the defaults were chosen on tuning splits 100-104 (bench/results/ralm_embeddings.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lookalike_models.ralm.model import LookalikeHead, UserModelShape
from lookalike_models.strict_config import StrictConfig


class RalmConfig(StrictConfig):
    user_model: Literal["merge", "concat"] = Field("merge", description="attention merge, or concat (ablation)")
    field_dim: int = Field(128, ge=2, description="per-field embedding size m (= d for the SVD start)")
    attention_dim: int = Field(16, ge=1, description="attention merge hidden size k (W1: m x k)")
    hidden: int = Field(64, ge=2, description="user tower MLP hidden width")
    dim: int = Field(128, ge=2, description="universal user embedding size d (paper: 128)")
    item_history: bool = Field(True, description="the user's items as one more multi-valued field")
    history_only: bool = Field(False, description="the item-history field alone, no profile fields (ablation)")
    max_history: int = Field(300, ge=1, description="items kept in the history field (the heaviest by TF-IDF)")
    history_weighting: Literal["tfidf", "mean"] = Field(
        "tfidf", description="history field = TF-IDF-weighted sum of item vectors, or their mean (the paper)"
    )
    drop_fields: list[str] = Field(
        default_factory=lambda: ["history"],
        description="multi-valued fields left out; an adapter's own 'history' field duplicates the item history "
        "without masking the item being predicted",
    )
    init: Literal["svd", "random"] = Field(
        "svd", description="history and output item tables from TruncatedSVD item factors, or random (the paper)"
    )
    tower_activation: Literal["relu", "leaky_relu"] = Field("relu", description="user tower MLP activation")
    residual: bool = Field(
        True, description="linear path around the tower MLP (identity on the history at the SVD start)"
    )
    softmax_scale: float = Field(1.0, gt=0, description="initial (learned) scale of the sampled-softmax logits")
    tie_items: bool = Field(
        True, description="one item table for the history field and the softmax output (when field_dim == dim)"
    )
    item_bias: bool = Field(True, description="a learned per-item bias in the sampled-softmax logits")
    center_embeddings: bool = Field(True, description="subtract the population mean from the user embeddings")
    logq_correction: bool = Field(True, description="subtract the sampler's log probability from the logits")
    user_epochs: int = Field(10, ge=0, description="at most this many epochs (early stopping on held-out interactions)")
    early_stopping: Literal["proxy_items", "interactions", "none"] = Field(
        "proxy_items",
        description="the user model's epoch chosen by look-alike recall on withheld proxy items, "
        "by recall of held-out interactions, or the last epoch",
    )
    n_proxy_items: int = Field(30, ge=1, description="proxy items for early stopping")
    user_val_frac: float = Field(0.05, gt=0, lt=1, description="interactions held out for early stopping")
    user_patience: int = Field(2, ge=1)
    user_batch_size: int = Field(1024, ge=1, description="paper: 256")
    user_lr: float = Field(0.0003, gt=0, description="paper: 0.001")
    n_negatives: int = Field(10, ge=1, description="sampled-softmax negatives per positive")
    max_positives_per_user: int = Field(50, ge=1)
    transform: bool = Field(True, description="shared FC+activation transform; False compares raw embeddings")
    transform_dim: int = Field(128, ge=2, description="h (chosen on tuning splits 100-104: 128 > 32)")
    transform_activation: Literal["relu", "leaky_relu"] = Field(
        "leaky_relu", description="the shared transform's activation (paper: ReLU)"
    )
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
        "population", description="random negatives from all users, or from other campaigns' training seeds"
    )
    target_frac: float = Field(0.3, gt=0, lt=1, description="share of seeds used as targets each epoch")
    max_train_seeds: int = Field(2000, ge=2, description="seeds sampled per campaign and epoch in training")
    seed: int = 0

    def user_model_shape(self) -> UserModelShape:
        return UserModelShape(
            self.field_dim,
            self.attention_dim,
            self.hidden,
            self.dim,
            self.user_model,
            self.tower_activation,
            self.residual,
            self.softmax_scale,
            self.item_bias,
            self.tie_items,
        )

    def lookalike_head(self, mode: str) -> LookalikeHead:
        """Phase 2's head for ``mode`` (``attention``: ``ralm``, ``average``: ``ralm_average``)."""
        return LookalikeHead(
            self.alpha, self.beta, mode, self.transform, self.size_prior, activation=self.transform_activation
        )
