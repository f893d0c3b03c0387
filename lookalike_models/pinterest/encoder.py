"""Training of the StarSpace user encoder of Pinterest's act-alike system (deWet & Ou, "Finding Users Who
Act Alike", KDD 2019, arXiv 1903.01625, stage 1), after StarSpace (Wu et al., AAAI 2018). The module itself
is ``encoder_model.py``.

A user is their fields: single-valued categorical fields (one embedding each), multi-valued fields
(mean of their values' embeddings), normalised continuous fields (plus log organic activity), and their
organic item history (the paper's "interest topics" are the items here), pooled as a bag: by default
weighted by the user's tf-idf row (sublinear tf x idf, L2-normalised), else a sum / n^p. These are
concatenated and passed through ONE dense layer, then L2-normalised: ``u = normalize(W [fields] + b)``.
No ReLU before the normalisation (it would make every coordinate >= 0 and hyperplane LSH degenerate),
and no bias by default: a direction shared by every user dominates the seeds' centroid, so centroid
cosine ends up ranking users by how little history they have.

Topics are items; by default the bag and the topics share one item table (StarSpace's shared
embeddings). Training is StarSpace's margin ranking loss with ``k`` sampled negatives:
``mean_j max(0, margin - cos(u, t+) + cos(u, t-_j))``, where ``t+`` is an item the user engaged with,
left out of the user's own bag for that example, and negatives are drawn like StarSpace draws them,
in proportion to how often items occur (uniform negatives teach popularity). A step is ``batch_users``
users x ``positives_per_user`` examples scored against one pool of sampled negatives shared by the step
(``negative_sharing``); an epoch is a pass over ``users_per_epoch`` sampled users at most (the paper trains on a
sample), so its cost is bounded at any population. Bags are CSR (``encoder_inputs.py``): cost follows the
interactions, not users x the longest history.

``init='svd'`` (default) starts the item table from the TruncatedSVD item factors of the organic
tf-idf matrix and the dense layer from the identity on the bag: epoch 0 is then exactly the SVD user
factors, and StarSpace epochs are kept only if the transfer task says they are better. Measured on the
tuning splits (bench/results/embeddings.md), the paper's objective from a random table learns (transfer
error falls well below the untrained model's) but stays under the SVD factors on the campaigns.

Organic data only: campaign seeds are never read, campaign items' interactions are dropped. Early stopping
and the checkpoint choice use the paper's transfer task (``transfer_task.py``). Once the checkpoint is chosen,
users are re-embedded with the proxy items back in their bags (``fold_in_proxy_items``), so the final
embeddings no longer answer the transfer task honestly: its curve is in ``history``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from sklearn.decomposition import TruncatedSVD

from lookalike_models.dataset import LookalikeData
from lookalike_models.nn.early_stopping import EarlyStopping
from lookalike_models.nn.fields import FieldSizes
from lookalike_models.nn.training import EpochPlan, train_epochs
from lookalike_models.pinterest.encoder_inputs import (
    UserInputs,
    bag_of,
    fold_in_items,
    organic_inputs,
    organic_mask,
    organic_tfidf,
    user_inputs,
)
from lookalike_models.pinterest.encoder_model import EncoderShape, StarSpaceUserEncoder
from lookalike_models.pinterest.transfer_task import TransferTask, build_transfer_task, transfer_error
from lookalike_models.progress import Progress
from lookalike_models.strict_config import StrictConfig
from lookalike_models.threads import torch_threads

log = logging.getLogger(__name__)


class EncoderConfig(StrictConfig):
    dim: int = Field(64, ge=4, le=512, description="Embedding dimension d of users and topics")
    field_dim: int = Field(16, ge=2, description="Embedding size of each categorical field")
    history_len: int = Field(1000, ge=1, description="Most items of a user's history bag (most weighted kept)")
    activity_field: bool = Field(True, description="Add log organic activity (scaled to [0, 1]) as a continuous field")
    history_pool_power: float = Field(
        0.0,
        ge=0,
        le=1,
        description="History bag = sum / n^p (StarSpace -p); "
        "ignored with tf-idf weights, which are already L2-normalised per user",
    )
    history_weighting: Literal["none", "tfidf"] = Field(
        "tfidf", description="Bag = plain sum, or weighted by the user's tf-idf row (rare items say more)"
    )
    fold_in_proxy_items: bool = Field(
        True,
        description="After the checkpoint is chosen, re-embed users with the "
        "withheld proxy items (random init: embedded from their engagers first)",
    )
    init: Literal["random", "svd"] = Field(
        "svd",
        description="Item table from random normals, or from the "
        "TruncatedSVD item factors of the tf-idf matrix (with an identity dense "
        "layer epoch 0 is then the SVD user factors)",
    )
    svd_max_users: int | None = Field(
        250_000,
        ge=1,
        description="Users sampled for the SVD warm start's item factors (None: all); the factors of 20M "
        "interactions barely move from a quarter of them, and the SVD's cost grows with the rows",
    )
    negatives: int = Field(50, ge=1, description="Sampled negative topics per positive")
    negative_power: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Negatives drawn with probability ~ engagers^power "
        "(0: uniform over items; 1: StarSpace's draw from the training pairs)",
    )
    negative_sharing: Literal["batch", "example"] = Field(
        "batch",
        description="One pool of sampled negatives per step shared by its examples (a matrix product), or "
        "StarSpace's own draw per example (negatives x more gathers and gradient rows)",
    )
    share_embeddings: bool = Field(True, description="One item table for the history bag and the topics")
    dense_bias: bool = Field(False, description="Bias of the dense layer (a direction shared by every user)")
    positives_per_user: int = Field(16, ge=1, description="Positive topics sampled per user per epoch")
    loss: Literal["margin", "softmax"] = Field(
        "margin", description="margin ranking (the paper's) or softmax over the positive and its sampled negatives"
    )
    margin: float = Field(0.2, gt=0, le=2, description="Margin of the ranking loss (cosine scale)")
    temperature: float = Field(0.1, gt=0, description="Softmax loss: cosines divided by this")
    lr: float = Field(0.002, gt=0)
    batch_users: int = Field(64, ge=8, description="Users per step (x positives_per_user examples)")
    max_epochs: int = Field(10, ge=1)
    patience: int = Field(2, ge=1, description="Epochs without transfer-task improvement before stopping")
    min_improvement: float = Field(
        0.01,
        ge=0,
        description="Transfer-error drop that counts as better: 24 proxy "
        "items measure to about +-0.01, and smaller gains did not carry to campaigns",
    )
    users_per_epoch: int | None = Field(
        50_000,
        ge=1,
        description="Random active users trained per epoch (None: all); as the paper trains on a sample, this "
        "bounds an epoch's cost at millions of users (every user is still embedded)",
    )
    proxy_items: int = Field(24, ge=2, description="Items withheld for the transfer task")
    proxy_min_users: int = Field(20, ge=4, description="Fewest engagers for a proxy item")
    transfer_audience: float = Field(0.05, gt=0, lt=1, description="Audience share for the transfer recall")
    seed: int = 0


def make_encoder(data: LookalikeData, cfg: EncoderConfig) -> StarSpaceUserEncoder:
    n_continuous = data.users.continuous.shape[1] + int(cfg.activity_field)
    pool_power = 0.0 if cfg.history_weighting == "tfidf" else cfg.history_pool_power
    shape = EncoderShape(cfg.dim, cfg.field_dim, pool_power, cfg.share_embeddings, cfg.dense_bias)
    return StarSpaceUserEncoder(FieldSizes.of(data.users, n_continuous), data.n_items, shape)


@torch.no_grad()
def init_from_svd(
    model: StarSpaceUserEncoder, tfidf: sp.csr_matrix, seed: int = 0, max_users: int | None = None
) -> None:
    """Item (and topic) table <- TruncatedSVD item factors of ``tfidf`` [n_users, n_items] (of a uniform sample
    of ``max_users`` of its rows, when it has more); dense layer <- the identity on the history bag, zero on the
    other fields. The tf-idf-weighted bag of a user is then their SVD user factor (exactly so without a
    sample), so training starts from the SVD reference instead of from noise."""
    if max_users is not None and tfidf.shape[0] > max_users:
        tfidf = tfidf[np.sort(np.random.default_rng(seed).choice(tfidf.shape[0], max_users, replace=False))]
    dim = model.dim
    k = min(dim, min(tfidf.shape) - 1)
    factors = TruncatedSVD(k, random_state=seed).fit(tfidf).components_.T.astype(np.float32)  # [n_items, k]
    table = np.zeros((tfidf.shape[1], dim), np.float32)
    table[:, :k] = factors
    # A common scale does not change directions; this one gives item rows the random init's typical norm.
    norms = np.linalg.norm(table, axis=1)
    table *= 0.1 * np.sqrt(dim) / max(float(norms[norms > 0].mean()) if (norms > 0).any() else 1.0, 1e-12)
    model.history.item_rows.copy_(torch.from_numpy(table))
    if model.topics is not None:
        model.topics.weight.copy_(torch.from_numpy(table))
    model.dense.weight.zero_()
    model.dense.weight[:, -dim:] = torch.eye(dim)
    if model.dense.bias is not None:
        model.dense.bias.zero_()


@torch.no_grad()
def encode_users(model: StarSpaceUserEncoder, inputs: UserInputs, batch: int = 65_536) -> np.ndarray:
    """float32 [n_users, dim] unit-norm embeddings of every user."""
    model.eval()
    n = inputs.n_users
    out = np.empty((n, model.dim), np.float32)
    for lo in range(0, n, batch):
        users = torch.arange(lo, min(lo + batch, n))
        out[lo : lo + users.numel()] = model(inputs.features.rows(users), *bag_of(model, inputs, users)).numpy()
    return out


@dataclass
class FittedEncoder:
    """What training produces: the model at its best transfer-task epoch, and every user embedded."""

    model: StarSpaceUserEncoder
    embeddings: np.ndarray  # float32 [n_users, dim], unit rows
    history: list[dict]  # per epoch: loss, transfer_error, seconds
    transfer_task: TransferTask
    users_per_second: float
    best_epoch: int = 0  # the checkpoint kept (0: the initial model)


class NegativeSampler:
    """StarSpace's negative draw: items in proportion to engagers^power, never a withheld (proxy) item."""

    def __init__(self, inputs: UserInputs, n_items: int, withheld: np.ndarray, cfg: EncoderConfig):
        self.trainable = np.setdiff1d(np.arange(n_items), withheld)
        engagers = np.bincount(inputs.items.numpy(), minlength=n_items)[self.trainable].astype(np.float64)
        cdf = np.cumsum(np.power(engagers, cfg.negative_power) * (engagers > 0))
        self.cdf = cdf / cdf[-1]
        self.rng = np.random.default_rng(cfg.seed)

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.as_tensor(self.trainable[np.searchsorted(self.cdf, self.rng.random(shape))])


