"""The attention merge layer of RALM's user representation (Liu et al., "Real-time Attention Based Look-alike
Model for Recommender System", KDD 2019, arXiv 1906.05022, sec. 4.2.2), in the working reading of the
paper's formula (its printed shapes do not compose):

    U = tanh(H W1)  (W1: m x k),   a = softmax(U w2) over the n fields,   M = a H        -> [m]
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionMerge(nn.Module):
    """H [B, n, m] -> (M [B, m], a [B, n]): field vectors merged by weights a = softmax(tanh(H W1) w2) over
    the n fields (rows of a sum to 1)."""

    def __init__(self, m: int, k: int):
        super().__init__()
        self.w1 = nn.Linear(m, k, bias=False)
        self.w2 = nn.Linear(k, 1, bias=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.softmax(self.w2(torch.tanh(self.w1(h))).squeeze(-1), dim=1)
        return (a.unsqueeze(-1) * h).sum(1), a
