"""RALM phase 1: the universal user representation (Liu et al., "Real-time Attention Based Look-alike
Model for Recommender System", KDD 2019, arXiv 1906.05022, sec. 4.2).

Every user field becomes one ``m``-dimensional vector: single-valued categorical fields by an embedding
lookup, multi-valued fields by the mean of their values' embeddings, all continuous fields together by one
fully connected layer. The field vectors H [n_fields, m] are merged by the *attention merge layer* (the
working reading of the paper's formula, whose printed shapes do not compose):

    U = tanh(H W1)  (W1: m x k),   a = softmax(U w2) over fields,   M = a H        -> [m]

then an MLP tower gives the user embedding u [d]. The concatenation ablation feeds H flattened to the
tower instead. Training is a sampled softmax: the user must pick the clicked item among itself and 10
negatives drawn by popularity rank with p(k) = (log(k+2) - log(k+1)) / log(D+1), at most 50 positives
per user. A user's item history can be one more multi-valued field; when it is, the positive being
predicted is masked out of it (otherwise the model learns to copy its input).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from lookalike_models.dataset import LookalikeData

log = logging.getLogger(__name__)


class RankNegativeSampler:
    """Items drawn by popularity rank k (0 = most popular) with p(k) = log((k+2)/(k+1)) / log(D+1).

    The CDF is log(k+2)/log(D+1), so a draw is ``floor(exp(u log(D+1))) - 1`` for uniform u: O(1) each.
    """

    def __init__(self, item_counts: np.ndarray):
        # Ties broken by item index so the ranking is reproducible.
        self.rank_to_item = np.lexsort((np.arange(item_counts.size), -item_counts)).astype(np.int64)
        self.n_items = int(item_counts.size)

    def rank_probabilities(self) -> np.ndarray:
        """float64 [D]: the formula's probability of each rank."""
        k = np.arange(self.n_items, dtype=np.float64)
        return (np.log(k + 2) - np.log(k + 1)) / np.log(self.n_items + 1)

    def sample_ranks(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        u = rng.random(shape)
        ranks = np.floor(np.exp(u * math.log(self.n_items + 1))).astype(np.int64) - 1
        return np.clip(ranks, 0, self.n_items - 1)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """int64 item_idx of the given shape."""
        return self.rank_to_item[self.sample_ranks(shape, rng)]


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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class UserInputs:
    """All users' encoded fields as tensors (row = user_idx)."""

    single: torch.Tensor  # int64 [n_users, n_single]
    multi: list[torch.Tensor]  # each int64 [n_users, max_len], 0 = padding
    continuous: torch.Tensor  # float32 [n_users, n_cont]
    history: torch.Tensor | None  # int64 [n_users, max_history] item_idx + 1, 0 = padding

    def rows(self, users: torch.Tensor) -> UserInputs:
        return UserInputs(self.single[users], [m[users] for m in self.multi], self.continuous[users],
                          None if self.history is None else self.history[users])


def item_history(data: LookalikeData, max_len: int, rng: np.random.Generator) -> np.ndarray:
    """int64 [n_users, max_len]: up to ``max_len`` of each user's distinct items (random subset), as
    item_idx + 1 with 0 padding."""
    indptr, items = data.user_items
    lengths = np.diff(indptr)
    out = np.zeros((data.n_users, max(1, max_len)), np.int64)
    # Random order inside each user's segment: sort by (user, random key), then keep the first max_len.
    users = np.repeat(np.arange(data.n_users), lengths)
    order = np.lexsort((rng.random(items.size), users))
    pos = np.arange(items.size) - np.repeat(indptr[:-1], lengths)
    keep = pos < max_len
    out[users[keep], pos[keep]] = items[order][keep].astype(np.int64) + 1
    return out


def user_inputs(data: LookalikeData, spec: FieldSpec, max_history: int, seed: int,
                drop_multi: list[str] | None = None) -> UserInputs:
    uf = data.users
    keep = [i for i, name in enumerate(uf.names_multi) if name not in (drop_multi or [])]
    history = None
    if spec.item_history:
        history = torch.from_numpy(item_history(data, max_history, np.random.default_rng(seed)))
    return UserInputs(torch.from_numpy(uf.single.astype(np.int64)),
                      [torch.from_numpy(uf.multi[i].astype(np.int64)) for i in keep],
                      torch.from_numpy(uf.continuous.astype(np.float32)), history)


def field_spec(data: LookalikeData, item_history: bool, drop_multi: list[str] | None = None) -> FieldSpec:
    uf = data.users
    sizes = [s for name, s in zip(uf.names_multi, uf.multi_sizes) if name not in (drop_multi or [])]
    return FieldSpec(list(uf.single_sizes), sizes, len(uf.names_continuous), data.n_items, item_history)


def masked_mean(emb: nn.Embedding, codes: torch.Tensor) -> torch.Tensor:
    """[B, L] codes (0 = padding) -> [B, m] mean of the non-padding embeddings (zeros if none)."""
    # embedding_bag leaves padding out of the mean and gives empty rows zeros, without a [B, L, m] tensor.
    return nn.functional.embedding_bag(codes, emb.weight, mode="mean", padding_idx=0)


class FieldEmbedder(nn.Module):
    """Encoded user fields -> H [B, n_fields, m]."""

    def __init__(self, spec: FieldSpec, m: int):
        super().__init__()
        self.single = nn.ModuleList(nn.Embedding(max(s, 1), m) for s in spec.single_sizes)
        self.multi = nn.ModuleList(nn.Embedding(max(s, 1), m, padding_idx=0) for s in spec.multi_sizes)
        self.continuous = nn.Linear(spec.n_continuous, m) if spec.n_continuous else None
        self.history = nn.Embedding(spec.n_items + 1, m, padding_idx=0) if spec.item_history else None

    def forward(self, x: UserInputs, mask_items: torch.Tensor | None = None) -> torch.Tensor:
        """``mask_items`` int64 [B]: an item_idx to hide from each row's history (the training target)."""
        fields = [emb(x.single[:, j]) for j, emb in enumerate(self.single)]
        fields += [masked_mean(emb, codes) for emb, codes in zip(self.multi, x.multi)]
        if self.continuous is not None:
            fields.append(self.continuous(x.continuous))
        if self.history is not None:
            hist = x.history
            if mask_items is not None:
                hist = torch.where(hist == (mask_items + 1).unsqueeze(1), torch.zeros_like(hist), hist)
            fields.append(masked_mean(self.history, hist))
        return torch.stack(fields, 1)


class AttentionMerge(nn.Module):
    """H [B, n, m] -> (M [B, m], a [B, n]) with a = softmax(tanh(H W1) w2) over the n fields."""

    def __init__(self, m: int, k: int):
        super().__init__()
        self.w1 = nn.Linear(m, k, bias=False)
        self.w2 = nn.Linear(k, 1, bias=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.softmax(self.w2(torch.tanh(self.w1(h))).squeeze(-1), dim=1)
        return (a.unsqueeze(-1) * h).sum(1), a


class UserTower(nn.Module):
    """Fields -> universal user embedding u [B, d]; ``merge`` = attention merge, ``concat`` = ablation."""

    def __init__(self, spec: FieldSpec, field_dim: int, attention_dim: int, hidden: int, dim: int,
                 merge: str = "merge"):
        super().__init__()
        if merge not in ("merge", "concat"):
            raise ValueError(f"user_model must be 'merge' or 'concat', not {merge!r}")
        self.fields = FieldEmbedder(spec, field_dim)
        self.merge = AttentionMerge(field_dim, attention_dim) if merge == "merge" else None
        width = field_dim if self.merge is not None else field_dim * spec.n_fields
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: UserInputs, mask_items: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fields(x, mask_items)
        merged = self.merge(h)[0] if self.merge is not None else h.flatten(1)
        return self.mlp(merged)

    def field_attention(self, x: UserInputs) -> torch.Tensor:
        """a [B, n_fields]: the merge layer's weight on each field (rows sum to 1)."""
        if self.merge is None:
            raise ValueError("the concat user model has no attention")
        return self.merge(self.fields(x))[1]


class UserModel(nn.Module):
    """User tower + output item embeddings, trained by sampled softmax."""

    def __init__(self, spec: FieldSpec, field_dim: int = 32, attention_dim: int = 16, hidden: int = 64,
                 dim: int = 32, merge: str = "merge"):
        super().__init__()
        self.tower = UserTower(spec, field_dim, attention_dim, hidden, dim, merge)
        self.items = nn.Embedding(spec.n_items, dim)
        nn.init.normal_(self.items.weight, std=0.05)

    def sampled_softmax_loss(self, x: UserInputs, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """positives int64 [B], negatives int64 [B, n_neg] -> mean cross entropy of picking the positive.

        Negatives that happen to be the positive are masked out (TF's ``remove_accidental_hits``)."""
        u = self.tower(x, mask_items=positives)  # [B, d]
        candidates = torch.cat([positives.unsqueeze(1), negatives], 1)  # [B, 1 + n_neg]
        logits = (u.unsqueeze(1) * self.items(candidates)).sum(-1)  # batched 1 x d @ d x c is slow as bmm
        hit = torch.zeros_like(candidates, dtype=torch.bool)
        hit[:, 1:] = negatives == positives.unsqueeze(1)
        logits = logits.masked_fill(hit, float("-inf"))
        return nn.functional.cross_entropy(logits, torch.zeros_like(positives))


def training_pairs(data: LookalikeData, max_positives: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(user_idx, item_idx) int64 arrays: each user's distinct items, at most ``max_positives`` (random)."""
    indptr, items = data.user_items
    lengths = np.diff(indptr)
    users = np.repeat(np.arange(data.n_users), lengths)
    order = np.lexsort((rng.random(items.size), users))
    pos = np.arange(items.size) - np.repeat(indptr[:-1], lengths)
    keep = pos < max_positives
    return users[keep].astype(np.int64), items[order][keep].astype(np.int64)


def train_user_model(model: UserModel, inputs: UserInputs, data: LookalikeData, *, epochs: int, batch_size: int,
                     lr: float, n_negatives: int, max_positives: int, seed: int) -> list[float]:
    """Sampled-softmax training; returns the mean loss of each epoch."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    sampler = RankNegativeSampler(np.bincount(data.item_idx, minlength=data.n_items).astype(np.float64))
    users, items = training_pairs(data, max_positives, rng)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    curve = []
    model.train()
    for epoch in range(epochs):
        order = rng.permutation(users.size)
        total, steps = 0.0, 0
        for start in range(0, order.size, batch_size):
            batch = order[start:start + batch_size]
            u = torch.from_numpy(users[batch])
            pos = torch.from_numpy(items[batch])
            neg = torch.from_numpy(sampler.sample((batch.size, n_negatives), rng))
            loss = model.sampled_softmax_loss(inputs.rows(u), pos, neg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        curve.append(total / max(steps, 1))
        log.info("ralm user model epoch %d: sampled-softmax loss %.4f", epoch, curve[-1])
    model.eval()
    return curve


@torch.no_grad()
def embed_users(model: UserModel, inputs: UserInputs, n_users: int, batch_size: int = 8192) -> np.ndarray:
    """float32 [n_users, d]: every user's universal embedding (full history, nothing masked)."""
    model.eval()
    out = [model.tower(inputs.rows(torch.arange(s, min(s + batch_size, n_users))))
           for s in range(0, n_users, batch_size)]
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, model.items.embedding_dim), np.float32)
