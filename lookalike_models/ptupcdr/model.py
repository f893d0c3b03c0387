"""PTUPCDR: personalised transfer of user preferences for cross-domain recommendation.

Reference: Yongchun Zhu et al., "Personalized Transfer of User Preferences for Cross-domain Recommendation",
WSDM 2022 (arXiv 2110.11154).

Pieces, each a small module or function:
  - ``RatingMF``: matrix factorisation pre-trained per domain (MSE on ratings); optionally with a global mean
    and item biases (``biases=True``, a deviation from the paper's plain dot product, used by every method
    alike so that comparisons stay fair).
  - ``CharacteristicEncoder``: attention over the user's liked source items -> p_u.
  - ``MetaBridge``: p_u -> a personal d x d bridge W_u.
  - ``PTUPCDR``: u_tgt_hat = u_src W_u, trained on real target ratings with the MF tables frozen.
  - ``fit_emcdr``: the EMCDR baseline, one shared linear bridge fitted by embedding distance.

Histories are padded with ``pad_id = n_items``, a row that is not a real item and is masked out of the
attention (the official code pads with 0, a real item id).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lookalike_models.progress import Progress


@dataclass
class Ratings:
    """Explicit ratings of one domain (or several): user_idx, item_idx int64 [n], rating float32 [n]."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray

    def subset(self, keep: np.ndarray) -> Ratings:
        return Ratings(self.users[keep], self.items[keep], self.ratings[keep])

    def of_users(self, users: np.ndarray) -> Ratings:
        return self.subset(np.isin(self.users, users))

    @staticmethod
    def concat(*parts: Ratings) -> Ratings:
        return Ratings(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("users", "items", "ratings")))

    def __len__(self) -> int:
        return int(self.users.size)


class EarlyStopping:
    """Keeps the weights of the epoch with the lowest validation loss; ``stop`` says when ``patience``
    epochs in a row brought no improvement (model selection on validation users only)."""

    def __init__(self, model: torch.nn.Module, patience: int):
        self.best, self.waited, self.patience = np.inf, 0, patience
        self.state = copy.deepcopy(model.state_dict())

    def stop(self, model: torch.nn.Module, val_loss: float) -> bool:
        if val_loss < self.best - 1e-5:
            self.best, self.state, self.waited = val_loss, copy.deepcopy(model.state_dict()), 0
            return False
        self.waited += 1
        return self.waited >= self.patience