def step_loss(
    model: StarSpaceUserEncoder, inputs: UserInputs, users: torch.Tensor, sampler: NegativeSampler, cfg: EncoderConfig
) -> torch.Tensor:
    """The ranking loss of one step: ``positives_per_user`` items drawn from each user's own bag (each left
    out of the bag it is scored against) against sampled negative topics."""
    b, m = users.numel(), cfg.positives_per_user
    starts, lengths = inputs.offsets[users], inputs.lengths[users]
    slot = starts.unsqueeze(1) + (torch.rand(b, m) * lengths.unsqueeze(1)).long()  # [B, m] into the CSR
    positives, positive_weight = inputs.items[slot], inputs.weights[slot]
    bag, count = bag_of(model, inputs, users)
    left_out = bag.unsqueeze(1) - positive_weight.unsqueeze(-1) * model.history.items(positives)  # [B, m, d]
    rep = users.repeat_interleave(m)
    u = model(inputs.features.rows(rep), left_out.reshape(b * m, -1), (count - 1).repeat_interleave(m))  # [B*m, d]
    pos_sim = (u * model.topic_vectors(positives.reshape(-1))).sum(1, keepdim=True)
    if cfg.negative_sharing == "batch":
        # One pool for the whole step: a [B*m, d] x [d, k] product and k rows of gradient, not B*m*k gathers.
        neg_sim = u @ model.topic_vectors(sampler.draw((cfg.negatives,))).T
    else:
        neg_sim = torch.einsum("nd,nkd->nk", u, model.topic_vectors(sampler.draw((b * m, cfg.negatives))))
    if cfg.loss == "softmax":
        logits = torch.cat([pos_sim, neg_sim], 1) / cfg.temperature
        return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))
    return F.relu(cfg.margin - pos_sim + neg_sim).mean()


