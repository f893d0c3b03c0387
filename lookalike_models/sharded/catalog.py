"""Sharded scorers by name (importing every sharded model module registers it)."""

from __future__ import annotations

import importlib

from lookalike_models.sharded.scorer import SHARDED_SCORERS, ShardedScorer

# Each module registers the sharded twins it defines (``register_sharded``).
SHARDED_MODULES = ("exact_models", "peer_models", "sampled_ensemble")


def sharded_names() -> list[str]:
    for module in SHARDED_MODULES:
        importlib.import_module(f"lookalike_models.sharded.{module}")
    return sorted(SHARDED_SCORERS)


def sharded_scorer(name: str) -> type[ShardedScorer]:
    """The sharded scorer registered as ``name`` (a sharded night naming another is refused when its config is read)."""
    names = sharded_names()
    if name not in SHARDED_SCORERS:
        raise ValueError(
            f"model '{name}' cannot run on the sharded data plane (execution.backend=dask on data.kind=sharded); "
            f"sharded models: {', '.join(names)}"
        )
    return SHARDED_SCORERS[name]
