"""StarSpace user encoder of Pinterest's act-alike system (deWet & Ou, "Finding Users Who Act Alike",
KDD 2019, arXiv 1903.01625, stage 1), after StarSpace (Wu et al., AAAI 2018).

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
from torch import nn

from lookalike_models.dataset import LookalikeData
from lookalike_models.pinterest.encoder_inputs import (
    UserInputs,
    bag_of,
    fold_in_items,
    organic_inputs,
    organic_mask,
    organic_tfidf,
    user_inputs,
)
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


class StarSpaceUserEncoder(nn.Module):
    """User fields -> one dense layer -> unit vector; item (topic) embeddings of the same dimension."""

    def __init__(
        self,
        single_sizes: list[int],
        multi_sizes: list[int],
        n_continuous: int,
        n_items: int,
        dim: int = 32,
        field_dim: int = 16,
        history_pool_power: float = 0.0,
        share_embeddings: bool = False,
        dense_bias: bool = True,
    ):
        super().__init__()
        # p < 1 keeps some of the history's size in the pooled vector, so activity can shape the direction.
        self.history_pool_power = history_pool_power
        self.single = nn.ModuleList(nn.Embedding(s, field_dim, padding_idx=0) for s in single_sizes)
        self.multi = nn.ModuleList(nn.EmbeddingBag(s, field_dim, mode="sum", padding_idx=0) for s in multi_sizes)
        # Row n_items is the history padding; it stays zero.
        self.history = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        self.share_embeddings = share_embeddings
        self.topics = None if share_embeddings else nn.Embedding(n_items, dim)
        width = field_dim * (len(single_sizes) + len(multi_sizes)) + n_continuous + dim
        self.dense = nn.Linear(width, dim, bias=dense_bias)
        for table in [*self.single, *self.multi]:
            nn.init.normal_(table.weight, std=0.1)
        nn.init.normal_(self.history.weight, std=0.1)
        if self.topics is not None:
            nn.init.normal_(self.topics.weight, std=0.1)
        with torch.no_grad():
            self.history.weight[n_items].zero_()

    def forward(
        self,
        single: torch.Tensor,
        multi: list[torch.Tensor],
        continuous: torch.Tensor,
        history_sum: torch.Tensor,
        history_count: torch.Tensor,
    ) -> torch.Tensor:
        """single int64 [B, n_single], multi[f] int64 [B, L_f], continuous float32 [B, n_cont],
        history_sum float32 [B, dim] (sum of history embeddings), history_count float32 [B]
        -> unit user vectors float32 [B, dim]."""
        parts = [emb(single[:, i]) for i, emb in enumerate(self.single)]
        for bag, codes in zip(self.multi, multi):
            n = (codes > 0).sum(1, keepdim=True).clamp(min=1)
            parts.append(bag(codes) / n)
        parts += [continuous, history_sum / history_count.clamp(min=1).pow(self.history_pool_power).unsqueeze(1)]
        return F.normalize(self.dense(torch.cat(parts, 1)), dim=1)

    def topic_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """items int64 [...] -> unit topic vectors float32 [..., dim]."""
        table = self.history if self.topics is None else self.topics
        return F.normalize(table(items), dim=-1)


def make_encoder(data: LookalikeData, cfg: EncoderConfig) -> StarSpaceUserEncoder:
    u = data.users
    n_continuous = u.continuous.shape[1] + int(cfg.activity_field)
    pool_power = 0.0 if cfg.history_weighting == "tfidf" else cfg.history_pool_power
    return StarSpaceUserEncoder(
        u.single_sizes,
        u.multi_sizes,
        n_continuous,
        data.n_items,
        cfg.dim,
        cfg.field_dim,
        pool_power,
        cfg.share_embeddings,
        cfg.dense_bias,
    )


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
    dim = model.dense.out_features
    k = min(dim, min(tfidf.shape) - 1)
    factors = TruncatedSVD(k, random_state=seed).fit(tfidf).components_.T.astype(np.float32)  # [n_items, k]
    table = np.zeros((tfidf.shape[1], dim), np.float32)
    table[:, :k] = factors
    # A common scale does not change directions; this one gives item rows the random init's typical norm.
    norms = np.linalg.norm(table, axis=1)
    table *= 0.1 * np.sqrt(dim) / max(float(norms[norms > 0].mean()) if (norms > 0).any() else 1.0, 1e-12)
    model.history.weight[:-1] = torch.from_numpy(table)
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
    n = inputs.single.shape[0]
    out = np.empty((n, model.dense.out_features), np.float32)
    for lo in range(0, n, batch):
        users = torch.arange(lo, min(lo + batch, n))
        out[lo : lo + users.numel()] = model(*inputs.fields(users), *bag_of(model, inputs, users)).numpy()
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
    left_out = bag.unsqueeze(1) - positive_weight.unsqueeze(-1) * model.history(positives)  # [B, m, d]
    rep = torch.arange(b).repeat_interleave(m)
    single, multi, continuous = inputs.fields(users)
    u = model(
        single[rep], [x[rep] for x in multi], continuous[rep], left_out.reshape(b * m, -1), (count - 1)[rep]
    )  # [B*m, d]
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

    best = (transfer_error(encode_users(model, inputs), task), {k: v.clone() for k, v in model.state_dict().items()})
    history = [{"epoch": 0, "loss": float("nan"), "transfer_error": best[0], "seconds": 0.0}]
    log.info(
        "starspace: epoch 0 (%s init) transfer error %.4f; up to %d epochs of %d users (%d steps each)",
        cfg.init,
        best[0],
        cfg.max_epochs,
        per_epoch,
        steps,
    )
    best_epoch, stale, trained_users, train_seconds = 0, 0, 0, 0.0
    with Progress("starspace encoder", cfg.max_epochs * steps, "steps") as progress:
        for epoch in range(1, cfg.max_epochs + 1):
            model.train()
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
            train_seconds += time.perf_counter() - start
            trained_users += order.numel()
            error = transfer_error(encode_users(model, inputs), task)
            history.append(
                {"epoch": epoch, "loss": total / steps, "transfer_error": error, "seconds": time.perf_counter() - start}
            )
            log.info("starspace: epoch %d loss %.4f transfer error %.4f", epoch, total / steps, error)
            if error < best[0] - cfg.min_improvement:
                best, stale, best_epoch = (error, {k: v.clone() for k, v in model.state_dict().items()}), 0, epoch
            else:
                stale += 1
                if stale >= cfg.patience:
                    progress.set_total(epoch * steps)
                    break
    model.load_state_dict(best[1])
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
    return FittedEncoder(
        model, encode_users(model, inputs), history, task, trained_users / max(train_seconds, 1e-9), best_epoch
    )