def mae_rmse(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    err = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    return float(np.abs(err).mean()), float(np.sqrt((err**2).mean()))


class RatingMF(nn.Module):
    """r_hat(u, i) = mean + b_u + b_i + u . v (mean, b_u and b_i only with ``biases``).

    b_u is the user's offset (how generously they rate); for a cold user the target table has none, which is
    what the bridges' offset maps and the bias baseline (``bias.py``) estimate from the source domain.
    ``fit_mf`` trains b_u for the rating objective only (it stays 0 for the implicit one)."""

    def __init__(self, n_users: int, n_items: int, dim: int, mean: float = 0.0, biases: bool = True):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        for table in (self.user, self.item):
            nn.init.normal_(table.weight, std=0.1)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)
            table.weight.requires_grad_(biases)
        self.register_buffer("mean", torch.tensor(float(mean) if biases else 0.0))

    def predict_with(
        self, user_vectors: torch.Tensor, items: torch.Tensor, user_offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """user_vectors [B, d], items int64 [B], user_offsets [B] (b_u; none = 0) -> predicted ratings [B]."""
        pred = self.mean + self.item_bias(items).squeeze(-1) + (user_vectors * self.item(items)).sum(-1)
        return pred if user_offsets is None else pred + user_offsets

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.predict_with(self.user(users), items, self.user_bias(users).squeeze(-1))


def with_negatives(positives: Ratings, item_pool: np.ndarray, n_neg: int, rng: np.random.Generator) -> Ratings:
    """Implicit-feedback examples: every observed pair labelled 1, plus ``n_neg`` uniformly sampled items of
    ``item_pool`` per observed pair labelled 0 (unobserved pairs; a rare sampled positive is tolerated)."""
    neg_users = np.repeat(positives.users, n_neg)
    negatives = Ratings(neg_users, rng.choice(item_pool, neg_users.size), np.zeros(neg_users.size, np.float32))
    return Ratings.concat(Ratings(positives.users, positives.items, np.ones(len(positives), np.float32)), negatives)


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
    dim: int = 10,
    biases: bool = True,
    epochs: int = 60,
    lr: float = 0.01,
    reg: float = 0.05,
    batch_size: int = 1024,
    val_frac: float = 0.05,
    patience: int = 5,
    objective: str = "rating",
    n_neg: int = 4,
    seed: int = 0,
    label: str = "ptupcdr matrix factorisation",
) -> RatingMF:
    """Matrix factorisation; the epoch is chosen on a random ``val_frac`` of the given ratings.

    ``objective``: ``rating`` (MSE on the ratings, the paper's) or ``implicit`` (logistic loss on observed
    pairs vs ``n_neg`` sampled unobserved items of the same domain, resampled every epoch: a space of *what*
    users engage with, which is what look-alike needs). ``reg``: L2 weight on the embeddings of each batch.
    ``label`` names the fit in progress lines.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    is_val = rng.random(len(ratings)) < val_frac
    train, val = ratings.subset(~is_val), ratings.subset(is_val)
    pool = np.unique(ratings.items)
    if objective == "implicit":
        val = with_negatives(val, pool, n_neg, rng)
    model = RatingMF(n_users, n_items, dim, float(train.ratings.mean()) if objective == "rating" else 0.0, biases)
    if objective == "implicit":
        # No user bias for engagement: it would soak up a user's activity level, which the look-alike cosine
        # on the vectors then never sees (measured on split seed 1 of
        # bench/ptupcdr_lookalike.py: recall@10% of cold converters 0.29 without, 0.25 with).
        model.user_bias.weight.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    vu, vi, vr = _tensors(val)
    stopper = EarlyStopping(model, patience)
    examples = len(train) * (1 + (n_neg if objective == "implicit" else 0))
    with Progress(label, epochs * -(-examples // batch_size), "batches") as progress:
        for _ in range(epochs):
            model.train()
            u, i, r = _tensors(train if objective == "rating" else with_negatives(train, pool, n_neg, rng))
            for b in _batches(len(u), batch_size, gen):
                pu, qi, bu = model.user(u[b]), model.item(i[b]), model.user_bias(u[b]).squeeze(-1)
                pred = model.predict_with(pu, i[b], bu)
                # b_u shrinks like the vectors (a user with few ratings keeps a small offset); b_i is free.
                loss = example_loss(pred, r[b], objective) + reg * ((pu**2).sum(-1) + (qi**2).sum(-1) + bu**2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                progress.advance()
            if len(val) == 0:
                stopper.state = copy.deepcopy(model.state_dict())
                continue
            with torch.no_grad():
                val_loss = float(example_loss(model(vu, vi), vr, objective))
            if stopper.stop(model, val_loss):
                progress.set_total(progress.done)  # early stop
                break
    model.load_state_dict(stopper.state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def liked_histories(
    source: Ratings, n_users: int, pad_id: int, history_len: int = 20, like_threshold: float = 3.0
) -> np.ndarray:
    """int64 [n_users, history_len]: each user's source items rated above ``like_threshold``, best rated
    first, padded with ``pad_id``. A user who liked nothing falls back to their best-rated items."""
    out = np.full((n_users, history_len), pad_id, np.int64)
    liked = source.ratings > like_threshold
    # Liked items first, then by rating, then by item id: a stable, reproducible history.
    order = np.lexsort((source.items, -source.ratings, ~liked, source.users))
    users, items, liked = source.users[order], source.items[order], liked[order]
    likes_any = np.bincount(users[liked], minlength=n_users) > 0
    starts = np.searchsorted(users, np.arange(n_users))
    rank = np.arange(users.size) - starts[users]
    keep = (rank < history_len) & (liked | ~likes_any[users])
    out[users[keep], rank[keep]] = items[keep]
    return out


class CharacteristicEncoder(nn.Module):
    """a_j = softmax_j(w2 . ReLU(W1 e_j + b1)) over the non-padding history items; p_u = sum_j a_j e_j."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden or dim), nn.ReLU(), nn.Linear(hidden or dim, 1, bias=False))

    def forward(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """item_vectors [B, L, d], mask bool [B, L] (True = real item) -> p_u [B, d].

        Rows with no real item get p_u = 0 (their weights would otherwise be NaN)."""
        logits = self.score(item_vectors).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
        return (weights.unsqueeze(-1) * item_vectors).sum(1)


class MetaBridge(nn.Module):
    """p_u [B, d] -> personal bridges W_u [B, d, d] and offset maps (scale_u, shift_u) [B], [B].

    vec(W_u) = W4 ReLU(W3 p_u + b3) + b4 as in the paper, with two more outputs for the user's rating offset:
    b_tgt_hat = (1 + scale_u) b_src + shift_u. The output layer starts at zero, so an untrained bridge maps
    every user to u_tgt_hat = 0 and b_tgt_hat = b_src: training starts from the bias-only prediction and
    the epoch-0 check of :func:`fit_ptupcdr` keeps it when bridging adds nothing on the validation users."""

    def __init__(self, dim: int, hidden: int = 50):
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim * dim + 2))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, p_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(p_u)
        return out[:, : self.dim * self.dim].view(-1, self.dim, self.dim), out[:, -2], out[:, -1]


