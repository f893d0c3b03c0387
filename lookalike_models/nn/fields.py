"""User fields as tensors, and the one field embedding every system uses (StarSpace, RALM, MetaHeac).

One padding convention everywhere: **index 0 is padding** in every table. A single-valued field's code 0 is
"missing" (``dataset.UserFields``: codes 1..V), a multi-valued field pads its rows with 0, and an item table
keeps row 0 empty so that item ``i`` is row ``i + 1`` (``ItemBag``). Padding rows are zero and never get a
gradient (``padding_idx=0``); a model that draws its tables afresh (``FieldEmbedding.normal_``) zeroes them
again, so the random draws are the same as they were before the convention was one.

State dicts written before this module (version 1 of a field table) may hold a non-zero row 0 for a single-
valued field; loading one zeroes it (``FieldEmbedding._load_from_state_dict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from lookalike_models.dataset import UserFields

MeanKernel = Literal["bag", "bag_sum", "gather"]
"""How a multi-valued field's mean over its non-padding codes is computed. All three give the same value
up to float rounding; each system keeps its own so that its numbers stay bit-identical:
``"bag"`` (RALM): ``embedding_bag(mode="mean")``, no [B, L, d] tensor;
``"bag_sum"`` (StarSpace): ``embedding_bag(mode="sum")`` / count: the same forward bits as ``"bag"``, the
gradient rounded differently;
``"gather"`` (MetaHeac): gather [B, L, d], masked sum / count. Twice differentiable (``embedding_bag``'s
backward has no derivative), which MetaHeac's second-order inner loop needs."""


@dataclass(frozen=True)
class FieldSizes:
    """Vocabulary size of each single- and multi-valued field (code 0 counted), and the continuous fields."""

    single: tuple[int, ...] = ()
    multi: tuple[int, ...] = ()
    n_continuous: int = 0

    @classmethod
    def of(cls, users: UserFields, n_continuous: int | None = None) -> FieldSizes:
        """The sizes of a data set's user fields; ``n_continuous`` when a model adds or drops some."""
        cont = len(users.names_continuous) if n_continuous is None else n_continuous
        return cls(tuple(users.single_sizes), tuple(users.multi_sizes), cont)


class UserFeatures(NamedTuple):
    """Users' encoded fields as tensors (row = user):
    single int64 [n, n_single] (0 = missing), multi tuple of int64 [n, L_f] (0 = padding),
    continuous float32 [n, n_cont]."""

    single: torch.Tensor
    multi: tuple[torch.Tensor, ...]
    continuous: torch.Tensor

    @classmethod
    def of(
        cls, users: UserFields, multi: Sequence[int] | None = None, continuous: np.ndarray | None = None
    ) -> UserFeatures:
        """Every user's fields; ``multi``: the positions of the multi-valued fields kept (default all);
        ``continuous``: float32 [n_users, c] to use instead of ``users.continuous``."""
        keep = range(len(users.multi)) if multi is None else multi
        cont = users.continuous if continuous is None else continuous
        return cls(
            torch.as_tensor(users.single, dtype=torch.long),
            tuple(torch.as_tensor(users.multi[i], dtype=torch.long) for i in keep),
            torch.as_tensor(cont, dtype=torch.float32),
        )

    @property
    def n_users(self) -> int:
        return self.single.shape[0]

    def rows(self, users: torch.Tensor | np.ndarray) -> UserFeatures:
        """The fields of ``users`` (int64 [B]) -> UserFeatures of B rows."""
        t = torch.as_tensor(users, dtype=torch.long)
        return UserFeatures(self.single[t], tuple(m[t] for m in self.multi), self.continuous[t])

    def profile_free(self) -> UserFeatures:
        """The same users with no profile field at all (a history-only model)."""
        return UserFeatures(self.single[:, :0], (), self.continuous[:, :0])


def field_tables(sizes: Sequence[int], dim: int) -> nn.ModuleList:
    """One ``dim`` table per categorical field of the given vocabulary sizes, row 0 the padding."""
    return nn.ModuleList(nn.Embedding(max(size, 1), dim, padding_idx=0) for size in sizes)