def train_encoder(data: LookalikeData, cfg: EncoderConfig | None = None) -> FittedEncoder:
    """Train on organic interactions (no campaign seeds, no campaign items, no proxy items), one torch thread."""
    with torch_threads(1):
        return _train_encoder(data, cfg or EncoderConfig())


def _train_encoder(data: LookalikeData, cfg: EncoderConfig) -> FittedEncoder:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    keep = organic_mask(data)
    task = build_transfer_task(data, keep, cfg)
    keep &= ~np.isin(data.item_idx, task.items)
    inputs = user_inputs(data, keep, cfg.history_len, cfg.activity_field, cfg.history_weighting)
    model = make_encoder(data, cfg)
    needs_organic = cfg.init == "svd" or (cfg.fold_in_proxy_items and cfg.history_weighting == "tfidf")
    organic = organic_tfidf(data, organic_mask(data)) if needs_organic else None  # built once, used twice
    if cfg.init == "svd":
        # From all organic data, proxies included: their rows then hold real factors for the final embedding.
        # They stay out of every bag and every sampled topic while training, so the transfer task still
        # measures users on items their bags never contained.
        init_from_svd(model, organic, cfg.seed, cfg.svd_max_users)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = NegativeSampler(inputs, data.n_items, task.items, cfg)
    active = torch.nonzero(inputs.lengths > 0).squeeze(1)
    per_epoch = min(active.numel(), cfg.users_per_epoch or active.numel())
    steps = -(-per_epoch // cfg.batch_users)

    timing = {"users": 0, "seconds": 0.0}  # training alone, for the users-per-second figure

    def run_epoch(epoch: int, progress: Progress) -> float:
        start = time.perf_counter()
        order = active[torch.as_tensor(rng.permutation(active.numel()))][:per_epoch]
        total = 0.0
        for users in order.split(cfg.batch_users):
            loss = step_loss(model, inputs, users, sampler, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            progress.advance()
        timing["seconds"] += time.perf_counter() - start
        timing["users"] += order.numel()
        return total / steps

    log.info("starspace: %s init, %d users an epoch", cfg.init, per_epoch)
    curve = train_epochs(
        model,
        EpochPlan("starspace encoder", cfg.max_epochs, steps, "steps", "transfer_error"),
        run_epoch,
        lambda: transfer_error(encode_users(model, inputs), task),
        EarlyStopping(model, cfg.patience, "min", cfg.min_improvement),
    )
    if cfg.fold_in_proxy_items and cfg.init == "random":
        full = organic_mask(data)
        engagement = (
            organic
            if cfg.history_weighting == "tfidf"
            else sp.csr_matrix(
                (np.ones(int(full.sum()), np.float32), (data.user_idx[full], data.item_idx[full])),
                shape=(data.n_users, data.n_items),
            )
        )
        fold_in_items(model, inputs, engagement.tocsc(), task.items)
    if cfg.fold_in_proxy_items:
        inputs = organic_inputs(data, cfg, task, organic if cfg.history_weighting == "tfidf" else None)
    speed = timing["users"] / max(timing["seconds"], 1e-9)
    return FittedEncoder(model, encode_users(model, inputs), curve.epochs, task, speed, curve.best_epoch)