class PTUPCDR(nn.Module):
    """Bridged target-domain user vectors and offsets from frozen source MF tables:
    u_tgt_hat = u_src W_u, b_tgt_hat = (1 + scale_u) b_src + shift_u.

    Ablation switches: ``personal=False`` feeds the meta network p_u = 0, i.e. one bridge shared by all users
    learned on the same task (a task-oriented EMCDR); ``map_embedding=False`` drops u_tgt_hat (offset only);
    ``map_offset=False`` drops b_tgt_hat (the paper's bridge, embedding only)."""

    def __init__(
        self,
        source_users: torch.Tensor,
        source_items: torch.Tensor,
        source_user_bias: torch.Tensor | None = None,
        meta_hidden: int = 50,
        personal: bool = True,
        map_embedding: bool = True,
        map_offset: bool = True,
    ):
        super().__init__()
        dim = source_users.shape[1]
        pad_row = torch.zeros(1, dim)
        # Frozen pre-trained tables; the last item row is the padding id (not a real item).
        self.register_buffer("source_users", source_users.detach().clone())
        self.register_buffer("source_items", torch.cat([source_items.detach(), pad_row]))
        bias = torch.zeros(source_users.shape[0]) if source_user_bias is None else source_user_bias.detach()
        self.register_buffer("source_user_bias", bias.reshape(-1).clone())
        self.pad_id = source_items.shape[0]
        self.personal, self.map_embedding, self.map_offset = personal, map_embedding, map_offset
        self.encoder = CharacteristicEncoder(dim)
        self.meta = MetaBridge(dim, meta_hidden)

    def forward(self, users: torch.Tensor, histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """users int64 [B], histories int64 [B, L] (pad_id = padding) -> (u_tgt_hat [B, d], b_tgt_hat [B])."""
        p_u = self.encoder(self.source_items[histories], histories != self.pad_id)
        bridges, scale, shift = self.meta(p_u if self.personal else torch.zeros_like(p_u))
        vectors = torch.bmm(self.source_users[users].unsqueeze(1), bridges).squeeze(1)
        offsets = (1 + scale) * self.source_user_bias[users] + shift
        return (
            vectors if self.map_embedding else torch.zeros_like(vectors),
            offsets if self.map_offset else torch.zeros_like(offsets),
        )


def fit_ptupcdr(
    source_mf: RatingMF,
    target_mf: RatingMF,
    histories: np.ndarray,
    train: Ratings,
    val: Ratings,
    epochs: int = 60,
    lr: float = 0.005,
    batch_size: int = 256,
    patience: int = 6,
    meta_hidden: int = 50,
    reg: float = 0.0,
    weight_decay: float = 0.0,
    objective: str = "rating",
    n_neg: int = 4,
    seed: int = 0,
    personal: bool = True,
    map_embedding: bool = True,
    map_offset: bool = True,
    source_offsets: np.ndarray | None = None,
) -> tuple[PTUPCDR, list[float]]:
    """Task-oriented meta training: MSE of mean + b_i + b_tgt_hat + u_tgt_hat . v_i against real target ratings.

    Only the encoder and meta network train; the MF tables are frozen. The epoch (0 = untrained: the source
    offset as is, no embedding) is chosen on ``val`` (target ratings of held-out overlapping users, never the
    test users). ``reg`` penalises the bridged vectors like MF's L2 term, ``weight_decay`` the meta network.
    Returns the model and the validation loss per epoch, epoch 0 first. With ``objective="implicit"`` the task
    is the target MF's: observed target pairs vs sampled unobserved target items (logistic loss).
    ``source_offsets`` float [n_users]: the offsets b_src the bridge maps (default: the source MF's user
    biases; the cold-start protocol passes the bias baseline's alpha x o_u)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    pool = np.unique(np.concatenate([train.items, val.items]))
    if objective == "implicit":
        val = with_negatives(val, pool, n_neg, rng)
    offsets = source_mf.user_bias.weight if source_offsets is None else torch.as_tensor(source_offsets).float()
    model = PTUPCDR(
        source_mf.user.weight, source_mf.item.weight, offsets, meta_hidden, personal, map_embedding, map_offset
    )
    hist = torch.as_tensor(histories, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    vu, vi, vr = _tensors(val)

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            vectors, offsets = model(vu, hist[vu])
            return float(example_loss(target_mf.predict_with(vectors, vi, offsets), vr, objective))

    stopper = EarlyStopping(model, patience)
    curve = [val_loss()]
    stopper.stop(model, curve[0])
    examples = len(train) * (1 + (n_neg if objective == "implicit" else 0))
    with Progress("ptupcdr bridge", epochs * -(-examples // batch_size), "batches") as progress:
        for _ in range(epochs):
            model.train()
            u, i, r = _tensors(with_negatives(train, pool, n_neg, rng) if objective == "implicit" else train)
            for b in _batches(len(u), batch_size, gen):
                bridged, offsets = model(u[b], hist[u[b]])
                pred = target_mf.predict_with(bridged, i[b], offsets)
                loss = example_loss(pred, r[b], objective) + reg * (bridged**2).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                progress.advance()
            curve.append(val_loss())
            if stopper.stop(model, curve[-1]):
                progress.set_total(progress.done)  # early stop
                break
    model.load_state_dict(stopper.state)
    model.eval()
    return model, curve


def with_biases(target_mf: RatingMF, mean: float, item_bias: np.ndarray) -> RatingMF:
    """A copy of ``target_mf`` whose global mean and item biases are replaced (e.g. by the bias baseline's):
    the head a bridge is trained on when it should refine a bias model rather than the MF's own biases."""
    head = copy.deepcopy(target_mf)
    head.mean.fill_(float(mean))
    head.item_bias.weight.data = torch.as_tensor(np.asarray(item_bias), dtype=torch.float32).reshape(-1, 1)
    return head


@dataclass
class LinearBridge:
    """EMCDR's shared mapping: x_tgt_hat = [x_src, 1] @ weight, weight [(k+1), k] (x: the user vector, with
    the user's offset b_u appended as one more column when the MF has biases)."""

    weight: np.ndarray

    def __call__(self, source_vectors: np.ndarray) -> np.ndarray:
        return np.hstack([source_vectors, np.ones((source_vectors.shape[0], 1))]) @ self.weight


def fit_emcdr(source_vectors: np.ndarray, target_vectors: np.ndarray, ridge: float) -> LinearBridge:
    """One linear bridge for everyone, fitted by embedding distance (ridge least squares, bias unpenalised)."""
    x = np.hstack([source_vectors, np.ones((source_vectors.shape[0], 1))]).astype(np.float64)
    penalty = ridge * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    weight = np.linalg.solve(x.T @ x + penalty, x.T @ target_vectors.astype(np.float64))
    return LinearBridge(weight.astype(np.float32))


def predict(
    target_mf: RatingMF,
    user_vectors: np.ndarray | torch.Tensor,
    items: np.ndarray,
    user_offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Ratings from explicit user vectors [n, d], target items [n] and user offsets b_u [n] (none = 0)."""
    with torch.no_grad():
        vectors = torch.as_tensor(np.asarray(user_vectors), dtype=torch.float32)
        offsets = None if user_offsets is None else torch.as_tensor(np.asarray(user_offsets), dtype=torch.float32)
        return target_mf.predict_with(vectors, torch.as_tensor(items, dtype=torch.long), offsets).numpy()


def bridged_users(model: PTUPCDR, users: np.ndarray, histories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [len(users), d], float32 [len(users)]): target-domain vectors and offsets of ``users`` through
    their personal bridges."""
    with torch.no_grad():
        u = torch.as_tensor(users, dtype=torch.long)
        vectors, offsets = model(u, torch.as_tensor(histories, dtype=torch.long)[u])
        return vectors.numpy(), offsets.numpy()


def bridged_vectors(model: PTUPCDR, users: np.ndarray, histories: np.ndarray) -> np.ndarray:
    """float32 [len(users), d]: target-domain vectors of ``users`` through their personal bridges."""
    return bridged_users(model, users, histories)[0]


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
