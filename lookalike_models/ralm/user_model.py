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

What issue 10 added so that the model learns on small data (each a switch, for the ablation):
  - the history field as a TF-IDF-weighted sum (``history_weighting``) and a warm start of its table and
    the output table from TruncatedSVD item factors (``init_from_svd``): u starts at the SVD user factor;
  - a residual linear path around the tower MLP, so the warm start survives the ReLU;
  - a learned logit scale, a per-item bias and the sampled-softmax log q correction (popularity lives
    in the bias, not in a direction every user shares);
  - early stopping on held-out interactions (``validation_recall``), keeping the best state;
  - optionally one item table for input and output (``tie_items``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from lookalike_models.dataset import LookalikeData
from lookalike_models.progress import Progress

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
    history_weights: torch.Tensor | None = None  # float32 [n_users, max_history]: TF-IDF weights, else a mean

    def rows(self, users: torch.Tensor) -> UserInputs:
        return UserInputs(
            self.single[users],
            [m[users] for m in self.multi],
            self.continuous[users],
            None if self.history is None else self.history[users],
            None if self.history_weights is None else self.history_weights[users],
        )


def user_inputs(
    data: LookalikeData,
    spec: FieldSpec,
    history: tuple[np.ndarray, np.ndarray] | None,
    weighted: bool,
    drop_multi: list[str] | None = None,
    history_only: bool = False,
) -> UserInputs:
    """Every user's fields as tensors. ``history``: (codes, TF-IDF weights) from ``warm_start.weighted_history``;
    ``weighted`` pools the history field by those weights (a TF-IDF sum), else by a plain mean (the paper).
    ``history_only`` leaves every profile field out (the spec must say the same)."""
    uf = data.users
    keep = [] if history_only else [i for i, name in enumerate(uf.names_multi) if name not in (drop_multi or [])]
    codes = weights = None
    if spec.item_history and history is not None:
        codes = torch.from_numpy(history[0])
        weights = torch.from_numpy(history[1]) if weighted else None
    single = uf.single.astype(np.int64)
    continuous = uf.continuous.astype(np.float32)
    if history_only:
        single, continuous = single[:, :0], continuous[:, :0]
    return UserInputs(
        torch.from_numpy(single),
        [torch.from_numpy(uf.multi[i].astype(np.int64)) for i in keep],
        torch.from_numpy(continuous),
        codes,
        weights,
    )


def field_spec(
    data: LookalikeData, item_history: bool, drop_multi: list[str] | None = None, history_only: bool = False
) -> FieldSpec:
    if history_only:
        return FieldSpec([], [], 0, data.n_items, True)
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
            hist, weights = x.history, x.history_weights
            hidden = (hist == (mask_items + 1).unsqueeze(1)) if mask_items is not None else None
            if weights is None:
                if hidden is not None:
                    hist = torch.where(hidden, torch.zeros_like(hist), hist)
                fields.append(masked_mean(self.history, hist))
            else:
                if hidden is not None:
                    weights = weights.masked_fill(hidden, 0.0)
                fields.append(
                    nn.functional.embedding_bag(hist, self.history.weight, mode="sum", per_sample_weights=weights)
                )
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


ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1)}


class UserTower(nn.Module):
    """Fields -> universal user embedding u [B, d]; ``merge`` = attention merge, ``concat`` = ablation.

    ``residual`` adds a linear path around the MLP (u = P M + MLP(M)): the SVD warm start sets P to the
    identity on the history field and the MLP's output layer to zero, so training starts at the SVD
    user factors, and the MLP learns a correction instead of having to rediscover them through a ReLU."""

    def __init__(
        self,
        spec: FieldSpec,
        field_dim: int,
        attention_dim: int,
        hidden: int,
        dim: int,
        merge: str = "merge",
        activation: str = "relu",
        residual: bool = False,
    ):
        super().__init__()
        if merge not in ("merge", "concat"):
            raise ValueError(f"user_model must be 'merge' or 'concat', not {merge!r}")
        self.fields = FieldEmbedder(spec, field_dim)
        self.merge = AttentionMerge(field_dim, attention_dim) if merge == "merge" else None
        width = field_dim if self.merge is not None else field_dim * spec.n_fields
        self.mlp = nn.Sequential(nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, dim))
        self.skip = nn.Linear(width, dim, bias=False) if residual else None

    def forward(self, x: UserInputs, mask_items: torch.Tensor | None = None) -> torch.Tensor:
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

    def __init__(
        self,
        spec: FieldSpec,
        field_dim: int = 32,
        attention_dim: int = 16,
        hidden: int = 64,
        dim: int = 32,
        merge: str = "merge",
        activation: str = "relu",
        residual: bool = False,
        softmax_scale: float = 1.0,
        item_bias: bool = False,
        tie_items: bool = False,
    ):
        super().__init__()
        # One table needs the history field and field_dim == dim; otherwise the two tables stay separate.
        self.tie_items = tie_items and spec.item_history and field_dim == dim
        self.tower = UserTower(spec, field_dim, attention_dim, hidden, dim, merge, activation, residual)
        self.items = nn.Embedding(spec.n_items, dim)
        nn.init.normal_(self.items.weight, std=0.05)
        self.log_scale = nn.Parameter(torch.tensor(math.log(softmax_scale)))
        # A per-item bias absorbs popularity; without it the model learns one direction shared by every user
        # (to score popular items up), and that direction dominates the cosine between users.
        self.item_bias = nn.Embedding(spec.n_items, 1) if item_bias else None
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)

    def item_table(self) -> torch.Tensor:
        """[n_items, d]: output item vectors (the history field's table when tied)."""
        return self.tower.fields.history.weight[1:] if self.tie_items else self.items.weight

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


