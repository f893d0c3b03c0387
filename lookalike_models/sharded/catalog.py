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


def sharded_config_class(model: str) -> type | None:
    """The config class of ``model``'s sharded twin, or None when it has none: its keys (e.g. ``panel_users``) are
    accepted in a nightly config, and refused by ``refuse_sharded_only_params`` off the sharded night."""
    return SHARDED_SCORERS[model].config_class if model in sharded_names() else None


def refuse_sharded_only_params(models: list, where: str = "models.{i}.params") -> None:
    """Outside the sharded night, every model's params (``ModelSpec``s) must be its single-process scorer's."""
    from lookalike_models.catalog import scorer_class

    for i, spec in enumerate(models):
        extra = sorted(set(spec.params) - set(scorer_class(spec.model).config_class.model_fields))
        if extra:
            raise ValueError(
                f"{where.format(i=i)}: {', '.join(extra)} {'applies' if len(extra) == 1 else 'apply'} only on the "
                "sharded data plane (data.kind=sharded with execution.backend=dask)"
            )
