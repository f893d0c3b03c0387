"""MetaHeac's network: per-field embeddings, hybrid experts gated on the task, critics mixed by a second gate.

Reference: Yongchun Zhu et al., "Learning to Expand Audience via Meta Hybrid Experts and Critics for
Recommendation and Advertising", KDD 2021 (arXiv 2105.14688). Built from the paper's description.

Task (campaign) vector = mean over the campaign's seed users of their mean user-field embedding,
concatenated with the campaign's own field embeddings. Both gates read it, so a new campaign picks its mix
of experts and critics from its seeds and its ad features before any fine-tuning.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class UserBatch(NamedTuple):
    """Users' encoded fields: single int64 [B, n_single], multi tuple of int64 [B, L_f] (0 = padding),
    continuous float32 [B, n_cont]."""

    single: torch.Tensor
    multi: tuple[torch.Tensor, ...]
    continuous: torch.Tensor


class FieldEmbedding(nn.Module):
    """One embedding per user field (multi-valued: masked mean; continuous: one linear field) -> [B, F, d]."""

    def __init__(self, single_sizes: list[int], multi_sizes: list[int], n_continuous: int, dim: int):
        super().__init__()
        self.single = nn.ModuleList(nn.Embedding(size, dim) for size in single_sizes)
        self.multi = nn.ModuleList(nn.Embedding(size, dim, padding_idx=0) for size in multi_sizes)
        self.continuous = nn.Linear(n_continuous, dim) if n_continuous else None
        self.n_fields = len(single_sizes) + len(multi_sizes) + (1 if n_continuous else 0)
        for emb in [*self.single, *self.multi]:
            nn.init.normal_(emb.weight, std=0.05)

    def forward(self, users: UserBatch) -> torch.Tensor:
        """users -> [B, n_fields, dim]."""
        fields = [emb(users.single[:, j]) for j, emb in enumerate(self.single)]
        for emb, codes in zip(self.multi, users.multi):
            mask = (codes > 0).unsqueeze(-1).float()
            fields.append((emb(codes) * mask).sum(1) / mask.sum(1).clamp(min=1.0))
        if self.continuous is not None:
            fields.append(self.continuous(users.continuous))
        return torch.stack(fields, 1)


class Gate(nn.Module):
    """Task vector [t] -> softmax weights [n] (a small MLP)."""

    def __init__(self, in_dim: int, hidden: int, n: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, n))

    def forward(self, task: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(task), -1)


class HybridExperts(nn.Module):
    """n expert MLPs on the user vector, mixed by a gate on the task vector: [B, u], [t] -> [B, h]."""

    def __init__(self, user_dim: int, task_dim: int, hidden: int, n_experts: int, gate_hidden: int):
        super().__init__()
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(user_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
            for _ in range(n_experts))
        self.gate = Gate(task_dim, gate_hidden, n_experts)

    def forward(self, user: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([expert(user) for expert in self.experts], 1)  # [B, E, h]
        return torch.einsum("e,beh->bh", self.gate(task), outputs)


class Critics(nn.Module):
    """n sigmoid heads on the mixed representation, mixed by a second gate: [B, h], [t] -> probability [B]."""

    def __init__(self, hidden: int, task_dim: int, n_critics: int, gate_hidden: int):
        super().__init__()
        self.heads = nn.Linear(hidden, n_critics)  # n_critics heads of hidden -> 1, in one matrix
        self.gate = Gate(task_dim, gate_hidden, n_critics)

    def forward(self, z: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.heads(z)) @ self.gate(task)


class MetaHeacNet(nn.Module):
    """score(users | campaign): probability that each user converts for the campaign."""

    def __init__(self, single_sizes: list[int], multi_sizes: list[int], n_continuous: int,
                 campaign_sizes: list[int], dim: int = 16, hidden: int = 32, n_experts: int = 8,
                 n_critics: int = 5, gate_hidden: int = 32):
        super().__init__()
        self.fields = FieldEmbedding(single_sizes, multi_sizes, n_continuous, dim)
        self.campaign = nn.ModuleList(nn.Embedding(size, dim) for size in campaign_sizes)
        for emb in self.campaign:
            nn.init.normal_(emb.weight, std=0.05)
        user_dim, task_dim = self.fields.n_fields * dim, (1 + len(campaign_sizes)) * dim
        self.experts = HybridExperts(user_dim, task_dim, hidden, n_experts, gate_hidden)
        self.critics = Critics(hidden, task_dim, n_critics, gate_hidden)

    def task_vector(self, seeds: UserBatch, campaign: torch.Tensor) -> torch.Tensor:
        """seeds (S users), campaign codes int64 [n_campaign_fields] -> task vector [(1 + n_cf) * dim]."""
        seed_mean = self.fields(seeds).mean(1).mean(0)
        ad = [emb(campaign[j]) for j, emb in enumerate(self.campaign)]
        return torch.cat([seed_mean, *ad])

    def forward(self, users: UserBatch, seeds: UserBatch, campaign: torch.Tensor) -> torch.Tensor:
        """users (B), the campaign's seeds (S), its field codes -> conversion probability [B]."""
        task = self.task_vector(seeds, campaign)
        z = self.experts(self.fields(users).flatten(1), task)
        return self.critics(z, task)
