"""PTUPCDR's training: MF pre-training per domain, task-oriented meta training of the bridge, EMCDR's ridge
bridge and warm-start fine-tuning; each loop's knobs in one typed config (``MFTraining``, ``BridgeTraining``).

Model selection is on validation ratings only (``EarlyStopping``: the epoch with the lowest validation loss).
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from lookalike_models.nn.early_stopping import EarlyStopping
from lookalike_models.progress import Progress
from lookalike_models.ptupcdr.domains import Ratings, with_negatives
from lookalike_models.ptupcdr.model import PTUPCDR, BridgeArchitecture, LinearBridge, RatingMF
from lookalike_models.strict_config import StrictConfig

Objective = Literal["rating", "rating_mae", "implicit"]


class MFTraining(StrictConfig, frozen=True):
    """Matrix factorisation of one domain: the tables' shape (``dim``, ``biases``) and the loop's knobs."""

    dim: int = Field(10, ge=1, description="Embedding size")
    biases: bool = Field(True, description="Global mean + user and item biases")
    epochs: int = Field(60, ge=1)
    lr: float = Field(0.01, gt=0)
    reg: float = Field(0.05, ge=0, description="L2 weight on the embeddings (and b_u) of each batch")
    batch_size: int = Field(1024, ge=1)
    val_frac: float = Field(0.05, ge=0, lt=1, description="Random share of the ratings that chooses the epoch")
    patience: int = Field(5, ge=1)
    objective: Objective = Field(
        "rating",
        description="rating: MSE on the ratings (the paper's); implicit: logistic loss on observed pairs vs "
        "n_neg sampled unobserved items of the same domain, resampled every epoch",
    )
    n_neg: int = Field(4, ge=1, description="Sampled unobserved items per observed pair (implicit)")
    seed: int = 0


class BridgeTraining(StrictConfig, frozen=True):
    """Meta training of the bridge on real target ratings (the MF tables frozen)."""

    epochs: int = Field(60, ge=1)
    lr: float = Field(0.005, gt=0)
    batch_size: int = Field(256, ge=1)
    patience: int = Field(6, ge=1)
    reg: float = Field(0.0, ge=0, description="L2 on the bridged vectors, like MF's")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay of the meta network")
    objective: Objective = Field(
        "rating",
        description="rating (MSE), rating_mae (absolute error), or implicit (the target MF's task: observed "
        "target pairs vs sampled unobserved target items, logistic loss)",
    )
    n_neg: int = Field(4, ge=1, description="Sampled unobserved items per observed pair (implicit)")
    seed: int = 0


def mae_rmse(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    err = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    return float(np.abs(err).mean()), float(np.sqrt((err**2).mean()))


def example_loss(pred: torch.Tensor, target: torch.Tensor, objective: str) -> torch.Tensor:
    """``rating``: MSE on explicit ratings; ``rating_mae``: absolute error on them (when MAE is the measure:
    rating distributions are skewed, the best MAE predictor is a median, not a mean); ``implicit``: logistic
    loss on observed (1) vs sampled (0) pairs."""
    if objective == "rating":
        return ((pred - target) ** 2).mean()
    if objective == "rating_mae":
        return (pred - target).abs().mean()
    return nn.functional.binary_cross_entropy_with_logits(pred, target)


def _batches(n: int, batch_size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _tensors(r: Ratings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.as_tensor(r.users, dtype=torch.long),
        torch.as_tensor(r.items, dtype=torch.long),
        torch.as_tensor(r.ratings, dtype=torch.float32),
    )


def fit_mf(
    ratings: Ratings,
    n_users: int,
    n_items: int,
    training: MFTraining | None = None,
    label: str = "ptupcdr matrix factorisation",
) -> RatingMF:
    """Matrix factorisation of ``ratings``; the epoch is chosen on a random ``val_frac`` of them. The implicit
    objective learns a space of *what* users engage with, which is what look-alike needs. ``label`` names
    the fit in progress lines."""
    cfg = training or MFTraining()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    is_val = rng.random(len(ratings)) < cfg.val_frac
    train, val = ratings.subset(~is_val), ratings.subset(is_val)
    pool = np.unique(ratings.items)
    implicit = cfg.objective == "implicit"
    if implicit:
        val = with_negatives(val, pool, cfg.n_neg, rng)
    mean = float(train.ratings.mean()) if cfg.objective == "rating" else 0.0
    model = RatingMF(n_users, n_items, cfg.dim, mean, cfg.biases)
    if implicit:
        # No user bias for engagement: it would soak up a user's activity level, which the look-alike cosine
        # on the vectors then never sees (measured on split seed 1 of
        # bench/ptupcdr_lookalike.py: recall@10% of cold converters 0.29 without, 0.25 with).
        model.user_bias.weight.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    vu, vi, vr = _tensors(val)
    stopper = EarlyStopping(model, cfg.patience, mode="min")
    examples = len(train) * (1 + (cfg.n_neg if implicit else 0))
    with Progress(label, cfg.epochs * -(-examples // cfg.batch_size), "batches") as progress:
        for _ in range(cfg.epochs):
            model.train()
            u, i, r = _tensors(train if cfg.objective == "rating" else with_negatives(train, pool, cfg.n_neg, rng))
            for b in _batches(len(u), cfg.batch_size, gen):
                pu, qi, bu = model.user(u[b]), model.item(i[b]), model.user_bias(u[b]).squeeze(-1)
                pred = model.predict_with(pu, i[b], bu)
                # b_u shrinks like the vectors (a user with few ratings keeps a small offset); b_i is free.
                penalty = ((pu**2).sum(-1) + (qi**2).sum(-1) + bu**2).mean()
                loss = example_loss(pred, r[b], cfg.objective) + cfg.reg * penalty
                opt.zero_grad()
                loss.backward()
                opt.step()
                progress.advance()
            if len(val) == 0:  # nothing to select on: the last epoch
                stopper.state = copy.deepcopy(model.state_dict())
                continue
            with torch.no_grad():
                val_loss = float(example_loss(model(vu, vi), vr, cfg.objective))
            if stopper.stop(model, val_loss):
                progress.set_total(progress.done)  # early stop
                break
    stopper.restore(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def fit_ptupcdr(
    source_mf: RatingMF,
    target_mf: RatingMF,
    histories: np.ndarray,
    train: Ratings,
    val: Ratings,
    training: BridgeTraining | None = None,
    architecture: BridgeArchitecture | None = None,
    source_offsets: np.ndarray | None = None,
) -> tuple[PTUPCDR, list[float]]:
    """Task-oriented meta training: the loss of mean + b_i + b_tgt_hat + u_tgt_hat . v_i against real target
    ratings (``training.objective``), ``histories`` int64 [n_users, L].

    Only the encoder and meta network train; the MF tables are frozen. The epoch (0 = untrained: the source
    offset as is, no embedding) is chosen on ``val`` (target ratings of held-out overlapping users, never the
    test users). Returns the model and the validation loss per epoch, epoch 0 first. ``source_offsets`` float
    [n_users]: the offsets b_src the bridge maps (default: the source MF's user biases; the cold-start
    protocol passes the bias baseline's alpha x o_u)."""
    cfg = training or BridgeTraining()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    pool = np.unique(np.concatenate([train.items, val.items]))
    implicit = cfg.objective == "implicit"
    if implicit:
        val = with_negatives(val, pool, cfg.n_neg, rng)
    offsets = source_mf.user_bias.weight if source_offsets is None else torch.as_tensor(source_offsets).float()
    model = PTUPCDR(source_mf.user.weight, source_mf.item.weight, offsets, architecture)
    hist = torch.as_tensor(histories, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    vu, vi, vr = _tensors(val)

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            vectors, offsets = model(vu, hist[vu])
            return float(example_loss(target_mf.predict_with(vectors, vi, offsets), vr, cfg.objective))

    stopper = EarlyStopping(model, cfg.patience, mode="min")
    curve = [val_loss()]
    stopper.stop(model, curve[0])
    examples = len(train) * (1 + (cfg.n_neg if implicit else 0))
    with Progress("ptupcdr bridge", cfg.epochs * -(-examples // cfg.batch_size), "batches") as progress:
        for _ in range(cfg.epochs):
            model.train()
            u, i, r = _tensors(with_negatives(train, pool, cfg.n_neg, rng) if implicit else train)
            for b in _batches(len(u), cfg.batch_size, gen):
                bridged, offsets = model(u[b], hist[u[b]])
                pred = target_mf.predict_with(bridged, i[b], offsets)
                loss = example_loss(pred, r[b], cfg.objective) + cfg.reg * (bridged**2).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                progress.advance()
            curve.append(val_loss())
            if stopper.stop(model, curve[-1]):
                progress.set_total(progress.done)  # early stop
                break
    stopper.restore(model)
    model.eval()
    return model, curve


def fit_emcdr(source_vectors: np.ndarray, target_vectors: np.ndarray, ridge: float) -> LinearBridge:
    """One linear bridge for everyone, fitted by embedding distance (ridge least squares, bias unpenalised):
    source_vectors [n, k], target_vectors [n, k] of the same users."""
    x = np.hstack([source_vectors, np.ones((source_vectors.shape[0], 1))]).astype(np.float64)
    penalty = ridge * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    weight = np.linalg.solve(x.T @ x + penalty, x.T @ target_vectors.astype(np.float64))
    return LinearBridge(weight.astype(np.float32))


def fine_tune_vectors(
    target_mf: RatingMF,
    users: np.ndarray,
    init: np.ndarray,
    ratings: Ratings,
    epochs: int = 50,
    lr: float = 0.01,
    reg: float = 0.2,
    offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Warm start: user vectors [len(users), d] fitted to the users' first target ratings, starting from
    ``init`` (bridged vectors, or zeros for a plain target MF); item tables and the users' ``offsets``
    [len(users)] (bridged b_u; none = 0) stay frozen. Full batch, Adam."""
    rows = np.searchsorted(users, ratings.users)
    vectors = nn.Parameter(torch.as_tensor(np.asarray(init), dtype=torch.float32).clone())
    opt = torch.optim.Adam([vectors], lr=lr)
    r_rows = torch.as_tensor(rows, dtype=torch.long)
    items, target = torch.as_tensor(ratings.items, dtype=torch.long), torch.as_tensor(ratings.ratings)
    row_offsets = None if offsets is None else torch.as_tensor(np.asarray(offsets), dtype=torch.float32)[r_rows]
    for _ in range(epochs):
        chosen = vectors[r_rows]
        pred = target_mf.predict_with(chosen, items, row_offsets)
        loss = ((pred - target) ** 2).mean() + reg * (chosen**2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vectors.detach().numpy()
