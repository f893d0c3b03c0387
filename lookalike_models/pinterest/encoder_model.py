"""The StarSpace user encoder of Pinterest's act-alike system (deWet & Ou, "Finding Users Who Act Alike",
KDD 2019, arXiv 1903.01625, stage 1), after StarSpace (Wu et al., AAAI 2018): the module alone. Its training
(config, SVD warm start, ranking loss, early stopping) is ``encoder.py``.

``u = normalize(W [fields, continuous, history bag] + b)``: the categorical fields through the shared
``nn.fields.FieldEmbedding`` (multi-valued: the mean of their codes' rows), the continuous fields as they
are, and the user's item history pooled as a (tf-idf-)weighted bag of the item table, in ONE dense layer.
Item ``i`` is row ``i + 1`` of the item table (row 0 is padding, ``nn.fields.ItemBag``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lookalike_models.nn.fields import FieldEmbedding, FieldSizes, ItemBag, UserFeatures


@dataclass(frozen=True)
class EncoderShape:
    """The encoder's sizes and switches: user and topic dimension, size of each categorical field's vector,
    the history bag's pooling ``sum / n^p``, one item table for bag and topics, and the dense layer's bias."""

    dim: int = 32
    field_dim: int = 16
    history_pool_power: float = 0.0
    share_embeddings: bool = False
    dense_bias: bool = True


class StarSpaceUserEncoder(nn.Module):
    """User fields -> one dense layer -> unit vector; item (topic) embeddings of the same dimension."""

    _version = 2  # 2: history padding row first, fields under ``fields.`` (1: padding row last, flat)

    def __init__(self, fields: FieldSizes, n_items: int, shape: EncoderShape = EncoderShape()):
        super().__init__()
        # p < 1 keeps some of the history's size in the pooled vector, so activity can shape the direction.
        self.history_pool_power = shape.history_pool_power
        self.fields = FieldEmbedding(fields, shape.field_dim, continuous_field=False, mean="bag_sum")
        self.history = ItemBag(n_items, shape.dim)
        self.topics = None if shape.share_embeddings else nn.Embedding(n_items, shape.dim)
        width = shape.field_dim * (len(fields.single) + len(fields.multi)) + fields.n_continuous + shape.dim
        self.dense = nn.Linear(width, shape.dim, bias=shape.dense_bias)
        self.fields.normal_(0.1)
        with torch.no_grad():
            # The draw of the layout with the padding row last: its last row is dropped, the others move down.
            table = self.history.weight
            table.normal_(0.0, 0.1)
            table.copy_(table.roll(1, 0))
            table[0] = 0.0
        if self.topics is not None:
            nn.init.normal_(self.topics.weight, std=0.1)

    @property
    def dim(self) -> int:
        return self.dense.out_features

    def forward(self, x: UserFeatures, history_sum: torch.Tensor, history_count: torch.Tensor) -> torch.Tensor:
        """x (B users; continuous float32 [B, n_cont]), history_sum float32 [B, dim] (weighted sum of
        history rows), history_count float32 [B] -> unit user vectors float32 [B, dim]."""
        parts = self.fields.parts(x)
        parts += [x.continuous, history_sum / history_count.clamp(min=1).pow(self.history_pool_power).unsqueeze(1)]
        return F.normalize(self.dense(torch.cat(parts, 1)), dim=1)

    def bag(self, items: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Flat bags: item_idx int64 [nnz], weights float32 [nnz], offsets int64 [B] -> weighted sums [B, dim]."""
        return self.history.pool(items + 1, weights, offsets)

    def padded_bag(self, codes: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded rows: codes int64 [B, L] (item_idx + 1, 0 = padding), weight float32 [B, L] (0 at padding)
        -> (weighted sum of the rows [B, dim], items [B]). The serving format; training uses ``bag``."""
        return (weight.unsqueeze(-1) * self.history(codes)).sum(1), (weight > 0).float().sum(1)

    def topic_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """item_idx int64 [...] -> unit topic vectors float32 [..., dim]."""
        vectors = self.history.items(items) if self.topics is None else self.topics(items)
        return F.normalize(vectors, dim=-1)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        version = local_metadata.get("version")
        flat = [k for k in state_dict if k.startswith((f"{prefix}single.", f"{prefix}multi."))]
        if version == 1 or (version is None and flat):  # the layout before nn.fields: move it over
            for key in flat:
                state_dict[f"{prefix}fields.{key[len(prefix) :]}"] = state_dict.pop(key)
            key = f"{prefix}history.weight"
            if key in state_dict:
                state_dict[key] = state_dict[key].roll(1, 0)  # padding row (zero) from last to first
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)
