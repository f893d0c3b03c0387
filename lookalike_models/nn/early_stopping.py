"""Model selection on a validation signal: keep the best epoch's weights, stop after ``patience`` without gain."""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch


class EarlyStopping:
    """Keeps the weights of the best epoch by a validation value (``mode="min"``: a loss, ``"max"``: a recall);
    ``stop`` says when ``patience`` epochs in a row improved it by no more than ``min_delta``."""

    def __init__(
        self, model: torch.nn.Module, patience: int, mode: Literal["min", "max"] = "min", min_delta: float = 1e-5
    ):
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best, self.waited = (math.inf if mode == "min" else -math.inf), 0
        self.state = copy.deepcopy(model.state_dict())

    def improves(self, value: float) -> bool:
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def stop(self, model: torch.nn.Module, value: float) -> bool:
        if self.improves(value):
            self.best, self.state, self.waited = value, copy.deepcopy(model.state_dict()), 0
            return False
        self.waited += 1
        return self.waited >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.state)
