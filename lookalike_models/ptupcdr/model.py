"""PTUPCDR: personalised transfer of user preferences for cross-domain recommendation (the networks).

Reference: Yongchun Zhu et al., "Personalized Transfer of User Preferences for Cross-domain Recommendation",
WSDM 2022 (arXiv 2110.11154).

  - ``RatingMF``: matrix factorisation pre-trained per domain; optionally with a global mean and item biases
    (``biases=True``, a deviation from the paper's plain dot product, used by every method alike so that
    comparisons stay fair).
  - ``CharacteristicEncoder``: attention over the user's liked source items -> p_u.
  - ``MetaBridge``: p_u -> a personal d x d bridge W_u.
  - ``PTUPCDR``: u_tgt_hat = u_src W_u over frozen MF tables, shaped by ``BridgeArchitecture``.
  - ``LinearBridge``: EMCDR's one shared linear bridge.

Training loops live in ``training.py``; the data records in ``domains.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from torch import nn

from lookalike_models.strict_config import StrictConfig


class RatingMF(nn.Module):
    """r_hat(u, i) = mean + b_u + b_i + u . v (mean, b_u and b_i only with ``biases``).

    Tables: user [n_users, dim], item [n_items, dim], user_bias [n_users, 1], item_bias [n_items, 1].
    b_u is the user's offset (how generously they rate); for a cold user the target table has none, which is
    what the bridges' offset maps and the bias baseline (``bias.py``) estimate from the source domain.
    ``training.fit_mf`` trains b_u for the rating objective only (it stays 0 for the implicit one)."""

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
        """users int64 [B], items int64 [B] -> predicted ratings (or logits) [B]."""
        return self.predict_with(self.user(users), items, self.user_bias(users).squeeze(-1))


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
    the epoch-0 check of ``training.fit_ptupcdr`` keeps it when bridging adds nothing on the validation users."""

    def __init__(self, dim: int, hidden: int = 50):
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim * dim + 2))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, p_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(p_u)
        return out[:, : self.dim * self.dim].view(-1, self.dim, self.dim), out[:, -2], out[:, -1]


class BridgeArchitecture(StrictConfig, frozen=True):
    """The bridge's size and its ablation switches (the paper's bridge: personal, embedding only)."""

    meta_hidden: int = Field(50, ge=1, description="Hidden units of the meta network")
    personal: bool = Field(
        True,
        description="False feeds the meta network p_u = 0: one bridge shared by all users, trained on the "
        "same task (a task-oriented EMCDR)",
    )
    map_embedding: bool = Field(True, description="False drops u_tgt_hat (offset only)")
    map_offset: bool = Field(True, description="False drops b_tgt_hat (the paper's bridge, embedding only)")


class PTUPCDR(nn.Module):
    """Bridged target-domain user vectors and offsets from frozen source MF tables:
    u_tgt_hat = u_src W_u, b_tgt_hat = (1 + scale_u) b_src + shift_u.

    source_users [n_users, d], source_items [n_items, d], source_user_bias [n_users] or [n_users, 1] (b_src;
    none = 0); ``architecture``: the meta network's size and the ablation switches."""

    def __init__(
        self,
        source_users: torch.Tensor,
        source_items: torch.Tensor,
        source_user_bias: torch.Tensor | None = None,
        architecture: BridgeArchitecture | None = None,
    ):
        super().__init__()
        arch = architecture or BridgeArchitecture()
        dim = source_users.shape[1]
        pad_row = torch.zeros(1, dim)
        # Frozen pre-trained tables; the last item row is the padding id (not a real item).
        self.register_buffer("source_users", source_users.detach().clone())
        self.register_buffer("source_items", torch.cat([source_items.detach(), pad_row]))
        bias = torch.zeros(source_users.shape[0]) if source_user_bias is None else source_user_bias.detach()
        self.register_buffer("source_user_bias", bias.reshape(-1).clone())
        self.pad_id = source_items.shape[0]
        self.personal, self.map_embedding, self.map_offset = arch.personal, arch.map_embedding, arch.map_offset
        self.encoder = CharacteristicEncoder(dim)
        self.meta = MetaBridge(dim, arch.meta_hidden)

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


@dataclass
class LinearBridge:
    """EMCDR's shared mapping: x_tgt_hat = [x_src, 1] @ weight, weight [(k+1), k] (x: the user vector, with
    the user's offset b_u appended as one more column when the MF has biases)."""

    weight: np.ndarray

    def __call__(self, source_vectors: np.ndarray) -> np.ndarray:
        """source_vectors [n, k] -> mapped vectors [n, k]."""
        return np.hstack([source_vectors, np.ones((source_vectors.shape[0], 1))]) @ self.weight


def with_biases(target_mf: RatingMF, mean: float, item_bias: np.ndarray) -> RatingMF:
    """A copy of ``target_mf`` whose global mean and item biases [n_items] are replaced (e.g. by the bias
    baseline's): the head a bridge is trained on when it should refine a bias model rather than the MF's own
    biases."""
    head = copy.deepcopy(target_mf)
    head.mean.fill_(float(mean))
    head.item_bias.weight.data = torch.as_tensor(np.asarray(item_bias), dtype=torch.float32).reshape(-1, 1)
    return head


def predict(
    target_mf: RatingMF,
    user_vectors: np.ndarray | torch.Tensor,
    items: np.ndarray,
    user_offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Ratings [n] from explicit user vectors [n, d], target items [n] and user offsets b_u [n] (none = 0)."""
    with torch.no_grad():
        vectors = torch.as_tensor(np.asarray(user_vectors), dtype=torch.float32)
        offsets = None if user_offsets is None else torch.as_tensor(np.asarray(user_offsets), dtype=torch.float32)
        return target_mf.predict_with(vectors, torch.as_tensor(items, dtype=torch.long), offsets).numpy()


def bridged_users(model: PTUPCDR, users: np.ndarray, histories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [len(users), d], float32 [len(users)]): target-domain vectors and offsets of ``users`` through
    their personal bridges; ``histories`` int64 [n_users, L]."""
    with torch.no_grad():
        u = torch.as_tensor(users, dtype=torch.long)
        vectors, offsets = model(u, torch.as_tensor(histories, dtype=torch.long)[u])
        return vectors.numpy(), offsets.numpy()


def bridged_vectors(model: PTUPCDR, users: np.ndarray, histories: np.ndarray) -> np.ndarray:
    """float32 [len(users), d]: target-domain vectors of ``users`` through their personal bridges."""
    return bridged_users(model, users, histories)[0]
