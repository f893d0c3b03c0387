"""The base of every configuration: a key the model does not have is an error, never a silent default."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictConfig(BaseModel):
    """Refuses unknown keys at any depth (``n_userz`` must not quietly run with ``n_users``' default)."""

    model_config = ConfigDict(extra="forbid")
