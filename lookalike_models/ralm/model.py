"""RALM's modules (Liu et al., "Real-time Attention Based Look-alike Model for Recommender System", KDD 2019,
arXiv 1906.05022): phase 1, the universal user representation (sec. 4.2), and phase 2, the look-alike model
(sec. 4.3-4.4). Their training is ``user_model.py`` and ``lookalike.py``.

Phase 1: every user field becomes one ``m``-dimensional vector (``nn.fields.FieldEmbedding``; the item
history is one more field, codes item_idx + 1), the field vectors H [n_fields, m] are merged by the
attention merge layer (``nn.attention.AttentionMerge``) or concatenated (ablation), and an MLP tower, with an
optional residual linear path, gives the user embedding u [d]. Output item vectors score u by a sampled
softmax.

Phase 2: seeds and the target user go through one shared transform (FC + activation, d -> h); a campaign's
transformed seeds are summarised by k centroids E_s [k, h], and

    local:   E_local  = softmax(tanh(E_u W_l E_s^T)) E_s           (attention driven by the target user)
    global:  E_global = softmax_i(mean_j tanh(e_i W_g e_j^T)) E_s   (self-attention reduced to one vector)
    score  = sigmoid(s * (alpha cos(E_u, E_global) + beta cos(E_u, E_local)) + b)

with log(cluster size) added to both attentions' logits when ``size_prior`` (see ``lookalike.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from lookalike_models.nn.attention import AttentionMerge
from lookalike_models.nn.fields import FieldEmbedding, FieldSizes, ItemBag, UserFeatures


@dataclass
class FieldSpec:
    """What the user model's input layer needs to know; JSON-serialisable so a saved model rebuilds."""

    single_sizes: list[int]
    multi_sizes: list[int]
    n_continuous: int
    n_items: int
    item_history: bool

    @property
    def n_fields(self) -> int:
        return len(self.single_sizes) + len(self.multi_sizes) + (self.n_continuous > 0) + self.item_history

    @property
    def sizes(self) -> FieldSizes:
        return FieldSizes(tuple(self.single_sizes), tuple(self.multi_sizes), self.n_continuous)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class UserInputs:
    """All users' encoded fields as tensors (row = user_idx)."""

    features: UserFeatures
    history: torch.Tensor | None  # int64 [n_users, max_history] codes item_idx + 1, 0 = padding
    history_weights: torch.Tensor | None = None  # float32 [n_users, max_history]: TF-IDF weights, else a mean

    def rows(self, users: torch.Tensor) -> UserInputs:
        return UserInputs(
            self.features.rows(users),
            None if self.history is None else self.history[users],
            None if self.history_weights is None else self.history_weights[users],
        )


class UserFieldEmbedding(FieldEmbedding):
    """The shared field embedding plus the item history as the last field: UserInputs -> H [B, n_fields, m].
    The history field is the TF-IDF-weighted sum of its items' rows when weights are given, else their mean."""

    def __init__(self, spec: FieldSpec, m: int):
        super().__init__(spec.sizes, m, continuous_field=True, mean="bag")
        self.history = ItemBag(spec.n_items, m) if spec.item_history else None

    @property
    def n_fields(self) -> int:
        return super().n_fields + (self.history is not None)

    def forward(self, x: UserInputs, mask_items: torch.Tensor | None = None) -> torch.Tensor:
        """x (B users) -> H [B, n_fields, m]; ``mask_items`` int64 [B]: an item_idx to hide from each row's
        history (the training target)."""
        fields = self.parts(x.features)
        if self.history is not None:
            codes, weights = x.history, x.history_weights
            hidden = (codes == (mask_items + 1).unsqueeze(1)) if mask_items is not None else None
            if hidden is not None and weights is None:
                codes = torch.where(hidden, torch.zeros_like(codes), codes)
            elif hidden is not None:
                weights = weights.masked_fill(hidden, 0.0)
            fields.append(self.history.pool(codes, weights))
        return torch.stack(fields, 1)


ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1)}