@torch.no_grad()
def init_from_svd(model: UserModel, item_factors: np.ndarray, other_fields_std: float = 0.01) -> None:
    """Warm start: history-field table and output item table <- SVD item factors [n_items, >= max(m, d)];
    with a residual tower, P <- identity on the history field and the MLP's output layer <- 0, so that at
    the start u is (a share of) the user's SVD factor. The other fields start small so they do not drown
    it; they, the attention and the MLP then learn from the sampled softmax."""
    tower = model.tower
    fields = tower.fields
    m, d = fields.history.embedding_dim, model.items.embedding_dim
    # SVD item rows have norm about sqrt(k / n_items) (entries ~0.02): an Adam step of lr 1e-3 would move
    # them by a large share of their size. A common scale keeps every direction and gives rows unit norm.
    norms = np.linalg.norm(item_factors, axis=1)
    item_factors = item_factors / max(float(norms[norms > 0].mean()) if (norms > 0).any() else 1.0, 1e-12)
    fields.history.weight[1:] = torch.from_numpy(item_factors[:, :m])
    model.items.weight.copy_(torch.from_numpy(item_factors[:, :d]))
    for emb in [*fields.single, *fields.multi]:
        emb.weight.normal_(0.0, other_fields_std)
        if emb.padding_idx is not None:
            emb.weight[emb.padding_idx] = 0.0
    if fields.continuous is not None:
        fields.continuous.weight.normal_(0.0, other_fields_std)
        fields.continuous.bias.zero_()
    if tower.skip is not None:
        tower.mlp[-1].weight.zero_()
        tower.mlp[-1].bias.zero_()
        tower.skip.weight.zero_()
        # The history field is the last field: its block in the concat input, or the merged vector itself.
        offset = 0 if tower.merge is not None else tower.skip.in_features - m
        eye = torch.eye(d, m)
        tower.skip.weight[:, offset : offset + m] = eye


