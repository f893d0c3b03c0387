"""RALM phase 1's training: the universal user representation (Liu et al., "Real-time Attention Based
Look-alike Model for Recommender System", KDD 2019, arXiv 1906.05022, sec. 4.2). The modules are ``model.py``.

Training is a sampled softmax: the user must pick the clicked item among itself and 10 negatives drawn by
popularity rank with p(k) = (log(k+2) - log(k+1)) / log(D+1), at most 50 positives per user. A user's item
history can be one more multi-valued field; when it is, the positive being predicted is masked out of it
(otherwise the model learns to copy its input).

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

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from lookalike_models.dataset import LookalikeData
from lookalike_models.nn.early_stopping import EarlyStopping
from lookalike_models.nn.fields import UserFeatures
from lookalike_models.nn.training import EpochPlan, train_epochs
from lookalike_models.progress import Progress
from lookalike_models.ralm.model import FieldSpec, UserInputs, UserModel

if TYPE_CHECKING:
    from lookalike_models.ralm.config import RalmConfig


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
    features = UserFeatures.of(uf, multi=keep)
    return UserInputs(features.profile_free() if history_only else features, codes, weights)


def field_spec(
    data: LookalikeData, item_history: bool, drop_multi: list[str] | None = None, history_only: bool = False
) -> FieldSpec:
    if history_only:
        return FieldSpec([], [], 0, data.n_items, True)
    uf = data.users
    sizes = [s for name, s in zip(uf.names_multi, uf.multi_sizes) if name not in (drop_multi or [])]
    return FieldSpec(list(uf.single_sizes), sizes, len(uf.names_continuous), data.n_items, item_history)


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
    fields.history.item_rows.copy_(torch.from_numpy(item_factors[:, :m]))
    model.items.weight.copy_(torch.from_numpy(item_factors[:, :d]))
    fields.normal_(other_fields_std)
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


def interaction_recall(
    inputs: UserInputs, validation: tuple[np.ndarray, np.ndarray], known: sp.csr_matrix
) -> Callable[[UserModel], float]:
    """The early-stopping criterion on held-out interactions (user_idx, item_idx): ``validation_recall``."""
    return lambda model: validation_recall(model, inputs, *validation, known)


def train_user_model(
    model: UserModel,
    inputs: UserInputs,
    tfidf: sp.csr_matrix,
    cfg: RalmConfig,
    validate: Callable[[UserModel], float] | None = None,
) -> list[dict]:
    """Sampled-softmax training on the nonzeros of ``tfidf`` [n_users, n_items] (the training interactions;
    the inputs' history field must hold the same): ``user_epochs`` epochs of ``user_batch_size`` pairs,
    ``n_negatives`` by popularity rank, at most ``max_positives_per_user`` pairs a user.

    With ``validate`` (model -> score, higher is better: ``interaction_recall`` on held-out interactions, or
    ``proxy_task.proxy_recall``, the look-alike task on withheld items) the model is measured before training
    and after each epoch, stops after ``user_patience`` epochs without a gain, and keeps the best state
    (possibly the start). Returns per epoch {epoch, loss, val_recall, seconds} (epoch 0: the start)."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    item_counts = np.bincount(tfidf.indices, minlength=tfidf.shape[1])
    sampler = RankNegativeSampler(item_counts.astype(np.float64))
    log_q = None
    if cfg.logq_correction:
        by_rank = sampler.rank_probabilities()
        q = np.empty(sampler.n_items)
        q[sampler.rank_to_item] = by_rank
        log_q = torch.from_numpy(np.log(q).astype(np.float32))
    users, items = csr_pairs(tfidf, cfg.max_positives_per_user, rng)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.user_lr)
    batch_size = cfg.user_batch_size

    def run_epoch(epoch: int, progress: Progress) -> float:
        order = rng.permutation(users.size)
        total, steps = 0.0, 0
        for start in range(0, order.size, batch_size):
            batch = order[start : start + batch_size]
            u = torch.from_numpy(users[batch])
            pos = torch.from_numpy(items[batch])
            neg = torch.from_numpy(sampler.sample((batch.size, cfg.n_negatives), rng))
            loss = model.sampled_softmax_loss(inputs.rows(u), pos, neg, log_q)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
            progress.advance()
        return total / max(steps, 1)

    plan = EpochPlan("ralm user model", cfg.user_epochs, -(-users.size // batch_size), "batches", "val_recall")
    stopper = EarlyStopping(model, cfg.user_patience, "max", min_delta=0.0) if validate is not None else None
    measure = (lambda: validate(model)) if validate is not None else (lambda: float("nan"))
    return train_epochs(model, plan, run_epoch, measure, stopper).epochs


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