@dataclass(frozen=True)
class UserModelShape:
    """Phase 1's sizes and switches: field vector size m, attention hidden size k, tower MLP width, user
    embedding size d, ``merge`` (attention) or ``concat`` (ablation), the MLP activation, the residual path,
    the softmax's initial scale, a per-item bias, and one item table for input and output (``tie_items``)."""

    field_dim: int = 32
    attention_dim: int = 16
    hidden: int = 64
    dim: int = 32
    merge: str = "merge"
    activation: str = "relu"
    residual: bool = False
    softmax_scale: float = 1.0
    item_bias: bool = False
    tie_items: bool = False


class UserTower(nn.Module):
    """Fields -> universal user embedding u [B, d]; ``merge`` = attention merge, ``concat`` = ablation.

    ``residual`` adds a linear path around the MLP (u = P M + MLP(M)): the SVD warm start sets P to the
    identity on the history field and the MLP's output layer to zero, so training starts at the SVD
    user factors, and the MLP learns a correction instead of having to rediscover them through a ReLU."""

    def __init__(self, spec: FieldSpec, shape: UserModelShape):
        super().__init__()
        if shape.merge not in ("merge", "concat"):
            raise ValueError(f"user_model must be 'merge' or 'concat', not {shape.merge!r}")
        m = shape.field_dim
        self.fields = UserFieldEmbedding(spec, m)
        self.merge = AttentionMerge(m, shape.attention_dim) if shape.merge == "merge" else None
        width = m if self.merge is not None else m * spec.n_fields
        self.mlp = nn.Sequential(
            nn.Linear(width, shape.hidden), ACTIVATIONS[shape.activation](), nn.Linear(shape.hidden, shape.dim)
        )
        self.skip = nn.Linear(width, shape.dim, bias=False) if shape.residual else None

    def forward(self, x: UserInputs, mask_items: torch.Tensor | None = None) -> torch.Tensor:
        """x (B users), mask_items int64 [B] or None -> u [B, d]."""
        h = self.fields(x, mask_items)
        merged = self.merge(h)[0] if self.merge is not None else h.flatten(1)
        out = self.mlp(merged)
        return out if self.skip is None else out + self.skip(merged)

    def field_attention(self, x: UserInputs) -> torch.Tensor:
        """a [B, n_fields]: the merge layer's weight on each field (rows sum to 1)."""
        if self.merge is None:
            raise ValueError("the concat user model has no attention")
        return self.merge(self.fields(x))[1]


class UserModel(nn.Module):
    """User tower + output item embeddings, trained by sampled softmax.

    Logits are ``exp(log_scale) * u . v``: with a warm start from SVD factors (norms <= 1) a fixed scale of
    1 would keep the softmax almost flat, so the scale is learned (initial value ``softmax_scale``)."""

    def __init__(self, spec: FieldSpec, shape: UserModelShape = UserModelShape()):
        super().__init__()
        # One table needs the history field and field_dim == dim; otherwise the two tables stay separate.
        self.tie_items = shape.tie_items and spec.item_history and shape.field_dim == shape.dim
        self.tower = UserTower(spec, shape)
        self.items = nn.Embedding(spec.n_items, shape.dim)
        nn.init.normal_(self.items.weight, std=0.05)
        self.log_scale = nn.Parameter(torch.tensor(math.log(shape.softmax_scale)))
        # A per-item bias absorbs popularity; without it the model learns one direction shared by every user
        # (to score popular items up), and that direction dominates the cosine between users.
        self.item_bias = nn.Embedding(spec.n_items, 1) if shape.item_bias else None
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)

    def item_table(self) -> torch.Tensor:
        """[n_items, d]: output item vectors (the history field's table when tied)."""
        return self.tower.fields.history.item_rows if self.tie_items else self.items.weight

    def sampled_softmax_loss(
        self, x: UserInputs, positives: torch.Tensor, negatives: torch.Tensor, log_q: torch.Tensor | None = None
    ) -> torch.Tensor:
        """positives int64 [B], negatives int64 [B, n_neg] -> mean cross entropy of picking the positive.

        Negatives that happen to be the positive are masked out (TF's ``remove_accidental_hits``). ``log_q``
        float32 [n_items]: the sampler's log probability of each item, subtracted from the logits (the
        sampled-softmax correction: without it the model learns to push down whatever the sampler draws
        often, i.e. to encode popularity rather than taste)."""
        u = self.tower(x, mask_items=positives)  # [B, d]
        candidates = torch.cat([positives.unsqueeze(1), negatives], 1)  # [B, 1 + n_neg]
        logits = self.log_scale.exp() * (u.unsqueeze(1) * self.item_table()[candidates]).sum(-1)
        if self.item_bias is not None:
            logits = logits + self.item_bias(candidates).squeeze(-1)
        if log_q is not None:
            logits = logits - log_q[candidates]
        hit = torch.zeros_like(candidates, dtype=torch.bool)
        hit[:, 1:] = negatives == positives.unsqueeze(1)
        logits = logits.masked_fill(hit, float("-inf"))
        return nn.functional.cross_entropy(logits, torch.zeros_like(positives))


