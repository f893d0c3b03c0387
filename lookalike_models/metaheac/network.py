"""MetaHeac's network: per-field embeddings, hybrid experts and critics, each mixed by a gate.

Reference: Yongchun Zhu et al., "Learning to Expand Audience via Meta Hybrid Experts and Critics for
Recommendation and Advertising", KDD 2021 (arXiv 2105.14688). Built from the paper's description.

User fields go through the shared ``nn.fields.FieldEmbedding`` (multi-valued fields by the gathered masked
mean: the inner loop may differentiate through its own gradients, which ``embedding_bag`` cannot), the ad's
fields through one table each; code 0 is padding in every table.

Gate input ("task" vector), per scored row as in the paper: the mean of *that row's* user-field embeddings
concatenated with the campaign's ad-field embeddings, so the mix of experts and critics can differ from user
to user within one campaign (``gating="row"``). The ablation ``gating="campaign"`` replaces the row's own
mean by the mean over the campaign's seed users: one fixed mix per campaign.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lookalike_models.nn.fields import (
    FieldEmbedding,
    FieldSizes,
    UserFeatures,
    field_tables,
    normal_tables_,
    zero_padding_rows,
)

Gating = Literal["row", "campaign"]


class Gate(nn.Module):
    """Gate input [B, t] -> softmax weights [B, n] (a small MLP)."""

    def __init__(self, in_dim: int, hidden: int, n: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, n))

    def forward(self, task: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(task), -1)


class HybridExperts(nn.Module):
    """n expert MLPs (user -> h -> h, ReLU) on the user vector, mixed per row by a gate:
    user [B, u], gate input [B, t] -> [B, h]. The experts' weights are stacked ([E, in, out]) so that all
    of them run as one batched product: far fewer small ops per step, which is what a CPU inner loop pays."""

    def __init__(self, user_dim: int, task_dim: int, hidden: int, n_experts: int, gate_hidden: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, user_dim, hidden).uniform_(-1, 1) / user_dim**0.5)
        self.b1 = nn.Parameter(torch.empty(n_experts, hidden).uniform_(-1, 1) / user_dim**0.5)
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, hidden).uniform_(-1, 1) / hidden**0.5)
        self.b2 = nn.Parameter(torch.empty(n_experts, hidden).uniform_(-1, 1) / hidden**0.5)
        self.gate = Gate(task_dim, gate_hidden, n_experts)

    def forward(self, user: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(torch.einsum("bu,euh->beh", user, self.w1) + self.b1)
        outputs = torch.relu(torch.einsum("beh,ehk->bek", hidden, self.w2) + self.b2)  # [B, E, h]
        return torch.einsum("be,beh->bh", self.gate(task), outputs)


class Critics(nn.Module):
    """n sigmoid heads on the mixed representation, mixed per row by a second gate:
    z [B, h], gate input [B, t] -> probability [B]."""

    def __init__(self, hidden: int, task_dim: int, n_critics: int, gate_hidden: int):
        super().__init__()
        self.heads = nn.Linear(hidden, n_critics)  # n_critics heads of hidden -> 1, in one matrix
        self.gate = Gate(task_dim, gate_hidden, n_critics)

    def forward(self, z: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(self.heads(z)) * self.gate(task)).sum(-1)


@dataclass(frozen=True)
class MetaHeacShape:
    """The network's sizes: embedding size per field, expert width, experts, critics, gate width, and what
    the gates see (``gating``)."""

    dim: int = 16
    hidden: int = 32
    n_experts: int = 8
    n_critics: int = 5
    gate_hidden: int = 32
    gating: Gating = "row"


class MetaHeacNet(nn.Module):
    """score(users | campaign): probability that each user converts for the campaign."""

    _version = 2  # 2: row 0 of the campaign tables is padding (1: a trained row)

    def __init__(self, fields: FieldSizes, campaign_sizes: Sequence[int], shape: MetaHeacShape = MetaHeacShape()):
        super().__init__()
        self.gating = shape.gating
        self.fields = FieldEmbedding(fields, shape.dim, mean="gather").normal_(0.05)
        self.campaign = field_tables(campaign_sizes, shape.dim)
        normal_tables_(self.campaign, 0.05)
        user_dim, task_dim = self.fields.n_fields * shape.dim, (1 + len(campaign_sizes)) * shape.dim
        self.experts = HybridExperts(user_dim, task_dim, shape.hidden, shape.n_experts, shape.gate_hidden)
        self.critics = Critics(shape.hidden, task_dim, shape.n_critics, shape.gate_hidden)

    def gate_input(self, fields: torch.Tensor, campaign: torch.Tensor, seeds: UserFeatures | None) -> torch.Tensor:
        """Rows' field embeddings [B, F, d], campaign codes int64 [n_cf], seeds (S users; used only by
        ``gating="campaign"``) -> gate input [B, (1 + n_cf) * d]."""
        if self.gating == "row":
            user_part = fields.mean(1)
        else:
            if seeds is None:
                raise ValueError("gating='campaign' needs the campaign's seed users")
            user_part = self.fields(seeds).mean(1).mean(0).expand(fields.shape[0], -1)
        ad = [emb(campaign[j]).expand(fields.shape[0], -1) for j, emb in enumerate(self.campaign)]
        return torch.cat([user_part, *ad], 1)

    def forward(self, users: UserFeatures, campaign: torch.Tensor, seeds: UserFeatures | None = None) -> torch.Tensor:
        """users (B), the campaign's field codes int64 [n_cf], its seeds (S; campaign gating only)
        -> conversion probability [B]."""
        fields = self.fields(users)
        task = self.gate_input(fields, campaign, seeds)
        return self.critics(self.experts(fields.flatten(1), task), task)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if (local_metadata.get("version") or 1) < 2:  # zeroing row 0 is a no-op on a version-2 table
            zero_padding_rows(state_dict, [f"{prefix}campaign.{j}.weight" for j in range(len(self.campaign))])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)