@torch.no_grad()
def normal_tables_(tables: Sequence[nn.Embedding], std: float) -> None:
    """Redraw each table from N(0, std), in order, then zero its padding row 0."""
    for table in tables:
        table.weight.normal_(0.0, std)
        table.weight[0] = 0.0


def zero_padding_rows(state_dict: dict, keys: Sequence[str]) -> None:
    """Zero row 0 of these tables of an older state dict (in place, on copies of the tensors)."""
    for key in keys:
        if key in state_dict:
            state_dict[key] = state_dict[key].clone()
            state_dict[key][0] = 0.0


class FieldEmbedding(nn.Module):
    """Encoded user fields -> one ``dim`` vector per field: [B, n_fields, dim], fields in the order
    single-valued, multi-valued (mean of the non-padding codes' rows; zeros for an empty row), then all
    continuous fields together through one linear layer (``continuous_field``; else they are left out)."""

    _version = 2  # 2: row 0 of every table is padding (1: a single-valued field's row 0 was a trained row)

    def __init__(self, sizes: FieldSizes, dim: int, continuous_field: bool = True, mean: MeanKernel = "bag"):
        super().__init__()
        self.mean_kernel = mean
        self.single = field_tables(sizes.single, dim)
        self.multi = field_tables(sizes.multi, dim)
        self.continuous = nn.Linear(sizes.n_continuous, dim) if continuous_field and sizes.n_continuous else None

    @property
    def n_fields(self) -> int:
        return len(self.single) + len(self.multi) + (self.continuous is not None)

    def normal_(self, std: float) -> FieldEmbedding:
        """Redraw every single- and multi-valued table from N(0, std) (in field order), padding rows zero."""
        normal_tables_([*self.single, *self.multi], std)
        return self

    def pooled(self, table: nn.Embedding, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, L] (0 = padding) -> [B, dim]: the mean of the non-padding codes' rows."""
        if self.mean_kernel == "bag":
            return F.embedding_bag(codes, table.weight, mode="mean", padding_idx=0)
        if self.mean_kernel == "bag_sum":
            total = F.embedding_bag(codes, table.weight, mode="sum", padding_idx=0)
            return total / (codes > 0).sum(1, keepdim=True).clamp(min=1)
        mask = (codes > 0).unsqueeze(-1).float()
        return (table(codes) * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def parts(self, x: UserFeatures) -> list[torch.Tensor]:
        """The field vectors, each [B, dim], in field order."""
        out = [table(x.single[:, j]) for j, table in enumerate(self.single)]
        out += [self.pooled(table, codes) for table, codes in zip(self.multi, x.multi)]
        if self.continuous is not None:
            out.append(self.continuous(x.continuous))
        return out

    def forward(self, x: UserFeatures) -> torch.Tensor:
        """x (B users) -> [B, n_fields, dim]."""
        return torch.stack(self.parts(x), 1)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if (local_metadata.get("version") or 1) < 2:  # zeroing row 0 is a no-op on a version-2 table
            zero_padding_rows(state_dict, [f"{prefix}single.{j}.weight" for j in range(len(self.single))])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


class ItemBag(nn.Embedding):
    """An item table with the padding row at index 0: item ``i`` is row ``i + 1`` (its *code*).
    ``item_rows`` [n_items, dim] is the table without the padding row."""

    def __init__(self, n_items: int, dim: int):
        super().__init__(n_items + 1, dim, padding_idx=0)

    @property
    def item_rows(self) -> torch.Tensor:
        """[n_items, dim]: row i is item i."""
        return self.weight[1:]

    def items(self, items: torch.Tensor) -> torch.Tensor:
        """item_idx int64 [...] -> their rows [..., dim]."""
        return self(items + 1)

    def pool(
        self, codes: torch.Tensor, weights: torch.Tensor | None = None, offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Bags of codes -> [B, dim]: the ``weights``-weighted sum of their rows, or their mean without
        weights. ``codes`` int64 [B, L] (0 = padding; weights [B, L]) or, with ``offsets`` int64 [B], one
        flat int64 [nnz] of all bags (weights [nnz])."""
        if weights is None:
            return F.embedding_bag(codes, self.weight, offsets, mode="mean", padding_idx=0)
        return F.embedding_bag(codes, self.weight, offsets, mode="sum", per_sample_weights=weights)