class LocalAttention(nn.Module):
    """(E_u [B, h], E_s [k, h], optional log cluster sizes [k]) -> (E_local [B, h], weights [B, k]);
    rows of weights sum to 1."""

    def __init__(self, h: int):
        super().__init__()
        self.w = nn.Linear(h, h, bias=False)

    def forward(
        self, eu: torch.Tensor, es: torch.Tensor, log_sizes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.tanh(self.w(eu) @ es.T)
        weights = torch.softmax(logits if log_sizes is None else logits + log_sizes, dim=-1)
        return weights @ es, weights


class GlobalAttention(nn.Module):
    """E_s [k, h] -> (E_global [h], weights [k]): each centroid scored by its mean tanh-bilinear agreement
    with the others, softmax over centroids. Independent of the target user."""

    def __init__(self, h: int):
        super().__init__()
        self.w = nn.Linear(h, h, bias=False)

    def forward(self, es: torch.Tensor, log_sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.tanh(self.w(es) @ es.T).mean(1)
        weights = torch.softmax(logits if log_sizes is None else logits + log_sizes, dim=0)
        return weights @ es, weights


@dataclass(frozen=True)
class LookalikeHead:
    """Phase 2's switches: weights of the global and local cosines, ``attention`` or ``average`` (cosine to
    the seed mean), the shared transform (else raw embeddings), the cluster-size prior, the initial logit
    scale and the transform's activation."""

    alpha: float = 0.3
    beta: float = 0.7
    mode: str = "attention"
    transform: bool = True
    size_prior: bool = True
    init_scale: float = 5.0
    activation: str = "relu"


class LookalikeModel(nn.Module):
    """Shared transform + local/global attention over seed centroids (``mode='attention'``), or cosine
    to the seed mean (``mode='average'``). ``transform=False`` keeps the user embeddings as they are."""

    def __init__(self, d: int, h: int = 32, head: LookalikeHead = LookalikeHead()):
        super().__init__()
        if head.mode not in ("attention", "average"):
            raise ValueError(f"mode must be 'attention' or 'average', not {head.mode!r}")
        self.mode, self.alpha, self.beta, self.size_prior = head.mode, head.alpha, head.beta, head.size_prior
        if head.activation not in ("relu", "leaky_relu"):
            raise ValueError(f"activation must be 'relu' or 'leaky_relu', not {head.activation!r}")
        act = nn.ReLU() if head.activation == "relu" else nn.LeakyReLU(0.1)  # leaky: units cannot die
        self.transform = nn.Sequential(nn.Linear(d, h), act) if head.transform else nn.Identity()
        width = h if head.transform else d
        self.local = LocalAttention(width)
        self.glob = GlobalAttention(width)
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(head.init_scale))))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def similarity(self, eu: torch.Tensor, es: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """Transformed target users [B, h], centroids [k, h] and their seed counts [k] -> the cosine mix [B]
        (before the sigmoid)."""
        if self.mode == "average":
            return nn.functional.cosine_similarity(eu, es.mean(0, keepdim=True), dim=-1)
        log_sizes = torch.log(sizes.float().clamp(min=1.0)) if self.size_prior and sizes is not None else None
        local, _ = self.local(eu, es, log_sizes)
        glob, _ = self.glob(es, log_sizes)
        return self.alpha * nn.functional.cosine_similarity(
            eu, glob.unsqueeze(0), dim=-1
        ) + self.beta * nn.functional.cosine_similarity(eu, local, dim=-1)

    def logit(self, eu: torch.Tensor, es: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """-> [B]: the click logit, ``exp(log_scale) * similarity + bias``."""
        return self.log_scale.exp() * self.similarity(eu, es, sizes) + self.bias
