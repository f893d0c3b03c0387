"""The StarSpace encoder as one tensor in, one tensor out: what a model registry and a serving endpoint
can describe with a signature.

A row packs a user's inputs side by side as float32: single-valued field codes, each multi-valued field's
codes (padded with 0), continuous fields, the history item codes (item_idx + 1, padded with 0: the one
padding convention of ``nn.fields``), then the history weights (0 at padding). Codes are exact in float32
below 2^24, far above any vocabulary here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lookalike_models.nn.fields import UserFeatures
from lookalike_models.pinterest.encoder_inputs import UserInputs
from lookalike_models.pinterest.encoder_model import StarSpaceUserEncoder


class PackedUserEncoder(nn.Module):
    def __init__(self, encoder: StarSpaceUserEncoder, multi_widths: list[int], n_continuous: int):
        super().__init__()
        self.encoder = encoder
        self.n_single = len(encoder.fields.single)
        self.multi_widths = list(multi_widths)
        self.n_continuous = n_continuous

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        """packed float32 [B, width] -> unit user vectors float32 [B, dim]."""
        at = self.n_single
        single = packed[:, :at].long()
        multi = []
        for width in self.multi_widths:
            multi.append(packed[:, at : at + width].long())
            at += width
        continuous = packed[:, at : at + self.n_continuous]
        bag = packed[:, at + self.n_continuous :]
        width = bag.shape[1] // 2
        codes, weight = bag[:, :width].long(), bag[:, width:]
        return self.encoder(UserFeatures(single, tuple(multi), continuous), *self.encoder.padded_bag(codes, weight))


def pack_inputs(inputs: UserInputs, users: np.ndarray) -> np.ndarray:
    """float32 [len(users), width]: the packed rows ``PackedUserEncoder`` reads."""
    fields, codes, weight = inputs.rows(torch.as_tensor(users, dtype=torch.long))
    parts = [fields.single.float(), *[m.float() for m in fields.multi], fields.continuous, codes.float(), weight]
    return torch.cat(parts, 1).numpy()


def packed_encoder(encoder: StarSpaceUserEncoder, inputs: UserInputs) -> PackedUserEncoder:
    return PackedUserEncoder(
        encoder, [m.shape[1] for m in inputs.features.multi], inputs.features.continuous.shape[1]
    ).eval()