def csr_pairs(tfidf: sp.csr_matrix, max_positives: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(user_idx, item_idx) int64 arrays: each user's distinct items (nonzeros), at most ``max_positives``
    per user, chosen at random."""
    lengths = np.diff(tfidf.indptr)
    users = np.repeat(np.arange(tfidf.shape[0]), lengths)
    order = np.lexsort((rng.random(tfidf.indices.size), users))
    pos = np.arange(tfidf.indices.size) - np.repeat(tfidf.indptr[:-1], lengths)
    keep = pos < max_positives
    return users[keep].astype(np.int64), tfidf.indices[order][keep].astype(np.int64)


def split_validation(
    tfidf: sp.csr_matrix, frac: float, rng: np.random.Generator
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Hold out ``frac`` of the interactions of users with at least 3 items for early stopping:
    (matrix without them, their user_idx, their item_idx). The held-out items leave the users' history
    field and the warm start, so the validation measures prediction of unseen interactions."""
    tfidf = tfidf.tocsr(copy=True)
    lengths = np.diff(tfidf.indptr)
    users = np.repeat(np.arange(tfidf.shape[0]), lengths)
    held = (rng.random(tfidf.indices.size) < frac) & (lengths[users] >= 3)
    val_users, val_items = users[held].astype(np.int64), tfidf.indices[held].astype(np.int64)
    tfidf.data[held] = 0.0
    tfidf.eliminate_zeros()
    return tfidf, val_users, val_items


@torch.no_grad()
def validation_recall(
    model: UserModel,
    inputs: UserInputs,
    users: np.ndarray,
    items: np.ndarray,
    known: sp.csr_matrix,
    top: int = 50,
    batch_size: int = 4096,
) -> float:
    """Share of held-out (user, item) pairs whose item ranks in the user's top ``top`` of all items by
    u . v, the user's known (history) items left out of the ranking."""
    if users.size == 0:
        return float("nan")
    model.eval()
    table = model.item_table()
    hits = 0
    for s in range(0, users.size, batch_size):
        u = torch.from_numpy(users[s : s + batch_size])
        scores = model.tower(inputs.rows(u)) @ table.T * model.log_scale.exp()  # [B, n_items]
        if model.item_bias is not None:
            scores = scores + model.item_bias.weight.T
        rows = known[users[s : s + batch_size]].tocoo()
        scores[torch.from_numpy(rows.row).long(), torch.from_numpy(rows.col).long()] = float("-inf")
        target = scores.gather(1, torch.from_numpy(items[s : s + batch_size]).unsqueeze(1))
        hits += int(((scores > target).sum(1) < top).sum())
    return hits / users.size


def train_user_model(
    model: UserModel,
    inputs: UserInputs,
    tfidf: sp.csr_matrix,
    item_counts: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    n_negatives: int,
    max_positives: int,
    seed: int,
    logq_correction: bool = False,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    patience: int = 3,
    validate: Callable[[UserModel], float] | None = None,
) -> list[dict]:
    """Sampled-softmax training on the nonzeros of ``tfidf`` [n_users, n_items] (the training interactions;
    the inputs' history field must hold the same). Negatives by popularity rank (``item_counts``).

    With ``validation`` (user_idx, item_idx of held-out interactions) the model is measured before training
    and after each epoch (``validation_recall``), stops after ``patience`` epochs without a gain, and keeps
    the best state (possibly the start). ``validate`` (model -> score, higher is better) replaces it with
    another criterion, e.g. ``proxy_task.proxy_recall`` (the look-alike task on withheld items).
    Returns per epoch {epoch, loss, val_recall} (epoch 0: the start)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    sampler = RankNegativeSampler(item_counts.astype(np.float64))
    log_q = None
    if logq_correction:
        by_rank = sampler.rank_probabilities()
        q = np.empty(sampler.n_items)
        q[sampler.rank_to_item] = by_rank
        log_q = torch.from_numpy(np.log(q).astype(np.float32))
    users, items = csr_pairs(tfidf, max_positives, rng)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    if validate is None and validation is not None:

        def validate(m: UserModel) -> float:
            return validation_recall(m, inputs, *validation, tfidf)

    def measure() -> float:
        return validate(model) if validate is not None else float("nan")

    curve = [{"epoch": 0, "loss": float("nan"), "val_recall": measure()}]
    log.info("ralm user model start: validation recall %.4f", curve[0]["val_recall"])
    best_score, since = curve[0]["val_recall"], 0
    best_state = {k: v.clone() for k, v in model.state_dict().items()} if validate is not None else None
    per_epoch = -(-users.size // batch_size)
    with Progress("ralm user model", epochs * per_epoch, "batches") as progress:
        for epoch in range(1, epochs + 1):
            model.train()
            order = rng.permutation(users.size)
            total, steps = 0.0, 0
            for start in range(0, order.size, batch_size):
                batch = order[start : start + batch_size]
                u = torch.from_numpy(users[batch])
                pos = torch.from_numpy(items[batch])
                neg = torch.from_numpy(sampler.sample((batch.size, n_negatives), rng))
                loss = model.sampled_softmax_loss(inputs.rows(u), pos, neg, log_q)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, steps = total + loss.item(), steps + 1
                progress.advance()
            curve.append({"epoch": epoch, "loss": total / max(steps, 1), "val_recall": measure()})
            log.info(
                "ralm user model epoch %d: sampled-softmax loss %.4f, validation recall %.4f",
                epoch,
                curve[-1]["loss"],
                curve[-1]["val_recall"],
            )
            if validate is None:
                continue
            if curve[-1]["val_recall"] > best_score:
                best_score, since = curve[-1]["val_recall"], 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                since += 1
                if since >= patience:
                    progress.set_total(progress.done)  # early stop: the remaining epochs will not run
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return curve


@torch.no_grad()
def embed_users(
    model: UserModel, inputs: UserInputs, n_users: int, batch_size: int = 8192, center: bool = False
) -> np.ndarray:
    """float32 [n_users, d]: every user's universal embedding (full history, nothing masked); ``center``
    subtracts the population mean (a direction every user shares says nothing about look-alikes)."""
    model.eval()
    out = [
        model.tower(inputs.rows(torch.arange(s, min(s + batch_size, n_users)))) for s in range(0, n_users, batch_size)
    ]
    if not out:
        return np.zeros((0, model.items.embedding_dim), np.float32)
    emb = torch.cat(out).numpy().astype(np.float32)
    return emb - emb.mean(0, keepdims=True) if center else emb
